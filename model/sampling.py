"""Class-balanced sampling of training batches, one whole epoch plan at a time.

Class-balanced draws with replacement (uniform class, then uniform sample in the class), the
distribution of the reference's ``WeightedRandomSampler(alpha=1)``. A whole epoch plan (indices,
crop starts, per-batch pad lengths) is drawn in one go on the data device from a dedicated
``torch.Generator`` (checkpointed for exact resume), so the training loop never syncs with the
host per batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from model.batching import WindowConfig, crop_starts
from model.packing import SplitData


class ClassBalancedSampler:
    """Class-balanced sampling with replacement, one whole epoch plan at a time.

    ``plan()`` draws ``[n_batches, batch_size]`` indices (uniform class among the classes with
    samples, then a uniform sample of that class), the crop starts, and, in ``max`` mode, each
    batch's pad lengths. Only those pad lengths (``n_batches`` integers) cross to the host, once
    per epoch.
    """

    def __init__(self, split: SplitData, batch_size: int, n_batches: int, win: WindowConfig, seed: int) -> None:
        self.split, self.batch_size, self.n_batches, self.win = split, batch_size, n_batches, win
        dev = split.data_device
        labels = split.labels
        counts = torch.bincount(labels, minlength=split.n_classes)
        self.present = torch.nonzero(counts > 0).flatten()  # classes with at least one sample
        self.order = torch.argsort(labels, stable=True)  # sample indices grouped by class
        self.first = torch.cumsum(counts, 0) - counts
        self.counts = counts
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(seed)

    def plan(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]]:
        """Yield ``(idx, s_a, s_v, La, Lv)`` for each batch of one epoch."""
        g, dev = self.generator, self.split.data_device
        shape = (self.n_batches, self.batch_size)
        cls = self.present[torch.randint(len(self.present), shape, generator=g, device=dev)]
        u = torch.rand(shape, generator=g, device=dev)
        within = torch.floor(u * self.counts[cls]).long().clamp(max=self.counts[cls] - 1)
        idx = self.order[self.first[cls] + within]
        if self.win.mode == "fixed":
            s_v, s_a, lv, la = crop_starts(self.split, idx.flatten(), self.win, True, g)
            s_v, s_a = s_v.view(shape), s_a.view(shape)
            for b in range(self.n_batches):
                yield idx[b], s_a[b], s_v[b], la, lv
        else:
            zeros = torch.zeros(shape, dtype=torch.long, device=dev)
            # The one host sync of the epoch: batch pad lengths (the reference pads to the batch max).
            la_all = self.split.audio.lengths[idx].amax(1).tolist()
            lv_all = self.split.video.lengths[idx].amax(1).tolist()
            for b in range(self.n_batches):
                yield idx[b], zeros[b], zeros[b], la_all[b], lv_all[b]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
