"""What every method of the benchmark tables shares: the batch it trains on and the interface the training
loop, the two-stage protocol and the evaluation call.

TCAF (``model/tcaf.py``) and the temporal baselines built from its parts (Perceiver, and Attention Fusion,
which averages its encoders' outputs over time) train on temporal sequences with TCAF's data path; the
other methods of the tables (AVCA, CJME, AVGZSLNet, DeViSE, ALE, SJE, APN) on features averaged over time,
as the official code does: the store's per-segment features are averaged on the fly
(``average_features``), the way the official cls features were made.

A method is an ``nn.Module`` subclass of :class:`AveragedMethod` with a dataclass config. The training loop
asks it for its losses on an :class:`AveragedBatch` and for its optimiser; the evaluation asks it for
distances between videos and class vectors (lower = closer), to which calibrated stacking adds the bias on
seen classes, exactly as for TCAF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn


@dataclass
class AveragedBatch:
    """One training batch of averaged features, with one negative per positive.

    The official AVCA-GZSL loaders draw, for each positive, a negative class uniformly among the *other*
    classes present in the split and a sample uniformly within that class; ``neg_*`` hold it.
    """

    audio: Tensor  # [B, A]  averaged VGGish codes, 0..255 scale (as the official cls features)
    video: Tensor  # [B, V]  averaged C3D fc7
    labels: Tensor  # [B]    column of each positive's class in class_ids / class_vectors
    word: Tensor  # [B, W]   class vector of each positive's class
    neg_audio: Tensor  # [B, A]
    neg_video: Tensor  # [B, V]
    neg_labels: Tensor  # [B]  column of each negative's class
    neg_word: Tensor  # [B, W]  class vector of each negative's class
    class_ids: Tensor  # [C]    the split's classes, ascending ids
    class_vectors: Tensor  # [C, W] their vectors, row i for class_ids[i]

    def to(self, device: torch.device | str) -> AveragedBatch:
        return AveragedBatch(**{k: v.to(device) for k, v in vars(self).items()})


class AveragedMethod(nn.Module):
    """Interface of the averaged-feature methods (one module per method under ``model/methods/``)."""

    name: ClassVar[str]
    # False for a method whose losses read none of the negatives' features (neg_audio, neg_video): the training
    # loop then skips gathering them (two [B, D] copies per step) and hands the batch empty [0, D] tensors there.
    uses_negative_features: ClassVar[bool] = True
    # False for a method whose losses are not one traceable function (they step an optimiser themselves):
    # train.compile then leaves its step eager.
    compilable: ClassVar[bool] = True
    # Published numbers (test, %, cls features; TCAF paper Table 1) keyed by dataset: {"S", "U", "HM", "ZSL"}.
    published: ClassVar[dict[str, dict[str, float]]] = {}

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """Every loss term of one training step as scalars, and their weighted sum under ``"total"``."""
        raise NotImplementedError

    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] distances (lower = closer) between N videos and C class vectors, as the official evaluation
        scores them (its "both" entry); the caller sets eval mode and no_grad."""
        raise NotImplementedError

    def after_step(self, batch: AveragedBatch) -> None:
        """Called after each optimiser step (train mode): where a method reproduces work its official step does
        after updating, e.g. AVCA's extra forward that moves BatchNorm statistics. Nothing by default."""

    def build_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """The optimiser of the official training (which parameters it steps is part of the method)."""
        return adam(self.parameters(), lr=lr, weight_decay=weight_decay)


def adam(params, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its multi-tensor (foreach) update, also on the CPU, where torch otherwise picks
    the per-parameter loop: the same arithmetic in the same order (bit-identical parameters and moments) in a
    fraction of the Python and kernel-launch overhead."""
    return torch.optim.Adam(params, foreach=True, **kwargs)


def average_features(values: Tensor, lengths: Tensor) -> Tensor:
    """Mean over time of ragged sequences packed as [sum(lengths), D] -> [n, D] (an empty one gives zeros)."""
    assert values.ndim == 2 and lengths.ndim == 1, (values.shape, lengths.shape)
    assert int(lengths.sum()) == len(values), "lengths must cover the packed rows exactly"
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=values.device), lengths)
    sums = torch.zeros(len(lengths), values.shape[1], dtype=torch.float64, device=values.device)
    sums.index_add_(0, owner, values.to(torch.float64))
    return (sums / lengths.clamp(min=1).unsqueeze(1)).to(torch.float32)
