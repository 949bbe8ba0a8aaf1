"""The workflow as a DAG: lint, a dry run of every shipped config, and config errors caught before any job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
STAGES = ("official_lists", "manifest", "extract_shard", "assemble_features", "splits", "coverage",
          "class_embeddings", "train_stage1", "train_stage2", "evaluate", "training_curves", "tsne", "compare")


def test_lint_reports_nothing(workflow, tmp_path):
    res = workflow.run(tmp_path, "--lint")
    assert res.returncode == 0, res.stdout
    assert "Lints for" not in res.stdout


def test_dry_run_of_the_demo_lists_every_stage(workflow, tmp_path):
    res = workflow.run(tmp_path, "-n")
    assert res.returncode == 0, res.stdout
    jobs = workflow.planned_jobs(res.stdout)
    assert {"demo", *STAGES} <= set(jobs), jobs
    assert jobs["extract_shard"] == yaml.safe_load(workflow.configs["config"].read_text())["extract"]["shards"]
    # Random weights are no files: no weights jobs in the demo's DAG.
    assert not any(job.startswith(("weights", "fetch_weights")) for job in jobs), jobs
    assert not (tmp_path / "results").exists()


def test_set_scatter_changes_the_number_of_extraction_jobs(workflow, tmp_path):
    res = workflow.run(tmp_path, "-n", "--set-scatter", "extract=5")
    assert res.returncode == 0, res.stdout
    assert workflow.planned_jobs(res.stdout)["extract_shard"] == 5


def _benchmark_overrides(tmp_path: Path, dataset: str, write_yaml) -> Path:
    """Placeholder raw folder (and ActivityNet annotations) plus the official lists from ../shared."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "placeholder.mp4").write_bytes(b"")
    annotations = tmp_path / "activity_net.v1-3.min.json"
    annotations.write_text('{"database": {}}')
    raw_videos = {"dir": str(raw)}
    if dataset == "activitynet":
        raw_videos["annotations"] = str(annotations)
    return write_yaml(tmp_path / "override.yaml", {"raw_videos": raw_videos,
                                                    "official": {"local_dir": str(REPO.parent / "shared" /
                                                                                  "avgzsl-official")}})


@pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI
@pytest.mark.parametrize("dataset", ["ucf", "vggsound", "activitynet"])
def test_dry_run_of_each_benchmark_config(workflow, tmp_path, write_yaml, dataset):
    override = _benchmark_overrides(tmp_path, dataset, write_yaml)
    res = workflow.run(tmp_path, "-n", configfiles=[workflow.configs[dataset], override])
    assert res.returncode == 0, res.stdout
    jobs = workflow.planned_jobs(res.stdout)
    assert "demo" not in jobs
    assert set(STAGES) <= set(jobs), jobs
    assert jobs["extract_shard"] == yaml.safe_load(workflow.configs[dataset].read_text())["extract"]["shards"]
    assert f"results/evaluate/{dataset}/cls/tcaf/metrics.json" in res.stdout


def test_shipped_configs_are_valid_against_the_schema():
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(SCHEMA)
    for path in sorted((REPO / "config").glob("*.yaml")):
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors)


@pytest.mark.parametrize(
    ("override", "keys"),
    [
        # Schema violations are all reported at once, each with its key.
        (
            {"dataset": "kinetics", "train": {"lr": -0.001, "lrr": 0.001}, "extract": {"shards": 0},
             "demo": {"videos_per_class": 1}},
            ["'dataset'", "'train.lr'", "'train.lrr': unknown key; did you mean 'lr'?", "'extract.shards'",
             "'demo.videos_per_class'"],
        ),
        ({"dataset": "ucf", "raw_videos": {"dir": "no/such/folder"}}, ["'raw_videos.dir'"]),
        ({"dataset": "ucf", "raw_videos": {"dir": "."}, "official": {"local_dir": "no/such/lists"}},
         ["'official.local_dir'"]),
    ],
    ids=["schema", "missing-video-folder", "missing-lists"],
)
def test_bad_config_fails_before_any_job_naming_the_key(workflow, tmp_path, write_yaml, override, keys):
    bad = write_yaml(tmp_path / "bad.yaml", override)
    res = workflow.run(tmp_path, "--cores", "1", configfiles=[workflow.configs["config"], bad])
    assert res.returncode != 0
    for key in keys:
        assert key in res.stdout, res.stdout
    assert "Job stats" not in res.stdout and not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


# The schema documents and checks the package-owned sections key by key (so a typo fails before any job);
# it must stay in step with the dataclasses that finally read them.
def _section(*path: str) -> dict:
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node["properties"]


def _package_sections():
    from data_splits.class_embeddings import EmbeddingConfig
    from data_splits.official import OfficialConfig
    from data_splits.synthetic import SyntheticConfig
    from extractors.c3d import VideoExtractorConfig
    from extractors.decode import DecodeConfig
    from extractors.extract import ExtractConfig
    from extractors.vggish import AudioExtractorConfig
    from model.config import TCAFConfig
    from model.train_config import EvalConfig, TrainConfig

    return [
        (("model",), TCAFConfig, set()),
        (("train",), TrainConfig, set()),
        (("evaluate",), EvalConfig, set()),
        (("class_embeddings",), EmbeddingConfig, set()),
        (("official",), OfficialConfig, set()),
        (("demo",), SyntheticConfig, {"formats"}),
        (("extract",), ExtractConfig, {"dataset", "audio", "video", "decode"}),  # dataset: set by the workflow
        (("extract", "audio"), AudioExtractorConfig, set()),
        (("extract", "video"), VideoExtractorConfig, {"dataset"}),
        # The decoding grid is fixed by the networks (16 kHz for VGGish, 16-frame clips at 25 fps for C3D): not
        # a pipeline setting, whether or not the decoder still has a field for it.
        (("extract", "decode"), DecodeConfig, {"fps", "frames_per_clip", "sample_rate"}),
    ]


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


@pytest.mark.parametrize(("path", "cls", "skip"), _package_sections(), ids=lambda x: ".".join(x) if isinstance(x, tuple)
                         else "")
def test_schema_matches_the_package_dataclasses(path, cls, skip):
    props = _section(*path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    assert sorted(set(fields) - set(props)) == [], f"add to the schema under {'.'.join(path)}"
    extra = sorted(set(props) - set(fields) - skip - ({"shards"} if path == ("extract",) else set()))
    assert extra == [], f"the schema has keys the package does not know under {'.'.join(path)}"
    for name, field in fields.items():
        default = _default(field)
        if dataclasses.is_dataclass(default) or isinstance(default, list) and default and dataclasses.is_dataclass(
                default[0]):
            continue
        assert props[name].get("default") == default, f"{'.'.join(path)}.{name}: schema default differs"
