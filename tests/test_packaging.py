"""The two install routes (pip/uv via pyproject.toml, conda via environment.yml) must pin the same set."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {dep.replace(" ", "") for dep in project["dependencies"]}


def _environment_pins() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    return {dep.replace(" ", "") for dep in pip_section if not dep.startswith("-e")}


def test_environment_yml_pins_match_pyproject():
    assert _environment_pins() == _pyproject_pins()


def test_environment_yml_uses_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_every_runtime_dependency_is_pinned_exactly():
    loose = [dep for dep in _pyproject_pins() if "==" not in dep and not dep.startswith("setuptools")]
    assert not loose, f"pin these exactly in pyproject.toml: {loose}"
