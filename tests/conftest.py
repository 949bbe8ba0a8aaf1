"""Shared pytest fixtures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------- the official split lists

# The benchmark's class and video lists, a read-only copy in ../shared beside the repository.
OFFICIAL = REPO.parent / "shared" / "avgzsl-official"
OFFICIAL_DATASETS = ("UCF", "VGGSound", "ActivityNet")


def _official_lists_missing() -> str | None:
    """Why the official lists cannot be used, or None when all three datasets' folders are there."""
    missing = [d for d in OFFICIAL_DATASETS if not (OFFICIAL / d / "class-split").is_dir()]
    if missing:
        return f"official benchmark lists not found at {OFFICIAL} (missing: {', '.join(missing)})"
    return None


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


@pytest.fixture(scope="session")
def official_lists() -> Path:
    """The official lists' folder. Missing lists skip the test locally and fail it on CI (``CI=true``), where
    ../shared is always laid beside the clone: a skip there would hide that the tests against the benchmark
    never ran."""
    reason = _official_lists_missing()
    if reason is not None:
        if _on_ci():
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    return OFFICIAL


@pytest.fixture
def single_torch_thread():
    """Run torch on one intra-op thread for the test.

    The models in unit tests are tiny: intra-op threads cost more than they save, and on a busy 2-core
    machine spinning OpenMP workers make them tens of times slower.
    """
    import torch  # here, not at the top: most test modules never need torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------ workflow (Snakemake)


class Workflow:
    """Runs the repository's Snakefile in a working directory (a subprocess per call).

    The config files are always passed explicitly: the Snakefile's ``configfile:`` is relative to the
    working directory, which in tests is a temporary folder.
    """

    snakefile = REPO / "Snakefile"
    configs: ClassVar[dict[str, Path]] = {name: REPO / "config" / f"{name}.yaml" for name in ("config", "ucf", "vggsound", "activitynet")}

    def run(self, workdir: Path, *args: str, configfiles: list[Path] | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
        """``snakemake -s <repo>/Snakefile --directory <workdir> --configfile ... <args>``; output merged."""
        configfiles = configfiles or [self.configs["config"]]
        cmd = [sys.executable, "-m", "snakemake", "-s", str(self.snakefile), "--directory", str(workdir),
               "--configfile", *map(str, configfiles), *args]
        return subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, cwd=workdir)

    @staticmethod
    def planned_jobs(output: str) -> dict[str, int]:
        """Rule -> job count from the "Job stats" table of a (dry) run; empty when nothing is to be done."""
        m = re.search(r"Job stats:\n(.*?)\n\s*total\s+\d+", output, re.DOTALL)
        if not m:
            return {}
        rows = [line.split() for line in m.group(1).splitlines()]
        return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}


@pytest.fixture(scope="session")
def workflow() -> Workflow:
    return Workflow()


@pytest.fixture(scope="session")
def write_yaml() -> Callable[[Path, dict], Path]:
    import yaml

    def write(path: Path, data: dict) -> Path:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
