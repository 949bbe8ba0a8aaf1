"""GZSL metrics: mean class accuracy, S / U / HM / ZSL, and calibrated stacking.

Follows the benchmark's evaluation protocol (reference spec section 7.2):

* distances are plain (not squared) L2 distances ``||theta_o - theta_w^c||_2`` to the class
  embeddings of the split's classes;
* calibrated stacking adds a bias ``beta`` to the distances of the **seen** classes before the
  arg-min, which moves predictions towards unseen classes;
* accuracy is the *mean class accuracy*: per-class recall averaged over classes, S over seen
  classes and U over unseen classes; ``HM = 2SU / (S + U + eps)`` with eps = float64 machine
  epsilon (as the reference, so that S = U = 0 gives HM = 0 rather than NaN);
* ZSL restricts both the candidates and the samples to the unseen classes and does not depend
  on beta;
* beta is searched on a grid (0 to 3, step 0.2) and the first beta with the highest HM wins.

Everything is vectorised over the beta grid: one distance matrix, then a ``[K, N]`` arg-min for
all K grid values at once (chunked over samples to bound memory).

All accuracies here are fractions in [0, 1]; reports multiply by 100.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = [
    "BIAS_GRID",
    "GZSLResult",
    "bias_grid",
    "class_distances",
    "gzsl_metrics",
    "mean_class_accuracy",
    "per_class_recall",
]

# float64 machine epsilon, as ``np.finfo(float).eps`` in the reference HM formula.
_EPS = torch.finfo(torch.float64).eps


def bias_grid(start: float = 0.0, stop: float = 3.0, step: float = 0.2) -> torch.Tensor:
    """Calibrated-stacking grid ``start, start+step, ..., stop`` (inclusive), float64.

    Built with linspace so that the end point is hit exactly (0..3 step 0.2 = 16 values, like
    ``np.linspace(0, 3, 16)`` in the reference) instead of accumulating float steps.
    """
    if step <= 0 or stop < start:
        raise ValueError(f"bias grid needs step > 0 and stop >= start, got {start=}, {stop=}, {step=}")
    n = round((stop - start) / step) + 1
    return torch.linspace(start, stop, n, dtype=torch.float64)


BIAS_GRID = bias_grid()


@dataclass
class GZSLResult:
    """Metrics at one bias, plus the HM of every grid value when a grid was searched."""

    S: float
    U: float
    HM: float
    ZSL: float
    bias: float
    grid: list[float] | None = None
    grid_HM: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def class_distances(embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` Euclidean (not squared) distances, computed in float32 or better."""
    x = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
    c = class_embeddings.to(x.dtype)
    # compute_mode keeps the exact difference-based formula: the matmul shortcut loses precision
    # for nearby points, which can flip arg-mins between runs on different hardware.
    return torch.cdist(x, c, compute_mode="donot_use_mm_for_euclid_dist")


def per_class_recall(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Recall of each class (``[..., C]``, NaN for classes without samples).

    ``pred`` may carry leading grid dimensions (``[K, N]``); ``target`` is ``[N]``.
    """
    counts = torch.bincount(target, minlength=n_classes).to(torch.float64)
    correct = (pred == target).to(torch.float64)
    hits = torch.zeros(*pred.shape[:-1], n_classes, dtype=torch.float64, device=pred.device)
    hits.index_add_(-1, target, correct)
    return hits / counts  # 0/0 -> NaN marks classes that have no samples


def mean_class_accuracy(recall: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the recalls of the classes in ``class_mask`` that have samples (``[...]``).

    Classes without samples are left out: the reference only averages over classes present in
    the evaluated samples (its per-class loop runs over the targets it sees).
    """
    r = recall[..., class_mask]
    valid = ~torch.isnan(r)
    n = valid.sum(-1)
    total = torch.where(valid, r, torch.zeros_like(r)).sum(-1)
    return torch.where(n > 0, total / n.clamp(min=1), torch.zeros_like(total))


def _harmonic_mean(s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return 2 * s * u / (s + u + _EPS)


@torch.no_grad()
def gzsl_metrics(
    distances: torch.Tensor,
    labels: torch.Tensor,
    unseen: torch.Tensor,
    bias: float | torch.Tensor | None = None,
    grid: torch.Tensor | None = None,
    chunk_size: int = 8192,
) -> GZSLResult:
    """S, U, HM, ZSL from a distance matrix.

    Args:
        distances: ``[N, C]`` distances of N samples to the C classes of the split.
        labels: ``[N]`` column index (0..C-1) of each sample's class.
        unseen: ``[C]`` bool, True for unseen classes (the bias is added to the others).
        bias: evaluate at this fixed bias (the test set, with the bias chosen on val) ...
        grid: ... or search this grid (default 0..3 step 0.2) and keep the first best HM.
        chunk_size: samples per arg-min chunk; bounds the ``[K, chunk, C]`` temporary.
    """
    if distances.ndim != 2 or labels.ndim != 1 or distances.shape[0] != labels.shape[0]:
        raise ValueError(f"need distances [N, C] and labels [N], got {tuple(distances.shape)}, {tuple(labels.shape)}")
    n, c = distances.shape
    unseen = unseen.to(device=distances.device, dtype=torch.bool)
    if unseen.shape != (c,):
        raise ValueError(f"unseen mask must have shape [{c}], got {tuple(unseen.shape)}")
    labels = labels.to(distances.device, torch.long)
    dist = distances.to(torch.float64)
    seen = ~unseen

    if bias is not None:
        betas = torch.as_tensor([float(bias)], dtype=torch.float64, device=dist.device)
    else:
        betas = (BIAS_GRID if grid is None else grid).to(device=dist.device, dtype=torch.float64)

    # Calibrated stacking for all betas at once: argmin_c (D[i, c] + beta * 1[c seen]).
    preds = torch.empty(len(betas), n, dtype=torch.long, device=dist.device)
    offset = betas[:, None, None] * seen.to(torch.float64)[None, None, :]  # [K, 1, C]
    for start in range(0, n, chunk_size):
        d = dist[start : start + chunk_size]
        preds[:, start : start + chunk_size] = (d[None] + offset).argmin(-1)
    recall = per_class_recall(preds, labels, c)  # [K, C]
    s = mean_class_accuracy(recall, seen)
    u = mean_class_accuracy(recall, unseen)
    hm = _harmonic_mean(s, u)
    best = int(torch.argmax(hm))  # first maximum on ties, like np.argmax in the reference

    # ZSL: unseen samples only, arg-min over unseen classes only.
    zsl = 0.0
    if unseen.any():
        is_unseen_sample = unseen[labels]
        if is_unseen_sample.any():
            d_u = dist[is_unseen_sample].masked_fill(seen[None, :], float("inf"))
            pred_u = d_u.argmin(-1)
            zsl = float(mean_class_accuracy(per_class_recall(pred_u, labels[is_unseen_sample], c), unseen))

    searched = bias is None
    return GZSLResult(
        S=float(s[best]),
        U=float(u[best]),
        HM=float(hm[best]),
        ZSL=zsl,
        bias=float(betas[best]),
        grid=[round(float(b), 10) for b in betas] if searched else None,
        grid_HM=[float(h) for h in hm] if searched else None,
    )
