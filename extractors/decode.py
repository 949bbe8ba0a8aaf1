"""Streaming PyAV decoding: video resampled to a fixed frame rate by timestamps, audio to 16 kHz mono.

Memory is bounded by one batch of clips, never by the length of the video: frames are converted to
RGB (and optionally transformed, e.g. resized and cropped) one at a time and copied into a batch of
``clip_batch`` 16-frame clips that is yielded and then dropped.

Bad input raises a :class:`DecodeError` subclass whose ``status`` is one of the feature-store
statuses (``unreadable``, ``no_audio``, ``no_video``, ``too_short``, ``broken_stream``) and whose
``reason`` says what was wrong; the shard driver records both and moves on to the next video.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .resample import StreamingResampler, resample  # noqa: F401  (resample: part of this module's API)

log = logging.getLogger(__name__)

# One VGGish example needs 400 + 95 * 160 = 15 600 samples at 16 kHz (0.975 s): the 25 ms STFT
# window plus 95 hops of 10 ms. Anything shorter yields no audio feature at all.
VGGISH_MIN_SAMPLES = 15_600


# --------------------------------------------------------------------------------------------------
# Errors: one class per store status so the driver can record ``err.status`` and ``err.reason``.


class DecodeError(Exception):
    """A video that cannot be (fully) decoded. ``status`` goes into the store's table."""

    status = "unreadable"

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.status}: {self.path}: {reason}")


class Unreadable(DecodeError):
    status = "unreadable"


class NoVideo(DecodeError):
    status = "no_video"


class NoAudio(DecodeError):
    status = "no_audio"


class TooShort(DecodeError):
    status = "too_short"


