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
            timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``snakemake -s <repo>/Snakefile --directory <workdir> --configfile ... <args>``; output merged.
        ``env``: variables set for this run on top of the test process's environment."""
        configfiles = configfiles or [self.configs["config"]]
        cmd = [sys.executable, "-m", "snakemake", "-s", str(self.snakefile), "--directory", str(workdir),
               "--configfile", *map(str, configfiles), *args]
        return subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, cwd=workdir, env={**os.environ, **env} if env else None)

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


# ------------------------------------------------------------------------------------ the tiny demo run

# A few seconds of video, a 1-layer TCAF and 3 short epochs: every stage of the demo runs for real, quickly. The
# training settings make the stage-1 loss fall clearly (measured on this demo over seeds 1-5 and 42: the last
# epoch's loss 0.53-0.68 of the first's; training takes well under a second). Deterministic training, so that
# another run of the same jobs (through SLURM, tests/test_slurm_cluster.py) can be compared number for number.
TINY_DEMO = {
    "demo": {"n_classes": 4, "videos_per_class": 3, "duration_s": 1.5, "width": 64, "height": 48,
             "n_val_unseen": 1, "n_test_unseen": 1},
    "extract": {"shards": 2},
    # the demo's held-out videos (a handful) in one extraction job; tests/test_predict.py shards its own in two
    "predict": {"shards": 1},
    "model": {"dim": 32, "pos_dim": 8, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32,
              "encoder_hidden_dim": 32, "decoder_hidden_dim": 32, "out_dim": 16},
    "train": {"epochs": 3, "batch_size": 8, "batches_per_epoch": 10, "eval_batch_size": 16, "lr": 0.002,
              "deterministic": True},
    # a second method, so that the comparison table has two rows and prediction runs two kinds of model (AVCA
    # narrowed like TCAF above)
    "models": ["tcaf", "avca"],
    "methods": {"avca": {"model": {"dim": 32, "encoder_hidden_dim": 32, "decoder_hidden_dim": 32, "out_dim": 16,
                                   "heads": 2, "dim_head": 8, "mlp_dim": 32},
                         "train": {"epochs": 3, "batch_size": 8, "batches_per_epoch": 10, "lr": 0.002}}},
}
# Cores of the tiny demo run; a run compared with it job for job gives its jobs as many threads.
DEMO_CORES = 2
# The string hash seed of the tiny demo run's processes (and of any run compared with it).
DEMO_ENV = {"PYTHONHASHSEED": "0"}


def workflow_logs(workdir: Path) -> str:
    """The tail of every job log of a run, for a failure message."""
    return "".join(f"\n==> {p} <==\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))


@pytest.fixture(scope="session")
def tiny_demo_run(workflow, tmp_path_factory, write_yaml) -> tuple[Path, list[Path]]:
    """(working folder, config files) of one finished run of the demo's default target with TINY_DEMO.

    The end-to-end, prediction and SLURM tests all start from this one run instead of each running the demo
    again. It is shared: tests only read it and dry-run in it; a test that runs jobs or writes files there
    works in a copy (``shutil.copytree(workdir, copy, symlinks=True)`` keeps Snakemake's metadata and the
    files' times, so nothing in the copy is out of date).
    """
    configfiles = [workflow.configs["config"], write_yaml(tmp_path_factory.mktemp("tiny_demo_config") / "tiny.yaml",
                                                          TINY_DEMO)]
    workdir = tmp_path_factory.mktemp("tiny_demo")
    res = workflow.run(workdir, "--cores", str(DEMO_CORES), configfiles=configfiles, timeout=900, env=DEMO_ENV)
    assert res.returncode == 0, res.stdout[-5000:] + workflow_logs(workdir)
    return workdir, configfiles


# ------------------------------------------------------------------------------------------- VGGish SavedModel


@pytest.fixture(scope="session")
def vggish_savedmodel(tmp_path_factory) -> Path:
    """A random-weight VGGish SavedModel in the form of google/vggish/1 (tests/test_extract_nets_tfhub.py), seed 3.

    ~290 MB and TensorFlow's import: written once for the TF-Hub tests and the weights rules' conversion. Tests
    read it only.
    """
    # the test module imports torch before tensorflow, as everywhere in the project
    from test_extract_nets_tfhub import RandomHubVGGish, tf

    path = tmp_path_factory.mktemp("vggish_hub") / "savedmodel"
    tf.saved_model.save(RandomHubVGGish(seed=3), str(path))
    return path


# ------------------------------------------------------------------------------------ the GPU check as a module


@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py as a module of this process (its checks and parts run in-process, without a new
    Python and torch import per call); what it changes on import (sys.path, CUBLAS_WORKSPACE_CONFIG) is undone
    after the requesting module's tests."""
    import importlib.util

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "path", list(sys.path))
        mp.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
        spec = importlib.util.spec_from_file_location("gpu_check_under_test", REPO / "benchmarks" / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
