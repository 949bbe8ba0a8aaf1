"""The audio resampler against resampy 0.2.2 itself (the reference's resampler, a test dependency).

``extractors`` resamples to 16 kHz with resampy 0.2.2's ``kaiser_best`` filter written as a polyphase GEMM
(numba stays out of the runtime dependencies). The one intended difference: resampy accumulates the output time
in floating point (``time_register += 1 / ratio``), ours is exact. Where resampy's sum lands just below an
input sample that the exact time hits (output times that are whole input samples, every ``new / gcd`` outputs),
it reads the filter from the neighbouring sample and table position, a different rounding of the same
band-limited interpolation. Both sides are pinned down here:

- every other output: equal up to float32 rounding of our output (|difference| <= 1.2e-7 for |y| < 2;
  measured <= 6.6e-8 on the signals below);
- the outputs where resampy's accumulated time has another integer part than the exact time (found by
  replaying its sum): |difference| <= 5e-3 on full-scale signals (measured <= 4.0e-3, on 94 of 20,800 outputs
  at 44.1 kHz and 47 at 22.05 kHz; none at 48, 32 or 8 kHz, whose ratios to 16 kHz are exact in binary).

Over long signals resampy's register also drifts from the exact time, so the first bound loosens with length
(measured on a 0.9-amplitude tone at 44.1 kHz: 8e-8 over 10 s, 2.9e-6 over 60 s, 6.9e-5 over 5 min; one int16
input step is 3.1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest
import resampy

try:  # the resampler may live in its own module; extractors.decode re-exports it either way
    from extractors.resample import resample
except ImportError:
    from extractors.decode import resample

NEW = 16_000
RATES = [44_100, 48_000, 22_050, 8_000, 32_000]
FLOAT32_ROUNDING = 1.2e-7  # half an ulp of float32 just below 2.0
TIME_ROUNDING = 5e-3  # the outputs where resampy's floating time crosses an input sample


def _signal(kind: str, orig: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(orig * 1.3)
    if kind == "noise":  # full band: aliasing and the filter's stop band matter
        return rng.uniform(-1, 1, n)
    # two full-scale tones: one well inside the 8 kHz pass band, one anywhere up to the original Nyquist
    t = np.arange(n) / orig
    f1, f2 = rng.uniform(100, 3000), rng.uniform(100, orig / 2)
    return 0.5 * np.sin(2 * np.pi * f1 * t) + 0.5 * np.sin(2 * np.pi * f2 * t + 1.0)


def _resampy_time_moves(orig: int, n_out: int) -> np.ndarray:
    """True where resampy 0.2.2's floating-point output time has another integer part than the exact one.

    Its loop adds ``1 / (new / orig)`` to a float64 register once per output; ``np.cumsum`` makes the same
    additions in the same order.
    """
    register = np.concatenate([[0.0], np.cumsum(np.full(n_out - 1, 1.0 / (NEW / orig)))])
    exact = np.arange(n_out, dtype=np.int64) * orig // NEW
    return np.floor(register).astype(np.int64) != exact


@pytest.mark.parametrize("kind", ["noise", "tones"])
@pytest.mark.parametrize("orig", RATES)
def test_resample_equals_resampy_kaiser_best(orig, kind):
    x = _signal(kind, orig, seed=orig % 97)
    ours = resample(x, orig, NEW)
    ref = resampy.resample(x, orig, NEW, filter="kaiser_best")
    assert ours.dtype == np.float32 and len(ours) == len(ref) == int(len(x) * NEW / orig)
    diff = np.abs(ours.astype(np.float64) - ref)
    moved = _resampy_time_moves(orig, len(ref))
    assert diff[~moved].max() <= FLOAT32_ROUNDING, (diff[~moved].max(), int(np.argmax(np.where(moved, 0, diff))))
    if moved.any():
        assert diff[moved].max() <= TIME_ROUNDING, diff[moved].max()
        # only outputs at whole input samples can move, at most one in new/gcd
        exact_on_sample = (np.arange(len(ref)) * orig) % NEW == 0
        assert not (moved & ~exact_on_sample).any()
    if orig in (48_000, 32_000, 8_000):  # ratio 3, 2, 1/2: resampy's time is exact as well
        assert not moved.any()


def test_resample_equals_resampy_on_a_long_signal():
    """60 s at 44.1 kHz: resampy's floating time drifts (see the module docstring), ours does not."""
    orig = 44_100
    x = np.sin(2 * np.pi * 440 * np.arange(60 * orig) / orig) * 0.9
    ours = resample(x, orig, NEW)
    ref = resampy.resample(x, orig, NEW, filter="kaiser_best")
    diff = np.abs(ours.astype(np.float64) - ref)
    moved = _resampy_time_moves(orig, len(ref))
    assert diff[~moved].max() <= 1e-5  # measured 2.9e-6; a third of one int16 step
    assert diff[moved].max() <= TIME_ROUNDING
