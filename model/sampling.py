"""Class-balanced sampling of training batches, one whole epoch plan at a time.

Class-balanced draws with replacement (uniform class, then uniform sample in the class), the
distribution of the reference's ``WeightedRandomSampler(alpha=1)``. A whole epoch plan (indices,
crop starts, per-batch pad lengths) is drawn in one go from a dedicated CPU ``torch.Generator``
(checkpointed for exact resume) and then copied to the data device in three transfers, so the
training loop never syncs with the host per batch.

The plan is drawn on the CPU whatever the data's device: random streams differ between the CPU and
CUDA generators, and where a split lives (``train.data_device: auto``) depends on the free GPU memory
of the node, so a plan drawn on the data device would give the same seed different batches on
different machines. Drawing it on the CPU makes the batches a function of the seed alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from model.batching import WindowConfig, crop_starts
from model.packing import SplitData


class ClassBalancedSampler:
    """Class-balanced sampling with replacement, one whole epoch plan at a time.

    ``draw()`` draws on the CPU ``[n_batches, batch_size]`` indices (uniform class among the classes
    with samples, then a uniform sample of that class), the crop starts, and, in ``max`` mode, each
    batch's pad lengths (from the host copy of the lengths: no device sync). ``plan()`` moves them to
    the data device and yields them batch by batch.
    """

    def __init__(self, split: SplitData, batch_size: int, n_batches: int, win: WindowConfig, seed: int) -> None:
        self.split, self.batch_size, self.n_batches, self.win = split, batch_size, n_batches, win
        labels = split.labels_cpu
        counts = torch.bincount(labels, minlength=split.n_classes)
        self.present = torch.nonzero(counts > 0).flatten()  # classes with at least one sample
        self.order = torch.argsort(labels, stable=True)  # sample indices grouped by class
        self.first = torch.cumsum(counts, 0) - counts
        self.counts = counts
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int], list[int]]:
        """One epoch's plan on the CPU: ``idx, s_a, s_v`` ``[n_batches, batch_size]`` and per-batch ``La, Lv``."""
        g = self.generator
        shape = (self.n_batches, self.batch_size)
        cls = self.present[torch.randint(len(self.present), shape, generator=g)]
        u = torch.rand(shape, generator=g)
        within = torch.floor(u * self.counts[cls]).long().clamp(max=self.counts[cls] - 1)
        idx = self.order[self.first[cls] + within]
        if self.win.mode == "fixed":
            s_v, s_a, lv, la = crop_starts(self.split, idx.flatten(), self.win, True, g)
            return idx, s_a.view(shape), s_v.view(shape), [la] * self.n_batches, [lv] * self.n_batches
        zeros = torch.zeros(shape, dtype=torch.long)
        # The reference pads to the batch max.
        la_all = self.split.audio.lengths_cpu[idx].amax(1).tolist()
        lv_all = self.split.video.lengths_cpu[idx].amax(1).tolist()
        return idx, zeros, zeros, la_all, lv_all

    def plan(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]]:
        """Yield ``(idx, s_a, s_v, La, Lv)`` for each batch of one epoch, on the data device."""
        idx, s_a, s_v, la, lv = self.draw()
        dev = self.split.data_device
        if dev.type != "cpu":
            idx, s_a, s_v = (t.to(dev) for t in (idx, s_a, s_v))
        for b in range(self.n_batches):
            yield idx[b], s_a[b], s_v[b], la[b], lv[b]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        gen_state = torch.as_tensor(state["generator"], device="cpu")
        if gen_state.dtype != torch.uint8 or gen_state.numel() != self.generator.get_state().numel():
            raise ValueError(f"sampler state of {gen_state.numel()} {gen_state.dtype} values is not a CPU generator "
                             "state (written by an older version that drew batches on the GPU); start the stage "
                             "afresh by removing its resume checkpoint")
        self.generator.set_state(gen_state)
