"""The torch log-mel frontend against an independent numpy implementation of the VGGish formulas (spec §1.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from extractors.vggish.frontend import LogMelFrontend, min_samples, num_examples


def numpy_vggish_logmel(x: np.ndarray) -> np.ndarray:
    """Written from the formulas only: waveform [S] float64 -> examples [K, 96, 64] float64."""
    sr, win, hop, nfft, n_mels = 16000, 400, 160, 512, 64
    n_frames = 1 + (len(x) - win) // hop
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / win) for n in range(win)])
    frames = np.stack([x[t * hop : t * hop + win] for t in range(n_frames)])
    padded = np.zeros((n_frames, nfft))
    padded[:, :win] = frames * window  # zero-padded at the end of each frame
    mag = np.abs(np.fft.rfft(padded, axis=1))  # [T, 257]

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    edges = np.linspace(mel(125.0), mel(7500.0), n_mels + 2)
    weights = np.zeros((nfft // 2 + 1, n_mels))
    for k in range(1, nfft // 2 + 1):  # k = 0 (DC) stays zero
        m = mel(k * (sr / 2) / (nfft // 2))
        for b in range(n_mels):
            lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
            weights[k, b] = max(0.0, min((m - lo) / (c - lo), (hi - m) / (hi - c)))
    logmel = np.log(mag @ weights + 0.01)  # [T, 64]
    k_ex = n_frames // 96
    return logmel[: k_ex * 96].reshape(k_ex, 96, 64)


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (
        0.6 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 3100 * t) + 0.05 * rng.standard_normal(n)
    )


@pytest.mark.parametrize("n", [min_samples(1), min_samples(2) + 159, 40_000])
def test_float64_frontend_matches_numpy_reference(n):
    x = _signal(n)
    ref = numpy_vggish_logmel(x)
    got = LogMelFrontend(torch.float64).examples(torch.from_numpy(x))
    assert got.shape == ref.shape and got.dtype == torch.float32
    # Output is float32 (what VGGish consumes): agreement to float32 resolution of values of magnitude <= ~5.
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("extra", [0, 15_359])  # the last chunk exactly full / with a partial example dropped
def test_chunked_stft_equals_the_reference_across_chunk_edges(monkeypatch, extra):
    import extractors.vggish.frontend as fe

    monkeypatch.setattr(fe, "CHUNK_EXAMPLES", 2)  # 5 examples -> chunks of 2, 2, 1
    x = _signal(min_samples(5) + extra, seed=2)
    got = LogMelFrontend(torch.float64).examples(torch.from_numpy(x))
    ref = numpy_vggish_logmel(x)
    assert got.shape == ref.shape == (5, 96, 64)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=2e-6)
    # Batched waveforms are chunked the same way (rows stay independent).
    both = LogMelFrontend(torch.float64)(torch.from_numpy(np.stack([x, x[::-1].copy()])))
    assert torch.equal(both[0], got)


def test_float32_frontend_is_close():
    x = _signal(32_000, seed=1)
    ref = numpy_vggish_logmel(x)
    got = LogMelFrontend(torch.float32).examples(torch.from_numpy(x).float())
    # float32 FFT/matmul: errors grow where the mel energy is tiny (log amplifies them); 2e-3 abs bounds it here.
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=2e-3)


def test_example_counts_and_trailing_partial_dropped():
    assert num_examples(399) == 0 and num_examples(400) == 0
    for k in (1, 2, 10):
        assert num_examples(min_samples(k)) == k
        assert num_examples(min_samples(k) - 1) == k - 1
    assert min_samples(1) == 15_600  # 0.975 s, spec §1.2
    assert num_examples(160_000) == 10  # a 10 s VGGSound clip
    fe = LogMelFrontend()
    assert fe.examples(torch.zeros(300)).shape == (0, 96, 64)
    assert fe.examples(torch.zeros(min_samples(1) - 1)).shape == (0, 96, 64)
    # Samples after the last complete example must not influence the output.
    x = torch.from_numpy(_signal(min_samples(2) + 5000))
    y = x.clone()
    y[min_samples(2) :] = 0.9
    torch.testing.assert_close(fe.examples(x), fe.examples(y), rtol=0, atol=0)


def test_batched_equals_single():
    fe = LogMelFrontend()
    xs = torch.from_numpy(np.stack([_signal(20_000, seed=s) for s in range(3)]))
    batched = fe(xs)  # [3, K, 96, 64]
    for i in range(3):
        torch.testing.assert_close(batched[i], fe.examples(xs[i]), rtol=0, atol=0)
