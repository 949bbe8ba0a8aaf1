"""TensorFlow-Hub VGGish backend: `hub.load(handle or local SavedModel dir)`, waveform -> [K,128] float32.

google/vggish/1 takes a 1-D float32 16 kHz mono waveform in [-1, 1] and returns pre-activation embeddings, one per
complete 0.96 s example, computed with its own tf.signal frontend (spec §1.6). TensorFlow is imported lazily: it
costs seconds and most of the pipeline never needs it.
"""

from __future__ import annotations

import numpy as np

from .frontend import num_examples


def _import_tf():
    import tensorflow as tf  # lazy on purpose
    import tensorflow_hub as hub

    return tf, hub


class TFHubVGGish:
    """Callable: waveform float [S] (numpy or torch) -> np.float32 [K, 128] (pre-activation, as published)."""

    def __init__(self, handle: str):
        tf, hub = _import_tf()
        self._tf = tf
        self.handle = handle
        try:
            self.model = hub.load(handle)
        except Exception as e:  # re-raised with the handle named
            raise ValueError(
                f"cannot load VGGish SavedModel from {handle!r} ({type(e).__name__}: {e}). Expect a TF-Hub handle or "
                "a local directory holding saved_model.pb and variables/."
            ) from e

    def __call__(self, waveform) -> np.ndarray:
        x = np.asarray(
            waveform.detach().cpu().numpy() if hasattr(waveform, "detach") else waveform, np.float32
        )
        assert x.ndim == 1, f"tfhub VGGish takes a mono waveform [S], got shape {x.shape}"
        if num_examples(len(x)) == 0:
            # Too short for one 0.96 s example: answer without TF, whose conv ops reject some empty batches.
            return np.zeros((0, 128), np.float32)
        out = self.model(self._tf.constant(x)).numpy().astype(np.float32)
        assert out.ndim == 2 and out.shape[1] == 128, f"{self.handle}: unexpected output shape {out.shape}"
        return out
