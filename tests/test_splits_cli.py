"""The command line runs the split stages end to end on the official lists."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from data_splits.cli import main
from data_splits.io import read_classes, read_split

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "avgzsl-official"
needs_official = pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI


@needs_official
def test_cli_official_build_match_coverage_embed(tmp_path, capsys):
    lists, splits = tmp_path / "lists", tmp_path / "splits"
    assert main(["official", "--dataset", "ucf", "--dest", str(lists), "--local-dir", str(OFFICIAL)]) == 0
    assert main(["build", "--dataset", "ucf", "--official-dir", str(lists), "--split-kind", "cls",
                 "--out", str(splits)]) == 0
    assert "stage_2_test_unseen: 845" in capsys.readouterr().out
    raw = tmp_path / "raw"
    listed = read_split(splits / "stage_1_val_seen.csv")
    for row in listed:
        (raw / row.class_name).mkdir(parents=True, exist_ok=True)
        (raw / row.class_name / f"{row.video_id}.avi").touch()
    work = tmp_path / "work.tsv"
    assert main(["match", "--dataset", "ucf", "--official-dir", str(lists), "--raw-dir", str(raw),
                 "--out", str(work)]) == 0
    with work.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 6394 and sum(bool(r["path"]) for r in rows) == len(listed)
    manifest = tmp_path / "manifest.tsv"
    with manifest.open("w") as fh:
        fh.write("video_id\tstatus\treason\n")
        fh.writelines(f"{r['video_id']}\t{'ok' if r['path'] else 'missing'}\t{r['reason']}\n" for r in rows)
    assert main(["coverage", "--split-dir", str(splits), "--manifest", str(manifest)]) == 0
    assert "stage_1_val_seen: 353/353" in capsys.readouterr().out
    assert main(["coverage", "--split-dir", str(splits), "--manifest", str(manifest), "--min-coverage", "0.5"]) == 1
    assert "below min_coverage=50.0%" in capsys.readouterr().err
    out = tmp_path / "ucf.npz"
    assert main(["embed", "--classes", str(splits / "classes.tsv"), "--out", str(out), "--backend", "official",
                 "--dataset", "ucf", "--official-dir", str(lists)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file() and len(read_classes(splits / "classes.tsv")) == 101


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["official", "--dataset", "demo", "--dest", str(tmp_path), "--no-download"]) == 1
    assert "official.local_dir" in capsys.readouterr().err
