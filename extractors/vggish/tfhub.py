"""TensorFlow-Hub VGGish backend: `hub.load(handle or local SavedModel dir)`, waveform -> [K,128] float32.

google/vggish/1 takes a 1-D float32 16 kHz mono waveform in [-1, 1] and returns pre-activation embeddings, one per
complete 0.96 s example, computed with its own tf.signal frontend (spec §1.6). TensorFlow is imported lazily: it
costs seconds and most of the pipeline never needs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .frontend import num_examples


def _import_tf():
    import tensorflow as tf  # lazy on purpose
    import tensorflow_hub as hub

    # TF reserves (almost) all GPU memory on first use by default, which would starve the torch C3D running in the
    # same process; grow on demand instead. Must happen before TF initialises the GPUs, hence here.
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # GPUs already initialised by an earlier TF user in this process: keep its setting
    return tf, hub


TFHUB_HANDLE = "https://tfhub.dev/google/vggish/1"


def download_savedmodel(dest: str | os.PathLike, handle: str = TFHUB_HANDLE) -> Path:
    """Fetch a SavedModel with `tensorflow_hub.resolve` (needs the network) and copy it to `dest` atomically."""
    _, hub = _import_tf()
    src = Path(hub.resolve(handle))
    assert (src / "saved_model.pb").exists(), f"{handle} resolved to {src}, which holds no saved_model.pb"
    dest = Path(dest)
    tmp = dest.with_name(dest.name + f".part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    os.replace(tmp, dest)
    return dest


class TFHubVGGish:
    """Callable: waveform float [S] (numpy or torch) -> np.float32 [K, 128] (pre-activation, as published)."""

    def __init__(self, handle: str, device: str = "cpu"):
        tf, hub = _import_tf()
        self._tf = tf
        self.handle = handle
        # Follow the extractor's device: TF would otherwise pick a GPU whenever one is visible.
        has_gpu = bool(tf.config.list_logical_devices("GPU"))
        self.tf_device = "/GPU:0" if device.startswith("cuda") and has_gpu else "/CPU:0"
        try:
            with tf.device(self.tf_device):
                self.model = hub.load(handle)
        except Exception as e:  # re-raised with the handle named
            raise ValueError(
                f"cannot load VGGish SavedModel from {handle!r} ({type(e).__name__}: {e}). Expect a TF-Hub handle or "
                "a local directory holding saved_model.pb and variables/."
            ) from e

    def __call__(self, waveform) -> np.ndarray:
        if hasattr(waveform, "detach"):
            waveform = waveform.detach().cpu().numpy()
        x = np.asarray(waveform, np.float32)
        assert x.ndim == 1, f"tfhub VGGish takes a mono waveform [S], got shape {x.shape}"
        if num_examples(len(x)) == 0:
            # Too short for one 0.96 s example: answer without TF, whose conv ops reject some empty batches.
            return np.zeros((0, 128), np.float32)
        with self._tf.device(self.tf_device):
            out = self.model(self._tf.constant(x)).numpy().astype(np.float32)
        assert out.ndim == 2 and out.shape[1] == 128, f"{self.handle}: unexpected output shape {out.shape}"
        return out
