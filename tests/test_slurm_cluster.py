"""The pipeline on a real SLURM cluster: a single-node cluster on localhost, started from Debian's packages.

The module brings the cluster up once (tests/slurm/install.sh, tests/slurm/cluster.sh), checks that plain
batch jobs are scheduled and accounted, then runs the demo pipeline through SLURM with profiles/slurm (its site
values replaced by this cluster's) and compares it with the same pipeline run locally (the session's tiny demo
run, tests/conftest.py), requiring that
- every non-local job went through SLURM: sacct lists it, completed, under the rule's name, and GPU rules
  were given a GPU by SLURM (the node advertises placeholder GPUs, see cluster.sh);
- both runs produced the same feature store and the same metrics.

Needs root and apt (it installs slurm-wlm, slurmdbd, munge and mariadb-server when missing) and skips,
saying why, anywhere else.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DEMO_CORES, DEMO_ENV, TINY_DEMO

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "slurm"
# Seconds between the driver's checks of its SLURM jobs' states.
POLL_S = 2
# Snakemake with the SLURM plugin checking its jobs every POLL_S seconds. The plugin waits 10 s longer after each
# check that finds no job finished (up to 3 min: made for long jobs and busy controllers); here, where a job takes
# seconds, each stage of the pipeline then waited half a minute or more to be seen finished, and the run took twice
# as long. Everything else - the profile, submission, the jobs and their accounting - is the plugin's own.
SNAKEMAKE = [sys.executable, "-c", "\n".join([
    "import snakemake_executor_plugin_slurm as slurm",
    "slurm.Executor.next_seconds_between_status_checks = property(",
    f"    lambda self: {POLL_S}, lambda self, value: None)",
    "from snakemake.cli import main",
    "main()",
])]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PARTITION = "avgzsl-test"
ACCOUNT = "avgzsl"


def _skip_reason() -> str | None:
    """Why this machine cannot host the test cluster, or None if it can."""
    if sys.platform != "linux":
        return f"a local SLURM cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "starting slurmd/slurmctld and installing Debian packages needs root (run the suite as root)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return (
            "neither apt-get (to install slurm-wlm) nor an installed SLURM found: not a Debian-like machine"
        )
    return None


@dataclass
class Cluster:
    state: Path
    env: dict[str, str]

    def run(self, *cmd: str, timeout: float = 60) -> str:
        out = subprocess.run(cmd, env=self.env, check=False, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def sacct(self, since: str) -> list[dict[str, str]]:
        """Every job (not step) since `since`, as dicts; -P keeps long names and comments untruncated."""
        fields = ["JobID", "JobName", "Comment", "State", "AllocTRES"]
        out = self.run("sacct", "-a", "-X", "-n", "-P", "--starttime", since, "-o", ",".join(fields))
        return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]

    def sacct_until(self, since: str, done, timeout_s: float = 60.0) -> list[dict[str, str]]:
        """``sacct(since)`` once ``done(jobs)`` holds: slurmctld sends finished jobs to slurmdbd asynchronously,
        so the last job of a run can be missing from the database for a moment after it ended."""
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = self.sacct(since)
            if done(jobs) or time.monotonic() > deadline:
                return jobs
            time.sleep(1.0)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Installing is part of the test: on the CI machines (root, Debian mirror reachable) a failure here is
    # a real failure, not a reason to skip.
    inst = subprocess.run(["bash", str(SCRIPTS / "install.sh")], check=False, capture_output=True, text=True, timeout=900)
    if inst.returncode in (3, 4):  # not root / no apt-get: see install.sh
        pytest.skip(inst.stderr.strip())
    assert inst.returncode == 0, f"tests/slurm/install.sh failed:\n{inst.stderr[-4000:]}"

    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_TEST_PARTITION": PARTITION, "SLURM_TEST_ACCOUNT": ACCOUNT,
           "SLURM_CONF": str(state / "etc" / "slurm.conf")}
    up = subprocess.run(["bash", str(SCRIPTS / "cluster.sh"), "up", str(state)], env=env, check=False,
                        capture_output=True, text=True, timeout=300)
    if up.returncode == 6:  # a real SLURM configuration or another test cluster is in the way
        pytest.skip(up.stderr.strip())
    try:
        assert up.returncode == 0, f"tests/slurm/cluster.sh up failed:\n{up.stderr[-4000:]}"
        yield Cluster(state, env)
    finally:
        subprocess.run(["bash", str(SCRIPTS / "cluster.sh"), "down", str(state)], env=env, check=False, timeout=120)


def _now() -> str:
    # sacct's --starttime has one-second resolution; step back one so that a job started in the same
    # second as this call is included.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))


def test_batch_job_is_scheduled_and_accounted(slurm_cluster):
    """The cluster itself: a job with a GPU request runs, and sacct reports it with its comment."""
    since = _now()
    out = slurm_cluster.run(
        "sbatch",
        "--parsable",
        "--wait",
        "-J",
        "avgzsl-smoke",
        "--comment",
        "rule_smoke",
        "-p",
        PARTITION,
        "-A",
        ACCOUNT,
        "--gpus=1",
        "--cpus-per-gpu=1",
        "--mem=100",
        "-t",
        "5",
        "-o",
        str(slurm_cluster.state / "smoke.out"),
        "--wrap",
        "echo ran on $(hostname)",
        timeout=120,
    )
    job_id = out.strip().split(";")[0]
    assert (slurm_cluster.state / "smoke.out").read_text().startswith("ran on ")
    listed = slurm_cluster.sacct_until(
        since, lambda js: any(j["JobID"] == job_id and j["State"] == "COMPLETED" for j in js))
    jobs = {j["JobID"]: j for j in listed}
    assert job_id in jobs, f"sacct does not list job {job_id}: {jobs}"
    assert jobs[job_id]["State"] == "COMPLETED"
    assert jobs[job_id]["Comment"] == "rule_smoke"
    assert "gres/gpu=1" in jobs[job_id]["AllocTRES"]


# ---------------------------------------------------------------------------------------------------------
# The demo pipeline: local run vs SLURM run


def site_profile(dest: Path, cpus: int, jobname_prefix: str) -> Path:
    """profiles/slurm with its site values (partition, account, per-job CPUs and memory) set for the test
    cluster, and faster polling; everything else - executor, per-rule GPU requests, rerun-incomplete,
    latency, log settings - exactly as shipped."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account=ACCOUNT, mem_mb=2000)
    for resources in profile["set-resources"].values():
        if "slurm_partition" in resources:
            resources["slurm_partition"] = PARTITION
        if "cpus_per_gpu" in resources:
            resources["cpus_per_gpu"] = 1  # two jobs side by side on the 2-core node
        if "mem_mb" in resources:
            resources["mem_mb"] = 3000
    profile.update(
        {
            # Rules ask for 4 threads; sbatch would reject --cpus-per-task=4 on a node with fewer cores.
            "max-threads": cpus,
            # Jobs here take seconds; the shipped values are for jobs that take hours.
            "slurm-init-seconds-before-status-checks": 1,
            "seconds-between-status-checks": 2,
            "max-status-checks-per-second": 10,
            "latency-wait": 5,
            # A failure should fail the test at once, with its SLURM log kept for the message.
            "retries": 0,
            "slurm-keep-successful-logs": True,
            "slurm-jobname-prefix": jobname_prefix,
        }
    )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def pipeline_cmd(workdir: Path, profile: Path, configfiles: list[Path], *targets: str) -> list[str]:
    return [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", *map(str, configfiles), "--profile", str(profile), *targets]


def check_finished(proc: subprocess.Popen, workdir: Path, what: str, timeout: float) -> str:
    """Wait for a pipeline run; its log, or a failure that quotes it and the kept SLURM job logs."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{what} did not finish within {timeout:.0f} s:\n{out[-6000:]}")
    if proc.returncode != 0:
        slurm_logs = "".join(f"\n--- {p}\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("logs/slurm/**/*.log")))
        pytest.fail(f"{what} failed ({proc.returncode}):\n{out[-6000:]}{slurm_logs[-6000:]}")
    return out


def start_pipeline(workdir: Path, profile: Path, configfiles: list[Path], env: dict[str, str],
                   *targets: str) -> subprocess.Popen:
    return subprocess.Popen(pipeline_cmd(workdir, profile, configfiles, *targets), cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def submitted_rules(log: str) -> Counter:
    """Rules Snakemake ran as cluster jobs ("rule x:"), not locally ("localrule x:"), with job counts."""
    return Counter(line.split()[1].rstrip(":") for line in log.splitlines() if line.startswith("rule "))


def numbers(tree, path: str = "") -> dict[str, float]:
    """Every number in a JSON tree, by its path; environment records (versions) are not results."""
    if isinstance(tree, dict):
        return {
            k: v
            for key, sub in tree.items()
            if key != "versions"
            for k, v in numbers(sub, f"{path}/{key}").items()
        }
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, f"{path}/{i}").items()}
    if isinstance(tree, bool) or not isinstance(tree, int | float):
        return {}
    return {path: float(tree)}


def test_demo_pipeline_through_slurm_equals_local_run(slurm_cluster, request, tmp_path):
    from extractors.store import FeatureStore

    # The local run: the session's tiny demo run (TINY_DEMO: every stage, two extraction shards, defective videos
    # included, deterministic training), asked for once the cluster is known to be up.
    local_dir, configfiles = request.getfixturevalue("tiny_demo_run")
    # Each job as many threads as in the local run (same code, same seeds, same thread count per job: the
    # same numbers), and the local run's string hash seed.
    cpus = min(os.cpu_count() or 1, DEMO_CORES)
    prefix = f"avgzsl_test_{os.getpid()}"
    env = {**slurm_cluster.env, **DEMO_ENV}

    # The SLURM run starts from the local run's demo videos (its demo outputs, logs and Snakemake's metadata
    # copied, so it does not regenerate them): the comparison is about how jobs are executed, not about the video
    # encoder, whose multi-threaded output is not bit-reproducible. Every other job runs again, through SLURM.
    slurm_dir = tmp_path / "slurm"
    for part in (".snakemake", "results/demo", "logs/demo", "benchmarks/demo"):
        shutil.copytree(local_dir / part, slurm_dir / part, symlinks=True)

    since = _now()
    log = check_finished(start_pipeline(slurm_dir, site_profile(tmp_path / "profile", cpus, prefix), configfiles,
                                        env), slurm_dir, "the run through SLURM", timeout=900)

    # 1. The jobs really went through SLURM: one accounted, completed job per submitted Snakemake job,
    #    named after this run and commented with its rule (the plugin writes "rule_<name>[_wildcards_...]").
    submitted = submitted_rules(log)
    for rule in ("extract_shard", "assemble_features", "train_stage1", "train_stage2", "evaluate"):
        assert submitted[rule] >= 1, f"rule {rule} did not run as a cluster job:\n{log[-3000:]}"
    assert submitted["extract_shard"] == TINY_DEMO["extract"]["shards"]
    n_submitted = sum(submitted.values())
    jobs = [j for j in slurm_cluster.sacct_until(
        since, lambda js: sum(j["JobName"].startswith(prefix) for j in js) >= n_submitted)
        if j["JobName"].startswith(prefix)]
    by_rule: Counter = Counter()
    for job in jobs:
        assert job["State"] == "COMPLETED", f"SLURM job {job} did not complete"
        rule = next(
            (
                r
                for r in submitted
                if job["Comment"] == f"rule_{r}" or job["Comment"].startswith(f"rule_{r}_wildcards_")
            ),
            None,
        )
        assert rule is not None, f"SLURM job {job} is not one of the submitted rules {sorted(submitted)}"
        by_rule[rule] += 1
        # GPU rules (gpu=1 in the workflow and the profile) were given a GPU by SLURM, CPU rules none.
        if rule in ("extract_shard", "train_stage1", "train_stage2", "evaluate", "predict_extract_shard",
                    "predict_rank"):
            assert "gres/gpu=1" in job["AllocTRES"], f"{rule} job got no GPU from SLURM: {job}"
        else:
            assert "gres/gpu" not in job["AllocTRES"], f"{rule} job was given a GPU: {job}"
    assert by_rule == submitted, f"sacct lists {dict(by_rule)}, Snakemake submitted {dict(submitted)}"

    # 2. Same results as the local run. Features: same videos, statuses and values, bit for bit (same
    #    code, same seeds, same thread count per job). Metrics: every number equal.
    local_store = FeatureStore(local_dir / "results/features/demo/features.zarr")
    slurm_store = FeatureStore(slurm_dir / "results/features/demo/features.zarr")
    assert slurm_store.video_ids == local_store.video_ids
    assert [(r["status"], r["n_audio"], r["n_video"]) for r in slurm_store.table] == [
        (r["status"], r["n_audio"], r["n_video"]) for r in local_store.table
    ]
    for modality in ("audio", "video"):
        for a, b in zip(local_store.read(modality), slurm_store.read(modality), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{modality} features differ between local and SLURM")

    metrics = "results/evaluate/demo/cls/tcaf/metrics.json"
    local_numbers = numbers(json.loads((local_dir / metrics).read_text()))
    slurm_numbers = numbers(json.loads((slurm_dir / metrics).read_text()))
    assert local_numbers, "metrics.json holds no numbers"
    assert slurm_numbers == pytest.approx(local_numbers, rel=1e-6, abs=1e-9)

    with open(slurm_dir / "results/report/demo/cls/results.tsv", newline="") as f:
        assert list(csv.reader(f, delimiter="\t")), "the SLURM run's results table is empty"
