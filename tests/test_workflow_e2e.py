"""One real end-to-end run of a tiny demo (2 CPU cores), then Snakemake's rerun semantics on its results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

# A few seconds of video, a 1-layer TCAF and one epoch: every stage runs for real, quickly.
TINY = {
    "demo": {"n_classes": 4, "videos_per_class": 3, "duration_s": 1.5, "width": 64, "height": 48,
             "n_val_unseen": 1, "n_test_unseen": 1},
    "extract": {"shards": 2},
    "model": {"dim": 32, "pos_dim": 8, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32,
              "encoder_hidden_dim": 32, "decoder_hidden_dim": 32, "out_dim": 16},
    "train": {"epochs": 1, "batch_size": 4, "batches_per_epoch": 2, "eval_batch_size": 16},
}
TRAINING = {"train_stage1", "train_stage2", "evaluate", "report", "all"}
UPSTREAM = {"demo", "official_lists", "manifest", "extract_shard", "assemble_features", "splits", "coverage",
            "class_embeddings"}


@pytest.fixture(scope="module")
def tiny_run(workflow, tmp_path_factory, request):
    import yaml

    workdir = tmp_path_factory.mktemp("tiny_demo")
    tiny = workdir / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY))
    configfiles = [workflow.configs["config"], tiny]
    res = workflow.run(workdir, "--cores", "2", configfiles=configfiles, timeout=900)
    assert res.returncode == 0, res.stdout[-5000:] + _logs(workdir)
    report = workflow.run(workdir, "--report", "report.html", configfiles=configfiles, timeout=300)
    assert report.returncode == 0, report.stdout[-3000:]
    return workdir, configfiles


def _logs(workdir: Path) -> str:
    return "".join(f"\n==> {p} <==\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))


pytestmark = pytest.mark.slow


def test_demo_produces_metrics_table_and_report(tiny_run):
    workdir, _ = tiny_run
    metrics = json.loads((workdir / "results/evaluate/demo/cls/metrics.json").read_text())
    for key in ("S", "U", "HM", "ZSL"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["random_weight_features"] is True
    assert "RANDOM-WEIGHT" in (workdir / "results/evaluate/demo/cls/metrics.md").read_text()
    with open(workdir / "results/report/demo/cls/results.tsv", newline="") as f:
        (row,) = list(csv.DictReader(f, delimiter="\t"))
    assert row["features"].startswith("RANDOM-WEIGHT") and float(row["HM"]) == pytest.approx(metrics["HM"], abs=0.01)
    for png in ("training_curves.png", "tsne.png"):
        assert (workdir / "results/report/demo/cls" / png).read_bytes()[:4] == b"\x89PNG"
    html = (workdir / "report.html").read_text(errors="replace")
    assert "RANDOM" in html and "results.tsv" in html and "tsne.png" in html


def test_defective_demo_videos_are_reported_not_dropped(tiny_run):
    workdir, _ = tiny_run
    with open(workdir / "results/manifest/demo.tsv", newline="") as f:
        status = {r["video_id"]: r["status"] for r in csv.DictReader(f, delimiter="\t")}
    silent = [v for v in status if v.endswith("_silent")]
    broken = [v for v in status if v.endswith("_broken")]
    assert [status[v] for v in silent] == ["no_audio"] and [status[v] for v in broken] == ["unreadable"]
    coverage = (workdir / "results/splits/demo/cls/coverage.md").read_text()
    assert silent[0] in coverage and broken[0] in coverage
    with open(workdir / "results/features/demo/features.tsv", newline="") as f:
        assert set(status) == {r["video_id"] for r in csv.DictReader(f, delimiter="\t")}


def test_rerun_without_change_does_nothing(workflow, tiny_run):
    workdir, configfiles = tiny_run
    res = workflow.run(workdir, "-n", configfiles=configfiles)
    assert res.returncode == 0, res.stdout
    assert workflow.planned_jobs(res.stdout) == {}, res.stdout
    assert "Nothing to be done" in res.stdout


def test_forcerun_stage1_reruns_training_and_evaluation_only(workflow, tiny_run):
    workdir, configfiles = tiny_run
    res = workflow.run(workdir, "-n", "--forcerun", "train_stage1", configfiles=configfiles)
    assert res.returncode == 0, res.stdout
    jobs = set(workflow.planned_jobs(res.stdout))
    assert {"train_stage1", "train_stage2", "evaluate"} <= jobs <= TRAINING, jobs


def test_changing_a_training_hyperparameter_reruns_training_only(workflow, tiny_run, write_yaml):
    workdir, configfiles = tiny_run
    changed = write_yaml(workdir / "changed.yaml", {"train": {**TINY["train"], "lr": 0.002}})
    res = workflow.run(workdir, "-n", configfiles=[*configfiles, changed])
    assert res.returncode == 0, res.stdout
    jobs = set(workflow.planned_jobs(res.stdout))
    assert {"train_stage1", "train_stage2", "evaluate"} <= jobs <= TRAINING, jobs
    assert not jobs & UPSTREAM


def test_changing_an_extraction_setting_reruns_extraction(workflow, tiny_run, write_yaml):
    workdir, configfiles = tiny_run
    changed = write_yaml(workdir / "changed_extract.yaml", {"extract": {"video": {"batch_size": 2}}})
    res = workflow.run(workdir, "-n", configfiles=[*configfiles, changed])
    assert res.returncode == 0, res.stdout
    jobs = workflow.planned_jobs(res.stdout)
    assert jobs.get("extract_shard") == 2 and "demo" not in jobs and "manifest" not in jobs, jobs
