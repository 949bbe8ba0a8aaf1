"""Obtaining the official lists: pinned checksums, conversion of upstream pickles, local copies, errors.

Downloads cannot run here, so the download path is exercised with a fetch function that serves
local bytes: the list files from the reference copy (their pinned checksums must match) and
upstream-format pickles rebuilt from the reference JSON/npz.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from data_splits import official
from data_splits.build import build_splits
from data_splits.official import (
    LIST_SHA256,
    OfficialConfig,
    OfficialListsError,
    RemoteFile,
    embeddings_npy_to_npz,
    mapping_pickle_to_json,
    obtain_official,
    remote_files,
    safe_unpickle,
    sha256_bytes,
)

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "avgzsl-official"
needs_official = pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI


def upstream_mapping_pickle(mapping: dict[str, list[str]], as_numpy_bytes: bool) -> bytes:
    """Same structure as TCAF's mapping pickles: values are lists of numpy.bytes_ (cls) or bytes (main)."""
    conv = np.bytes_ if as_numpy_bytes else bytes
    return pickle.dumps({k: [conv(v.encode()) for v in vals] for k, vals in mapping.items()}, protocol=4)


def upstream_embeddings_npy(names, vectors) -> bytes:
    """Same structure as AVCA's word_embeddings_*_normed.npy: np.save of a dict {name: float32[300]}."""
    buf = io.BytesIO()
    np.save(buf, {str(n): np.asarray(v, dtype=np.float32) for n, v in zip(names, vectors, strict=True)})
    return buf.getvalue()


@needs_official
def test_pinned_list_checksums_match_reference_copy():
    list_files = sorted(p.relative_to(OFFICIAL).as_posix() for p in OFFICIAL.rglob("*") if p.suffix in {".txt", ".csv"})
    assert sorted(LIST_SHA256) == list_files
    for rel, digest in LIST_SHA256.items():
        assert sha256_bytes((OFFICIAL / rel).read_bytes()) == digest, rel


def test_remote_file_urls_are_pinned():
    files = remote_files("vggsound")
    urls = {f.url() for f in files}
    assert ("https://raw.githubusercontent.com/ExplainableML/AVCA-GZSL/2711aeb5d7257ece4c5464fa46d7849a4edf6470/"
            "avgzsl_benchmark_datasets/VGGSound/class-split/cls_split/stage_1_val_seen.csv") in urls
    assert ("https://raw.githubusercontent.com/ExplainableML/TCAF-GZSL/0ca2059bc018c4f4c0975833f63e61ad042f7312/"
            "splitting_scripts_main/mapping_audio_files_main_features_VGGSound.pickle") in urls
    assert all(len(f.sha256) == 64 for f in files)
    # UCF/ActivityNet lists are complete: no mapping needed, only lists + the fastText vectors.
    assert {f.convert for f in remote_files("ucf")} == {"copy", "embeddings_npz"}
    with pytest.raises(OfficialListsError, match="local_dir"):
        remote_files("demo")


@needs_official
@pytest.mark.parametrize("as_numpy_bytes", [True, False])
def test_mapping_pickle_converts_to_reference_json(as_numpy_bytes):
    ref = json.loads((OFFICIAL / "UCF/mapping/cls_audio.json").read_text())
    assert json.loads(mapping_pickle_to_json(upstream_mapping_pickle(ref, as_numpy_bytes))) == ref


@needs_official
def test_embeddings_npy_converts_to_reference_npz():
    ref = np.load(OFFICIAL / "ActivityNet/class-split/word_embeddings_activity_normed.npz")
    out = np.load(io.BytesIO(embeddings_npy_to_npz(upstream_embeddings_npy(ref["names"], ref["vectors"]))))
    assert list(out["names"]) == list(ref["names"])  # dict order kept
    assert np.array_equal(out["vectors"], ref["vectors"]) and out["vectors"].dtype == np.float32


def test_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        safe_unpickle(pickle.dumps({"k": [Evil()]}))


