"""Sharded extraction survives a shard being killed mid-write.

A node failure (or SLURM's SIGKILL at the end of a job's time limit) kills a shard while its store is
being written, and with it the Snakemake process driving it. The rerun must redo exactly the shards that
had not finished - never trust the half-written one, never redo a finished one - and the assembled store
must hold every video of the manifest exactly once. Runs with the local executor (no cluster needed): the
shard logic is the same job for job on SLURM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_DEMO

REPO = Path(__file__).resolve().parents[1]
SHARDS = 3
# The workflow tests' tiny demo videos; only extraction runs here.
DEMO_ONLY = {"demo": TINY_DEMO["demo"]}
SHARD_DIR = Path("results/features/demo/shards")
FEATURES = "results/features/demo/features.tsv"

pytestmark = pytest.mark.slow


def snakemake_cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(REPO / "config" / "config.yaml"), str(config),
            "--profile", str(REPO / "profiles" / "local"), "--set-scatter", f"extract={SHARDS}", *args]


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    out = subprocess.run(cmd, cwd=cwd, check=False, capture_output=True, text=True, timeout=timeout)
    log = out.stdout + out.stderr
    assert out.returncode == 0, f"{' '.join(cmd[3:])} failed ({out.returncode}):\n{log[-5000:]}"
    return log


def shard_state(workdir: Path) -> tuple[set[str], set[str]]:
    """(finished shards, shards being written) by scatter item, e.g. {"1-of-3"}."""
    folder = workdir / SHARD_DIR
    if not folder.is_dir():
        return set(), set()
    done = {p.stem for p in folder.glob("*.zarr") if p.with_suffix(".tsv").is_file()}
    writing = {m[1] for p in folder.iterdir() if (m := re.fullmatch(r"(.+)\.zarr\.tmp-\d+", p.name))}
    return done, writing


def shards_run(log: str) -> set[str]:
    """Scatter items of the extract_shard jobs a Snakemake run executed (from its job descriptions)."""
    return set(re.findall(r"output: \S*/shards/(\d+-of-\d+)\.zarr", log))


def test_killed_shard_is_redone_alone_and_store_has_every_video_once(tmp_path):
    from extractors.manifest import read_manifest
    from extractors.store import FeatureStore

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(DEMO_ONLY))
    work = tmp_path / "work"
    work.mkdir()
    run(snakemake_cmd(work, config, "--cores", "2", "results/manifest/demo.tsv"), cwd=work)

    # One core: shards run one after another, so there is a moment with one finished, one being written
    # and one not started. Own session, so that the kill takes Snakemake and the shard job together.
    proc = subprocess.Popen(snakemake_cmd(work, config, "--cores", "1", FEATURES), cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while True:
            done, writing = shard_state(work)
            if done and writing - done:
                break
            assert proc.poll() is None, f"extraction ended ({proc.returncode}) before a shard could be killed"
            assert time.monotonic() < deadline, "no moment with one shard finished and another being written"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = writing - done
    finished_before = {s: (work / SHARD_DIR / f"{s}.zarr" / "zarr.json").stat().st_mtime_ns for s in done}
    assert done | killed < {f"{i}-of-{SHARDS}" for i in range(1, SHARDS + 1)}, "every shard had started"
    assert not (done & killed)
    # The half-written store never became a store: only its .tmp-<pid> folder exists.
    for s in killed:
        assert not (work / SHARD_DIR / f"{s}.zarr").exists()

    # The killed Snakemake left its lock behind (as after a crashed login node): release it, then rerun.
    run(snakemake_cmd(work, config, "--unlock"), cwd=work)
    log = run(snakemake_cmd(work, config, "--cores", "2", FEATURES), cwd=work)

    redone = shards_run(log)
    all_shards = {f"{i}-of-{SHARDS}" for i in range(1, SHARDS + 1)}
    assert redone == all_shards - done, f"rerun extracted {sorted(redone)}; finished before the kill: {sorted(done)}"
    for s, mtime in finished_before.items():
        assert (work / SHARD_DIR / f"{s}.zarr" / "zarr.json").stat().st_mtime_ns == mtime, f"shard {s} was rewritten"

    manifest_ids = [r.video_id for r in read_manifest(work / "results/manifest/demo.tsv")]
    store = FeatureStore(work / "results/features/demo/features.zarr")
    assert len(store.video_ids) == len(set(store.video_ids)), "a video is in the assembled store twice"
    assert sorted(store.video_ids) == sorted(manifest_ids), "the assembled store does not hold every manifest video"
    assert sum(r["status"] == "ok" for r in store.table) > 0
