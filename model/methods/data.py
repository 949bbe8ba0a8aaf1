"""The averaged-feature data path of the AVCA-GZSL family: splits averaged over time, and batches of
positives with one negative each, drawn as the official loaders draw them.

A split is first loaded as TCAF loads it (``model/packing.py``: the store's per-segment features, packed);
:func:`average_split` then averages each video's segments, which is how the benchmark's averaged cls
features were made from the same per-segment features. So every method reads the same store, the same
splits and the same dropped videos.

Sampling (reference-avca-code.md, "Negatives / batches"): positives are class-balanced with replacement
(the official WeightedRandomSampler with per-class weights: a uniform class among those with samples,
then a uniform sample of it); the negative of each positive is a uniform class among the *other* classes
present in the split and a uniform sample of that class. The epoch plan is drawn on the CPU with the
sampler's own generator, so the same seed gives the same batches on any device, and resuming restores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from model.methods.base import AveragedBatch, average_features
from model.packing import SplitData


@dataclass
class AveragedSplit:
    """A split with one averaged feature vector per video and modality (on the compute device)."""

    name: str
    audio: Tensor  # [N, A] float32
    video: Tensor  # [N, V] float32
    labels: Tensor  # [N] column into class_ids
    class_ids: list[int]
    unseen: Tensor  # [C] bool
    class_vectors: Tensor  # [C, W]
    video_ids: list[str]

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)


def average_split(split: SplitData, device: torch.device | str) -> AveragedSplit:
    """Average every video's segments (audio and video separately), in float64 then float32."""
    audio = average_features(split.audio.values.to(device), split.audio.lengths.to(device))
    video = average_features(split.video.values.to(device), split.video.lengths.to(device))
    return AveragedSplit(split.name, audio, video, split.labels.to(device), list(split.class_ids),
                         split.unseen.to(device), split.class_vectors.to(device), list(split.video_ids))


class NegativePairSampler:
    """``n_batches`` batches of ``batch_size`` (positive, negative) index pairs per epoch."""

    def __init__(self, split: AveragedSplit, batch_size: int, n_batches: int, seed: int) -> None:
        labels = split.labels.cpu()
        counts = torch.bincount(labels, minlength=split.n_classes)
        self.present = torch.nonzero(counts > 0).flatten()  # [P] classes with samples
        if len(self.present) < 2:
            raise ValueError(f"split {split.name}: negatives need at least two classes with samples, "
                             f"found {len(self.present)}")
        self.split, self.batch_size, self.n_batches = split, batch_size, n_batches
        self.order = torch.argsort(labels, stable=True)  # sample indices grouped by class
        self.first = torch.cumsum(counts, 0) - counts
        self.counts = counts
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def _sample_in(self, cls: Tensor) -> Tensor:
        u = torch.rand(cls.shape, generator=self.generator)
        within = torch.floor(u * self.counts[cls]).long().clamp(max=self.counts[cls] - 1)
        return self.order[self.first[cls] + within]

    def plan(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(idx, neg_idx)`` (CPU, [batch_size] each) for every batch of one epoch."""
        g, shape, n_present = self.generator, (self.n_batches, self.batch_size), len(self.present)
        pos_slot = torch.randint(n_present, shape, generator=g)
        idx = self._sample_in(self.present[pos_slot])
        # Uniform over the other present classes: draw among P - 1 slots and skip the positive's own.
        neg_slot = torch.randint(n_present - 1, shape, generator=g)
        neg_slot = neg_slot + (neg_slot >= pos_slot).long()
        neg_idx = self._sample_in(self.present[neg_slot])
        for b in range(self.n_batches):
            yield idx[b], neg_idx[b]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def make_averaged_batch(split: AveragedSplit, idx: Tensor, neg_idx: Tensor, *,
                        negative_features: bool = True) -> AveragedBatch:
    """Gather one batch from the split's device tensors. Without ``negative_features`` the negatives keep their
    labels and class vectors but their audio and video are empty [0, D] views (for a method whose
    ``uses_negative_features`` is False: the two largest gathers of the step are then not made)."""
    dev = split.audio.device
    idx, neg_idx = idx.to(dev), neg_idx.to(dev)
    labels, neg_labels = split.labels[idx], split.labels[neg_idx]
    if negative_features:
        neg_audio, neg_video = split.audio[neg_idx], split.video[neg_idx]
    else:
        neg_audio, neg_video = split.audio[:0], split.video[:0]
    return AveragedBatch(
        audio=split.audio[idx], video=split.video[idx], labels=labels, word=split.class_vectors[labels],
        neg_audio=neg_audio, neg_video=neg_video, neg_labels=neg_labels, neg_word=split.class_vectors[neg_labels],
        class_ids=torch.as_tensor(split.class_ids, device=dev), class_vectors=split.class_vectors,
    )
