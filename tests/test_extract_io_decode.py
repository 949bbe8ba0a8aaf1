"""Decoding: 25 fps resampling by timestamps, clip batching, 16 kHz mono audio, segments, bad files."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
from test_extract_io_fixtures import LEFT_AMP, RIGHT_AMP, frame_index, write_media, write_truncated

from extractors import decode as D
from extractors import resample as R

STRICT = D.DecodeConfig(truncation_tolerance_s=0.3, truncation_tolerance_frac=0.0)


def indices(path, **kw):
    return [frame_index(f) for f in D.iter_frames(path, **kw)]


def expected_picks(path, n_out, t0=0.0):
    """Reference selection from the file's own timestamps: last frame with pts <= t0 + k / 25."""
    with av.open(str(path)) as c:
        times = [f.time for f in c.decode(video=0)]
    return [max(i for i, t in enumerate(times) if t <= t0 + k / 25 + 1e-9) for k in range(n_out)]


def test_30fps_mp4_gives_the_frames_a_25fps_grid_shows(tmp_path):
    path = write_media(tmp_path / "a.mp4", fps=30, n_frames=90)  # 3.0 s
    got = indices(path)
    assert len(got) == 75
    assert got == [k * 30 // 25 for k in range(75)]  # frame floor(1.2 k), exact at k = 5, 10, ...


def test_25fps_input_is_passed_through(tmp_path):
    path = write_media(tmp_path / "a.mp4", fps=25, n_frames=40)
    assert indices(path) == list(range(40))


def test_24fps_mkv_duplicates_frames_by_timestamp(tmp_path):
    path = write_media(tmp_path / "b.mkv", fps=24, n_frames=48)  # 2.0 s, pts rounded to ms
    got = indices(path)
    assert len(got) == 50
    assert got == expected_picks(path, 50)
    assert len(set(got)) == 48  # every source frame shown, two of them twice


def test_variable_frame_rate(tmp_path):
    pts = [0.0, 0.01, 0.1, 0.3, 0.31, 0.5]
    path = write_media(tmp_path / "vfr.mkv", pts_s=pts, audio_s=0)
    got = indices(path)
    assert got[:13] == [0, 1, 1, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4]  # t = 0, 0.04, ..., 0.48
    assert got[13:] and set(got[13:]) == {5}


def test_segment_decoding_seeks_and_trims(tmp_path):
    path = write_media(tmp_path / "a.mp4", fps=30, n_frames=120)
    got = indices(path, start_s=1.0, end_s=2.0)
    assert got == [30 + k * 30 // 25 for k in range(25)]
    wave = D.decode_audio(path, start_s=1.0, end_s=2.0)
    assert wave.shape == (16_000,)


def test_clip_batches_are_bounded_and_padded(tmp_path):
    path = write_media(tmp_path / "a.mp4", fps=25, n_frames=150)  # 150 frames -> 10 clips, last has 6
    cfg = D.DecodeConfig(clip_batch=3)
    batches = list(D.iter_clip_batches(path, cfg, transform=lambda f: f[:, ::2, ::2]))
    assert [b.frames.shape[0] for b in batches] == [3, 3, 3, 1]
    assert all(b.frames.shape[1:] == (16, 24, 32, 3) and b.frames.dtype == np.uint8 for b in batches)
    assert [b.first_clip for b in batches] == [0, 3, 6, 9]
    assert batches[-1].n_valid.tolist() == [6]
    last = batches[-1].frames[0]
    assert [frame_index(f) for f in last[:6]] == list(range(144, 150))
    assert not last[6:].any(), "missing frames of the last clip are zeros"
    flat = np.concatenate([b.frames for b in batches]).reshape(-1, 24, 32, 3)[:150]
    assert [frame_index(f) for f in flat] == list(range(150))


def test_decoder_memory_does_not_grow_with_video_length(tmp_path):
    """numpy buffers alive while decoding stay at about one clip batch, for 4 s and for 20 s of video."""
    import tracemalloc

    cfg = D.DecodeConfig(clip_batch=2)
    batch_bytes = 2 * 16 * 48 * 64 * 3
    peaks = []
    for seconds in (4, 20):
        path = write_media(tmp_path / f"v{seconds}.mp4", fps=25, n_frames=25 * seconds, audio_s=0)
        tracemalloc.start()
        n = 0
        for b in D.iter_clip_batches(path, cfg):
            n += len(b.frames)  # the consumer drops each batch, as the shard driver does
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert n == -(-25 * seconds // 16)
    whole_video = 25 * 20 * 48 * 64 * 3
    assert peaks[1] < 4 * batch_bytes < whole_video / 3, peaks
    assert peaks[1] < 1.5 * peaks[0], f"peak grew with length: {peaks}"


def test_audio_is_16k_mono_mean_of_channels(tmp_path):
    path = write_media(tmp_path / "a.mp4", fps=30, n_frames=90)
    wave = D.decode_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 48_000) <= 1024  # AAC frames round the end up to 1024 native samples
    middle = wave[8000:40_000]
    amp = math.sqrt(2) * float(np.sqrt((middle**2).mean()))
    assert amp == pytest.approx((LEFT_AMP + RIGHT_AMP) / 2, abs=0.02)  # mean, not sqrt(1/2) * (L + R)
    spectrum = np.abs(np.fft.rfft(middle))
    assert np.argmax(spectrum) * 16_000 / len(middle) == pytest.approx(440, abs=1)


def test_resample_is_band_limited_and_floor_length():
    t = np.arange(44_100) / 44_100
    low = D.resample(np.sin(2 * np.pi * 1000 * t), 44_100, 16_000)
    high = D.resample(np.sin(2 * np.pi * 10_000 * t), 44_100, 16_000)  # above the 8 kHz Nyquist
    assert len(low) == 16_000 and low.dtype == np.float32
    assert np.abs(low[1000:-1000]).max() == pytest.approx(1.0, abs=0.01)
    assert np.abs(high[1000:-1000]).max() < 1e-3, "kaiser_best rejects aliases"
    assert len(D.resample(np.zeros(1001), 44_100, 16_000)) == 1001 * 16_000 // 44_100


def kaiser_best_direct_at_exact_times(x, orig, new):
    """Output sample by output sample, resampy 0.2.2's definition of kaiser_best (table of the windowed sinc's
    right wing, linear interpolation, step int(scale * 512)) evaluated at exact output times; resampy itself
    accumulates them in floating point (tests/test_extract_resample.py compares with resampy)."""
    from fractions import Fraction

    size = 64 * 512
    grid = np.arange(size + 1)
    table = R.KAISER_BEST_ROLLOFF * np.sinc(R.KAISER_BEST_ROLLOFF * grid / 512) * np.kaiser(2 * size + 1, R.KAISER_BEST_BETA)[size:]
    scale = min(1.0, new / orig)
    table = table * scale
    step = int(scale * 512)
    y = np.zeros(int(len(x) * (new / orig)))
    for t in range(len(y)):
        tau = Fraction(t * orig, new)
        n = int(tau)
        frac = scale * float(tau - n)
        for start, taps in ((frac * 512, x[n::-1]), ((scale - frac) * 512, x[n + 1:])):
            positions = start + step * np.arange(len(taps))
            keep = np.floor(positions) <= size
            y[t] += np.interp(positions[keep], grid, table) @ taps[: keep.sum()]
    return y


@pytest.mark.parametrize("orig, new", [(44_100, 16_000), (48_000, 16_000), (22_050, 16_000), (8_000, 16_000)])
def test_polyphase_resample_equals_the_kaiser_best_sum_at_exact_times(orig, new):
    x = np.random.default_rng(1).uniform(-1, 1, 2500)
    np.testing.assert_allclose(D.resample(x, orig, new), kaiser_best_direct_at_exact_times(x, orig, new), atol=2e-6)


@pytest.mark.parametrize("orig", [44_100, 48_000, 22_050, 16_000])
def test_streaming_resampler_equals_whole_signal(orig):
    rng = np.random.default_rng(orig)
    x = rng.uniform(-1, 1, int(orig * 2.3))
    r = D.StreamingResampler(orig, 16_000, chunk_s=0.25)  # many pieces, each with its own filter context
    for piece in np.split(x, np.sort(rng.integers(0, len(x), 40))):
        r.push(piece)
    streamed, whole = r.finish(), D.resample(x, orig, 16_000)
    assert len(streamed) == len(whole) == len(x) * 16_000 // orig
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


@pytest.mark.parametrize("make, func, status", [
    (lambda d: write_media(d / "noaudio.mp4", audio_s=0), D.decode_audio, "no_audio"),
    (lambda d: write_media(d / "audio.m4a", video=False, audio_s=2), lambda p: list(D.iter_frames(p)), "no_video"),
    (lambda d: write_media(d / "short.mp4", fps=25, n_frames=12), D.decode_audio, "too_short"),
    (lambda d: d / "missing.mp4", D.decode_audio, "unreadable"),
])
def test_bad_inputs_raise_typed_errors(tmp_path, make, func, status):
    path = make(tmp_path)
    with pytest.raises(D.DecodeError) as err:
        func(path)
    assert err.value.status == status and err.value.path == str(path) and err.value.reason


def test_garbage_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    mp4 = write_media(tmp_path / "a.mp4", fps=25, n_frames=100)  # moov atom at the end
    cut_mp4 = write_truncated(mp4, tmp_path / "cut.mp4", 0.5)
    for path, status in [(garbage, "unreadable"), (cut_mp4, "unreadable")]:
        with pytest.raises(D.DecodeError) as err:
            list(D.iter_clip_batches(path, STRICT))
        assert err.value.status == status, err.value
        with pytest.raises(D.DecodeError) as err:
            D.decode_audio(path, STRICT)
        assert err.value.status == status, err.value
    assert "MP4/QuickTime header found" in err.value.reason and "truncated or corrupt" in err.value.reason


def test_truncated_stream_keeps_what_decodes_unless_dropped(tmp_path):
    mkv = write_media(tmp_path / "a.mkv", fps=25, n_frames=100)  # streamable: decodes up to the cut
    cut_mkv = write_truncated(mkv, tmp_path / "cut.mkv", 0.5)
    record = D.DecodeRecord()
    n = sum(int(b.n_valid.sum()) for b in D.iter_clip_batches(cut_mkv, STRICT, record=record))
    wave = D.decode_audio(cut_mkv, STRICT, record=record)
    assert 25 <= n < 90 and 0.5 * 16_000 < len(wave) < 3.6 * 16_000
    assert record.declared_s == pytest.approx(4.0, abs=0.05) and record.decoded_s < 3.7
    assert any(f"declares {record.declared_s:.2f} s" in note and "kept" in note for note in record.notes)
    dropping = D.DecodeConfig(truncation_tolerance_s=0.3, truncation_tolerance_frac=0.0, drop_truncated=True)
    for decode in (lambda p: list(D.iter_clip_batches(p, dropping)), lambda p: D.decode_audio(p, dropping)):
        with pytest.raises(D.BrokenStream, match="truncated.*drop_truncated"):
            decode(cut_mkv)


def test_packets_that_fail_to_decode_are_skipped_and_recorded(tmp_path):
    # faststart puts the index first, so a cut file opens, and its last audio packet fails to decode. ffmpeg (which
    # made the benchmark's features) skips such packets and goes on; so does the decoder, and it says so.
    mp4 = write_media(tmp_path / "fs.mp4", fps=25, n_frames=100, options={"movflags": "faststart"})
    cut = write_truncated(mp4, tmp_path / "cut.mp4", 0.6)
    record = D.DecodeRecord()
    wave = D.decode_audio(cut, STRICT, record=record)
    assert len(wave) > 16_000
    assert any("audio packets could not be decoded and were skipped" in n for n in record.notes), record.notes


def test_decode_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="decode.fsp"):
        D.DecodeConfig.from_dict({"fsp": 25})
    with pytest.raises(ValueError, match="clip_batch"):
        D.DecodeConfig(clip_batch=0)
