"""Small building blocks shared by the encoders and heads: a maskable BatchNorm and the MLP block."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics can be restricted to the rows where `mask` is True.

    The state dict is that of nn.BatchNorm1d. Without a mask, or in eval mode, it is exactly
    nn.BatchNorm1d. With a mask it runs on all rows (no boolean indexing, hence no host-device sync)
    but computes mean/variance and updates the running statistics from the valid rows only, so
    that the amount of padding in a batch does not change the result.

    Under bf16/fp16 autocast the statistics are computed in float32 (as nn.BatchNorm1d's kernels do): a
    bf16 sum of the mask alone is inexact beyond 256 valid rows, and bf16 means and variances would carry
    2-3 significant digits into every normalised value. The output is float32, as the float32 affine
    parameters made it before; the next Linear casts it back under autocast.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # x (M, C), mask (M,) bool
        if mask is None or not self.training or not self.track_running_stats:
            return super().forward(x)
        assert x.dim() == 2 and mask.shape == x.shape[:1], f"need x (M, C) and mask (M,), got {x.shape}, {mask.shape}"
        assert self.momentum is not None, "cumulative moving average (momentum=None) is not supported"
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            w = mask.to(torch.float32).unsqueeze(1)  # (M, 1)
            n = w.sum()
            mean = (x * w).sum(0) / n.clamp(min=1.0)  # (C,)
            var = ((x - mean).square() * w).sum(0) / n.clamp(min=1.0)  # biased, as BN normalises with it
            with torch.no_grad():
                # Batches with fewer than two valid rows leave the running statistics unchanged
                # (nn.BatchNorm1d would raise); written branch-free to avoid a sync on the count.
                momentum = self.momentum * (n > 1).to(torch.float32)
                unbiased = var * n / (n - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
                self.num_batches_tracked.add_(1)
            y = (x - mean) * torch.rsqrt(var + self.eps)
            if self.affine:
                y = y * self.weight.float() + self.bias.float()
        return y


class MLPBlock(nn.Module):
    """Linear -> [BN] -> ReLU -> Dropout (-> Linear -> BN -> ReLU -> Dropout): the paper's f_1/f_2 blocks.

    `net` has the module indices of the official `EmbeddingNet.fc` Sequential, so released
    checkpoints map onto it key by key. Every block ends in BN -> ReLU -> Dropout, as in the paper
    (Sec. 3.2) and the official code, so its outputs are non-negative.
    """

    def __init__(
        self, *, in_dim: int, out_dim: int, hidden_dim: int | None, dropout: float, hidden_batch_norm: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden_dim:
            layers.append(nn.Linear(in_dim, hidden_dim))
            if hidden_batch_norm:
                layers.append(MaskedBatchNorm1d(hidden_dim))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            in_dim = hidden_dim
        layers += [nn.Linear(in_dim, out_dim), MaskedBatchNorm1d(out_dim), nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.ModuleList(layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (..., in_dim); mask (...) bool restricts the BN training statistics to valid rows."""
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])  # (M, in_dim): BN runs over all leading positions
        flat_mask = None if mask is None else mask.reshape(-1)
        for layer in self.net:
            x = layer(x, flat_mask) if isinstance(layer, MaskedBatchNorm1d) else layer(x)
        return x.reshape(*lead, x.shape[-1])
