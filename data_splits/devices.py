"""Which GPU a job uses: the GPUs allotted to it, never a fixed index.

* **SLURM** confines a job to its allocation by setting ``CUDA_VISIBLE_DEVICES``, so the job sees only its
  own GPUs and takes the first visible one. On a site that allocates GPUs without confining the job
  (``SLURM_JOB_GPUS`` / ``SLURM_STEP_GPUS`` set, ``CUDA_VISIBLE_DEVICES`` not), only the allocated indices
  are candidates.
* **One machine** (``snakemake --resources gpu=N``): Snakemake only counts GPUs, it does not tell a job
  which one is free. With more than one candidate GPU, a job takes a per-GPU slot lock: an exclusive
  ``fcntl.flock`` on ``<lock dir>/gpu-<id>.lock``, the first free one in visible order, held until the
  process exits (the kernel releases it even when the process is killed). Two concurrent shards therefore
  land on two GPUs. When every slot is taken the job waits for one to be released.

The lock directory is ``$AVGZSL_GPU_LOCK_DIR`` (``none`` turns slot locks off: the first candidate is
used), else ``<system temp dir>/avgzsl-gpu-locks-<uid>``. Locks are named by the physical GPU (its
``CUDA_VISIBLE_DEVICES`` entry, index or UUID), so jobs with different visible sets that share a GPU
still exclude each other on it.

Only the standard library at import time; torch is imported by the function that counts devices.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "AVGZSL_GPU_LOCK_DIR"
LOCK_TIMEOUT_ENV = "AVGZSL_GPU_LOCK_TIMEOUT"  # seconds to wait for a free GPU slot; unset or empty: no limit
SLURM_GPU_VARS = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS")


@dataclass(frozen=True)
class Slot:
    """The GPU a process took: its torch index among the visible devices, and the lock that holds it."""

    index: int
    gpu_id: str  # physical id: the CUDA_VISIBLE_DEVICES entry (index or UUID), or the index when unset
    lock_path: Path | None  # None when no lock was needed (one candidate) or locks are off


# The slot this process holds: one per process, so every resolve_device call of a job (extractors, training,
# class embeddings) gets the same GPU, and a second flock on the same file by this process cannot block it.
_held: Slot | None = None
_held_fd: int | None = None
_held_key: tuple | None = None


def visible_ids(env: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """Physical ids of the visible GPUs in torch's index order.

    ``CUDA_VISIBLE_DEVICES`` lists them when set (entries past ``count`` are not visible to torch);
    otherwise torch index i is physical GPU i.
    """
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip() != "":
        ids = [x.strip() for x in listed.split(",") if x.strip()]
        return ids if count is None else ids[:count]
    return [str(i) for i in range(count or 0)]


def candidate_indices(count: int, env: Mapping[str, str] | None = None) -> list[int]:
    """Torch indices this job may use: all visible ones, narrowed to SLURM's allocation when SLURM names
    GPUs that the job was not confined to."""
    env = os.environ if env is None else env
    all_idx = list(range(count))
    if env.get("CUDA_VISIBLE_DEVICES", "").strip():
        return all_idx  # the visible set is the allocation (SLURM, or the user)
    for var in SLURM_GPU_VARS:
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            allocated = [int(x) for x in _expand_ranges(raw)]
        except ValueError:
            log.warning("%s=%r is not a list of GPU indices; using every visible GPU", var, raw)
            return all_idx
        chosen = [i for i in allocated if 0 <= i < count]
        if not chosen:
            raise RuntimeError(
                f"{var}={raw} names GPU(s) that are not visible ({count} visible); the job's allocation does not "
                "match the node: check the SLURM gres configuration or set CUDA_VISIBLE_DEVICES"
            )
        return chosen
    return all_idx


def _expand_ranges(raw: str) -> list[str]:
    """``"0,2-3"`` -> ``["0", "2", "3"]`` (SLURM writes ranges in its GPU lists)."""
    out: list[str] = []
    for part in raw.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part:
            out.append(part)
    return out


def lock_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The slot-lock directory, or None when locks are turned off (``AVGZSL_GPU_LOCK_DIR=none``)."""
    env = os.environ if env is None else env
    raw = env.get(LOCK_DIR_ENV)
    if raw is not None and raw.strip().lower() in ("none", "off"):
        return None
    if raw:
        return Path(raw).expanduser()
    return Path(tempfile.gettempdir()) / f"avgzsl-gpu-locks-{os.getuid()}"


def _lock_timeout(env: Mapping[str, str]) -> float | None:
    raw = env.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds; unset it to wait without "
                         "limit") from None
    if value < 0:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r} must be >= 0 seconds")
    return value


def _safe_name(gpu_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu_id)


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # Who holds it, for someone looking at the folder; the lock, not the text, is what counts.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def acquire_gpu(
    count: int,
    *,
    env: Mapping[str, str] | None = None,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Slot:
    """The GPU (torch index) this process uses among ``count`` visible devices, taking its slot lock.

    Called once per process; later calls return the same slot. ``count`` must be >= 1.
    """
    global _held, _held_fd, _held_key
    env = os.environ if env is None else env
    if count < 1:
        raise ValueError(f"acquire_gpu needs at least one visible GPU, got count={count}")
    ids = visible_ids(env, count)
    if len(ids) < count:  # CUDA_VISIBLE_DEVICES shorter than what torch sees cannot happen; be safe
        ids += [str(i) for i in range(len(ids), count)]
    candidates = candidate_indices(count, env)
    directory = lock_dir(env)
    key = (tuple(ids), tuple(candidates), str(directory))
    if _held is not None:
        if _held_key != key:
            log.warning("visible GPUs changed since this process took GPU %s; keeping it", _held.gpu_id)
        return _held
    if len(candidates) == 1 or directory is None:
        _held = Slot(candidates[0], ids[candidates[0]], None)
        _held_key = key
        return _held
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeError(f"cannot create the GPU slot-lock folder {directory} ({e}); set {LOCK_DIR_ENV} to a "
                           f"writable folder, or {LOCK_DIR_ENV}=none to always take the first visible GPU") from e
    timeout = _lock_timeout(env)
    waited, announced = 0.0, False
    while True:
        for i in candidates:
            path = directory / f"gpu-{_safe_name(ids[i])}.lock"
            fd = _try_lock(path)
            if fd is not None:
                _held, _held_fd, _held_key = Slot(i, ids[i], path), fd, key
                log.info("using GPU %s (cuda:%d), slot lock %s", ids[i], i, path)
                return _held
        if timeout is not None and waited >= timeout:
            raise RuntimeError(
                f"no free GPU after {waited:.0f} s: all {len(candidates)} slot locks in {directory} are held by "
                f"other jobs; run fewer GPU jobs at once (snakemake --resources gpu=N with N at most the GPUs "
                f"visible), or raise {LOCK_TIMEOUT_ENV}"
            )
        if not announced:
            log.warning("all %d GPU slots in %s are taken; waiting for one to be released", len(candidates), directory)
            announced = True
        sleep(poll_s)
        waited += poll_s


def held_slot() -> Slot | None:
    """The slot this process holds, if any."""
    return _held


def release_gpu() -> None:
    """Give the slot back before the process ends (the exit releases it anyway)."""
    global _held, _held_fd, _held_key
    if _held_fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(_held_fd, fcntl.LOCK_UN)
            os.close(_held_fd)
    _held, _held_fd, _held_key = None, None, None


def assign_cuda_index() -> int:
    """The torch index of the GPU of this job (``cuda`` / ``auto`` without an index), see module doc."""
    import torch

    return acquire_gpu(torch.cuda.device_count()).index
