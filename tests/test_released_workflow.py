"""The workflow on released features (features.source: released): import -> splits -> train -> evaluate ->
report without raw videos or extractor weights, its rerun triggers, and its config checks."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import OFFICIAL, REPO
from test_released_fixtures import write_released

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("official_lists")]

# A small TCAF and two short seeds: every stage runs for real in well under a minute.
FAST = {
    "model": {"dim": 32, "pos_dim": 8, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32,
              "encoder_hidden_dim": 64, "decoder_hidden_dim": 64, "out_dim": 16},
    "train": {"epochs": 2, "batches_per_epoch": 3, "batch_size": 16, "device": "cpu", "progress": False,
              "lr": 0.001, "seeds": [1, 2]},
    "report": {"tsne_n_seen": 2, "tsne_n_unseen": 2},
}
OVERLAY = REPO / "config" / "overlays" / "released.yaml"


def _configs(workflow, workdir: Path, released_dir: Path, **extra) -> list[Path]:
    fast = {**FAST, "features": {"source": "released", "released": {"dir": str(released_dir)}},
            "official": {"local_dir": str(OFFICIAL)}, **extra}
    path = workdir / "fast.yaml"
    path.write_text(yaml.safe_dump(fast, sort_keys=False))
    return [workflow.configs["ucf"], OVERLAY, path]


def _run(workflow, workdir: Path, layout: str, *targets: str, **extra) -> tuple[Path, Path, list[Path], str]:
    release = workdir / "release"
    # TCAF: as the official script writes it (cls_features_no_averaged); AVCA: cls_features/*.h5
    write_released(release, OFFICIAL, "UCF", layout=layout, per_class=4)
    configs = _configs(workflow, workdir, release, **extra)
    res = workflow.run(workdir, "--cores", "2", *targets, configfiles=configs, timeout=900)
    logs = "".join(f"\n--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
    assert res.returncode == 0, res.stdout[-5000:] + logs
    return workdir, release, configs, res.stdout


@pytest.fixture(scope="module")
def released_run(workflow, tmp_path_factory):
    return _run(workflow, tmp_path_factory.mktemp("released_run"), "tcaf")


def test_released_features_run_every_stage_without_extraction(released_run):
    workdir, _, _, out = released_run
    jobs = {line.split()[0] for line in out.split("Job stats:")[1].split("total")[0].splitlines()[2:] if line.strip()}
    assert "import_released_features" in jobs
    assert not jobs & {"manifest", "extract_shard", "assemble_features", "weights"}, jobs
    metrics = json.loads((workdir / "results/evaluate/ucf/cls/tcaf/metrics.json").read_text())
    assert metrics["feature_source"]["kind"] == "released" and metrics["feature_source"]["layout"] == "tcaf"
    assert metrics["random_weight_features"] is False
    assert metrics["preset"] == "reference" and metrics["n_seeds"] == 2
    assert "Features: released features (TCAF's temporal" in (workdir / "results/evaluate/ucf/cls/tcaf/metrics.md").read_text()
    with (workdir / "results/report/ucf/cls/results.tsv").open() as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    assert row["features"] == "released (tcaf files)"


def test_averaged_released_features_train_and_evaluate_too(workflow, tmp_path):
    # Up to the metrics, with one seed: what the layout changes (the import, the training's input scale) is
    # checked below; the report and a second seed are checked on the TCAF layout's run.
    workdir, *_ = _run(workflow, tmp_path, "avca", "results/evaluate/ucf/cls/tcaf/metrics.json",
                       train={**FAST["train"], "seeds": [1]})
    metrics = json.loads((workdir / "results/evaluate/ucf/cls/tcaf/metrics.json").read_text())
    assert metrics["feature_source"] == {"kind": "released", "layout": "avca", "averaged": True,
                                         "dir": metrics["feature_source"]["dir"]}
    assert metrics["feature_source"]["dir"].endswith("features/cls_features")
    stage1 = json.loads((workdir / "results/train/ucf/cls/tcaf/stage1/stage1.json").read_text())
    # averaged VGGish codes are floats on the codes' 0..255 scale: the model divides them by 255 as it does codes
    assert stage1["experiment"]["model"]["audio_input_scale"] == 255.0
    assert stage1["feature_source"]["layout"] == "avca"
    assert 0 <= metrics["HM"] <= 100 and metrics["test"]["unseen_videos"] > 0


def test_coverage_and_import_summary_count_against_the_official_lists(released_run):
    workdir, _, _, _ = released_run
    coverage = json.loads((workdir / "results/splits/ucf/cls/coverage.json").read_text())
    summary = json.loads((workdir / "results/features/ucf/import.json").read_text())
    for split in ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen",
                  "stage_2_test_unseen"):
        cov, imp = coverage["splits"][split], summary["splits"][split]
        assert cov["listed"] == imp["listed"]
        assert cov["ok"] == imp["listed_found"] > 0
        assert cov["missing"] == cov["listed"] - cov["ok"]
    assert sorted(summary["splits"]["stage_2_test_unseen"]["extra_classes"]) == ["BandMarching", "BrushingTeeth",
                                                                                  "Typing"]
    assert summary["layout"] == "tcaf" and summary["root"].endswith("cls_features_no_averaged")


def test_a_changed_released_file_or_import_setting_reruns_the_import(workflow, released_run, tmp_path):
    workdir, release, configs, _ = released_run
    res = workflow.run(workdir, "-n", configfiles=configs)
    assert res.returncode == 0 and workflow.planned_jobs(res.stdout) == {}, res.stdout[-3000:]
    # a copy of the finished run, so the module's run stays intact for the other tests
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, symlinks=True)
    configs = _configs(workflow, copy, release)
    target = next((release / "avgzsl_benchmark_non_averaged_datasets/UCF/features").rglob("video/stage_1_train/Archery.pkl"))
    blob = pickle.loads(target.read_bytes())  # the test's own file
    blob["features"][0] = blob["features"][0] * 2
    target.write_bytes(pickle.dumps(blob, protocol=4))
    jobs = workflow.planned_jobs(workflow.run(copy, "-n", configfiles=configs).stdout)
    assert {"import_released_features", "train_stage1", "evaluate"} <= set(jobs), jobs
    assert "splits" not in jobs
    configs = _configs(workflow, copy, release)
    fast = yaml.safe_load(configs[-1].read_text())
    fast["features"]["released"]["video_dtype"] = "float16"
    configs[-1].write_text(yaml.safe_dump(fast))
    jobs = workflow.planned_jobs(workflow.run(copy, "-n", configfiles=configs).stdout)
    assert "import_released_features" in jobs


# ------------------------------------------------------------------------------------ config checks


def _fails_before_any_job(res, workdir: Path, *needles: str) -> None:
    assert res.returncode != 0, res.stdout
    assert "Job stats" not in res.stdout, res.stdout
    assert not (workdir / "results").exists()
    for needle in needles:
        assert needle in res.stdout, res.stdout[-3000:]


def test_released_source_needs_an_existing_folder_not_raw_videos(workflow, tmp_path):
    configs = _configs(workflow, tmp_path, tmp_path / "no-such-release")
    res = workflow.run(tmp_path, "-n", configfiles=configs)
    _fails_before_any_job(res, tmp_path, "config key 'features.released.dir'", "no-such-release")
    # an existing folder without released files: the import rule's input function says what is expected
    empty = tmp_path / "empty"
    empty.mkdir()
    res = workflow.run(tmp_path, "-n", configfiles=_configs(workflow, tmp_path, empty))
    _fails_before_any_job(res, tmp_path, "no released features under", "Unpack the release")


def test_released_checkpoint_folders_must_exist(workflow, tmp_path):
    release = tmp_path / "release"
    write_released(release, OFFICIAL, "UCF", per_class=1, keep=lambda split, cls: cls == "Archery")
    configs = _configs(workflow, tmp_path, release,
                       released_checkpoints={"stage_a": str(tmp_path / "gone"), "stage_b": None})
    res = workflow.run(tmp_path, "-n", configfiles=configs)
    _fails_before_any_job(res, tmp_path, "config key 'released_checkpoints.stage_a'")
    # both set: the released evaluation joins the targets, with the files it reads first as inputs
    (tmp_path / "A").mkdir()
    (tmp_path / "A/Multimodal_Sequence_Transformer_score.pt").touch()
    (tmp_path / "B/checkpoints").mkdir(parents=True)
    (tmp_path / "B/args.yaml").write_text("retrain_all: true\n")
    configs = _configs(workflow, tmp_path, release,
                       released_checkpoints={"stage_a": str(tmp_path / "A"), "stage_b": str(tmp_path / "B")})
    res = workflow.run(tmp_path, "-n", configfiles=configs)
    assert res.returncode == 0, res.stdout[-3000:]
    assert workflow.planned_jobs(res.stdout).get("evaluate_released") == 1
    assert "results/evaluate/ucf/cls/released/metrics.json" in res.stdout
    assert "Multimodal_Sequence_Transformer_score.pt" in res.stdout and "B/args.yaml" in res.stdout


def test_the_demo_has_no_released_features(workflow, tmp_path, write_yaml):
    override = write_yaml(tmp_path / "o.yaml", {"features": {"source": "released", "released": {"dir": str(tmp_path)}}})
    res = workflow.run(tmp_path, "-n", configfiles=[workflow.configs["config"], override])
    _fails_before_any_job(res, tmp_path, "'dataset' ('demo') and 'features.source' ('released')")
