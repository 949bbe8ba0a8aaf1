"""One real end-to-end run of a tiny demo (2 CPU cores), then Snakemake's rerun semantics on its results.

What the run must deliver, beyond finishing: the metrics are consistent (HM is the harmonic mean of S and U)
and reproducible (training forced again with the same seed gives the same history and metrics); the
training loss falls over stage 1; every report file has its content (the table carries metrics.json's
numbers, the figures are real non-blank PNGs, and the HTML report embeds all three).

The run is the session's tiny demo run (tests/conftest.py, fixture tiny_demo_run), which the prediction and
SLURM tests start from too.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DEMO as TINY
from conftest import workflow_logs as _logs

# predict_rank: the demo's target ranks its held-out videos with the trained model
TRAINING = {"train_stage1", "train_stage2", "evaluate", "training_curves", "tsne", "compare", "predict_rank",
            "all"}
UPSTREAM = {"demo", "official_lists", "manifest", "extract_shard", "assemble_features", "splits", "coverage",
            "class_embeddings"}
METRICS = "results/evaluate/demo/cls/tcaf/metrics.json"
REPORT = Path("results/report/demo/cls")
STAGE1, STAGE2 = Path("results/train/demo/cls/tcaf/stage1"), Path("results/train/demo/cls/tcaf/stage2")
# history.csv columns that measure time, not training
TIMING_COLUMNS = {"train_s", "eval_s", "time_s"}


@pytest.fixture(scope="module")
def tiny_run(tiny_demo_run):
    return tiny_demo_run


@pytest.fixture(scope="module")
def html_report(workflow, tiny_run, tmp_path_factory):
    """Snakemake's HTML report of the run, written outside the shared run's folder."""
    workdir, configfiles = tiny_run
    report = tmp_path_factory.mktemp("tiny_demo_report") / "report.html"
    res = workflow.run(workdir, "--report", str(report), configfiles=configfiles, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    return report


@pytest.fixture(scope="module")
def forced_rerun(workflow, tiny_run, tmp_path_factory):
    """A copy of the finished run (Snakemake's metadata included) with training forced again up to the metrics.

    A copy, so that the rerun-semantics tests below still see the original run untouched.
    """
    workdir, configfiles = tiny_run
    copy = tmp_path_factory.mktemp("tiny_demo_rerun") / "run"
    shutil.copytree(workdir, copy, symlinks=True)
    # mtime only: nothing upstream of training may run again, whatever else differs between the two runs
    res = workflow.run(copy, "--cores", "2", METRICS, "--forcerun", "train_stage1", "--rerun-triggers", "mtime",
                       configfiles=configfiles, timeout=600)
    assert res.returncode == 0, res.stdout[-5000:] + _logs(copy)
    return copy, res.stdout


def _rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def _png(path: Path) -> np.ndarray:
    """The image as an array, after checking that the file is a PNG."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


pytestmark = pytest.mark.slow


def test_demo_produces_metrics_table_and_report(tiny_run, html_report):
    workdir, _ = tiny_run
    metrics = json.loads((workdir / METRICS).read_text())
    for key in ("S", "U", "HM", "ZSL"):
        assert 0.0 <= metrics[key] <= 100.0
    s, u = metrics["S"], metrics["U"]
    assert metrics["HM"] == pytest.approx(2 * s * u / (s + u) if s + u else 0.0, abs=1e-9)
    assert metrics["n_seeds"] == 1 and metrics["per_seed"][0]["seed"] == 42
    assert metrics["random_weight_features"] is True
    md = (workdir / "results/evaluate/demo/cls/tcaf/metrics.md").read_text()
    assert "RANDOM-WEIGHT" in md
    assert f"| 1 | {s:.2f} | {u:.2f} | {metrics['HM']:.2f} | {metrics['ZSL']:.2f} | {metrics['bias']:.2f} |" in md

    # The comparison table: the compare rule's columns, one row per method in the order of 'models', each
    # with its own metrics.json's numbers.
    from model.compare import COLUMNS

    with open(workdir / REPORT / "results.tsv", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS
    assert [r["method"] for r in rows] == ["tcaf", "avca"]
    table = (workdir / REPORT / "results.md").read_text()
    for row in rows:
        own = json.loads((workdir / f"results/evaluate/demo/cls/{row['method']}/metrics.json").read_text())
        assert own["method"] == row["method"]
        assert (row["dataset"], row["split_kind"], row["preset"], row["n_seeds"]) == ("demo", "cls", "paper", "1")
        for key in ("S", "U", "HM", "ZSL"):
            assert row[key] == f"{own[key]:.2f}", (row["method"], key)
        assert row["features"].startswith("RANDOM-WEIGHT") and row["published_HM"] == ""  # none for the demo
        title = {"tcaf": "TCAF", "avca": "AVCA"}[row["method"]]
        assert f"| {title} | VGGish + C3D | paper | 1 | {own['S']:.2f} | {own['U']:.2f} |" in table
        assert row["feature_set"] == own["features"] == "vggish_c3d"

    # The figures: real PNGs of a plotted size, not blank: dark ink (axes, text) and coloured marks (curves,
    # points; an empty axes frame has none). Measured on this run: ~1.5-2 % dark and ~0.15 % coloured pixels.
    for name in ("tcaf/training_curves.png", "tcaf/tsne.png", "avca/training_curves.png", "results.png"):
        path = workdir / REPORT / name
        assert path.stat().st_size > 10_000, f"{name}: {path.stat().st_size} bytes"
        img = _png(path).astype(int)
        assert img.shape[0] >= 200 and img.shape[1] >= 200, (name, img.shape)
        assert (img.min(axis=2) < 128).mean() > 0.005, f"{name} has (nearly) no dark pixels"
        assert (img.max(axis=2) - img.min(axis=2) > 60).mean() > 0.0005, f"{name} has no coloured marks"

    # The HTML report embeds every report file byte for byte (base64), and says the features are random.
    html = html_report.read_text(errors="replace")
    assert "RANDOM" in html
    for name in ("results.tsv", "results.png", "tcaf/training_curves.png", "tcaf/tsne.png"):
        assert base64.b64encode((workdir / REPORT / name).read_bytes()).decode() in html, f"{name} not embedded"


def test_changing_one_methods_settings_reruns_that_method_only(workflow, tiny_run, tmp_path):
    import yaml

    workdir, configfiles = tiny_run
    changed = {**TINY, "methods": {"avca": {**TINY["methods"]["avca"],
                                            "train": {**TINY["methods"]["avca"]["train"], "lr": 0.001}}}}
    override = tmp_path / "changed.yaml"
    override.write_text(yaml.safe_dump(changed))
    res = workflow.run(workdir, "-n", configfiles=[configfiles[0], override])
    assert res.returncode == 0, res.stdout[-3000:]
    jobs = workflow.planned_jobs(res.stdout)
    assert jobs == {"train_stage1": 1, "train_stage2": 1, "evaluate": 1, "training_curves": 1, "compare": 1,
                    "all": 1}, jobs
    assert "results/train/demo/cls/avca/stage1/best.pt" in res.stdout
    assert "results/train/demo/cls/tcaf/" not in res.stdout


def test_training_history_is_complete_and_the_loss_falls(tiny_run):
    from model.train import HISTORY_COLUMNS

    workdir, _ = tiny_run
    epochs = TINY["train"]["epochs"]
    with open(workdir / STAGE1 / "history.csv", newline="") as f:
        reader = csv.DictReader(f)
        stage1 = list(reader)
    assert tuple(reader.fieldnames) == HISTORY_COLUMNS
    assert [int(r["epoch"]) for r in stage1] == list(range(epochs))
    assert {r["stage"] for r in stage1} == {"stage1"} and {r["seed"] for r in stage1} == {"42"}
    loss = [float(r["loss"]) for r in stage1]
    assert all(np.isfinite(loss)) and all(v > 0 for v in loss)
    assert loss[-1] < 0.85 * loss[0], f"stage-1 training loss did not fall: {loss}"
    # Stage 2 trains for stage 1's best epoch count (model selection on stage_1_val).
    best_epoch = json.loads((workdir / STAGE1 / "stage1.json").read_text())["best_epoch"]["42"]
    stage2 = _rows(workdir / STAGE2 / "history.csv")
    assert [int(r["epoch"]) for r in stage2] == list(range(best_epoch + 1))
    assert all(np.isfinite(float(r["loss"])) for r in stage2)


def test_training_again_with_the_same_seed_gives_the_same_metrics(tiny_run, forced_rerun):
    workdir, _ = tiny_run
    rerun, log = forced_rerun
    ran = set(re.findall(r"^(?:local)?rule (\w+):", log, re.MULTILINE))
    assert ran == {"train_stage1", "train_stage2", "evaluate"}, ran
    assert (rerun / METRICS).stat().st_mtime > (workdir / METRICS).stat().st_mtime  # really written again
    before, after = (json.loads((d / METRICS).read_text()) for d in (workdir, rerun))
    before.pop("created_utc"), after.pop("created_utc")
    assert after == before
    for history in (STAGE1 / "history.csv", STAGE2 / "history.csv"):
        first, again = ([{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in _rows(d / history)]
                        for d in (workdir, rerun))
        assert again == first, history


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


def test_changing_a_training_hyperparameter_reruns_training_only(workflow, tiny_run, write_yaml, tmp_path):
    workdir, configfiles = tiny_run
    changed = write_yaml(tmp_path / "changed.yaml", {"train": {**TINY["train"], "lr": 0.001}})
    res = workflow.run(workdir, "-n", configfiles=[*configfiles, changed])
    assert res.returncode == 0, res.stdout
    jobs = set(workflow.planned_jobs(res.stdout))
    assert {"train_stage1", "train_stage2", "evaluate"} <= jobs <= TRAINING, jobs
    assert not jobs & UPSTREAM


def test_changing_an_extraction_setting_reruns_extraction(workflow, tiny_run, write_yaml, tmp_path):
    workdir, configfiles = tiny_run
    changed = write_yaml(tmp_path / "changed_extract.yaml", {"extract": {"video": {"batch_size": 2}}})
    res = workflow.run(workdir, "-n", configfiles=[*configfiles, changed])
    assert res.returncode == 0, res.stdout
    jobs = workflow.planned_jobs(res.stdout)
    assert jobs.get("extract_shard") == 2 and "demo" not in jobs and "manifest" not in jobs, jobs
