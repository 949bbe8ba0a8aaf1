"""Matching placeholder files laid out like each raw dataset to the benchmark's video names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from data_splits.build import all_split_videos, build_splits
from data_splits.matching import (
    RawIndex,
    expected_videos,
    index_raw_files,
    load_annotations,
    match_entries,
)

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "avgzsl-official"
needs_official = pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI


def listed_videos(dataset: str, kind: str, tmp_path: Path) -> dict[str, str]:
    """video id -> class name of every video the built splits use."""
    result = build_splits(dataset, OFFICIAL, tmp_path / f"splits-{dataset}-{kind}", kind)
    return {vid: row.class_name for vid, row in all_split_videos(result).items()}


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@needs_official
def test_ucf_layout_with_case_mismatches_and_missing_files(tmp_path):
    videos = listed_videos("ucf", "main", tmp_path)
    assert len(videos) == 6816
    raw = tmp_path / "raw"
    removed = {"v_Archery_g01_c01", "v_PlayingDhol_g03_c02", "v_Typing_g01_c01"}
    for vid, cls in videos.items():
        # Real layout: UCF-101/<folder = class name>/<list name>.avi, e.g. HandstandPushups/v_HandStandPushups_...
        stem = vid.lower() if cls == "Haircut" else vid  # a copy whose file names were lower-cased
        if vid not in removed:
            touch(raw / "UCF-101" / cls / f"{stem}.avi")
    touch(raw / "UCF-101" / "Biking" / "v_Biking_g01_c01.avi")  # a class the benchmark never uses
    touch(raw / "UCF-101" / "Archery" / "v_Archery_g01_c01.txt")  # wrong extension: ignored

    for kind, n in (("main", 6816), ("cls", 6394)):
        entries = expected_videos("ucf", raw, OFFICIAL, kind)
        assert len(entries) == n and len({e.video_id for e in entries}) == n
        by_id = {e.video_id: e for e in entries}
        for vid in removed & set(by_id):
            assert by_id[vid].path is None and "no file named" in by_id[vid].reason
        found = [e for e in entries if e.path is not None]
        assert len(found) == n - len(removed & set(by_id))
        assert all(e.path.stem.lower() == e.video_id.lower() for e in found)
        assert all(e.path.parent.name == e.class_name for e in found)
        assert all(e.start_s is None and e.end_s is None for e in entries)
    hs = by_id["v_HandStandPushups_g01_c01"]
    assert hs.path.parent.name == "HandstandPushups" and hs.class_name == "HandstandPushups"
    haircut = next(e for e in entries if e.class_name == "Haircut")
    assert haircut.reason == "matched ignoring case"


@needs_official
def test_vggsound_full_lists_against_an_index_and_a_nested_folder(tmp_path):
    videos = listed_videos("vggsound", "main", tmp_path)
    assert len(videos) == 93752
    ids = sorted(videos)
    # Full list against an in-memory index (93k placeholder files would take ~10 s to create here).
    paths = [Path(f"/data/vggsound/video/part{i % 7}/{vid}.mp4") for i, vid in enumerate(ids) if i % 1000]
    entries = match_entries("vggsound", [(v, videos[v]) for v in ids], RawIndex.from_paths(paths))
    assert [e.video_id for e in entries] == ids
    missing = {e.video_id for e in entries if e.path is None}
    assert missing == {ids[i] for i in range(0, len(ids), 1000)}
    assert all(e.path.name == f"{e.video_id}.mp4" for e in entries if e.path is not None)

    # A real nested folder with a sample: `<ytid>_<start:06d>.mp4` anywhere, YouTube ids case-sensitive.
    raw = tmp_path / "raw"
    sample = ids[::200]
    for i, vid in enumerate(sample):
        touch(raw / "vggsound" / f"scratch{i % 3}" / "clips" / f"{vid}.mp4")
    swapped = next(v for v in ids[1::200] if v.lower() != v.upper())
    touch(raw / f"{swapped.swapcase()}.mp4")  # another video's id in the other case: must not match
    entries = expected_videos("vggsound", raw, OFFICIAL, "main")
    found = {e.video_id for e in entries if e.path is not None}
    assert found == set(sample)
    assert len(entries) == 93752


def write_activitynet(tmp_path: Path, videos: dict[str, str], readable: dict[str, str]) -> tuple[Path, dict]:
    """Untrimmed placeholders + an annotation file whose segment k has the listed class for <ytid>_<k>."""
    raw = tmp_path / "raw"
    database: dict[str, dict] = {}
    for vid, cls in videos.items():
        ytid, _, k = vid.rpartition("_")
        anns = database.setdefault(ytid, {"duration": 300.0, "subset": "training", "annotations": []})["annotations"]
        while len(anns) <= int(k):
            anns.append({"label": "Placeholder", "segment": [0.0, 1.0]})
        anns[int(k)] = {"label": readable[cls], "segment": [2.5 * int(k) + 0.25, 2.5 * int(k) + 2.0]}
    for i, ytid in enumerate(sorted(database)):
        # Both naming styles of the ActivityNet downloads: <ytid>.mp4 and v_<ytid>.mkv
        touch(raw / "untrimmed" / (f"v_{ytid}.mkv" if i % 5 == 0 else f"{ytid}.mp4"))
    return raw, {"version": "VERSION 1.3", "database": database}


@needs_official
def test_activitynet_segments_from_untrimmed_videos_and_trimmed_files(tmp_path):
    videos = listed_videos("activitynet", "main", tmp_path)
    assert len(videos) == 20348
    with (OFFICIAL / "ActivityNet/class-split/activitynet_w2v_class_names.csv").open() as fh:
        readable = {r["original"]: r["manual"] for r in csv.DictReader(fh)}
    raw, annotations = write_activitynet(tmp_path, videos, readable)
    db = annotations["database"]
    assert len(db) == 13453
    ids = sorted(videos)
    # Already-trimmed copies of some segments (v1-2-trim/<Class>/<ytid>_<k>.mp4) are used as they are.
    trimmed = set(ids[:50])
    for vid in trimmed:
        touch(raw / "v1-2-trim" / videos[vid] / f"{vid}.mp4")
    # Failure cases, each must be reported, never crash.
    wrong_label, no_annotation = ids[100], ids[200]
    ytid_wrong, _, k_wrong = wrong_label.rpartition("_")
    db[ytid_wrong]["annotations"][int(k_wrong)]["label"] = "Surfing" if videos[wrong_label] != "Surfing" else "Sumo"
    db.pop(no_annotation.rpartition("_")[0])
    ann_path = tmp_path / "activity_net.v1-3.min.json"
    ann_path.write_text(json.dumps(annotations))

    entries = expected_videos("activitynet", raw, OFFICIAL, "main", annotations=ann_path)
    by_id = {e.video_id: e for e in entries}
    assert sorted(by_id) == ids
    for vid in trimmed:
        assert by_id[vid].path.name == f"{vid}.mp4" and by_id[vid].start_s is None
    assert by_id[wrong_label].path is None and "expected" in by_id[wrong_label].reason
    assert by_id[no_annotation].path is None and "no segment" in by_id[no_annotation].reason
    failed = trimmed | {wrong_label} | {v for v in ids if v.rpartition("_")[0] == no_annotation.rpartition("_")[0]}
    for vid in set(ids) - failed:
        e = by_id[vid]
        ytid, _, k = vid.rpartition("_")
        assert e.path.stem in (ytid, f"v_{ytid}"), vid
        assert (e.start_s, e.end_s) == (2.5 * int(k) + 0.25, 2.5 * int(k) + 2.0)
    cls_entries = expected_videos("activitynet", raw, OFFICIAL, "cls", annotations=annotations)
    assert len(cls_entries) == 20201


@needs_official
def test_activitynet_untrimmed_without_annotations_is_reported(tmp_path):
    touch(tmp_path / "raw" / "1o9RGnujlkI.mp4")
    entries = expected_videos("activitynet", tmp_path / "raw", OFFICIAL, "main")
    e = next(e for e in entries if e.video_id == "1o9RGnujlkI_0")
    assert e.path is None and "raw_videos.annotations" in e.reason


def test_index_and_annotation_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="raw_videos.dir"):
        index_raw_files(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="raw_videos.annotations"):
        load_annotations(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="database"):
        load_annotations(tmp_path / "bad.json")


def test_duplicate_names_resolve_deterministically(tmp_path):
    for sub in ("v1-3-trim", "v1-2-trim"):
        touch(tmp_path / sub / "Sumo" / "abc_0.mp4")
    (entry,) = match_entries("activitynet", [("abc_0", "Sumo")], index_raw_files(tmp_path))
    assert entry.path.parent.parent.name == "v1-2-trim"
    assert f"2 files share this name; used {entry.path}, not {tmp_path / 'v1-3-trim' / 'Sumo' / 'abc_0.mp4'}" in entry.reason
