"""VGGish log-mel frontend in torch (batched, device-agnostic).

Exactly the numpy frontend of `audioset/mel_features.py` + `vggish_input.py` (spec §1.2):
periodic Hann 400 / hop 160 / 512-point |rfft| (frame zero-padded at the end), HTK mel matrix built like
`spectrogram_to_mel_matrix` (64 bands 125-7500 Hz, DC row zero, magnitude not power), log(x + 0.01),
non-overlapping 96-frame examples with the trailing partial example dropped.

`torch.stft` is deliberately not used: with win_length < n_fft it centres the window inside the 512-sample frame
(shifting every frame by 56 samples) and frames by n_fft, so frame count and content would differ from VGGish.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512  # next power of two >= WINDOW
N_BINS = N_FFT // 2 + 1  # 257
N_MELS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s, also the hop between examples
# Examples per STFT pass: bounds the float64 temporaries (~1.3 MB per example) whatever the waveform's length, so a
# long ActivityNet video costs no more memory than a minute of audio.
CHUNK_EXAMPLES = 64


def hertz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale (the one VGGish uses)."""
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(
    n_mels: int = N_MELS,
    n_bins: int = N_BINS,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = MEL_MIN_HZ,
    f_max: float = MEL_MAX_HZ,
) -> np.ndarray:
    """[n_bins, n_mels] float64 triangle weights, built in the mel domain like `spectrogram_to_mel_matrix`."""
    assert 0.0 <= f_min < f_max <= sample_rate / 2, (
        f"mel range must satisfy 0 <= {f_min} < {f_max} <= nyquist"
    )
    bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2, n_bins))  # [n_bins]
    edges = np.linspace(hertz_to_mel(f_min), hertz_to_mel(f_max), n_mels + 2)  # [n_mels + 2]
    lo, centre, hi = edges[:-2], edges[1:-1], edges[2:]  # each [n_mels]
    rising = (bins_mel[:, None] - lo) / (centre - lo)
    falling = (hi - bins_mel[:, None]) / (hi - centre)
    w = np.maximum(0.0, np.minimum(rising, falling))  # [n_bins, n_mels]
    # VGGish zeroes the DC row: bin 0 (0 Hz) would otherwise never contribute anyway for f_min > 0, but the explicit
    # zero keeps the matrix identical to the reference even if f_min were 0.
    w[0, :] = 0.0
    return w


def periodic_hann(n: int = WINDOW) -> np.ndarray:
    """Periodic Hann: 0.5 - 0.5 cos(2 pi k / n), k = 0..n-1 (not the symmetric numpy.hanning)."""
    return 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(n) / n)


def num_examples(n_samples: int) -> int:
    """Number of complete 0.96 s examples VGGish makes from `n_samples` 16 kHz samples (0 when too short)."""
    if n_samples < WINDOW:
        return 0
    n_frames = 1 + (n_samples - WINDOW) // HOP
    return n_frames // EXAMPLE_FRAMES


def min_samples(k: int) -> int:
    """Samples needed for `k` examples: 240 + 15360 k (one example needs 0.975 s)."""
    return WINDOW + (k * EXAMPLE_FRAMES - 1) * HOP


class LogMelFrontend(torch.nn.Module):
    """waveforms [B, S] (16 kHz, [-1, 1]) -> log-mel examples [B, K, 96, 64] float32, K = num_examples(S).

    `dtype` is the precision of the STFT/mel/log computation (float64 = the numpy reference; float32 is faster on
    GPU and differs by ~1e-5 in the log-mel). The output is float32 either way, as VGGish consumes float32.
    """

    def __init__(self, dtype: torch.dtype = torch.float64):
        super().__init__()
        assert dtype in (torch.float32, torch.float64), f"frontend dtype must be float32/float64, got {dtype}"
        self.compute_dtype = dtype
        self.register_buffer("window", torch.from_numpy(periodic_hann()).to(dtype), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix()).to(dtype), persistent=False)

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        assert waveforms.ndim == 2, f"expected waveforms [B, S], got shape {tuple(waveforms.shape)}"
        b, s = waveforms.shape
        k = num_examples(s)
        if k == 0:
            return waveforms.new_zeros((b, 0, EXAMPLE_FRAMES, N_MELS), dtype=torch.float32)
        # Examples are whole, non-overlapping groups of frames, so each chunk of examples reads its own samples
        # (plus the last frame's window tail) and gives exactly the frames the whole signal would. Only frames that
        # end up in complete examples are computed; the rest would be dropped anyway.
        out = []
        for k0 in range(0, k, CHUNK_EXAMPLES):
            n_frames = (min(k, k0 + CHUNK_EXAMPLES) - k0) * EXAMPLE_FRAMES
            start = k0 * EXAMPLE_FRAMES * HOP
            x = waveforms[:, start : start + WINDOW + (n_frames - 1) * HOP].to(self.compute_dtype)
            frames = x.unfold(-1, WINDOW, HOP)  # [B, T, 400]
            spec = torch.fft.rfft(frames * self.window, n=N_FFT).abs()  # [B, T, 257]; zero-padded at the end
            logmel = torch.log(spec @ self.mel + LOG_OFFSET)  # [B, T, 64]
            out.append(logmel.reshape(b, -1, EXAMPLE_FRAMES, N_MELS).float())  # [B, k', 96, 64]
        return torch.cat(out, dim=1)  # [B, K, 96, 64]

    def examples(self, waveform: torch.Tensor) -> torch.Tensor:
        """One waveform [S] -> [K, 96, 64]."""
        assert waveform.ndim == 1, f"expected a mono waveform [S], got shape {tuple(waveform.shape)}"
        return self(waveform[None])[0]
