"""The config schema's per-method sections are exactly the methods' config dataclasses (keys, types, defaults)."""

import yaml

from model.methods import METHOD_MODULES, method_config
from model.methods.schema import SCHEMA, method_sections


def test_schema_method_sections_match_the_config_dataclasses():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["properties"]["methods"]["properties"] == method_sections(), (
        "workflow/schemas/config.schema.yaml is out of date: run python -m model.methods.schema --write")
    assert schema["properties"]["models"]["items"]["enum"] == list(METHOD_MODULES)


def test_every_schema_default_is_accepted_by_its_method():
    for name, section in method_sections().items():
        defaults = {k: v["default"] for k, v in section["properties"]["model"]["properties"].items()}
        method_config(name, defaults, dataset="ucf", preset="paper", dims={})
