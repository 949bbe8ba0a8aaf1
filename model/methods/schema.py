"""The config schema's section for each method (``methods.<name>.model``), derived from the method's config
dataclass: every key with its type and default. ``tests/test_method_schema.py`` checks that
``workflow/schemas/config.schema.yaml`` holds exactly this; after changing a method's config, rewrite the
schema's sections with::

    python -m model.methods.schema --write
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from model.methods import METHOD_MODULES, get_method_module

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def config_class(name: str) -> type:
    """The method's config dataclass, as its module builds it for the registry."""
    return type(get_method_module(name).make_config(name, {}, dataset=None, preset="paper", dims={}))


def _json_type(tp: Any) -> list[str] | str:
    args = typing.get_args(tp)
    if args:  # X | None
        names = [_json_type(a) for a in args if a is not type(None)]
        return [*names, "null"] if type(None) in args else names
    return _TYPES.get(tp, "string")


def model_section(name: str) -> dict[str, Any]:
    """``{type: object, additionalProperties: false, properties: {key: {type, default}}}`` of one method."""
    cls = config_class(name)
    hints = typing.get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        if f.name == "loss" and name in ("devise", "ale", "sje"):
            continue  # the method's name selects the loss of the DeViSE family
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if isinstance(default, tuple):
            default = list(default)
        spec = {"type": _json_type(hints[f.name]), "default": default}
        kinds = set(spec["type"]) if isinstance(spec["type"], list) else {spec["type"]}
        # Ranges that fail obviously wrong values before any job; the dataclass checks the rest at parse time.
        if "integer" in kinds:
            spec["minimum"] = 0 if f.name.startswith(("n_", "num_")) else 1
        elif "number" in kinds:
            spec["minimum"] = 0
            if "dropout" in f.name or "momentum" in f.name:
                spec["maximum"] = 1
        props[f.name] = spec
    return {"type": "object", "default": {}, "additionalProperties": False,
            "description": f"{name}'s model settings ({cls.__name__}; defaults before the per-dataset presets: "
                           f"docs/methods/README.md)", "properties": props}


def method_sections() -> dict[str, Any]:
    out = {}
    for name in METHOD_MODULES:
        if name == "tcaf":
            continue
        out[name] = {"type": "object", "default": {}, "additionalProperties": False,
                     "properties": {"model": model_section(name), "train": {"$ref": "#/$defs/method_train"}}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the schema's methods.<name> sections in place")
    args = ap.parse_args()
    schema = yaml.safe_load(SCHEMA.read_text())
    schema["properties"]["methods"]["properties"] = method_sections()
    if args.write:
        text = SCHEMA.read_text()
        # the `models` enum: every registered name, in registry order
        head_m, _, rest_m = text.partition("  models:\n")
        enum_start = rest_m.index("      enum:\n") + len("      enum:\n")
        enum_end = rest_m.index("    default:\n", enum_start)
        rest_m = rest_m[:enum_start] + "".join(f"      - {n}\n" for n in METHOD_MODULES) + rest_m[enum_end:]
        text = head_m + "  models:\n" + rest_m
        head, _, rest = text.partition("  methods:\n")
        # the methods block ends where the next top-level property starts
        lines = rest.splitlines(keepends=True)
        end = next(i for i, line in enumerate(lines) if line.startswith("  ") and not line.startswith("   "))
        block = yaml.safe_dump({"methods": schema["properties"]["methods"]}, sort_keys=False, width=110)
        SCHEMA.write_text(head + "".join("  " + line if line.strip() else line for line in block.splitlines(True))
                          + "".join(lines[end:]))
    else:
        print(yaml.safe_dump(method_sections(), sort_keys=False, width=110))


if __name__ == "__main__":
    main()
