"""Weight resolution: random, checksums, clear errors for missing files, download with verification."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import pytest
import torch

from extractors.weights import (
    SOURCES,
    load_state_dict_file,
    resolve_weights,
    resolve_weights_sha256,
    seeded,
    sha256_file,
    sha256_path,
    verify_sha256,
)


def test_random_spec_resolves_to_none():
    assert resolve_weights("random", None, "c3d") is None


def test_sha256_streaming_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # > several read chunks with a small chunk size
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin", chunk_bytes=4096) == hashlib.sha256(data).hexdigest()


def test_directory_hash_depends_on_names_and_contents(tmp_path):
    d = tmp_path / "sm"
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(b"graph")
    (d / "variables" / "v.data").write_bytes(b"weights")
    h = sha256_path(d)
    assert len(h) == 64 and h == sha256_path(d)
    (d / "variables" / "v.data").write_bytes(b"weightz")
    assert sha256_path(d) != h
    (d / "variables" / "v.data").write_bytes(b"weights")
    (d / "variables" / "v.data").rename(d / "variables" / "w.data")
    assert sha256_path(d) != h


def test_existing_file_checksum_verified(tmp_path):
    f = tmp_path / "c3d.pickle"
    f.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert resolve_weights(str(f), good, "c3d") == f
    assert resolve_weights(str(f), good.upper(), "c3d") == f
    assert resolve_weights(str(f), None, "c3d") == f  # no checksum given: accepted, recorded by the caller
    with pytest.raises(ValueError) as e:
        resolve_weights(str(f), "0" * 64, "c3d")
    msg = str(e.value)
    assert str(f) in msg and "0" * 64 in msg and good in msg and "checksum mismatch" in msg


@pytest.mark.parametrize("name", ["c3d", "vggish_savedmodel", "vggish_torch"])
def test_missing_file_without_url_says_what_where_and_which_key(tmp_path, name, monkeypatch):
    from extractors.vggish import tfhub

    def offline(dest, handle):
        raise OSError("network unreachable")

    monkeypatch.setattr(
        tfhub, "download_savedmodel", offline
    )  # the SavedModel is fetched through tensorflow_hub
    missing = tmp_path / "nope" / "file"
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights(str(missing), None, name)
    msg = str(e.value)
    assert str(missing) in msg and SOURCES[name].config_key in msg and "get it from" in msg
    assert "random" in msg


def test_missing_c3d_names_the_official_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="DavideA/c3d-pytorch"):
        resolve_weights(str(tmp_path / "c3d.pickle"), None, "c3d")


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over tmp_path/srv (stands in for the download host)."""
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(srv_dir))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield srv_dir, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_when_missing_verifies_and_publishes_atomically(tmp_path, http_dir):
    srv_dir, base = http_dir
    (srv_dir / "pca.npz").write_bytes(b"pca-bytes")
    good = hashlib.sha256(b"pca-bytes").hexdigest()
    dest = tmp_path / "weights" / "pca.npz"
    got = resolve_weights(str(dest), good, "vggish_pca", url=f"{base}/pca.npz")
    assert got == dest and dest.read_bytes() == b"pca-bytes"

    bad_dest = tmp_path / "weights" / "bad.npz"
    with pytest.raises(ValueError, match="checksum mismatch"):
        resolve_weights(str(bad_dest), "f" * 64, "vggish_pca", url=f"{base}/pca.npz")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pca.npz"]  # nothing half-written left behind


def test_download_failure_becomes_missing_file_error(tmp_path, http_dir):
    _, base = http_dir
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights(str(tmp_path / "pca.npz"), None, "vggish_pca", url=f"{base}/absent.npz")
    msg = str(e.value)
    assert "download from" in msg and "extract.audio.pca_params" in msg and "storage.googleapis.com" in msg


def test_load_state_dict_file_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.pth"):
        load_state_dict_file(tmp_path / "junk.pth", "c3d")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not contain a state dict"):
        load_state_dict_file(tmp_path / "list.pth", "c3d")
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "wrapped.pth")
    assert list(load_state_dict_file(tmp_path / "wrapped.pth", "c3d")) == ["a"]


def test_seeded_is_reproducible_and_restores_caller_rng():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    with seeded(1):
        a = torch.randn(3)
    assert torch.equal(torch.random.get_rng_state(), before)
    with seeded(1):
        b = torch.randn(3)
    assert torch.equal(a, b)


def test_extractors_refuse_a_gpu_that_is_not_there(monkeypatch):
    from extractors.c3d import build_video_extractor
    from extractors.vggish import build_audio_extractor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for build in (build_video_extractor, build_audio_extractor):
        with pytest.raises(RuntimeError, match=r"extract\.device: cuda asks for a CUDA GPU.*`extract\.device: auto`"):
            build({}, "cuda")
        assert build({"batch_size": 2}, "auto").device.type == "cpu"


