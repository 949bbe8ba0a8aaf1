"""Convert a VGGish TF SavedModel (e.g. TF-Hub google/vggish/1) into a torch state dict for `model.VGGish`.

Variable mapping (names as created by `vggish_slim.define_vggish_slim`, kept by the TF-Hub export):

| TF variable                              | shape (TF)         | torch key                  | transform        |
|------------------------------------------|--------------------|----------------------------|------------------|
| vggish/conv1/weights, biases             | [3,3,1,64], [64]   | features.0.weight, .bias   | HWIO -> OIHW     |
| vggish/conv2/...                         | [3,3,64,128]       | features.3                 | HWIO -> OIHW     |
| vggish/conv3/conv3_1, conv3/conv3_2      | [3,3,128,256] ...  | features.6, features.8     | HWIO -> OIHW     |
| vggish/conv4/conv4_1, conv4/conv4_2      | [3,3,256,512] ...  | features.11, features.13   | HWIO -> OIHW     |
| vggish/fc1/fc1_1, fc1/fc1_2              | [12288,4096] ...   | embeddings.0, embeddings.2 | [in,out] -> [out,in] |
| vggish/fc2                               | [4096,128]         | embeddings.4               | [in,out] -> [out,in] |

fc1_1's input rows are in TF's NHWC flatten order; `VGGish.forward` flattens NHWC too, so no row permutation.
CLI: `python -m extractors.vggish.convert SAVEDMODEL_DIR OUT.pth`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from data_splits.common import atomic_torch_save

from .model import TF_TO_TORCH, VGGish


def _collect_variables(obj, seen: set[int] | None = None, depth: int = 0) -> list:
    """All tf.Variables reachable from a loaded SavedModel object (restored objects have no uniform `.variables`)."""
    import tensorflow as tf

    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return []
    seen.add(id(obj))
    if isinstance(obj, tf.Variable):
        return [obj]
    out = []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, list | tuple) or type(obj).__name__ == "ListWrapper":
        children = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = [v for k, v in vars(obj).items() if not k.startswith("_self_")]
    else:
        children = []
    for c in children:
        out += _collect_variables(c, seen, depth + 1)
    return out


def savedmodel_variables(saved_model_dir: str | Path) -> dict[str, np.ndarray]:
    """{variable name without ':0' -> value} for every variable of a SavedModel."""
    import tensorflow as tf

    obj = tf.saved_model.load(str(saved_model_dir))
    return {v.name.split(":")[0]: v.numpy() for v in _collect_variables(obj)}


def tf_variables_to_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map slim-named VGGish variables to `VGGish` state-dict tensors (see the module table)."""
    state: dict[str, torch.Tensor] = {}
    for scope, key in TF_TO_TORCH.items():
        for tf_suffix, t_suffix in (("weights", "weight"), ("biases", "bias")):
            name = f"{scope}/{tf_suffix}"
            if name not in variables:
                raise KeyError(
                    f"VGGish variable {name!r} not in the SavedModel (found: {sorted(variables)[:12]}...). "
                    "Is this a VGGish SavedModel (TF-Hub google/vggish/1)?"
                )
            v = np.asarray(variables[name], dtype=np.float32)
            if t_suffix == "weight":
                v = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T  # HWIO -> OIHW ; [in,out] -> [out,in]
            state[f"{key}.{t_suffix}"] = torch.from_numpy(np.ascontiguousarray(v))
    # Validates shapes and completeness against the torch architecture.
    VGGish().load_state_dict(state, strict=True)
    return state


def convert_savedmodel_to_torch(saved_model_dir: str | os.PathLike, out_pth: str | os.PathLike) -> Path:
    """SavedModel directory -> torch state dict file (written atomically). Returns the output path."""
    saved_model_dir = Path(saved_model_dir)
    if not (saved_model_dir / "saved_model.pb").exists():
        raise FileNotFoundError(
            f"{saved_model_dir} is not a SavedModel directory (no saved_model.pb). Download google/vggish/1 from "
            "https://tfhub.dev/google/vggish/1 (Kaggle Models) and unpack it there."
        )
    state = tf_variables_to_state_dict(savedmodel_variables(saved_model_dir))
    return atomic_torch_save(state, out_pth)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("saved_model_dir")
    p.add_argument("out_pth")
    a = p.parse_args(argv)
    import torch as _torch  # noqa: F401 - torch is imported before tensorflow in every process

    out = convert_savedmodel_to_torch(a.saved_model_dir, a.out_pth)
    from ..weights import sha256_file

    print(f"wrote {out} sha256 {sha256_file(out)}")


if __name__ == "__main__":
    main()
