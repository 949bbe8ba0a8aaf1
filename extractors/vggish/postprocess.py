"""AudioSet PCA whitening + clip + 8-bit quantisation (spec §1.4), as in the benchmark's released features.

q = floor(63.75 * (clip(E (x - mu), -2, 2) + 2)) in 0..255, computed in float64 like the numpy reference so that
codes only differ from it where the float32 network output itself differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

QUANT_MIN = -2.0
QUANT_MAX = 2.0
IDENTITY = "identity"  # placeholder PCA (E = I, mu = 0) for random-weight demo/tests


def load_pca_params(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read `vggish_pca_params.npz` -> (eigen_vectors [128,128] float64, means [128] float64)."""
    path = Path(path)
    try:
        with np.load(path) as z:
            missing = {"pca_eigen_vectors", "pca_means"} - set(z.files)
            assert not missing, f"{path}: missing arrays {sorted(missing)} (found {z.files})"
            e = np.asarray(z["pca_eigen_vectors"], dtype=np.float64)
            mu = np.asarray(z["pca_means"], dtype=np.float64).reshape(-1)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read PCA params {path}: {err}") from err
    assert e.shape == (128, 128) and mu.shape == (128,), (
        f"{path}: expected pca_eigen_vectors [128,128] and pca_means [128], got {e.shape} and {mu.shape}"
    )
    return e, mu


class PCAQuantizer:
    """float embeddings [K,128] -> uint8 codes [K,128]."""

    def __init__(self, eigen_vectors: np.ndarray, means: np.ndarray):
        self.e = np.asarray(eigen_vectors, dtype=np.float64)
        self.mu = np.asarray(means, dtype=np.float64).reshape(-1)

    @classmethod
    def from_spec(cls, spec: str | Path) -> PCAQuantizer:
        if str(spec) == IDENTITY:
            return cls(np.eye(128), np.zeros(128))
        return cls(*load_pca_params(spec))

    def whiten(self, emb: np.ndarray) -> np.ndarray:
        """[K,128] -> PCA-whitened float64 [K,128] (before clipping)."""
        x = np.asarray(emb, dtype=np.float64)
        assert x.ndim == 2 and x.shape[1] == self.e.shape[1], f"expected [K,128] embeddings, got {x.shape}"
        return (x - self.mu) @ self.e.T  # row form of E (x - mu)

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        y = np.clip(self.whiten(emb), QUANT_MIN, QUANT_MAX)
        # (y + 2) * 255 / 4 >= 0, so the reference's astype(uint8) truncation is a floor.
        return ((y - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN))).astype(np.uint8)
