"""Odd but valid (and some broken) media files: each decodes to what it holds, and the record says what was odd.

Files come from two encoders: PyAV's bundled FFmpeg (``write_media``) and Debian's ``ffmpeg`` command line (another
build, with libxvid), which writes what PyAV cannot: Xvid's packed B-frames (the format of UCF101), cover art, and
MPEG-TS files with the 1.4 s start offset its muxer adds.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_extract_io_fixtures import AUDIO_RATE, frame_index, index_colour, write_media

from extractors import decode as D
from extractors import store as S
from extractors.c3d import FramePreprocessor, VideoExtractorConfig
from extractors.manifest import ManifestRow, probe_video, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Debian's ffmpeg, the second encoder


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """Path of Debian's ffmpeg, installed with apt-get when missing (seconds). Skips locally, fails on CI."""
    path = shutil.which("ffmpeg")
    apt_said = ""
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", "ffmpeg"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
            apt_said = done.stderr[-500:]
        path = shutil.which("ffmpeg")
    if path is None:
        why = f"Debian's ffmpeg is not installed and cannot be installed here (needs root and apt-get) {apt_said}"
        if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
            pytest.fail(why)
        pytest.skip(why)
    return path


def moving_frames(n: int, size=(160, 120)) -> np.ndarray:
    """Frames whose centre carries the frame index (``frame_index``) and whose border moves, so that encoders
    use B-frames throughout (flat frames get few)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = np.stack([(4 * xx + 6 * i) % 256, (4 * yy + 3 * i) % 256, (2 * (xx + yy) + 5 * i) % 256], -1)
        frames[i, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = index_colour(i)
    return frames


def ffmpeg_encode(ffmpeg: str, path: Path, frames: np.ndarray, fps: int, *args: str) -> Path:
    _, h, w, _ = frames.shape
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", *args, str(path)],
                   input=frames.tobytes(), check=True, timeout=300)
    return path


def indices(path, **kw) -> list[int]:
    return [frame_index(f) for f in D.iter_frames(path, **kw)]


# --------------------------------------------------------------------------------------------------
# Time stamps


def test_xvid_packed_b_frames_show_every_frame_once_in_order(ffmpeg, tmp_path):
    # Xvid writes B-frames "packed" into the preceding P-frame's AVI chunk: the decoder's pts come out of display
    # order (3, 4, 6, 5, 7, 9, 8, ...) while its dts are right. Stamping frames by pts showed ~70 of 121 frames.
    path = ffmpeg_encode(ffmpeg, tmp_path / "xvid.avi", moving_frames(123), 25, "-c:v", "libxvid", "-bf", "2")
    with av.open(str(path)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert any(b < a for a, b in itertools.pairwise(p for p in pts if p is not None)), "not a packed-B-frame file"
    record = D.DecodeRecord()
    got = indices(path, record=record)
    assert got == list(range(record.frames_decoded))  # a native 25 fps file passes through, frame for frame
    assert record.frames_decoded >= 120 and record.frames_used == record.frames_decoded
    assert record.frames_restamped > 50 and record.frames_dropped == 0
    assert any("re-stamped" in n for n in record.notes)


def test_best_effort_clock_follows_ffmpegs_rule():
    class F:
        def __init__(self, pts, dts):
            self.pts, self.dts = pts, dts

    def stamps(pairs, lookahead):
        clock = D.BestEffortClock(lookahead)
        out = [s for f in pairs for _, s, _ in clock.push(F(*f))]
        return out + [s for _, s, _ in clock.flush()]

    packed = [(3, 3), (4, 4), (6, 5), (5, 6), (7, 7), (9, 8), (8, 9), (10, None)]
    assert stamps(packed, lookahead=4) == [3, 4, 5, 6, 7, 8, 9, None]  # dts; the flushed frame is placed after
    assert stamps(packed, lookahead=0)[:4] == [3, 4, 6, 6]  # FFmpeg's own per-frame answer (no lookahead)
    reordered_dts = [(0, 0), (1, 2), (2, 1), (3, 3)]  # good pts, faulty dts: pts win
    assert stamps(reordered_dts, lookahead=4) == [0, 1, 2, 3]


def test_a_stamp_hours_ahead_does_not_become_hours_of_clips(tmp_path, caplog):
    # 25 frames in the first second, then one frame stamped at 10 h: holding the previous frame until then made
    # 900 000 output frames (hours of decoding, silently). Now a frame is held for max_hold_s at most.
    pts = [k / 25 for k in range(25)] + [36_000.0]
    path = write_media(tmp_path / "gap.mkv", pts_s=pts, audio_s=0)
    record = D.DecodeRecord()
    got = list(itertools.islice(D.iter_frames(path, D.DecodeConfig(max_hold_s=2.0), record=record), 5000))
    # frames 0-23 once each, frame 24 held for 2 s (50 grid times), the 10 h frame for its own 1/25 s
    assert [frame_index(f) for f in got] == list(range(24)) + [24] * 50 + [25]
    assert record.gaps_skipped_s == pytest.approx(36_000 - 0.96 - 2.0, abs=0.05)
    assert any("max_hold_s" in n for n in record.notes)

    long = write_media(tmp_path / "long.mp4", fps=25, n_frames=100, audio_s=0)  # 4 s
    with pytest.raises(D.TooLong, match="max_video_seconds = 3 s"):
        list(D.iter_frames(long, D.DecodeConfig(max_video_seconds=3)))
    with caplog.at_level(logging.INFO, logger="extractors.decode"):
        list(D.iter_frames(long, D.DecodeConfig(progress_every_s=1.0)))
    assert sum("s of video decoded" in r.getMessage() for r in caplog.records) == 4


# --------------------------------------------------------------------------------------------------
# Streams


def test_matroska_audio_that_ends_early_is_normal(tmp_path):
    # Matroska has no per-stream duration: taking the container's 8 s as the audio's marked this file broken.
    path = write_media(tmp_path / "early.mkv", fps=25, n_frames=200, audio_s=2.0)
    record = D.DecodeRecord()
    assert len(indices(path, record=record)) == 200
    wave = D.decode_audio(path, record=record)
    assert abs(len(wave) - 2 * 16_000) < 400  # AAC pads to whole 1024-sample frames
    assert record.notes == [] and record.decoded_s == pytest.approx(8.0, abs=0.05)


def test_webm_vp8_opus_with_short_audio(tmp_path):
    path = write_media(tmp_path / "early.webm", fps=25, n_frames=100, audio_s=1.5, vcodec="libvpx", acodec="libopus",
                       audio_rate=48_000)
    record = D.DecodeRecord()
    assert len(indices(path, record=record)) == 100
    assert abs(len(D.decode_audio(path, record=record)) - 1.5 * 16_000) < 400 and record.notes == []


def test_cover_art_is_not_a_video_stream(ffmpeg, tmp_path):
    wav = tmp_path / "tone.wav"
    t = np.arange(3 * AUDIO_RATE) / AUDIO_RATE
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=AUDIO_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None],
                                           format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        for p in itertools.chain(s.encode(frame), s.encode()):
            c.mux(p)
    cover = ffmpeg_encode(ffmpeg, tmp_path / "cover.png", moving_frames(1), 1)
    song = tmp_path / "song.m4a"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav), "-i", str(cover), "-map", "0",
                    "-map", "1", "-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", str(song)], check=True)
    with av.open(str(song)) as c:
        assert len(c.streams.video) == 1 and D.is_cover_art(c.streams.video[0])
    probe = probe_video(song)
    assert (probe.status, probe.reason) == ("no_video", "no video stream (only cover art)")
    with pytest.raises(D.NoVideo, match="only cover art"):
        list(D.iter_frames(song))
    assert len(D.decode_audio(song)) == pytest.approx(3 * 16_000, abs=1100)  # aac priming


def test_audio_stream_with_most_channels_and_start_offsets_are_recorded(tmp_path):
    path = tmp_path / "two_audio.mkv"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        mono = c.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        stereo = c.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        for i in range(50):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index_colour(i), np.uint8), format="rgb24")
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        start = AUDIO_RATE // 2  # the audio starts 0.5 s after the video
        for stream, layout, n_ch in ((mono, "mono", 1), (stereo, "stereo", 2)):
            for s in range(0, 2 * AUDIO_RATE, 1024):
                f = av.AudioFrame.from_ndarray(np.full((n_ch, 1024), 0.1, np.float32), format="fltp", layout=layout)
                f.sample_rate, f.pts = AUDIO_RATE, start + s
                for p in stream.encode(f):
                    c.mux(p)
            for p in stream.encode():
                c.mux(p)
    record = D.DecodeRecord()
    list(D.iter_frames(path, record=record))
    D.decode_audio(path, record=record)
    assert (record.audio_stream, record.n_audio_streams, record.video_stream) == (2, 2, 0)
    assert record.video_start_s == pytest.approx(0.0, abs=0.002)
    assert record.audio_start_s == pytest.approx(0.5, abs=0.03)


def test_frame_size_changing_mid_stream_is_resized_not_rejected(tmp_path):
    # Two MPEG-TS files of different sizes, concatenated: one stream whose frames change size after 1 s.
    a = write_media(tmp_path / "a.ts", fps=25, n_frames=25, size=(64, 48))
    b = write_media(tmp_path / "b.ts", fps=25, size=(96, 72), pts_s=[1 + k / 25 for k in range(25)])
    both = tmp_path / "both.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    with av.open(str(both)) as c:
        sizes = {(f.width, f.height) for f in c.decode(video=0)}
    assert sizes == {(64, 48), (96, 72)}
    resize = FramePreprocessor(VideoExtractorConfig(), "cpu").resize_frames  # what extraction passes
    batches = list(D.iter_clip_batches(both, D.DecodeConfig(clip_batch=2), transform=resize))
    assert all(b.frames.shape[2:] == (128, 171, 3) for b in batches)
    assert sum(int(b.n_valid.sum()) for b in batches) >= 45
    with pytest.raises(D.BrokenStream, match="frame size changed"):  # without a resizing transform: an error
        list(D.iter_clip_batches(both))


@pytest.mark.slow  # real random-weight C3D and VGGish
def test_extraction_of_a_video_whose_frame_size_changes(tmp_path):
    from extractors.extract import ExtractConfig, extract_shard

    a = write_media(tmp_path / "a.ts", fps=25, n_frames=25, size=(64, 48))
    b = write_media(tmp_path / "b.ts", fps=25, size=(96, 72), pts_s=[1 + k / 25 for k in range(25)])
    both = tmp_path / "both.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    cfg = ExtractConfig.from_dict({"device": "cpu", "video": {"batch_size": 4}})
    extract_shard([ManifestRow("both", str(both), None, None, "c", "ok")], tmp_path / "s.zarr", cfg)
    row = S.FeatureStore(tmp_path / "s.zarr").table[0]
    assert row["status"] == "ok" and row["n_video"] == 4 and row["frames_used"] >= 48, row  # ~50 frames, 2 sizes


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_resize_in_the_decoder_then_preprocess_equals_preprocess(preset):
    import torch

    cfg = VideoExtractorConfig(preset=preset, dataset="ucf")
    pre = FramePreprocessor(cfg, "cpu")
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 90, 120, 3), dtype=np.uint8))
    resized = np.concatenate([pre.resize_frames(frames[:2].numpy()), pre.resize_frames(frames[2:].numpy())])
    assert resized.shape == (5, 128, 171, 3) and resized.dtype == np.float32
    torch.testing.assert_close(pre.preprocess_resized(torch.from_numpy(resized)), pre.preprocess(frames),
                               rtol=0, atol=0)


PEAK_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from extractors.extract import ExtractConfig, extract_shard
    from extractors.manifest import ManifestRow
    # decoders: 0 decodes in this process, so its peak RSS includes the decoding of the 4K frames
    cfg = ExtractConfig.from_dict({"device": "cpu", "video": {"batch_size": 2}, "decoders": 0})
    small, big, out = sys.argv[1:4]
    def run(path, name):
        extract_shard([ManifestRow("v", path, None, None, "c", "ok")], f"{out}/{name}.zarr", cfg)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = run(small, "small")  # networks built, one small video through the whole path
    print(json.dumps({"before_mb": before, "after_mb": run(big, "big")}))
""")


