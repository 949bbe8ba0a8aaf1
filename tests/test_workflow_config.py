"""The config is checked whole before any job: every key has a type and a range or a set of values, rules
between keys are checked when the DAG is built (without torch), and the default config file is found from
any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
RANGES = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def leaves(node: dict, path: tuple[str, ...] = ()):
    """(dotted key, schema) of every leaf key under `node` (objects with properties are walked into)."""
    for key, sub in node["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            yield from leaves(sub, (*path, key))
        else:
            yield ".".join((*path, key)), sub


def section_leaves(*sections: str):
    return [
        (key, spec) for section in sections for key, spec in leaves(SCHEMA["properties"][section], (section,))
    ]


def types_of(spec: dict) -> set[str]:
    t = spec.get("type", [])
    return {t} - {"null"} if isinstance(t, str) else set(t) - {"null"}


def is_constrained(spec: dict) -> bool:
    """A set of values, a range, a boolean, a string with a pattern, or an array whose items are constrained."""
    if "enum" in spec or "const" in spec or any(r in spec for r in RANGES):
        return True
    types = types_of(spec)
    if types == {"boolean"}:
        return True
    if types == {"string"}:
        return "pattern" in spec
    if types == {"array"}:
        items = [spec.get("items", {}), *spec.get("prefixItems", [])]
        return any(is_constrained(item) for item in items if item)
    return False


@pytest.mark.parametrize(
    ("key", "spec"),
    section_leaves("model", "train", "evaluate"),
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_every_model_train_and_evaluate_key_has_a_type_and_a_range_or_values(key, spec):
    assert "type" in spec or "enum" in spec or "const" in spec, f"{key}: no type"
    assert is_constrained(spec), (
        f"{key}: give it an enum, a range (minimum/maximum/exclusiveMinimum/"
        "exclusiveMaximum), a pattern or constrained items in config.schema.yaml"
    )
    assert "default" in spec and "description" in spec, key


def test_every_number_and_integer_key_of_the_schema_has_a_range():
    # Seeds, sizes, rates and tolerances everywhere: a negative or zero value fails before any job.
    missing = [
        key
        for key, spec in leaves(SCHEMA)
        if types_of(spec) & {"integer", "number"}
        and not any(r in spec for r in RANGES)
        and "enum" not in spec
    ]
    assert missing == []


def bad_value(spec: dict):
    """A value that the schema must reject for this key."""
    if "enum" in spec:
        return "not-one-of-them"
    types = types_of(spec)
    if types == {"boolean"}:
        return "yes"
    if "minimum" in spec:
        return spec["minimum"] - 1
    if "exclusiveMinimum" in spec:
        return spec["exclusiveMinimum"]
    if "exclusiveMaximum" in spec:
        return spec["exclusiveMaximum"]
    if "maximum" in spec:
        return spec["maximum"] + 1
    if "pattern" in spec:
        return "?"
    if types == {"array"}:
        if "prefixItems" in spec:  # bias_grid: a zero step
            return [0.0, 1.0, 0.0]
        return [bad_value(spec["items"])]
    raise AssertionError(f"no bad value for {spec}")


BAD = {key: bad_value(spec) for key, spec in section_leaves("model", "train", "evaluate")}


def nest(flat: dict) -> dict:
    out: dict = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


@pytest.mark.parametrize("key", sorted(BAD))
def test_schema_rejects_a_bad_value_at_its_key(key):
    errors = [
        ".".join(map(str, e.absolute_path))
        for e in Draft202012Validator(SCHEMA).iter_errors({"dataset": "demo", **nest({key: BAD[key]})})
    ]
    assert errors and all(path == key or path.startswith(f"{key}.") for path in errors), (
        key,
        BAD[key],
        errors,
    )


def test_schema_enums_are_the_packages_choices():
    from model.config import ATTENTION_VARIANTS, MODALITIES, TIME_EMBEDDINGS
    from model.train_config import AMP_MODES

    model, train = SCHEMA["properties"]["model"]["properties"], SCHEMA["properties"]["train"]["properties"]
    assert tuple(model["modalities"]["enum"]) == MODALITIES
    assert tuple(model["attention"]["enum"]) == ATTENTION_VARIANTS
    assert tuple(model["time_embedding"]["enum"]) == TIME_EMBEDDINGS
    assert tuple(train["amp"]["enum"]) == AMP_MODES


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_break_no_rule_between_keys(path):
    from model.config import model_section_problems

    cfg = yaml.safe_load(path.read_text())
    assert model_section_problems(cfg.get("model"), cfg["dataset"]) == []
    video = cfg.get("extract", {}).get("video", {})
    assert not (video.get("preset", "paper") == "paper" and video.get("invert_colours"))
    assert not any(
        key in cfg.get("extract", {}).get("decode", {}) for key in ("fps", "frames_per_clip", "sample_rate")
    )


# ------------------------------------------------------------------------------ Snakemake: before any job


def assert_failed_before_any_job(res, tmp_path):
    assert res.returncode != 0, res.stdout
    assert "Job stats" not in res.stdout, res.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_every_bad_model_train_and_evaluate_value_is_named_in_one_run(workflow, tmp_path, write_yaml):
    bad = write_yaml(tmp_path / "bad.yaml", nest(BAD))
    res = workflow.run(tmp_path, "--cores", "1", configfiles=[workflow.configs["config"], bad])
    assert_failed_before_any_job(res, tmp_path)
    named = {key for key in BAD if f"config key '{key}" in res.stdout}
    assert sorted(set(BAD) - named) == [], res.stdout


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"model": {"modalities": "audio"}},
            [
                "'model.modalities' ('audio')",
                "'model.attention' ('cross', the default)",
                "set model.attention to 'full'",
            ],
        ),
        (
            {"model": {"modalities": "visual", "attention": "cross"}},
            ["'model.modalities' ('visual')", "'model.attention' ('cross')"],
        ),
        ({"model": {"pos_dim": 63}}, ["'model.pos_dim' (63): must be even", "use 64 or 62"]),
        (
            {"extract": {"video": {"invert_colours": True}}},
            [
                "'extract.video.preset' ('paper'",
                "'extract.video.invert_colours' (true)",
                "set extract.video.preset to 'reference'",
            ],
        ),
        (
            {"extract": {"audio": {"backend": "tfhub"}}},
            ["'extract.audio.backend' ('tfhub')", "'extract.audio.weights'"],
        ),
        (
            {"evaluate": {"bias_grid": [3.0, 0.0, 0.2]}},
            ["'evaluate.bias_grid'", "stop 0.0 is below start 3.0"],
        ),
        ({"demo": {"n_classes": 6, "n_val_unseen": 3, "n_test_unseen": 3}}, ["'demo.n_classes' (6)"]),
        ({"model": {"name": "avca"}}, ["'model.name': unknown key", "listed in the top-level key 'models'"]),
        ({"models": ["tcaf", "tcfa"]}, ["'models[1]': 'tcfa' is not one of"]),
        ({"methods": {"avca": {"model": {}}}}, ["'methods.avca': avca is not in 'models' (tcaf)"]),
        # a key of another method (TCAF's pos_dim) in AVCA's section, and a misspelt training key
        ({"models": ["tcaf", "avca"], "methods": {"avca": {"model": {"pos_dim": 8}}}},
         ["'methods.avca.model.pos_dim': unknown key"]),
        ({"models": ["tcaf", "avca"], "methods": {"avca": {"train": {"lrr": 0.1}}}},
         ["'methods.avca.train': unknown key"]),
        (
            {"extract": {"decode": {"fps": 30, "sample_rate": 16000, "frames_per_clip": 16}}},
            [
                "'extract.decode.fps': unknown key; no longer a setting",
                "'extract.decode.sample_rate': unknown key",
                "'extract.decode.frames_per_clip': unknown key",
            ],
        ),
        (
            {"train": {"epochs": 5.0, "weight_decay": "1e-5"}},
            ["'train.epochs': 5.0 is not of type 'integer'", "YAML reads 1e-5 as text; write 1.0e-5"],
        ),
    ],
    ids=[
        "one-modality-cross-default",
        "one-modality-cross",
        "odd-pos-dim",
        "paper-preset-inverts",
        "tfhub-random",
        "bias-grid-reversed",
        "demo-no-seen-class",
        "model-name",
        "unknown-method",
        "section-of-unlisted-method",
        "key-of-another-method",
        "bad-training-key-of-a-method",
        "decode-grid",
        "integer-as-float",
    ],
)
def test_bad_combination_fails_before_any_job_naming_the_keys(
    workflow, tmp_path, write_yaml, override, expected
):
    bad = write_yaml(tmp_path / "bad.yaml", override)
    res = workflow.run(tmp_path, "--cores", "1", configfiles=[workflow.configs["config"], bad])
    assert_failed_before_any_job(res, tmp_path)
    for text in expected:
        assert text in res.stdout, res.stdout


def snakemake(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )


def test_rules_between_keys_are_checked_without_torch(tmp_path, write_yaml):
    # A torch that cannot be imported: building the DAG (config checks included) must not need it.
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch imported while building the DAG')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")])),
    }
    good = write_yaml(
        tmp_path / "good.yaml",
        {
            "model": {"modalities": "audio", "attention": "full"},
            "extract": {"video": {"preset": "reference", "invert_colours": True}},
        },
    )
    bad = write_yaml(tmp_path / "bad.yaml", {"model": {"modalities": "visual"}})
    config = str(REPO / "config" / "config.yaml")
    res = snakemake(tmp_path, "-n", "--configfile", config, str(good), env=env)
    assert res.returncode == 0, res.stdout
    res = snakemake(tmp_path, "-n", "--configfile", config, str(bad), env=env)
    assert res.returncode != 0 and "'model.attention'" in res.stdout, res.stdout
    assert "torch imported" not in res.stdout


def test_directory_without_configfile_uses_the_workflows_default_config(workflow, tmp_path):
    # Run from a third folder: neither the working directory nor --directory holds config/config.yaml.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = snakemake(elsewhere, "--directory", str(tmp_path / "run"), "-n")
    assert res.returncode == 0, res.stdout
    jobs = workflow.planned_jobs(res.stdout)
    assert jobs["demo"] == 1
    assert (
        jobs["extract_shard"]
        == yaml.safe_load((REPO / "config" / "config.yaml").read_text())["extract"]["shards"]
    )
    assert not (tmp_path / "run" / "results").exists() and not (elsewhere / "results").exists()


def test_configfile_replaces_the_default_config_instead_of_merging_over_it(workflow, tmp_path, write_yaml):
    # Only the dataset given: every other key takes the schema's default (1 shard), none comes from a default
    # config file, neither the workflow's nor one at config/config.yaml under the working directory.
    (tmp_path / "config").mkdir()
    write_yaml(tmp_path / "config" / "config.yaml", {"dataset": "demo", "extract": {"shards": 7}})
    minimal = write_yaml(tmp_path / "minimal.yaml", {"dataset": "demo"})
    res = snakemake(tmp_path, "-n", "--configfile", str(minimal))
    assert res.returncode == 0, res.stdout
    assert (
        workflow.planned_jobs(res.stdout)["extract_shard"]
        == 1
        == SCHEMA["properties"]["extract"]["properties"]["shards"]["default"]
    )
