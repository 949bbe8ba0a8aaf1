"""Streaming audio resampling with resampy 0.2.2's ``kaiser_best`` filter (the benchmark's resampler).

The polyphase form below computes the same sums as resampy, block by block as audio is decoded, so only the
output grows with the duration of a video.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# resampy 0.2.2's ``kaiser_best`` (the reference's resampler): a table of the right wing of a
# Kaiser-windowed sinc, 64 zero crossings x 512 entries each, read with linear interpolation.
KAISER_BEST_ZEROS, KAISER_BEST_TABLE = 64, 512
KAISER_BEST_ROLLOFF, KAISER_BEST_BETA = 0.9475937167399596, 14.769656459379492


@functools.lru_cache(maxsize=8)
def _kaiser_best_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """Polyphase form of resampy's kaiser_best for one rate pair: (kernel [N, K], left context L).

    With g = gcd(orig, new), O = orig / g, N = new / g, output sample t = qN + p sits at input time
    qO + p O / N; writing a = floor(p O / N), it is ``sum_j kernel[p, j] * x[qO + j - L]``. The weights
    follow resampy's definition: the table scaled by new/orig when downsampling, read every
    ``int(scale * 512)`` entries from the fractional offset (the truncated step is resampy's, and with
    it its slight gain and cutoff), left wing from x[n] backwards, right wing from x[n + 1] forwards.
    """
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    size = KAISER_BEST_ZEROS * KAISER_BEST_TABLE
    pos = np.linspace(0, KAISER_BEST_ZEROS, size + 1)
    table = KAISER_BEST_ROLLOFF * np.sinc(KAISER_BEST_ROLLOFF * pos) * np.kaiser(2 * size + 1, KAISER_BEST_BETA)[size:]
    ratio = new / orig
    scale = min(1.0, ratio)
    if ratio < 1:
        table = table * ratio
    delta = np.append(np.diff(table), 0.0)
    step = int(scale * KAISER_BEST_TABLE)

    def wing(frac: float) -> np.ndarray:  # weights at table positions frac*512 + i*step
        start = frac * KAISER_BEST_TABLE
        first = int(start)
        idx = first + step * np.arange((len(table) - first) // step)
        return table[idx] + (start - first) * delta[idx]

    phases = []
    for p in range(n):
        a, rem = divmod(p * o, n)
        frac = scale * rem / n
        left, right = wing(frac), wing(scale - frac)
        phases.append((a, left, right))  # taps x[a - i] (left) and x[a + 1 + k] (right)
    lctx = max(len(left) - 1 - a for a, left, _ in phases)
    width = lctx + max(a + 1 + len(right) for a, _, right in phases)
    kernel = np.zeros((n, width))
    for p, (a, left, right) in enumerate(phases):
        kernel[p, lctx + a - np.arange(len(left))] = left
        kernel[p, lctx + a + 1 + np.arange(len(right))] = right
    return kernel, lctx


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """resampy 0.2.2 ``resample(x, orig, new)`` with the kaiser_best filter, in float64; float32 out.

    Output length ``int(N * new / orig)`` as resampy. The one difference: resampy accumulates the output
    time in floating point, here it is exact, which can move an output that falls (almost) exactly on an
    input sample by one table step; see :class:`StreamingResampler` for the streaming form.
    """
    r = StreamingResampler(orig_rate, new_rate)
    r.push(np.asarray(x, dtype=np.float64))
    return r.finish()


class StreamingResampler:
    """:func:`resample` of a signal that arrives in pieces, with bounded input memory.

    Output block q (N samples) reads input ``[qO - L, qO - L + K)`` (kernel width K, left context
    L): blocks are computed as soon as their input has arrived, in pieces of about ``chunk_s`` seconds,
    and input that no later block reads is dropped. The result equals resampling the whole signal.
    """

    def __init__(self, orig: int, new: int, chunk_s: float = 4.0):
        self.orig, self.new = orig, new
        self.n_in = 0
        self.out: list[np.ndarray] = []
        if orig == new:
            return
        g = math.gcd(orig, new)
        self.o, self.n = orig // g, new // g
        kernel, self.lctx = _kaiser_best_kernel(orig, new)
        self.width = kernel.shape[1]
        self.kernel = kernel
        self.chunk_blocks = max(1, int(chunk_s * new) // self.n)
        self.buf = np.zeros(self.lctx)  # zeros before the signal, as resampy's left wing stops at x[0]
        self.buf_start = -self.lctx  # input index of buf[0]
        self.next_block = 0

    def push(self, x: np.ndarray) -> None:
        if not len(x):
            return
        self.n_in += len(x)
        if self.orig == self.new:
            self.out.append(np.asarray(x, dtype=np.float32))
            return
        self.buf = np.concatenate([self.buf, np.asarray(x, dtype=np.float64)])
        if self._ready_blocks() - self.next_block >= self.chunk_blocks:
            self._emit(self._ready_blocks())

    def _ready_blocks(self) -> int:
        # block q is ready when its last input sample, qO - L + K - 1, has arrived
        end = self.buf_start + len(self.buf)
        return max(0, (end + self.lctx - self.width) // self.o + 1)

    def _emit(self, end_block: int) -> None:
        import torch

        q0 = self.next_block
        if end_block <= q0:
            return
        first = q0 * self.o - self.lctx - self.buf_start  # buf index of block q0's first input
        seg = self.buf[first:first + (end_block - q0 - 1) * self.o + self.width]
        # Each block's K inputs, as a strided view [blocks, K], times the kernel: one float64 GEMM. A strided float64
        # conv1d did the same sums ~50x slower (no fast float64 convolution on CPU). torch rather than numpy: numpy's
        # OpenBLAS keeps its own threads spinning after a call, which slowed the video decoding and C3D next to it.
        # Windows overlap (K > O): a few thousand at a time keeps the copy the product makes in the CPU cache, which
        # matters for integer ratios (48 -> 16 kHz: N = 1, O = 3, each input sample sits in ~128 windows).
        windows = torch.from_numpy(seg).unfold(0, self.width, self.o)  # [blocks, K], a view
        kernel_t = torch.from_numpy(self.kernel).T  # [K, N]
        step = max(1, (1 << 19) // self.width)  # ~4 MB of float64 windows per product
        for i in range(0, len(windows), step):
            self.out.append((windows[i : i + step] @ kernel_t).reshape(-1).numpy().astype(np.float32))
        self.next_block = end_block
        keep = end_block * self.o - self.lctx - self.buf_start  # later blocks read from here on
        self.buf, self.buf_start = self.buf[keep:], self.buf_start + keep

    def finish(self) -> np.ndarray:
        """The whole output as float32, ``int(n_in * new / orig)`` samples (resampy's length)."""
        n_out = int(self.n_in * (self.new / self.orig))
        if self.orig != self.new:
            self.buf = np.concatenate([self.buf, np.zeros(self.width)])  # zeros after the signal
            self._emit(-(-n_out // self.n))
        y = np.concatenate(self.out) if self.out else np.zeros(0, np.float32)
        return y[:n_out]