@pytest.mark.slow  # real random-weight C3D and VGGish in a subprocess, a 4K clip
def test_peak_memory_of_a_4k_clip_depends_on_the_network_input_not_the_video(tmp_path):
    small = write_media(tmp_path / "small.mkv", fps=25, n_frames=40, size=(320, 240), vcodec="mpeg4")
    big = write_media(tmp_path / "big.mkv", fps=25, n_frames=40, size=(3840, 2160), vcodec="mpeg4")
    res = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(small), str(big), str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    rss = json.loads(res.stdout.strip().splitlines()[-1])
    # Full-resolution decode batches held 40 frames x 25 MB = 1 GB; cropped frames are 150 kB each. What remains
    # is the decoder's own 4K frames and one frame's float copy while it is resized (~100 MB each).
    assert rss["after_mb"] - rss["before_mb"] < 400, rss


# --------------------------------------------------------------------------------------------------
# Segments


def test_mpegts_segment_honours_the_start_time(ffmpeg, tmp_path):
    # ffmpeg's MPEG-TS muxer starts the clock at 1.4 s. The segment [1, 2) is the second second of the video.
    path = ffmpeg_encode(ffmpeg, tmp_path / "a.ts", moving_frames(100), 25, "-c:v", "libx264", "-g", "12",
                         "-bf", "0")
    with av.open(str(path)) as c:
        assert c.start_time / av.time_base == pytest.approx(1.4, abs=0.05)
    record = D.DecodeRecord()
    assert indices(path, start_s=1.0, end_s=2.0, record=record) == list(range(25, 50))
    assert record.video_start_s == pytest.approx(1.0)
    assert indices(path, start_s=0.0, end_s=0.5) == list(range(13))  # 0.5 s: grid times 0, 0.04, ..., 0.48


