"""Sequence windows and batches: a batch is gathered from a split's packed tensors in a few tensor ops.

* **Windows** (reference section 3.2/3.3): ``max`` mode (UCF, VGGSound) pads to the batch's
  longest sample and never trims. ``fixed`` mode (ActivityNet) uses a 60-token random video crop
  in training and a centred 300-token crop at evaluation, with the audio window aligned to the
  video crop. The audio window length is duration-matched (``round(L_v * 0.64 / 0.96)``: 40 / 200)
  unless ``audio_len_quirk`` reproduces the reference's ``round(L_v * 0.64 * 0.96)`` (37 / 184).
* **Gathering.** A window of every sample of a batch is one advanced-indexing op on the packed
  ``values`` (``values[offset + start + arange(L)]``), masked by length, done on the data device;
  uint8 / float16 values travel to the compute device and are widened there.
* **Evaluation** batches run over the whole split sorted by length and are padded only to their
  own longest sample (outputs do not depend on padding).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from model.packing import Packed, SplitData

AUDIO_RATE_S = 0.96  # one VGGish row per 0.96 s window
VIDEO_RATE_S = 16 / 25  # one C3D row per 16 frames at 25 fps = 0.64 s


@dataclass(frozen=True)
class WindowConfig:
    """How sequences are cut into batch windows (reference spec 3.2)."""

    mode: str = "max"  # "max": pad to batch max, never trim (UCF, VGGSound); "fixed": crop (ActivityNet)
    train_video_len: int = 60
    eval_video_len: int = 300
    audio_len_quirk: bool = False  # reference: audio window round(L_v*0.64*0.96) = 37/184 instead of 40/200
    trim_offset_quirk: bool = False  # reference: random crop start in [0, diff-1], never the last offset

    def __post_init__(self) -> None:
        if self.mode not in ("max", "fixed"):
            raise ValueError(f"sequence mode must be 'max' or 'fixed', got {self.mode!r}")

    def audio_len(self, video_len: int) -> int:
        if self.audio_len_quirk:
            return round(video_len * VIDEO_RATE_S * AUDIO_RATE_S)
        return round(video_len * VIDEO_RATE_S / AUDIO_RATE_S)


class Batch(NamedTuple):
    audio: torch.Tensor  # [B, La, 128] float32
    audio_mask: torch.Tensor  # [B, La] bool, True = valid
    video: torch.Tensor  # [B, Lv, 4096] float32
    video_mask: torch.Tensor  # [B, Lv]
    labels: torch.Tensor  # [B] column index into the split's classes


def aligned_audio_start(video_start: torch.Tensor, audio_len: torch.Tensor, audio_window: int) -> torch.Tensor:
    """Audio crop start matching a video crop start in time (reference collator rule).

    ``s_a = min(len_a - L_a, round(s_v * 0.64 / 0.96))`` when the video was cropped (s_v > 0) and the
    audio is longer than its window; 0 otherwise.
    """
    diff_a = audio_len - audio_window
    s_a = torch.minimum(diff_a, torch.round(video_start * (VIDEO_RATE_S / AUDIO_RATE_S)).long())
    return torch.where((video_start > 0) & (diff_a > 0), s_a, torch.zeros_like(s_a))


def crop_starts(
    split: SplitData, idx: torch.Tensor, win: WindowConfig, train: bool, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Video/audio crop starts for samples ``idx`` in ``fixed`` mode, plus the window lengths."""
    lv = win.train_video_len if train else win.eval_video_len
    la = win.audio_len(lv)
    # The lengths on idx's device: the training plan is drawn on the CPU, evaluation on the data device.
    on_cpu = idx.device.type == "cpu"
    len_v = (split.video.lengths_cpu if on_cpu else split.video.lengths)[idx]
    len_a = (split.audio.lengths_cpu if on_cpu else split.audio.lengths)[idx]
    diff_v = len_v - lv
    if train:
        # uniform start in [0, diff] (or [0, diff-1] like the reference's torch.randint(diff))
        n_off = (diff_v if win.trim_offset_quirk else diff_v + 1).clamp(min=1)
        u = torch.rand(idx.shape, generator=generator, device=idx.device)
        s_v = torch.floor(u * n_off).long().clamp(max=n_off - 1)
    else:
        s_v = torch.div(diff_v, 2, rounding_mode="floor")
    s_v = torch.where(diff_v > 0, s_v, torch.zeros_like(s_v))
    s_a = aligned_audio_start(s_v, len_a, la)
    return s_v, s_a, lv, la


