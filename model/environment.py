"""The training process's environment: seeds and determinism, RNG states for exact resume, library versions.

Devices are resolved by :func:`data_splits.common.resolve_device` (shared with the extractors and the
class embeddings).
"""

from __future__ import annotations

import logging
import os
import platform
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")  # the workspace settings cuBLAS documents as reproducible


def configure_determinism(deterministic: bool) -> None:
    """Deterministic kernels everywhere (CPU and CUDA), or torch's defaults.

    Strict: an operation without a deterministic implementation raises instead of warning, so a run that
    claims to be reproducible is. cuBLAS needs a fixed workspace, which it reads when its first handle is
    created: call this before any CUDA work (``model.pipeline.load_experiment`` does, before the device is
    even resolved). Attention then runs SDPA's math backend on CUDA (``model.attention``).
    """
    if deterministic:
        was_set = "CUBLAS_WORKSPACE_CONFIG" in os.environ
        value = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])
        if value not in CUBLAS_DETERMINISTIC:
            raise ValueError(f"train.deterministic: CUBLAS_WORKSPACE_CONFIG={value!r} in the environment makes cuBLAS "
                             f"non-deterministic; unset it (then {CUBLAS_DETERMINISTIC[0]} is used) or set one of "
                             f"{list(CUBLAS_DETERMINISTIC)}")
        if not was_set and torch.cuda.is_initialized():
            log.warning("train.deterministic: CUDA was initialised before CUBLAS_WORKSPACE_CONFIG was set; matmuls "
                        "that already created their cuBLAS handle may not be reproducible")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic


def configure_precision(allow_tf32: bool) -> None:
    """TensorFloat-32 for float32 matmuls and cuDNN convolutions on CUDA, or exact float32 (the default).

    Both are set explicitly because torch's defaults differ (cuDNN convolutions allow TF32, matmuls do not).
    No effect on the CPU.
    """
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every RNG the training touches (python, numpy, torch CPU and CUDA) and set determinism."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices
    configure_determinism(deterministic)


def library_versions(device: torch.device | str | None = None) -> dict[str, str]:
    """Library versions, and the CUDA version and GPU name when ``device`` (default: the current GPU) is one."""
    import zarr

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "zarr": zarr.__version__}
    device = torch.device(device) if device is not None else None
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if device is not None and device.type == "cuda":
        out["cuda"] = str(torch.version.cuda)
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def rng_state() -> dict[str, Any]:
    """The global RNG states, all as CPU tensors (so a checkpoint loads on any device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`, also when written on another machine.

    The CPU states always apply. CUDA states apply to the GPUs this process has, by index, as far as both
    sides have them; a state written without CUDA leaves the GPUs' generators as seeded. Dropout on a GPU
    draws from the CUDA generator and on the CPU from the CPU one, so a run resumed on another kind of
    device continues correctly but not bit for bit like an uninterrupted one.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(torch.as_tensor(state["torch"], device="cpu"))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for i in range(min(len(cuda), torch.cuda.device_count())):
            torch.cuda.set_rng_state(torch.as_tensor(cuda[i], device="cpu"), i)
