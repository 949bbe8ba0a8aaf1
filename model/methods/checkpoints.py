"""Reading checkpoints of the official implementations (TCAF's and the AVCA-GZSL benchmark's) and loading them
strictly into the re-implementations.

The official training scripts save ``{"epoch", "model", "optimizer", "metric"}`` dicts whose "model" entry is the
state dict; the loaders here accept the file, that dict or the state dict itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)


def checkpoint_state(source: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict of a checkpoint dict, or ``source`` itself when it is a state dict."""
    if "model" in source and isinstance(source["model"], Mapping):
        return source["model"]
    return source


def read_official_state_dict(source: str | Path | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """The state dict of a checkpoint file, of a checkpoint dict, or the state dict itself; ``what`` names the
    model in the error for a missing file."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"official {what} checkpoint not found: {path}")
        # The official dicts hold tensors, ints and a metric name string: safe for weights_only.
        source = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint_state(source)


def require_prefix(state: Mapping[str, Any], prefix: str, what: str) -> None:
    """Reject a state dict of another model early: none of its keys starts with ``prefix``."""
    if not any(k.startswith(prefix) for k in state):
        raise ValueError(f"not an official {what} state dict (no '{prefix}' keys); pass the checkpoint file, its "
                         "dict, or its 'model' entry")


def read_data_parallel_state_dict(source: str | Path | Mapping[str, Any], what: str, marker: str) -> dict[str, Any]:
    """As ``read_official_state_dict``, without the ``module.`` prefix of a DataParallel model (the official
    loader drops it), and rejected unless a key starts with ``marker``."""
    state = read_official_state_dict(source, what)
    state = {k.replace("module.", "", 1) if k.startswith("module.") else k: v for k, v in state.items()}
    require_prefix(state, marker, what)
    return state


def rename_prefixes(state: Mapping[str, Any], prefixes: Mapping[str, str], what: str) -> dict[str, Any]:
    """Each key's prefix (a key of ``prefixes``) replaced by its value; a key without one is an error."""
    out, unknown = {}, []
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            out[prefixes[prefix] + key[len(prefix):]] = value
    if unknown:
        raise ValueError(f"official {what} state dict has keys this model does not know: {sorted(unknown)[:8]}")
    return out


def official_shape(state: Mapping[str, Tensor], key: str, what: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"official {what} state dict lacks {key!r}")
    return tuple(state[key].shape)


def state_mismatches(own: Mapping[str, Tensor], state: Mapping[str, Tensor],
                     source: str = "checkpoint") -> tuple[list[str], list[str], list[str]]:
    """(keys of ``own`` that ``state`` lacks, keys of ``state`` that ``own`` lacks, "<key>: <source> <shape> vs
    model <shape>" for each shared key whose shapes differ), each sorted by key."""
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: {source} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    return missing, extra, wrong


def load_strictly(model: M, state: Mapping[str, Tensor], *, what: str, fix: str) -> M:
    """Load ``state`` into ``model``: every tensor must land on one of the same shape and every tensor of
    ``model`` must be covered; otherwise the error names the keys and ends with ``fix``."""
    missing, extra, wrong = state_mismatches(model.state_dict(), state)
    if missing or extra or wrong:
        raise ValueError(
            f"official {what} state dict does not match the model config "
            f"(missing in checkpoint: {missing[:8]}; not in model: {extra[:8]}; "
            f"shape mismatches: {wrong[:8]}); {fix}")
    model.load_state_dict(state, strict=True)
    return model