def transfer_mode(source: torch.device, target: torch.device) -> tuple[bool, bool]:
    """``(pin, non_blocking)`` for copying a batch gathered on ``source`` to ``target``.

    Host batches bound for a GPU are gathered straight into page-locked memory, from which the copy is a
    DMA that overlaps the GPU's work; a copy from pageable memory cannot be asynchronous (CUDA stages it
    through a pinned buffer, synchronously), so ``non_blocking`` is used only from pinned memory. Pinning
    is skipped for every other pair (it costs host memory and time and buys nothing there).
    """
    pin = source.type == "cpu" and target.type == "cuda"
    return pin, pin


def gather_window(mod: Packed, idx: torch.Tensor, start: torch.Tensor, length: int, *,
                  pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L, D]`` rows ``start .. start+L-1`` of each video ``idx`` (zero padded) and the valid mask.

    ``pin``: write them into page-locked host memory (host data only), ready for an asynchronous copy.
    """
    ar = torch.arange(length, device=idx.device)
    n_valid = (mod.lengths[idx] - start).clamp(min=0, max=length)
    mask = ar[None, :] < n_valid[:, None]
    rows = mod.offsets[idx][:, None] + start[:, None] + ar[None, :]
    rows = torch.where(mask, rows, torch.zeros_like(rows))  # any in-range row; zeroed below
    if pin:
        x = torch.empty((*rows.shape, mod.values.shape[1]), dtype=mod.values.dtype, pin_memory=True)
        torch.index_select(mod.values, 0, rows.reshape(-1), out=x.view(-1, mod.values.shape[1]))
        x.masked_fill_(~mask[..., None], 0)
        return x, mask.pin_memory()
    x = mod.values[rows]
    x = x.masked_fill(~mask[..., None], 0)
    return x, mask


def make_batch(
    split: SplitData,
    idx: torch.Tensor,
    s_a: torch.Tensor,
    s_v: torch.Tensor,
    la: int,
    lv: int,
    device: torch.device,
) -> Batch:
    """Gather a batch on the data device, move it to the compute device, cast to float32."""
    pin, non_blocking = transfer_mode(idx.device, device)
    a, am = gather_window(split.audio, idx, s_a, la, pin=pin)
    v, vm = gather_window(split.video, idx, s_v, lv, pin=pin)
    labels = split.labels[idx]
    if pin:
        labels = labels.pin_memory()
    # uint8 / fp16 travel to the device (4x / 2x fewer bytes) and are widened there.
    return Batch(
        a.to(device, non_blocking=non_blocking).float(),
        am.to(device, non_blocking=non_blocking),
        v.to(device, non_blocking=non_blocking).float(),
        vm.to(device, non_blocking=non_blocking),
        labels.to(device, non_blocking=non_blocking),
    )


def eval_batches(
    split: SplitData, batch_size: int, win: WindowConfig, device: torch.device
) -> Iterator[tuple[torch.Tensor, Batch]]:
    """Sequential batches over the whole split, sorted by length to minimise padding.

    Evaluation outputs do not depend on padding (masked attention, BN in eval mode), so batches
    are padded only to their own longest sample (capped at the centred window in ``fixed`` mode,
    which is equivalent to the reference's fixed 300-token padding). Yields the sample indices so
    callers can restore the split order.
    """
    len_v, len_a = split.video.lengths_cpu, split.audio.lengths_cpu
    key = len_v * (int(len_a.max()) + 1) + len_a
    order = torch.argsort(key, descending=True, stable=True)
    dev = split.data_device
    for start in range(0, len(order), batch_size):
        idx_cpu = order[start : start + batch_size]
        idx = idx_cpu.to(dev)
        if win.mode == "fixed":
            s_v, s_a, lv_win, la_win = crop_starts(split, idx, win, False, None)
            lv = min(lv_win, int(len_v[idx_cpu].max()))
            la = min(la_win, int(len_a[idx_cpu].max()))
        else:
            s_v = s_a = torch.zeros_like(idx)
            lv, la = int(len_v[idx_cpu].max()), int(len_a[idx_cpu].max())
        yield idx_cpu, make_batch(split, idx, s_a, s_v, la, lv, device)


def n_eval_batches(split: SplitData, batch_size: int) -> int:
    return math.ceil(len(split) / batch_size)