def test_each_weight_file_is_hashed_once_per_extractor_build(tmp_path, monkeypatch):
    """A shard job builds both extractors: every weight file is read for its sha256 exactly once (to verify it),
    and that hash is what the store records."""
    import numpy as np

    import extractors.c3d as c3d_mod
    import extractors.vggish as vggish_mod
    import extractors.weights as weights_mod

    c3d_file, vggish_file, pca_file = tmp_path / "c3d.pickle", tmp_path / "vggish.pth", tmp_path / "pca.npz"
    c3d_file.write_bytes(b"c3d weights")
    vggish_file.write_bytes(b"vggish weights")
    np.savez(pca_file, pca_eigen_vectors=np.eye(128), pca_means=np.zeros((128, 1)))
    # Hashing is what is counted: the weight contents themselves are not needed (full C3D/VGGish state dicts
    # are ~300 MB each), so loading them is stubbed out.
    for mod, net in ((c3d_mod, c3d_mod.C3D), (vggish_mod, vggish_mod.VGGish)):
        monkeypatch.setattr(mod, "load_state_dict_file", lambda path, name: {})
        monkeypatch.setattr(net, "load_state_dict", lambda self, state, strict=True: None)
    calls = []
    real = weights_mod.sha256_file
    monkeypatch.setattr(weights_mod, "sha256_file", lambda path, *a, **k: calls.append(str(path)) or real(path, *a, **k))

    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    for pinned in (False, True):
        calls.clear()
        video = c3d_mod.build_video_extractor(
            {"weights": str(c3d_file), "sha256": digest(c3d_file) if pinned else None, "batch_size": 2}, "cpu")
        audio = vggish_mod.build_audio_extractor(
            {"weights": str(vggish_file), "sha256": digest(vggish_file) if pinned else None,
             "pca_params": str(pca_file), "pca_sha256": digest(pca_file) if pinned else None}, "cpu")
        assert sorted(calls) == sorted(map(str, (c3d_file, vggish_file, pca_file))), (pinned, calls)
        assert video.attrs["weights"]["sha256"] == digest(c3d_file)
        assert audio.attrs["weights"]["sha256"] == digest(vggish_file)
        assert audio.attrs["pca"]["sha256"] == digest(pca_file)


def test_resolve_weights_returns_the_hash_it_verified(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"w")
    good = hashlib.sha256(b"w").hexdigest()
    assert resolve_weights_sha256(str(f), None, "c3d") == (f, good)
    assert resolve_weights_sha256(str(f), good.upper(), "c3d") == (f, good)
    assert resolve_weights_sha256("random", None, "c3d") == (None, None)


def test_extractor_weights_record_the_file_or_the_seed(tmp_path):
    from extractors.weights import resolve_extractor_weights

    f = tmp_path / "w.pt"
    f.write_bytes(b"w")
    good = hashlib.sha256(b"w").hexdigest()
    w = resolve_extractor_weights(str(f), good, 7, "clip_vit_b32")
    assert (w.path, w.sha256, w.random) == (f, good, False)
    assert w.attrs == {"source": str(f), "sha256": good, "random": False, "seed": None}
    r = resolve_extractor_weights("random", None, 7, "wavcaps_htsat_bert")
    assert r.random and r.path is None and r.attrs == {"source": "random", "sha256": None, "random": True, "seed": 7}
    with pytest.raises(ValueError, match="checksum mismatch"):
        resolve_extractor_weights(str(f), "0" * 64, 0, "clip_vit_b32")
    missing = r"(?s)wavcaps_htsat_bert: weight file not found.*extract.clap.weights"
    with pytest.raises(FileNotFoundError, match=missing):
        resolve_extractor_weights(str(tmp_path / "absent.pt"), None, 0, "wavcaps_htsat_bert")


def test_reading_checkpoint_names_the_file_and_passes_other_errors(tmp_path):
    import re

    from extractors.weights import reading_checkpoint

    f = tmp_path / "bad.pt"
    message = rf"^clip: cannot read {re.escape(str(f))} as a thing \(OSError: boom\); do X$"
    with pytest.raises(ValueError, match=message), reading_checkpoint("clip", f, "a thing", (OSError,), "; do X"):
        raise OSError("boom")
    with pytest.raises(KeyError), reading_checkpoint("clip", f, "a thing", (OSError,)):
        raise KeyError("k")


def test_verify_returns_actual(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"x")
    assert verify_sha256(f, None, "c3d") == hashlib.sha256(b"x").hexdigest()


def test_cli_fetches_verifies_and_explains(tmp_path, http_dir, capsys):
    from extractors.weights import main

    srv_dir, base = http_dir
    (srv_dir / "pca.npz").write_bytes(b"pca")
    sha = hashlib.sha256(b"pca").hexdigest()
    dest = tmp_path / "w" / "pca.npz"
    assert main(["vggish_pca", str(dest), "--sha256", sha, "--url", f"{base}/pca.npz"]) == 0
    assert dest.read_bytes() == b"pca" and sha in capsys.readouterr().out
    assert main(["c3d", str(tmp_path / "c3d.pickle")]) == 1
    err = capsys.readouterr().err
    assert "c3d.pickle" in err and "extract.video.weights" in err


def test_cuda_precision_is_a_no_op_on_cpu():
    from extractors.weights import cuda_precision

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    with cuda_precision(torch.device("cpu"), allow_tf32=False, autocast="bf16"):
        x = torch.ones(2, 2) @ torch.ones(2, 2)
    assert (
        x.dtype == torch.float32
        and (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) == before
    )


def test_downloaded_files_get_umask_permissions_not_owner_only(tmp_path, http_dir):
    import os

    srv_dir, base = http_dir
    (srv_dir / "w.bin").write_bytes(b"x")
    old = os.umask(0o022)
    try:
        resolve_weights(str(tmp_path / "w" / "w.bin"), None, "vggish_pca", url=f"{base}/w.bin")
    finally:
        os.umask(old)
    assert (tmp_path / "w" / "w.bin").stat().st_mode & 0o777 == 0o644
