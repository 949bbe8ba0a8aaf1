"""Small real media files written with PyAV for the extraction I/O tests (plus checks of the writer).

Every frame carries its own index in its colour (R = low 4 bits, G = high 4 bits, 16 levels apart),
so a test can tell exactly which source frame a decoder returned despite lossy compression.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 44_100
LEFT_AMP, RIGHT_AMP, TONE_HZ = 0.6, 0.2, 440.0  # mono mean = 0.4 * sin: tells a mean from a sqrt(1/2) downmix


def index_colour(i: int) -> tuple[int, int, int]:
    return (i % 16) * 16 + 8, (i // 16 % 16) * 16 + 8, 128


def frame_index(rgb: np.ndarray) -> int:
    """Inverse of :func:`index_colour` on a decoded frame (uses the centre to avoid edge artefacts)."""
    h, w = rgb.shape[:2]
    r, g = rgb[h // 4: 3 * h // 4, w // 4: 3 * w // 4, :2].reshape(-1, 2).mean(axis=0)
    return round((r - 8) / 16) + 16 * round((g - 8) / 16)


def write_media(path: Path, *, fps: float = 30, n_frames: int = 60, size: tuple[int, int] = (64, 48),
                video: bool = True, audio_s: float | None = None, pts_s: list[float] | None = None,
                vcodec: str = "libx264", acodec: str = "aac", options: dict | None = None,
                audio_rate: int = AUDIO_RATE) -> Path:
    """Write a file whose container is chosen by ``path``'s suffix.

    ``pts_s`` gives explicit presentation times (variable frame rate) on a 1/1000 s time base;
    ``audio_s`` defaults to the video's length. ``audio_s=0`` writes no audio stream.
    """
    path = Path(path)
    container = av.open(str(path), mode="w", options=options or {})
    vs = None
    if video:
        vs = container.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if pts_s is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
    duration = (pts_s[-1] + 1 / fps) if pts_s is not None else n_frames / fps
    audio_s = duration if audio_s is None else audio_s
    astream = None
    if audio_s > 0:
        astream = container.add_stream(acodec, rate=audio_rate)
        astream.layout = "stereo"
    if vs is not None:
        for i in range(n_frames if pts_s is None else len(pts_s)):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), index_colour(i), np.uint8),
                                               format="rgb24")
            if pts_s is not None:
                frame.pts, frame.time_base = round(pts_s[i] * 1000), Fraction(1, 1000)
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
    if astream is not None:
        n = round(audio_s * audio_rate)
        tone = np.sin(2 * np.pi * TONE_HZ * np.arange(n) / audio_rate)
        pcm = np.stack([LEFT_AMP * tone, RIGHT_AMP * tone]).astype(np.float32)
        for s in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, s:s + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = audio_rate, s
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    container.close()
    return path


def write_truncated(src: Path, dst: Path, keep: float) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes (a download cut short)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def test_written_media_has_the_requested_streams(tmp_path):
    path = write_media(tmp_path / "a.mp4", fps=30, n_frames=45)
    with av.open(str(path)) as c:
        assert c.streams.video[0].average_rate == 30
        assert c.streams.audio[0].channels == 2
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert [frame_index(f) for f in frames] == list(range(45))


def test_variable_frame_rate_pts_are_kept(tmp_path):
    pts = [0.0, 0.01, 0.1, 0.3, 0.31, 0.5]
    path = write_media(tmp_path / "vfr.mkv", pts_s=pts, audio_s=0)
    with av.open(str(path)) as c:
        got = [float(f.time) for f in c.decode(video=0)]
    assert got == pts