def test_a_seek_that_overshoots_backs_off_instead_of_repeating_a_frame(tmp_path, monkeypatch):
    path = write_media(tmp_path / "a.mp4", fps=25, n_frames=100)
    real_seek = D._Demuxer.seek
    calls = []

    def overshooting(self, t):  # a demuxer that lands 0.4 s late on the first seek
        calls.append(t)
        real_seek(self, t + Fraction(2, 5) if len(calls) == 1 else t)

    monkeypatch.setattr(D._Demuxer, "seek", overshooting)
    assert indices(path, start_s=1.0, end_s=2.0) == list(range(25, 50))
    assert len(calls) == 2 and calls[1] < calls[0]
    calls.clear()
    wave = D.decode_audio(path, start_s=1.0, end_s=2.0)
    assert len(wave) == 16_000 and len(calls) == 2


# --------------------------------------------------------------------------------------------------
# Files that are not media


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file (0 bytes)"),
    (b"\x00" * 5000, "the first 4096 bytes are all zero"),
    (b"<!DOCTYPE html><html><body>Video unavailable</body></html>\n" * 10, "starts with text '<!DOCTYPE html>"),
    (bytes(range(7, 256)) * 20, "no media container header (first bytes 07 08 09"),
])
def test_empty_headerless_and_garbage_files_are_told_apart(tmp_path, content, reason):
    path = tmp_path / "v.mp4"
    path.write_bytes(content)
    with pytest.raises(D.Unreadable) as err:
        D.open_container(path)
    assert reason in err.value.reason
    assert probe_video(path).reason == err.value.reason


