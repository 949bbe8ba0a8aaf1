"""Helpers every package shares: the split names, config key checks, device resolution, atomic writes.

They live here because ``data_splits`` is the package that ``model/``, ``extractors/`` and the workflow
scripts can all import without torch and without a cycle, and this module imports only the standard
library (torch only inside the functions that need it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

# ----------------------------------------------------------------------------------------------
# Split names
# ----------------------------------------------------------------------------------------------

# The six lists of the benchmark protocol (docs/splits.md): one ``<name>.txt`` of classes and one
# ``<name>.csv`` of videos each, in the official folder and in ``results/splits/<dataset>/<kind>/``.
SPLIT_NAMES: tuple[str, ...] = (
    "stage_1_train",
    "stage_1_val_seen",
    "stage_1_val_unseen",
    "stage_2_train",
    "stage_2_test_seen",
    "stage_2_test_unseen",
)


# ----------------------------------------------------------------------------------------------
# Config sections: unknown keys
# ----------------------------------------------------------------------------------------------


def check_keys(allowed: type | Iterable[str], d: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """A copy of the config section ``d`` (at key path ``where``, e.g. ``"extract.video"``).

    ``allowed`` is a dataclass (its field names) or the names themselves. A key outside them is an
    error naming its full path and the allowed keys; ``None`` is an empty section.
    """
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise TypeError(f"{where}: expected a mapping of keys to values, got {type(d).__name__}")
    if isinstance(allowed, type) and dataclasses.is_dataclass(allowed):
        names = sorted(f.name for f in dataclasses.fields(allowed))
    else:
        names = sorted(allowed)
    unknown = [k for k in d if k not in names]
    if unknown:
        paths = ", ".join(f"{where}.{k}" for k in unknown)
        quoted = ", ".join(repr(k) for k in unknown)
        what = f"is not a key of {where}" if len(unknown) == 1 else f"are not keys of {where}"
        raise ValueError(f"unknown key{'s' if len(unknown) > 1 else ''} {paths}: {quoted} {what}; allowed keys: {names}")
    return dict(d)


# ----------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------

_DEVICE = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def parse_device(spec: Any, key: str = "device") -> tuple[str, int | None]:
    """``(kind, index)`` of a device setting, without torch: ``auto``, ``cpu``, ``cuda`` or ``cuda:<i>``.

    ``None`` means ``auto``; a ``torch.device`` is read by its string. Anything else is a ValueError
    naming ``key``.
    """
    text = "auto" if spec is None else str(spec)
    m = _DEVICE.fullmatch(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(f"{key}: {spec!r} is not a device; use auto (cuda when available, else cpu), cpu, cuda "
                         "or cuda:<index>")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def resolve_device(spec: Any = "auto", key: str = "device") -> torch.device:
    """The torch device for a device setting (config key ``key``).

    ``auto`` (or None) -> cuda when available, else cpu; ``cpu`` -> cpu; ``cuda`` / ``cuda:<i>`` -> that
    GPU, and a RuntimeError when CUDA is not available or the index is out of range: a GPU that was
    asked for and is not there is an error, never a silent run on the CPU. Call it before any work.

    ``auto`` / ``cuda`` without an index, with more than one GPU visible, is the GPU allotted to this job
    (:mod:`data_splits.devices`: SLURM's allocation, else the first free per-GPU slot lock), the same for
    every call in the process; with one GPU visible it is that GPU.
    """
    import torch

    kind, index = parse_device(spec, key)
    if kind == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return _allotted_cuda(torch)
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{key}: {spec!s} asks for a CUDA GPU, but CUDA is not available on this machine (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); set `{key}: auto` (the GPU when there is "
            f"one, else the CPU) or `{key}: cpu`"
        )
    if index is not None:
        count = torch.cuda.device_count()
        if index >= count:
            raise RuntimeError(
                f"{key}: {spec!s} asks for CUDA device {index}, but only {count} device(s) are visible "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); set `{key}: auto`, "
                f"`{key}: cuda` or `{key}: cpu`"
            )
        return torch.device("cuda", index)
    return _allotted_cuda(torch)


def _allotted_cuda(torch: Any) -> torch.device:
    if torch.cuda.device_count() <= 1:
        return torch.device("cuda")
    from data_splits.devices import assign_cuda_index

    return torch.device("cuda", assign_cuda_index())


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path`` atomically.

    The temporary name is unique per process and call (``.<name>.tmp-<pid>-<random>``, in the same folder,
    so the rename never crosses file systems); the data is flushed and fsync-ed before the rename, and the
    temporary file is removed when the block raises. Readers therefore see the old file or the complete new
    one, never a half-written file. The file gets the permissions of any new file under the umask.
    ``mode`` is ``"wb"`` or ``"w"`` (with ``encoding``/``newline`` in ``kwargs``); ``f.name`` is the
    temporary path (e.g. to checksum it before it is published).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode.replace("w", "x"), **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`); newlines are written as given."""
    with atomic_open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_open`)."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)