class BrokenStream(DecodeError):
    status = "broken_stream"


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DecodeConfig:
    """How raw files are decoded. Defaults are what the benchmarks' features assume."""

    fps: int = 25  # output frame rate; clip i covers [16 i / fps, 16 (i + 1) / fps)
    frames_per_clip: int = 16
    clip_batch: int = 8  # clips per yielded batch: the decoder's memory bound
    sample_rate: int = 16_000
    # A file is flagged ``broken_stream`` when decoding stops this much before the duration its
    # container declares (a truncated download ends silently, without a decoder error).
    truncation_tolerance_s: float = 1.0
    truncation_tolerance_frac: float = 0.1
    threads: int = 0  # FFmpeg decoder threads; 0 = FFmpeg's choice

    def __post_init__(self) -> None:
        for name in ("fps", "frames_per_clip", "clip_batch", "sample_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"decode.{name} must be > 0, got {getattr(self, name)!r}")
        if self.truncation_tolerance_s < 0 or not 0 <= self.truncation_tolerance_frac < 1:
            raise ValueError("decode.truncation_tolerance_s must be >= 0 and _frac in [0, 1)")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DecodeConfig:
        return cls(**_check_keys(cls, d or {}, "decode"))


def _check_keys(cls: type, d: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in known:
            raise ValueError(f"unknown key '{where}.{key}'; allowed keys: {sorted(known)}")
    return dict(d)


# --------------------------------------------------------------------------------------------------
# Opening files


def open_container(path: str | Path) -> av.container.InputContainer:
    """``av.open`` that turns every failure (missing file, garbage bytes, no moov atom) into ``Unreadable``."""
    path = Path(path)
    if not path.is_file():
        raise Unreadable(path, "file not found")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        raise Unreadable(path, f"cannot open container: {type(err).__name__}: {err}") from err


def _declared_end(container: av.container.InputContainer, stream: av.stream.Stream) -> Fraction | None:
    """End time (s) the container claims for ``stream``: per-stream duration, else the container's."""
    start = Fraction(stream.start_time or 0) * stream.time_base if stream.time_base else Fraction(0)
    if stream.duration is not None and stream.time_base is not None:
        return start + Fraction(stream.duration) * stream.time_base
    if container.duration is not None:
        return Fraction(container.duration, av.time_base)
    return None


def _check_truncation(path: Path, kind: str, decoded_end: Fraction, declared_end: Fraction | None,
                      cfg: DecodeConfig) -> None:
    if declared_end is None:
        return
    slack = max(cfg.truncation_tolerance_s, cfg.truncation_tolerance_frac * float(declared_end))
    if float(declared_end - decoded_end) > slack:
        raise BrokenStream(path, f"{kind} stream ends at {float(decoded_end):.2f} s but the container "
                                 f"declares {float(declared_end):.2f} s (truncated or corrupt file)")


def _seek(container: av.container.InputContainer, stream: av.stream.Stream, t: float) -> None:
    # Seek to the key frame at or before t; decoding then runs forward to t.
    if t > 0 and stream.time_base is not None:
        container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)


# --------------------------------------------------------------------------------------------------
# Video


@dataclass
class ClipBatch:
    """``frames`` uint8 [n, frames_per_clip, H, W, 3] RGB; ``n_valid[j]`` real frames in clip j.

    Only the video's last clip can be partial; its missing frames are zeros, and ``n_valid`` lets the
    network pad them the way the reference did (zeros after normalisation).
    """

    frames: np.ndarray
    n_valid: np.ndarray
    first_clip: int  # index of frames[0] among the video's clips


FrameTransform = Callable[[np.ndarray], np.ndarray]


def iter_frames(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                end_s: float | None = None, transform: FrameTransform | None = None) -> Iterator[np.ndarray]:
    """Yield the frames a ``cfg.fps`` grid shows, as uint8 RGB [H, W, 3] (after ``transform``).

    Output frame k is the source frame displayed at ``t_k = t0 + k / fps``: the last frame whose
    timestamp is <= t_k. ``t0`` is ``start_s`` for a segment, else the first frame's timestamp. The
    grid stops at ``end_s`` or where the last frame stops being displayed. Timestamps are exact
    fractions, so a 30 fps file gives frames floor(1.2 k) and a 25 fps file every frame.
    """
    path = Path(path)
    container = open_container(path)
    try:
        if not container.streams.video:
            raise NoVideo(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threading: several frames decode in parallel
        if cfg.threads:
            stream.codec_context.thread_count = cfg.threads
        yield from _resample_frames(path, container, stream, cfg, start_s, end_s, transform)
    finally:
        container.close()


def _resample_frames(path: Path, container, stream, cfg: DecodeConfig, start_s: float | None,
                     end_s: float | None, transform: FrameTransform | None) -> Iterator[np.ndarray]:
    step = Fraction(1, cfg.fps)
    t0 = Fraction(start_s).limit_denominator(1_000_000) if start_s is not None else None
    t_end = Fraction(end_s).limit_denominator(1_000_000) if end_s is not None else None
    rate = stream.average_rate or stream.guessed_rate or Fraction(cfg.fps)
    if t0 is not None:
        _seek(container, stream, float(t0))

    k = 0  # next output index
    prev: av.VideoFrame | None = None
    prev_t = Fraction(0)
    prev_dur = 1 / Fraction(rate)
    prev_rgb: np.ndarray | None = None  # conversion cache: a frame shown twice is converted once
    n_decoded = 0

    def convert(frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        return transform(rgb) if transform is not None else rgb

    try:
        for frame in container.decode(stream):
            n_decoded += 1
            t = _frame_time(frame, prev_t, prev_dur, prev is not None)
            if t0 is None:
                t0 = t  # whole file: the grid starts at the first displayed frame
            if prev is not None:
                prev_dur = max(t - prev_t, Fraction(1, 1_000_000))
                # prev is displayed on [prev_t, t): emit every grid time that falls inside it.
                # (Grid times before the first frame, possible only in a segment, show that frame.)
                while t0 + k * step < t and (t_end is None or t0 + k * step < t_end):
                    prev_rgb = prev_rgb if prev_rgb is not None else convert(prev)
                    yield prev_rgb
                    k += 1
            if t_end is not None and t >= t_end:
                prev = None
                break
            prev, prev_t, prev_rgb = frame, t, None
            if frame.duration:
                prev_dur = Fraction(frame.duration) * (frame.time_base or stream.time_base)
    except av.error.FFmpegError as err:
        raise BrokenStream(path, f"decoder error after {n_decoded} frames ({k} output frames): "
                                 f"{type(err).__name__}: {err}") from err

    if n_decoded == 0:
        raise Unreadable(path, "video stream decodes to zero frames")
    if prev is not None:
        # Last frame: shown for its own duration (or the previous frame interval).
        stop = prev_t + prev_dur if t_end is None else min(prev_t + prev_dur, t_end)
        while t0 + k * step < stop:
            prev_rgb = prev_rgb if prev_rgb is not None else convert(prev)
            yield prev_rgb
            k += 1
        if t_end is None or stop < t_end:
            _check_truncation(path, "video", stop, _declared_end(container, stream), cfg)
    if k == 0:
        raise TooShort(path, "segment shorter than one output frame")


def _frame_time(frame: av.VideoFrame, prev_t: Fraction, prev_dur: Fraction, have_prev: bool) -> Fraction:
    # Some AVI files carry no pts: fall back to the previous frame plus one frame interval.
    if frame.pts is None or frame.time_base is None:
        return prev_t + prev_dur if have_prev else Fraction(0)
    return Fraction(frame.pts) * frame.time_base


def iter_clip_batches(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                      end_s: float | None = None,
                      transform: FrameTransform | None = None) -> Iterator[ClipBatch]:
    """Group :func:`iter_frames` into batches of at most ``cfg.clip_batch`` clips.

    Clips are non-overlapping, ``ceil(n_frames / frames_per_clip)`` per video as in the reference;
    the last one is zero-padded and its ``n_valid`` says how many frames are real. At most one batch
    (plus the frame being converted) is alive inside the generator.
    """
    fpc = cfg.frames_per_clip
    buf: np.ndarray | None = None
    n_frames_in_buf = 0
    clips_done = 0
    for frame in iter_frames(path, cfg, start_s, end_s, transform):
        if buf is None:
            buf = np.zeros((cfg.clip_batch, fpc, *frame.shape), dtype=np.uint8)
        elif frame.shape != buf.shape[2:]:
            raise BrokenStream(path, f"frame size changed mid-stream from {buf.shape[2:4]} to {frame.shape[:2]}; "
                                     "pass a transform that resizes every frame to a fixed size")
        buf[divmod(n_frames_in_buf, fpc)] = frame
        n_frames_in_buf += 1
        if n_frames_in_buf == cfg.clip_batch * fpc:
            yield ClipBatch(buf, np.full(cfg.clip_batch, fpc, dtype=np.int64), clips_done)
            clips_done += cfg.clip_batch
            buf = np.zeros_like(buf)  # the consumer may keep the yielded array
            n_frames_in_buf = 0
    if n_frames_in_buf:
        n_clips = -(-n_frames_in_buf // fpc)
        n_valid = np.full(n_clips, fpc, dtype=np.int64)
        n_valid[-1] = n_frames_in_buf - (n_clips - 1) * fpc
        yield ClipBatch(buf[:n_clips].copy(), n_valid, clips_done)


# --------------------------------------------------------------------------------------------------
# Audio


def decode_audio(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                 end_s: float | None = None, min_samples: int = VGGISH_MIN_SAMPLES) -> np.ndarray:
    """Return the audio as a float32 mono waveform at ``cfg.sample_rate`` in [-1, 1).

    Mirrors the reference chain (ffmpeg -> 16-bit PCM WAV -> /32768 -> mean over channels ->
    resampy ``kaiser_best``): samples are quantised to int16 exactly as ffmpeg's s16 conversion does,
    averaged over all channels, then resampled with a Kaiser-windowed sinc that has kaiser_best's
    parameters (see :func:`resample`), chunk by chunk as they are decoded, so only the 16 kHz output
    (4 bytes per sample) grows with the duration. Raises ``TooShort`` below ``min_samples`` samples.
    """
    path = Path(path)
    container = open_container(path)
    try:
        if not container.streams.audio:
            raise NoAudio(path, "no audio stream")
        stream = container.streams.audio[0]
        resampler, first_t = _decode_resampled(path, container, stream, cfg.sample_rate, start_s, end_s)
        declared = _declared_end(container, stream)
    finally:
        container.close()

    if end_s is None:
        base = start_s if start_s is not None else first_t
        decoded_end = (Fraction(base).limit_denominator(1_000_000)
                       + Fraction(resampler.n_in, resampler.orig))
        _check_truncation(path, "audio", decoded_end, declared, cfg)
    wave = resampler.finish()
    if len(wave) < min_samples:
        raise TooShort(path, f"audio is {len(wave) / cfg.sample_rate:.3f} s; one VGGish example needs "
                             f"{min_samples / cfg.sample_rate:.3f} s")
    return wave


def _decode_resampled(path: Path, container, stream, rate_out: int, start_s: float | None,
                      end_s: float | None) -> tuple[StreamingResampler, float]:
    """Decode (the segment of) the stream into a resampler. Returns it and the first frame's time."""
    if start_s:
        _seek(container, stream, start_s)
    resampler: StreamingResampler | None = None
    first_t = 0.0
    skip, remaining = 0, None  # native samples to drop before the segment / still wanted in it
    n_frames = 0
    try:
        for frame in container.decode(stream):
            n_frames += 1
            if resampler is None:
                resampler = StreamingResampler(frame.sample_rate, rate_out)
                first_t = float(frame.time) if frame.time is not None else 0.0
                # The seek lands on a packet at or before start_s: trim to the segment sample-exactly.
                skip = max(0, round((start_s - first_t) * frame.sample_rate)) if start_s is not None else 0
                if end_s is not None:
                    remaining = max(0, round((end_s - (start_s or 0.0)) * frame.sample_rate))
            elif frame.sample_rate != resampler.orig:
                raise BrokenStream(path, f"audio sample rate changes mid-stream "
                                         f"({resampler.orig} -> {frame.sample_rate} Hz)")
            mono = _to_int16_channels(path, frame).mean(axis=0, dtype=np.float64) / 32768.0
            if skip:
                cut = min(skip, len(mono))
                mono, skip = mono[cut:], skip - cut
            if remaining is not None:
                mono = mono[:remaining]
                remaining -= len(mono)
            resampler.push(mono)
            if remaining == 0:
                break
    except av.error.FFmpegError as err:
        raise BrokenStream(path, f"audio decoder error after {n_frames} frames: {type(err).__name__}: {err}") from err
    if resampler is None:
        raise TooShort(path, "audio stream decodes to zero samples")
    return resampler, first_t


def _to_int16_channels(path: Path, frame: av.AudioFrame) -> np.ndarray:
    """Samples as int16 [channels, n], converted the way ffmpeg's s16 output (pydub's WAV) does."""
    arr = frame.to_ndarray()
    fmt = frame.format
    n_ch = len(frame.layout.channels)
    if not fmt.is_planar:  # packed: [1, n * ch] interleaved
        arr = arr.reshape(-1, n_ch).T
    if arr.dtype == np.int16:
        return arr
    if arr.dtype.kind == "f":  # swresample: lrintf(x * 32768), clipped
        return np.clip(np.rint(arr.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    if arr.dtype == np.int32:
        return (arr >> 16).astype(np.int16)
    if arr.dtype == np.uint8:
        return ((arr.astype(np.int16) - 128) << 8).astype(np.int16)
    raise BrokenStream(path, f"unsupported sample format {fmt.name}")