# --------------------------------------------------------------------------------------------------
# Names in tables

ODD_NAMES = ["two  spaces", ' a "quoted" name ', "tab\there", "naïve café ☃", "trailing space "]


def test_manifest_round_trips_odd_names_and_refuses_line_breaks(tmp_path):
    rows = [ManifestRow(n, f"/videos/{n}.mp4", None, None, f"class {n}", "ok") for n in ODD_NAMES]
    write_manifest(rows, tmp_path / "m.tsv")
    assert read_manifest(tmp_path / "m.tsv") == rows
    with pytest.raises(ValueError, match="line break"):
        write_manifest([ManifestRow("a\nb", "", None, None, "c", "missing")], tmp_path / "bad.tsv")


def test_store_round_trips_odd_names_and_refuses_line_breaks(tmp_path):
    attrs = {"audio": {"dtype": "uint8"}, "video": {"dtype": "float32"}}
    rows = [{"class_name": n, "path": f"/videos/{n}.mp4", "reason": "multi\nline\treason"} for n in ODD_NAMES]
    S.write_store(tmp_path / "s.zarr", ODD_NAMES, [None] * 5, [None] * 5, attrs, rows)
    fs = S.FeatureStore(tmp_path / "s.zarr")
    assert fs.video_ids == ODD_NAMES and [r["video_id"] for r in fs.table] == ODD_NAMES
    assert [r["class_name"] for r in fs.table] == ODD_NAMES and fs.index_of("two  spaces") == 0
    assert fs.table[0]["reason"] == "multi line reason"  # free text is one line
    with pytest.raises(ValueError, match="line break"):
        S.write_store(tmp_path / "t.zarr", ["a\nb"], [None], [None], attrs)