@needs_official
def test_download_path_verifies_and_converts(tmp_path):
    """obtain_official over a fake server: lists byte-identical, pickles converted, layout complete."""
    ref_map = json.loads((OFFICIAL / "VGGSound/mapping/main_audio.json").read_text())
    ref_emb = np.load(OFFICIAL / "VGGSound/class-split/word_embeddings_vggsound_normed.npz")
    served: dict[str, bytes] = {}
    files: list[RemoteFile] = []
    for f in remote_files("vggsound"):
        if f.convert == "copy":
            data = (OFFICIAL / f.local_rel).read_bytes()
        elif f.convert == "mapping_json":
            data = upstream_mapping_pickle(ref_map, as_numpy_bytes=False)
        else:
            data = upstream_embeddings_npy(ref_emb["names"], ref_emb["vectors"])
        # Rebuilt pickles are not byte-identical to upstream: pin what is served for those two.
        files.append(f if f.convert == "copy" else dataclasses.replace(f, sha256=sha256_bytes(data)))
        served[f.url()] = data

    dest = tmp_path / "lists"
    written = official.download_official("vggsound", dest, OfficialConfig(), served.__getitem__, files)
    assert json.loads((dest / "VGGSound/mapping/main_audio.json").read_text()) == ref_map
    for rel in LIST_SHA256:
        if rel.startswith("VGGSound/"):
            assert written[rel] == LIST_SHA256[rel]
    # The downloaded folder builds the same splits as the reference copy.
    a = build_splits("vggsound", dest, tmp_path / "a", "cls")
    b = build_splits("vggsound", OFFICIAL, tmp_path / "b", "cls")
    assert a.splits == b.splits

    # A corrupted byte in one list file is caught before anything is written for it.
    bad_url = next(f.url() for f in files if f.local_rel.endswith("stage_1_val_seen.csv"))
    served[bad_url] = served[bad_url][:-1] + b"x"
    with pytest.raises(OfficialListsError, match=r"sha256 mismatch for .*stage_1_val_seen\.csv"):
        official.download_official("vggsound", tmp_path / "bad", OfficialConfig(), served.__getitem__, files)


def test_download_failure_says_how_to_work_offline(tmp_path):
    def offline(url: str) -> bytes:
        raise urllib.error.URLError("no network")

    with pytest.raises(OfficialListsError, match=r"could not download https://raw\.githubusercontent.*local_dir"):
        obtain_official("ucf", tmp_path, OfficialConfig(), fetch=offline)
    with pytest.raises(OfficialListsError, match="no source"):
        obtain_official("ucf", tmp_path, OfficialConfig(download=False))
    with pytest.raises(OfficialListsError, match="does not exist"):
        obtain_official("ucf", tmp_path, OfficialConfig(local_dir=str(tmp_path / "nowhere")))


@needs_official
def test_local_copy_is_checked_and_copied(tmp_path):
    res = obtain_official("ucf", tmp_path / "out", OfficialConfig(local_dir=str(OFFICIAL)))
    assert res.source == "local"
    assert (tmp_path / "out/UCF/class-split/main_split/stage_2_test_unseen.txt").is_file()
    assert (tmp_path / "out/UCF/mapping/cls_audio.json").is_file()
    prov = json.loads((tmp_path / "out/UCF/provenance.json").read_text())
    assert prov["source"] == "local" and prov["files"]["UCF/class-split/all_class.txt"] == \
        LIST_SHA256["UCF/class-split/all_class.txt"]


@needs_official
def test_incomplete_or_modified_local_copy_is_rejected(tmp_path):
    src = tmp_path / "copy"
    obtain_official("ucf", src, OfficialConfig(local_dir=str(OFFICIAL)))
    (src / "UCF/class-split/cls_split/stage_1_val_unseen.txt").unlink()
    with pytest.raises(OfficialListsError, match=r"missing \[.*stage_1_val_unseen\.txt"):
        obtain_official("ucf", tmp_path / "out", OfficialConfig(local_dir=str(src)))
    obtain_official("ucf", src, OfficialConfig(local_dir=str(OFFICIAL)))  # restore
    with (src / "UCF/class-split/all_class.txt").open("a") as fh:
        fh.write("Extra\n")
    with pytest.raises(OfficialListsError, match=r"sha256 mismatch for .*all_class\.txt"):
        obtain_official("ucf", tmp_path / "out", OfficialConfig(local_dir=str(src)))
    obtain_official("ucf", tmp_path / "out", OfficialConfig(local_dir=str(src), verify=False))


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="localdir"):
        OfficialConfig.from_dict({"localdir": "/x"})
