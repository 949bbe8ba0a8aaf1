"""Importing the benchmark's released features (TCAF pickles, AVCA h5 files) into a feature store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFICIAL
from test_released_fixtures import (
    averaged_features_of,
    features_of,
    official_mapping,
    read_pickle,
    write_pickle,
    write_released,
)

from data_splits.build import build_splits
from data_splits.coverage import compute_coverage
from data_splits.io import read_split
from extractors.released import READ_SPLITS, ReleasedFeaturesError, import_released, locate_released
from extractors.store import FeatureStore, IncompleteStoreError

needs_official = pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI


def _splits(tmp_path_factory, dataset: str) -> Path:
    out = tmp_path_factory.mktemp(f"{dataset}-splits")
    build_splits(dataset, OFFICIAL, out, "cls")
    return out


@pytest.fixture(scope="module")
def ucf_splits(tmp_path_factory, official_lists) -> Path:
    return _splits(tmp_path_factory, "ucf")


@pytest.fixture(scope="module")
def ucf_tcaf(tmp_path_factory, ucf_splits) -> tuple[Path, Path]:
    """UCF released the way the official script writes it (cls_features_no_averaged), 3 videos per file,
    imported; returns (dataset folder, store)."""
    root = tmp_path_factory.mktemp("ucf-released")
    folder = write_released(root, OFFICIAL, "UCF")
    store = root / "features.zarr"
    import_released(root, store, dataset="ucf", splits_dir=ucf_splits)
    return folder, store


def _expected_ids(official_folder: str, per_class: int = 3) -> dict[str, str]:
    """Video id -> class file stem over the folders the import reads."""
    out = {}
    for key, videos in official_mapping(OFFICIAL, official_folder).items():
        *_, split, name = key.split("/")
        if split in READ_SPLITS:
            for v in videos[:per_class]:
                out[v] = name.rsplit(".", 1)[0]
    return out


# ---------------------------------------------------------------------------------------------- TCAF


@needs_official
def test_tcaf_layout_imports_every_video_once_with_its_features(ucf_tcaf):
    _, store_path = ucf_tcaf
    store = FeatureStore(store_path)
    expected = _expected_ids("UCF")
    assert sorted(store.video_ids) == sorted(expected)  # repeats across split folders stored once
    assert all(not v.startswith("b'") for v in store.video_ids)  # bytes names decoded, not str()-ed
    audio_v, audio_off = store.read("audio")
    video_v, video_off = store.read("video")
    assert audio_v.dtype == np.uint8 and video_v.dtype == np.float32
    for i in (0, len(store.video_ids) // 2, len(store.video_ids) - 1):
        vid = store.video_ids[i]
        want_a, want_v = features_of(vid)
        np.testing.assert_array_equal(audio_v[audio_off[i]:audio_off[i + 1]], want_a)
        np.testing.assert_array_equal(video_v[video_off[i]:video_off[i + 1]], want_v)
    rows = {r["video_id"]: r for r in store.table}
    # class names are all_class.txt's (the list's HandStandPushups is HandstandPushups there)
    handstand = [r for r in rows.values() if r["path"].endswith("/HandStandPushups.pkl")]
    assert handstand and {r["class_name"] for r in handstand} == {"HandstandPushups"}
    assert {r["status"] for r in rows.values()} == {"ok"}
    attrs = store.attrs
    assert attrs["source"]["kind"] == "released" and attrs["source"]["layout"] == "tcaf"
    assert attrs["audio"]["weights"]["random"] is False
    assert Path(attrs["source"]["dir"]).name == "cls_features_no_averaged"


@needs_official
def test_ucf_extra_test_unseen_classes_are_reported_not_rejected(tmp_path, ucf_splits):
    # UCF's stage_2_test_unseen folder has 9 class files, of which the cls lists use 6 (the official
    # loader skips BandMarching, BrushingTeeth and Typing): they are classes of all_class.txt, so no error.
    root = tmp_path / "r"
    write_released(root, OFFICIAL, "UCF", per_class=1, keep=lambda split, cls: split == "stage_2_test_unseen")
    result = import_released(root, tmp_path / "s.zarr", dataset="ucf", splits_dir=ucf_splits)
    assert sorted(result.splits["stage_2_test_unseen"].extra_classes) == ["BandMarching", "BrushingTeeth", "Typing"]
    assert result.splits["stage_2_test_unseen"].class_files == 9
    assert result.splits["stage_2_test_unseen"].not_listed == 3


@needs_official
def test_non_averaged_spelling_and_the_folder_itself_are_found(tmp_path, ucf_splits):
    write_released(tmp_path, OFFICIAL, "UCF", method="cls_features_non_averaged", per_class=1,
                   keep=lambda split, cls: cls == "Archery")
    method_dir = tmp_path / "avgzsl_benchmark_non_averaged_datasets/UCF/features/cls_features_non_averaged"
    for given in (tmp_path, method_dir.parents[1], method_dir):
        assert locate_released(given, "ucf").root == method_dir
    assert locate_released(tmp_path, "ucf").layout == "tcaf"


@needs_official
def test_coverage_counts_each_split_against_the_official_lists(ucf_tcaf, ucf_splits):
    _, store_path = ucf_tcaf
    report = compute_coverage(ucf_splits, features_table=store_path.with_suffix(".tsv"))
    expected = _expected_ids("UCF")
    for split in ("stage_1_train", "stage_2_test_seen", "stage_2_test_unseen"):
        listed = [r.video_id for r in read_split(ucf_splits / f"{split}.csv")]
        cov = report.splits[split]
        assert cov.listed == len(listed)
        assert cov.ok == sum(v in expected for v in listed) > 0
        assert cov.missing == cov.listed - cov.ok


@pytest.fixture(scope="module")
def anet_splits(tmp_path_factory, official_lists) -> Path:
    return _splits(tmp_path_factory, "activitynet")


@needs_official
def test_activitynet_unsorted_lists_keep_release_order(tmp_path, anet_splits):
    mapping = official_mapping(OFFICIAL, "ActivityNet")
    unsorted = [k for k, v in mapping.items() if v != sorted(v) and "/stage_1_train/" in k]
    assert unsorted, "the official ActivityNet lists have unsorted files"
    cls = unsorted[0].rsplit("/", 1)[1].rsplit(".", 1)[0]
    write_released(tmp_path, OFFICIAL, "ActivityNet", per_class=None, keep=lambda split, c: c == cls)
    result = import_released(tmp_path, tmp_path / "s.zarr", dataset="activitynet", splits_dir=anet_splits)
    store = FeatureStore(tmp_path / "s.zarr")
    ids = list(store.video_ids)
    # the store is in release order, each video with its own features, whatever the list's order
    assert ids[: len(mapping[unsorted[0]])] == mapping[unsorted[0]]
    video_v, off = store.read("video")
    for i in range(0, len(ids), 7):
        np.testing.assert_array_equal(video_v[off[i]:off[i + 1]], features_of(ids[i])[1])
    assert result.n_videos == len(ids)


# ---------------------------------------------------------------------------------------------- AVCA


@needs_official
def test_avca_layout_stores_one_averaged_row_per_video(tmp_path, ucf_splits):
    write_released(tmp_path, OFFICIAL, "UCF", layout="avca", per_class=2,
                   keep=lambda split, cls: cls in ("Archery", "BandMarching", "Typing"))
    src = locate_released(tmp_path, "ucf")
    assert src.layout == "avca" and src.root.name == "cls_features"
    import_released(tmp_path, tmp_path / "s.zarr", dataset="ucf", splits_dir=ucf_splits)
    store = FeatureStore(tmp_path / "s.zarr")
    audio_v, a_off = store.read("audio")
    video_v, v_off = store.read("video")
    assert set(np.diff(a_off)) == {1} and set(np.diff(v_off)) == {1}
    assert audio_v.dtype == np.float32  # averaged codes are fractional
    assert store.attrs["audio"]["value_scale"] == 255.0 and store.attrs["source"]["averaged"] is True
    for i, vid in enumerate(store.video_ids):
        want_a, want_v = averaged_features_of(vid)
        np.testing.assert_allclose(audio_v[i], want_a, rtol=1e-6)
        np.testing.assert_array_equal(video_v[i], want_v)


@needs_official
def test_a_folder_with_both_layouts_needs_a_choice(tmp_path, ucf_splits):
    one = lambda split, cls: cls == "Archery"
    write_released(tmp_path, OFFICIAL, "UCF", layout="avca", per_class=1, keep=one)
    write_released(tmp_path, OFFICIAL, "UCF", layout="tcaf", per_class=1, keep=one)
    with pytest.raises(ReleasedFeaturesError, match="both TCAF .* and AVCA"):
        locate_released(tmp_path, "ucf")
    assert locate_released(tmp_path, "ucf", "avca").layout == "avca"


# ---------------------------------------------------------------------------------------------- errors


@pytest.fixture
def small(tmp_path, ucf_splits) -> tuple[Path, Path]:
    """Archery and BalanceBeam (stage_1_train and the seen test folder), 3 videos each; (method dir, splits)."""
    write_released(tmp_path, OFFICIAL, "UCF", keep=lambda split, cls: cls in ("Archery", "BalanceBeam"))
    return locate_released(tmp_path, "ucf").root, ucf_splits


def _import(method_dir: Path, splits: Path) -> Path:
    store = method_dir.parent / "out.zarr"
    import_released(method_dir, store, dataset="ucf", splits_dir=splits)
    return store


def _assert_no_store(store: Path) -> None:
    assert not store.exists()
    assert not list(store.parent.glob(f"{store.name}.tmp-*"))
    with pytest.raises((FileNotFoundError, IncompleteStoreError)):
        FeatureStore(store)


@needs_official
def test_audio_and_video_listing_other_videos_or_order_is_an_error(small):
    method_dir, splits = small
    video = method_dir / "video/stage_1_train/Archery.pkl"
    blob = read_pickle(video)
    blob["video_names"] = blob["video_names"][::-1]
    blob["features"] = blob["features"][::-1]
    write_pickle(video, blob)
    with pytest.raises(ReleasedFeaturesError, match=r"Archery\.pkl and .*Archery\.pkl disagree: the same videos in another order"):
        _import(method_dir, splits)
    _assert_no_store(method_dir.parent / "out.zarr")
    blob["video_names"][0] = np.bytes_(b"v_Archery_g99_c99")
    write_pickle(video, blob)
    with pytest.raises(ReleasedFeaturesError, match="different videos"):
        _import(method_dir, splits)


@needs_official
def test_a_missing_modality_file_is_an_error(small):
    method_dir, splits = small
    (method_dir / "video/stage_1_train/BalanceBeam.pkl").unlink()
    with pytest.raises(ReleasedFeaturesError, match=r"audio/stage_1_train/BalanceBeam\.pkl has no video counterpart"):
        _import(method_dir, splits)


@needs_official
def test_a_class_file_the_lists_do_not_know_is_an_error(small):
    method_dir, splits = small
    for m in ("audio", "video"):
        shutil.copy(method_dir / m / "stage_1_train/Archery.pkl", method_dir / m / "stage_1_train/Archer.pkl")
    with pytest.raises(ReleasedFeaturesError, match=r"Archer\.pkl: class 'Archer' is not in the benchmark's all_class.txt"):
        _import(method_dir, splits)


@needs_official
def test_case_rules_follow_the_official_loader(tmp_path, small):
    method_dir, splits = small
    # UCF names are matched lower-cased, as the official loader does: archery.pkl is Archery
    for m in ("audio", "video"):
        os.rename(method_dir / m / "stage_1_train/Archery.pkl", method_dir / m / "stage_1_train/archery.pkl")
    store = FeatureStore(_import(method_dir, splits))
    assert {r["class_name"] for r in store.table} == {"Archery", "BalanceBeam"}
    # VGGSound names are matched exactly
    vgg_splits = _splits_vggsound(tmp_path)
    row = read_split(vgg_splits / "stage_1_val_seen.csv")[0]
    root = tmp_path / "vgg/VGGSound/features/cls_features_non_averaged"
    for name in (row.class_name, row.class_name.capitalize()):
        for m, pick in (("audio", 0), ("video", 1)):
            write_pickle(root / m / "stage_1_val_seen" / f"{name}.pkl",
                         {"features": [features_of(row.video_id)[pick]], "video_names": [np.bytes_(row.video_id.encode())]})
        if name == row.class_name:  # the exact name imports
            import_released(tmp_path / "vgg", tmp_path / "v.zarr", dataset="vggsound", splits_dir=vgg_splits)
            assert FeatureStore(tmp_path / "v.zarr").table[0]["class_name"] == row.class_name
            for m in ("audio", "video"):
                (root / m / "stage_1_val_seen" / f"{name}.pkl").unlink()
    with pytest.raises(ReleasedFeaturesError, match=f"the list spells it '{row.class_name}'; VGGSound names match exactly"):
        import_released(tmp_path / "vgg", tmp_path / "v2.zarr", dataset="vggsound", splits_dir=vgg_splits)


def _splits_vggsound(tmp_path: Path) -> Path:
    out = tmp_path / "vgg-splits"
    build_splits("vggsound", OFFICIAL, out, "cls")
    return out


@needs_official
def test_a_video_in_two_classes_is_an_error(small):
    method_dir, splits = small
    for m, pick in (("audio", 0), ("video", 1)):
        path = method_dir / m / "stage_1_train/BalanceBeam.pkl"
        blob = read_pickle(path)
        blob["video_names"][1] = np.bytes_(b"v_Archery_g01_c01")
        blob["features"][1] = features_of("v_Archery_g01_c01")[pick]
        write_pickle(path, blob)
    with pytest.raises(ReleasedFeaturesError, match=r"'v_Archery_g01_c01' is in two classes: .*Archery\.pkl and .*BalanceBeam\.pkl"):
        _import(method_dir, splits)


@needs_official
def test_a_repeated_video_with_other_features_is_an_error(small):
    method_dir, splits = small
    seen_test = method_dir / "video/stage_2_test_seen/Archery.pkl"
    assert seen_test.exists()
    train_ids = [bytes(n).decode() for n in read_pickle(method_dir / "video/stage_1_train/Archery.pkl")["video_names"]]
    blob = read_pickle(seen_test)
    # the seen test folder repeats no stage-1 video in the release; make one repeat with changed features
    blob["video_names"][0] = np.bytes_(train_ids[0].encode())
    blob["features"][0] = features_of(train_ids[0])[1] + 1.0
    write_pickle(seen_test, blob)
    audio = read_pickle(method_dir / "audio/stage_2_test_seen/Archery.pkl")
    audio["video_names"][0] = np.bytes_(train_ids[0].encode())
    audio["features"][0] = features_of(train_ids[0])[0]
    write_pickle(method_dir / "audio/stage_2_test_seen/Archery.pkl", audio)
    with pytest.raises(ReleasedFeaturesError, match=f"'{train_ids[0]}' has different features in"):
        _import(method_dir, splits)


@needs_official
def test_a_pickle_that_would_run_code_is_refused_before_it_runs(small, tmp_path):
    method_dir, splits = small
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    write_pickle(method_dir / "audio/stage_1_train/Archery.pkl", {"features": [Exploit()], "video_names": [b"x"]})
    with pytest.raises(ReleasedFeaturesError, match=r"Archery\.pkl: the pickle asks for posix\.system.*refusing"):
        _import(method_dir, splits)
    assert not marker.exists()
    _assert_no_store(method_dir.parent / "out.zarr")


@needs_official
def test_malformed_files_name_the_file(small):
    method_dir, splits = small
    path = method_dir / "audio/stage_1_train/Archery.pkl"
    blob = read_pickle(path)
    write_pickle(path, {**blob, "features": [np.zeros((3, 64), np.uint8)] * len(blob["features"])})
    with pytest.raises(ReleasedFeaturesError, match=r"Archery\.pkl: video 0 has audio features of shape \(3, 64\)"):
        _import(method_dir, splits)
    path.write_bytes(b"\x80\x04truncated")
    with pytest.raises(ReleasedFeaturesError, match=r"Archery\.pkl: not a readable pickle"):
        _import(method_dir, splits)
    write_pickle(path, [1, 2])
    with pytest.raises(ReleasedFeaturesError, match="expected a dict with 'features' and 'video_names'"):
        _import(method_dir, splits)


def test_a_folder_without_released_files_is_an_error(tmp_path):
    with pytest.raises(ReleasedFeaturesError, match="is not a folder"):
        locate_released(tmp_path / "absent", "ucf")
    with pytest.raises(ReleasedFeaturesError, match=r"no released features under .*Unpack the release"):
        locate_released(tmp_path, "ucf")