def test_a_new_writer_removes_temporaries_of_killed_writers(tmp_path):
    stale = tmp_path / "s.zarr.tmp-999999"
    (stale / "audio").mkdir(parents=True)
    other = tmp_path / "s2.zarr.tmp-999999"  # another store's: left alone
    other.mkdir()
    attrs = {"audio": {"dtype": "uint8"}, "video": {"dtype": "float32"}}
    S.write_store(tmp_path / "s.zarr", ["a"], [None], [None], attrs)
    assert not stale.exists() and other.exists() and S.FeatureStore(tmp_path / "s.zarr").video_ids == ["a"]


# --------------------------------------------------------------------------------------------------
# Finding the files


def test_default_extensions_find_the_containers_ffmpeg_reads(tmp_path):
    from data_splits.matching import DEFAULT_EXTENSIONS

    assert {".ts", ".3gp", ".m4a", ".mts", ".m2ts", ".mpg", ".wmv", ".ogv"} <= set(DEFAULT_EXTENSIONS)
    ts = write_media(tmp_path / "clip.ts", fps=25, n_frames=30)
    rows = build_manifest_for(tmp_path, [("clip", "c")])
    assert rows[0].path == str(ts) and rows[0].status == "ok"


def test_missing_and_duplicate_files_say_what_was_searched_and_used(tmp_path):
    from data_splits.matching import match_videos

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "other.xyz").write_bytes(b"x")
    (tmp_path / "a" / "dup.mp4").write_bytes(b"x")
    (tmp_path / "b" / "dup.mp4").write_bytes(b"x")
    got = {e.video_id: e for e in match_videos("demo", [("other", "c"), ("dup", "c"), ("none", "c")], tmp_path)}
    assert got["other"].path is None
    assert f"under {tmp_path}" in got["other"].reason and ".mp4 " in got["other"].reason
    assert f"found {tmp_path / 'a' / 'other.xyz'}" in got["other"].reason and "raw_videos.extensions" in got["other"].reason
    assert got["none"].path is None and "found" not in got["none"].reason
    assert got["dup"].path == tmp_path / "a" / "dup.mp4"
    assert f"used {tmp_path / 'a' / 'dup.mp4'}, not {tmp_path / 'b' / 'dup.mp4'}" in got["dup"].reason


def build_manifest_for(raw_dir, wanted):
    from data_splits.matching import match_videos
    from extractors.manifest import build_manifest

    return build_manifest(match_videos("demo", wanted, raw_dir))


def test_frames_reach_the_transform_in_small_groups_of_distinct_frames(tmp_path):
    path = write_media(tmp_path / "b24.mkv", fps=24, n_frames=48)  # 50 grid frames: two source frames shown twice
    calls = []

    def transform(frames):
        calls.append(len(frames))
        return frames[:, ::2, ::2]

    batches = list(D.iter_clip_batches(path, transform=transform))
    flat = np.concatenate([b.frames for b in batches]).reshape(-1, 24, 32, 3)[:50]
    assert [frame_index(f) for f in flat] == [frame_index(f) for f in D.iter_frames(path)]
    assert sum(calls) == 48 and max(calls) <= 16  # each source frame once, at most one clip per call
    big = write_media(tmp_path / "big.mkv", fps=25, n_frames=3, size=(2560, 1440), vcodec="mpeg4", audio_s=0)
    calls.clear()
    list(D.iter_clip_batches(big, transform=transform))
    assert calls == [2, 1]  # 3.7 megapixels each: two per call at most
