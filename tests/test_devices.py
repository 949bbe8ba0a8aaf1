"""GPU allotment (data_splits/devices.py): SLURM allocations, per-GPU slot locks across processes, errors.

The GPU count is mocked (no GPU is needed); the locks are real ``flock`` locks taken by real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data_splits import devices
from data_splits.common import resolve_device

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys
sys.path.insert(0, {repo!r})
from data_splits.devices import acquire_gpu
slot = acquire_gpu({count})
print(slot.index, slot.gpu_id, flush=True)
sys.stdin.read()  # hold the slot until the test closes stdin
"""


@pytest.fixture(autouse=True)
def fresh_slot(monkeypatch, tmp_path):
    """Every test starts without a held slot, with its own lock folder and no SLURM or CUDA variables."""
    for var in ("CUDA_VISIBLE_DEVICES", devices.LOCK_TIMEOUT_ENV, *devices.SLURM_GPU_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "locks"))
    devices.release_gpu()
    yield
    devices.release_gpu()


class Holder:
    """A separate process that takes a GPU slot and keeps it until closed."""

    def __init__(self, count: int, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER.format(repo=str(REPO), count=count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"holder process failed: {self.proc.stderr.read()}")
        index, gpu_id = line.split()
        self.index, self.gpu_id = int(index), gpu_id

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


# ----------------------------------------------------------------------------------------- slot locks


def test_two_processes_take_two_gpus_and_a_freed_slot_is_reused(tmp_path):
    first = Holder(2)
    try:
        assert first.index == 0
        second = Holder(2)
        try:
            assert second.index == 1
            # both slots held: this process waits, here with a limit, and says what to change
            env = {**os.environ, devices.LOCK_TIMEOUT_ENV: "0"}
            with pytest.raises(RuntimeError, match=r"no free GPU.*2 slot locks.*--resources gpu=N"):
                devices.acquire_gpu(2, env=env)
        finally:
            second.close()
        # the second process ended, so its GPU is free again
        assert devices.acquire_gpu(2).index == 1
    finally:
        first.close()
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["gpu-0.lock", "gpu-1.lock"]


def test_a_killed_process_releases_its_slot():
    holder = Holder(2)
    assert holder.index == 0
    holder.kill()
    assert devices.acquire_gpu(2).index == 0


def test_one_slot_per_process_and_every_call_gets_it():
    slot = devices.acquire_gpu(3)
    assert slot.index == 0 and slot.lock_path is not None and slot.lock_path.name == "gpu-0.lock"
    assert devices.acquire_gpu(3) is slot  # a second flock by this process would block on its own lock
    assert devices.held_slot() is slot
    other = Holder(3)
    try:
        assert other.index == 1
    finally:
        other.close()


def test_waits_for_a_slot_until_one_is_released(monkeypatch):
    a, b = Holder(2), Holder(2)
    sleeps = []

    def sleep(s: float) -> None:  # the second poll finds the first holder gone
        sleeps.append(s)
        if len(sleeps) == 1:
            a.close()

    try:
        slot = devices.acquire_gpu(2, sleep=sleep, poll_s=0.01)
        assert slot.index == a.index == 0 and len(sleeps) == 1
    finally:
        b.close()


def test_locks_are_named_by_the_physical_gpu(monkeypatch):
    """Jobs with different visible sets exclude each other on the GPU they share."""
    holder = Holder(2, {"CUDA_VISIBLE_DEVICES": "GPU-aaa,GPU-bbb"})
    try:
        assert (holder.index, holder.gpu_id) == (0, "GPU-aaa")
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb,GPU-aaa")
        slot = devices.acquire_gpu(2)
        assert (slot.index, slot.gpu_id) == (0, "GPU-bbb")  # GPU-aaa is taken, whatever its index here
    finally:
        holder.close()


def test_locks_off_takes_the_first_gpu(monkeypatch):
    monkeypatch.setenv(devices.LOCK_DIR_ENV, "none")
    slot = devices.acquire_gpu(4)
    assert slot.index == 0 and slot.lock_path is None


def test_default_lock_folder_is_per_user(monkeypatch):
    monkeypatch.delenv(devices.LOCK_DIR_ENV)
    assert devices.lock_dir().name == f"avgzsl-gpu-locks-{os.getuid()}"


# ----------------------------------------------------------------------------------------------- SLURM


def test_slurm_confined_job_uses_its_first_visible_gpu_without_a_lock(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_GPUS", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what SLURM sets for --gpus=1
    slot = devices.acquire_gpu(1)
    assert (slot.index, slot.gpu_id, slot.lock_path) == (0, "3", None)


def test_slurm_allocation_without_confinement_narrows_the_candidates(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_GPUS", "2-3")
    first = Holder(4, {"SLURM_JOB_GPUS": "2-3"})
    try:
        assert first.index == 2
        slot = devices.acquire_gpu(4)
        assert (slot.index, slot.lock_path.name) == (3, "gpu-3.lock")
    finally:
        first.close()
    monkeypatch.setenv("SLURM_STEP_GPUS", "1")  # the step's GPUs come before the job's
    devices.release_gpu()
    assert devices.acquire_gpu(4).index == 1


def test_slurm_gpus_that_are_not_visible_are_an_error(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_GPUS", "6,7")
    with pytest.raises(RuntimeError, match=r"SLURM_JOB_GPUS=6,7 names GPU\(s\) that are not visible \(2 visible\)"):
        devices.acquire_gpu(2)


def test_visible_ids_and_candidates():
    assert devices.visible_ids({"CUDA_VISIBLE_DEVICES": "4, 6"}, 2) == ["4", "6"]
    assert devices.visible_ids({}, 3) == ["0", "1", "2"]
    assert devices.candidate_indices(4, {"SLURM_JOB_GPUS": "0,2-3"}) == [0, 2, 3]
    assert devices.candidate_indices(4, {"SLURM_JOB_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0,1"}) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------------- errors


def test_bad_timeout_and_unwritable_folder_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setenv(devices.LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=r"AVGZSL_GPU_LOCK_TIMEOUT='soon' is not a number of seconds"):
        devices.acquire_gpu(2)
    monkeypatch.delenv(devices.LOCK_TIMEOUT_ENV)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(blocker / "locks"))
    with pytest.raises(RuntimeError, match=r"cannot create the GPU slot-lock folder .*AVGZSL_GPU_LOCK_DIR=none"):
        devices.acquire_gpu(2)
    with pytest.raises(ValueError, match="at least one visible GPU"):
        devices.acquire_gpu(0)


# ------------------------------------------------------------------------------------ resolve_device


@pytest.fixture
def two_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return torch


@pytest.mark.parametrize("spec", ["auto", "cuda", None])
def test_resolve_device_takes_the_free_gpu(two_gpus, spec):
    holder = Holder(2)  # another job on GPU 0
    try:
        assert resolve_device(spec, "train.device") == two_gpus.device("cuda", 1)
        assert resolve_device("cuda", "extract.device") == two_gpus.device("cuda", 1)  # same job, same GPU
    finally:
        holder.close()


def test_resolve_device_explicit_index_and_single_gpu(monkeypatch, two_gpus):
    assert resolve_device("cuda:1") == two_gpus.device("cuda", 1)  # explicit: as asked, no slot taken
    assert devices.held_slot() is None
    monkeypatch.setattr(two_gpus.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == two_gpus.device("cuda")
    assert devices.held_slot() is None


def test_resolve_device_cuda_missing_is_an_error_before_any_slot(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"train\.device: cuda asks for a CUDA GPU"):
        resolve_device("cuda", "train.device")
    assert resolve_device("auto") == torch.device("cpu")
    assert devices.held_slot() is None
