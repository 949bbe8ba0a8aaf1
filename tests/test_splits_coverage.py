"""Coverage report: missing videos never crash the build and show up, by name, per split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from data_splits.build import build_splits
from data_splits.common import SPLIT_NAMES
from data_splits.coverage import CoverageError, compute_coverage, coverage_report
from data_splits.io import read_split
from data_splits.matching import expected_videos

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "avgzsl-official"
needs_official = pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI
MANIFEST_COLUMNS = ["video_id", "path", "start_s", "end_s", "class_name", "status", "reason", "duration_s", "fps",
                    "width", "height", "has_audio", "has_video"]
SIDECAR_COLUMNS = ["video_id", "status", "reason", "n_audio", "n_video", "duration_s", "class_name"]


def write_tsv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, delimiter="\t", restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def ucf(tmp_path_factory, official_lists):
    """UCF cls splits + a raw folder missing three listed videos + manifest and feature tables."""
    root = tmp_path_factory.mktemp("cov")
    split_dir = root / "splits"
    build_splits("ucf", OFFICIAL, split_dir, "cls")
    removed = {"v_Archery_g01_c01", "v_ShavingBeard_g01_c01", "v_Haircut_g02_c03"}
    raw = root / "raw"
    for row in read_split(split_dir / "stage_2_train.csv") + read_split(split_dir / "stage_2_test_seen.csv") + \
            read_split(split_dir / "stage_2_test_unseen.csv"):
        if row.video_id not in removed:
            (raw / row.class_name).mkdir(parents=True, exist_ok=True)
            (raw / row.class_name / f"{row.video_id}.avi").touch()
    entries = expected_videos("ucf", raw, OFFICIAL, "cls")
    unreadable = "v_Archery_g01_c03"
    manifest = [
        {"video_id": e.video_id, "path": e.path or "", "class_name": e.class_name,
         "status": "missing" if e.path is None else ("unreadable" if e.video_id == unreadable else "ok"),
         "reason": e.reason if e.path is None else ("moov atom not found" if e.video_id == unreadable else "")}
        for e in entries
    ]
    man_path = write_tsv(root / "manifest.tsv", MANIFEST_COLUMNS, manifest)
    broken, not_extracted = "v_Archery_g01_c04", "v_Archery_g01_c05"
    sidecar = [
        {"video_id": m["video_id"], "status": "broken_stream" if m["video_id"] == broken else "ok",
         "reason": "decode error at 3.2 s" if m["video_id"] == broken else ""}
        for m in manifest if m["status"] == "ok" and m["video_id"] != not_extracted
    ]
    side_path = write_tsv(root / "features.tsv", SIDECAR_COLUMNS, sidecar)
    return {"split_dir": split_dir, "manifest": man_path, "sidecar": side_path, "removed": removed,
            "unreadable": unreadable, "broken": broken, "not_extracted": not_extracted, "root": root}


@needs_official
def test_coverage_from_manifest_only(ucf):
    report = compute_coverage(ucf["split_dir"], manifest=ucf["manifest"])
    assert report.basis == "manifest"
    train = report.splits["stage_1_train"]  # holds v_Archery_g01_c01 (missing) and the unreadable one
    assert (train.listed, train.missing, train.failed) == (3174, 1, 1)
    assert train.missing_ids == ["v_Archery_g01_c01"]
    assert train.failed_ids == {ucf["unreadable"]: "unreadable: moov atom not found"}
    assert train.ok == 3172 and train.found == 3173
    unseen = report.splits["stage_2_test_unseen"]
    assert (unseen.listed, unseen.missing_ids) == (845, ["v_ShavingBeard_g01_c01"])
    val_unseen = report.splits["stage_1_val_unseen"]
    assert val_unseen.missing_ids == ["v_Haircut_g02_c03"]
    assert report.splits["stage_2_train"].missing == 2  # union of the stage-1 splits


@needs_official
def test_coverage_with_feature_table_and_written_files(ucf):
    out = ucf["root"] / "report"
    report = coverage_report(ucf["split_dir"], out, manifest=ucf["manifest"], features_table=ucf["sidecar"],
                             min_coverage=0.99)
    train = report.splits["stage_1_train"]
    assert report.basis == "features"
    assert set(train.failed_ids) == {ucf["unreadable"], ucf["broken"], ucf["not_extracted"]}
    assert train.failed_ids[ucf["broken"]] == "broken_stream: decode error at 3.2 s"
    assert train.failed_ids[ucf["not_extracted"]].startswith("not_extracted")
    assert train.ok == 3174 - 4
    data = json.loads((out / "coverage.json").read_text())
    assert data["splits"]["stage_1_train"]["missing_ids"] == ["v_Archery_g01_c01"]
    md = (out / "coverage.md").read_text()
    assert "| stage_1_train | 3174 | 3173 | 3170 | 1 | 3 |" in md and "v_ShavingBeard_g01_c01" in md


@needs_official
def test_min_coverage_failure_names_splits_and_fix(ucf):
    out = ucf["root"] / "strict"
    with pytest.raises(CoverageError) as err:
        coverage_report(ucf["split_dir"], out, manifest=ucf["manifest"], features_table=ucf["sidecar"],
                        min_coverage=0.9999)
    msg = str(err.value)
    assert "stage_1_train: 3170/3174" in msg and "stage_2_test_unseen: 844/845" in msg
    assert "stage_1_val_seen" not in msg  # fully covered
    assert "lower min_coverage" in msg and "coverage.md" in msg
    assert (out / "coverage.json").is_file()  # written before failing, so the user can read the names


def test_coverage_needs_a_status_table(tmp_path):
    with pytest.raises(ValueError, match="manifest"):
        compute_coverage(tmp_path)


def test_videos_absent_everywhere_count_as_missing(tmp_path):
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    for s in SPLIT_NAMES:
        (split_dir / f"{s}.csv").write_text("video_id,class_name,class_id\na,A,0\nb,B,1\n")
    side = write_tsv(tmp_path / "f.tsv", SIDECAR_COLUMNS, [{"video_id": "a", "status": "ok"}])
    report = coverage_report(split_dir, tmp_path / "out", features_table=side, min_coverage=0.5)
    assert all(c.missing_ids == ["b"] and c.coverage == 0.5 for c in report.splits.values())
    with pytest.raises(CoverageError, match="6 split"):
        coverage_report(split_dir, tmp_path / "out", features_table=side, min_coverage=0.6)
    with pytest.raises(ValueError, match="fraction"):
        coverage_report(split_dir, tmp_path / "out", features_table=side, min_coverage=60)
