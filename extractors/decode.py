"""Streaming PyAV decoding: video resampled to 25 fps by timestamps, audio to 16 kHz mono.

Memory is bounded by one batch of clips, never by the length or the resolution of the video: frames are
converted to RGB and transformed (in the pipeline: resized to the network's input) one at a time, then
copied into a batch of ``clip_batch`` 16-frame clips that is yielded and then dropped.

Time stamps are the ones FFmpeg itself trusts (its best-effort rule, :class:`BestEffortClock`): Xvid/DivX
files with packed B-frames, the format of UCF101, deliver presentation stamps out of display order while
their decode stamps are right. Time is measured from the container's start time, so segments of MPEG-TS
files (which start at an arbitrary clock value) are cut where the annotation says.

Bad input raises a :class:`DecodeError` subclass whose ``status`` is one of the feature-store statuses
(``unreadable``, ``no_audio``, ``no_video``, ``too_short``, ``too_long``, ``broken_stream``) and whose
``reason`` says what was wrong; the shard driver records both and moves on to the next video. What decoding
found in a video that did decode (the streams used, start offsets, re-stamped or dropped frames, a truncated
file) goes into a :class:`DecodeRecord` that ends up in the store's table.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from data_splits.common import check_keys

from .resample import StreamingResampler, resample  # noqa: F401  (resample: part of this module's API)

log = logging.getLogger(__name__)

# Fixed by the networks, not configurable: C3D was trained on 16-frame clips of 25 fps video, VGGish on
# 16 kHz log-mel examples.
OUTPUT_FPS = 25
FRAMES_PER_CLIP = 16
SAMPLE_RATE = 16_000
# One VGGish example needs 400 + 95 * 160 = 15 600 samples at 16 kHz (0.975 s): the 25 ms STFT
# window plus 95 hops of 10 ms. Anything shorter yields no audio feature at all.
VGGISH_MIN_SAMPLES = 15_600
# Decoded frames held back before their time stamps are settled (see BestEffortClock).
TIMESTAMP_LOOKAHEAD = 4

DECODE_STATUSES = ("unreadable", "no_audio", "no_video", "too_short", "too_long", "broken_stream")


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


class TooLong(DecodeError):
    status = "too_long"


class BrokenStream(DecodeError):
    status = "broken_stream"


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DecodeConfig:
    """How raw files are decoded (the ``extract.decode`` config section)."""

    clip_batch: int = 8  # clips per yielded batch: the decoder's memory bound
    # A file is truncated when its data stop this much before the duration its container declares (a download
    # cut short ends silently, without a decoder error).
    truncation_tolerance_s: float = 1.0
    truncation_tolerance_frac: float = 0.1
    # Truncated files keep the features of what decodes (the benchmark's features were extracted from whatever
    # ffmpeg decoded, and a cut-off clip still shows its class); True marks them broken_stream without features.
    drop_truncated: bool = False
    # Longest time one frame may be held to fill a gap in the time stamps; a longer gap is skipped (and
    # recorded), so a stray stamp hours ahead cannot turn one second of frames into hours of clips.
    max_hold_s: float = 10.0
    # Videos (or segments) longer than this at 25 fps get status too_long and no features.
    max_video_seconds: float = 7200.0
    progress_every_s: float = 600.0  # log a line per this much decoded video inside a long video
    threads: int = 0  # FFmpeg decoder threads; 0 = FFmpeg's choice

    def __post_init__(self) -> None:
        if not (isinstance(self.clip_batch, int) and self.clip_batch > 0):
            raise ValueError(f"extract.decode.clip_batch must be a positive int, got {self.clip_batch!r}")
        if self.truncation_tolerance_s < 0 or not 0 <= self.truncation_tolerance_frac < 1:
            raise ValueError("extract.decode.truncation_tolerance_s must be >= 0 and _frac in [0, 1)")
        for name in ("max_hold_s", "max_video_seconds", "progress_every_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"extract.decode.{name} must be > 0, got {getattr(self, name)!r}")
        if not (isinstance(self.threads, int) and self.threads >= 0):
            raise ValueError(f"extract.decode.threads must be an int >= 0, got {self.threads!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DecodeConfig:
        return cls(**check_keys(cls, d, "extract.decode"))


@dataclass
class DecodeRecord:
    """What decoding one file found; one row of the feature store's table carries it."""

    video_stream: int | None = None  # stream index used (of several, the largest picture; cover art is no video)
    audio_stream: int | None = None  # stream index used (of several, the most channels, as ffmpeg picks)
    n_video_streams: int = 0
    n_audio_streams: int = 0
    video_start_s: float | None = None  # first frame used, seconds after the container's start
    audio_start_s: float | None = None  # first audio sample used, same origin
    frames_decoded: int = 0
    frames_used: int = 0  # distinct source frames on the 25 fps grid (CLIP alone, frames: middle: native frames)
    frames_restamped: int = 0  # frames whose presentation stamp FFmpeg's rule replaced by the decode stamp
    frames_dropped: int = 0  # frames whose settled stamp did not increase (out of order): not shown
    gaps_skipped_s: float = 0.0  # time-stamp gaps beyond max_hold_s that were skipped
    decoded_s: float | None = None  # where the file's audio/video data end (from the container's start)
    declared_s: float | None = None  # the duration the container declares
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def table_fields(self) -> dict[str, Any]:
        """The columns of the store's table (extractors.store.TABLE_COLUMNS)."""
        def r(x):
            return None if x is None else round(float(x), 6)
        return {"video_stream": self.video_stream, "audio_stream": self.audio_stream,
                "video_start_s": r(self.video_start_s), "audio_start_s": r(self.audio_start_s),
                "frames_decoded": self.frames_decoded, "frames_used": self.frames_used,
                "frames_restamped": self.frames_restamped, "frames_dropped": self.frames_dropped,
                "decoded_s": r(self.decoded_s), "declared_s": r(self.declared_s)}


# --------------------------------------------------------------------------------------------------
# Opening files and choosing streams

# Leading bytes of the containers a video collection holds: tells "truncated or corrupt <format>" from "not
# a media file at all" in the reason. (offset, magic, name)
_MAGIC = (
    (4, b"ftyp", "MP4/QuickTime"), (0, b"RIFF", "RIFF (AVI)"), (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"OggS", "Ogg"), (0, b"FLV", "FLV"), (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream"), (0, b"ID3", "MP3"), (4, b"moov", "QuickTime"),
    (4, b"mdat", "QuickTime"), (4, b"wide", "QuickTime"), (4, b"free", "QuickTime"),
)


def _describe_unopenable(path: Path, err: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(4096)
    fmt = next((name for off, magic, name in _MAGIC if head[off:off + len(magic)] == magic), None)
    if fmt is None and len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        fmt = "MPEG transport stream"
    detail = f"{type(err).__name__}: {err}"
    if fmt is not None:
        return f"{fmt} header found but the file cannot be opened ({detail}): truncated or corrupt; re-download it"
    if not head.strip(b"\x00"):
        return (f"no media container header: the first {len(head)} bytes are all zero (an unfinished or "
                "preallocated download); re-download it")
    text = head[:64]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return (f"no media container header: the file starts with text {text.decode('ascii')[:40]!r} (e.g. an "
                "error page saved in place of the video); re-download it")
    return f"no media container header (first bytes {head[:8].hex(' ')}): not a media file ({detail})"


def open_container(path: str | Path) -> av.container.InputContainer:
    """``av.open`` that turns every failure into ``Unreadable`` with a reason that tells empty files, files
    without a container header and corrupt files of a known format apart."""
    path = Path(path)
    if not path.is_file():
        raise Unreadable(path, "file not found")
    if path.stat().st_size == 0:
        raise Unreadable(path, "empty file (0 bytes); re-download or re-copy it")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        raise Unreadable(path, _describe_unopenable(path, err)) from err


def is_cover_art(stream: av.stream.Stream) -> bool:
    """An attached picture (album art in an audio file) is a still image, not a video stream."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def choose_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream ffmpeg's CLI would map (the largest picture; the first of equals), cover art excluded."""
    streams = [s for s in container.streams.video if not is_cover_art(s)]
    if not streams:
        return None
    return max(streams, key=lambda s: ((s.codec_context.width or 0) * (s.codec_context.height or 0), -s.index))


def choose_audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The audio stream ffmpeg's CLI would map (the most channels; the first of equals)."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    return max(streams, key=lambda s: (s.codec_context.channels or 0, -s.index))


def container_start(container: av.container.InputContainer) -> Fraction:
    """The container's start time (s): the origin of every time in this module (MPEG-TS starts at any clock)."""
    return Fraction(container.start_time, av.time_base) if container.start_time is not None else Fraction(0)


def declared_duration(container: av.container.InputContainer) -> Fraction | None:
    return Fraction(container.duration, av.time_base) if container.duration is not None else None


def _exact(t: float | None) -> Fraction | None:
    return None if t is None else Fraction(t).limit_denominator(1_000_000)


class _Demuxer:
    """Demuxes every stream of the file, decodes one, and notes where the file's audio/video data end.

    A stream that ends early (audio that stops at 2 s of an 8 s Matroska video) is normal; a file is truncated
    only when *all* its data stop short of the declared duration, so the end is taken over every stream. A packet
    that fails to decode is skipped and counted, and a demuxer error ends the file there, as ffmpeg (which made
    the benchmark's features) does: what decodes is kept, and the record says what did not.
    """

    def __init__(self, path: Path, container, stream):
        self.path, self.container, self.stream = path, container, stream
        self.data_end: Fraction | None = None
        self.bad_packets = 0
        self.first_error = ""
        self.demux_error = ""

    def frames(self) -> Iterator[Any]:
        try:
            for packet in self.container.demux():
                if packet.stream.type in ("audio", "video") and packet.time_base is not None:
                    stamp = packet.pts if packet.pts is not None else packet.dts
                    if stamp is not None:
                        end = Fraction(stamp + (packet.duration or 0)) * packet.time_base
                        self.data_end = end if self.data_end is None else max(self.data_end, end)
                if packet.stream.index != self.stream.index:
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as err:
                    self.bad_packets += 1
                    self.first_error = self.first_error or f"{type(err).__name__}: {err}"
                    continue
                yield from frames
        except av.error.FFmpegError as err:
            self.demux_error = f"{type(err).__name__}: {err}"

    def report(self, kind: str, n_frames: int, record: DecodeRecord) -> None:
        """Errors into the record; a stream of which nothing decoded is broken."""
        problems = []
        if self.bad_packets:
            problems.append(f"{self.bad_packets} {kind} packets could not be decoded and were skipped "
                            f"({self.first_error})")
        if self.demux_error:
            problems.append(f"reading stopped at a demuxer error ({self.demux_error})")
        if problems and not n_frames:
            raise BrokenStream(self.path, f"no {kind} frame decodes: " + "; ".join(problems))
        for text in problems:
            record.note(text)

    @property
    def stream_start(self) -> Fraction:
        """The stream's first time stamp (s, absolute stream time)."""
        start = self.stream.start_time
        return Fraction(start) * self.stream.time_base if start is not None else Fraction(0)

    def seek(self, t: Fraction) -> None:
        """Seek to the key frame at or before ``t`` (absolute stream time; not before the stream's start)."""
        target = int(max(t, self.stream_start) / self.stream.time_base)
        self.container.seek(target, stream=self.stream, backward=True, any_frame=False)

    def seek_targets(self, t0: Fraction) -> Iterator[Fraction]:
        """Where to seek for ``t0``: ``t0`` itself, then 1, 4, 16, ... s earlier, ending at the stream's start.

        A seek can land after its target (index-less files, sparse key frames, MPEG-TS); the caller tries the
        next target while the first frame it decodes starts after ``t0``.
        """
        back = Fraction(0)
        while True:
            target = max(t0 - back, self.stream_start)
            yield target
            if target <= self.stream_start:
                return
            back = max(Fraction(1), 4 * back)


def _check_truncation(path: Path, demux: _Demuxer, origin: Fraction, cfg: DecodeConfig,
                      record: DecodeRecord) -> None:
    declared = declared_duration(demux.container)
    decoded = None if demux.data_end is None else demux.data_end - origin
    record.declared_s = None if declared is None else float(declared)
    record.decoded_s = None if decoded is None else max(float(decoded), record.decoded_s or 0.0)
    if declared is None or decoded is None:
        return
    slack = max(cfg.truncation_tolerance_s, cfg.truncation_tolerance_frac * float(declared))
    if float(declared - decoded) > slack:
        reason = (f"truncated: the data end at {float(decoded):.2f} s but the container declares "
                  f"{float(declared):.2f} s")
        if cfg.drop_truncated:
            raise BrokenStream(path, reason + " (extract.decode.drop_truncated is on)")
        record.note(reason + "; features of the decoded part kept")


# --------------------------------------------------------------------------------------------------
# Time stamps


class BestEffortClock:
    """FFmpeg's best-effort time stamp (libavcodec ``guess_correct_pts``), settled with a short lookahead.

    FFmpeg counts how often the presentation stamps (pts) and the decode stamps (dts) of decoded frames fail
    to increase, and trusts the pts unless they failed more often. Two refinements: frames are held back
    ``lookahead`` frames so that the counts already include the first out-of-order stamps when the first frames
    are stamped (FFmpeg itself would stamp the first frames of a packed-B-frame file before it noticed), and a
    frame without a dts in a stream whose pts are known to be faulty (the last frame a decoder flushes) is placed
    one frame interval after its predecessor instead of at its faulty pts.
    """

    def __init__(self, lookahead: int = TIMESTAMP_LOOKAHEAD):
        self.lookahead = lookahead
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None
        self.pending: deque = deque()

    def push(self, frame) -> Iterator[tuple[Any, int | None, bool]]:
        """Add a decoded frame; yield (frame, stamp, restamped) for frames whose stamp is settled."""
        pts, dts = frame.pts, frame.dts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        self.pending.append(frame)
        while len(self.pending) > self.lookahead:
            yield self._settle(self.pending.popleft())

    def flush(self) -> Iterator[tuple[Any, int | None, bool]]:
        while self.pending:
            yield self._settle(self.pending.popleft())

    def _settle(self, frame) -> tuple[Any, int | None, bool]:
        pts, dts = frame.pts, frame.dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or (dts is None and not self.faulty_pts)):
            return frame, pts, False
        # Where FFmpeg would fall back to a pts it has seen fail (the last frame a decoder flushes carries no dts),
        # None: the caller places the frame one frame interval after the previous one.
        return frame, dts, pts is not None and dts != pts


# --------------------------------------------------------------------------------------------------
# Video


@dataclass
class ClipBatch:
    """``frames`` [n, 16, H, W, C] (uint8 RGB, or what the transform returns); ``n_valid[j]`` real frames in clip j.

    Only the video's last clip can be partial; its missing frames are zeros, and ``n_valid`` lets the
    network pad them the way the reference did (zeros after normalisation).
    """

    frames: np.ndarray
    n_valid: np.ndarray
    first_clip: int  # index of frames[0] among the video's clips


FrameTransform = Callable[[np.ndarray], np.ndarray]


def _open_video_stream(path: Path, container, cfg: DecodeConfig, record: DecodeRecord):
    """The container's video stream, set up for decoding (frame threading); ``NoVideo`` when it has none."""
    stream = choose_video_stream(container)
    record.n_video_streams = sum(not is_cover_art(s) for s in container.streams.video)
    if stream is None:
        art = " (only cover art)" if container.streams.video else ""
        raise NoVideo(path, f"no video stream{art}")
    record.video_stream = stream.index
    stream.thread_type = "AUTO"  # frame threading: several frames decode in parallel
    if cfg.threads:
        stream.codec_context.thread_count = cfg.threads
    return stream


def iter_frames(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                end_s: float | None = None, transform: FrameTransform | None = None,
                record: DecodeRecord | None = None) -> Iterator[np.ndarray]:
    """Yield the frames a 25 fps grid shows, as uint8 RGB [H, W, 3] (after ``transform``).

    Output frame k is the source frame displayed at ``t_k = t0 + k / 25``: the last frame whose (settled)
    time stamp is <= t_k. ``t0`` is ``start_s`` for a segment (seconds after the container's start), else the
    first frame's time. The grid stops at ``end_s`` or where the last frame stops being displayed. Time stamps
    are exact fractions, so a 30 fps file gives frames floor(1.2 k) and a 25 fps file every frame.
    ``record`` (optional) receives what decoding found.
    """
    path = Path(path)
    record = record if record is not None else DecodeRecord()
    container = open_container(path)
    try:
        stream = _open_video_stream(path, container, cfg, record)
        yield from _grid_frames(path, container, stream, cfg, start_s, end_s, transform, record)
    finally:
        container.close()


def _stamped_frames(path: Path, demux: _Demuxer, record: DecodeRecord) -> Iterator[tuple[Any, Fraction]]:
    """Decoded frames with settled, strictly increasing times (s, absolute stream time)."""
    clock = BestEffortClock()
    prev_t: Fraction | None = None
    prev_dur = Fraction(1, OUTPUT_FPS)
    rate = demux.stream.average_rate or demux.stream.guessed_rate
    if rate:
        prev_dur = 1 / Fraction(rate)

    def settled(items) -> Iterator[tuple[Any, Fraction]]:
        nonlocal prev_t
        for frame, stamp, restamped in items:
            record.frames_restamped += restamped
            if stamp is None or frame.time_base is None:  # no stamp at all (some AVI): one frame interval on
                t = prev_t + prev_dur if prev_t is not None else Fraction(0)
            else:
                t = Fraction(stamp) * frame.time_base
            if prev_t is not None and t <= prev_t:
                record.frames_dropped += 1
                continue
            prev_t = t
            yield frame, t

    for frame in demux.frames():
        record.frames_decoded += 1
        yield from settled(clock.push(frame))
    yield from settled(clock.flush())


def _first_frame_at_or_before(path: Path, demux: _Demuxer, t0: Fraction, record: DecodeRecord
                              ) -> Iterator[tuple[Any, Fraction]]:
    """Stamped frames from a seek to ``t0``, re-seeking further back while the first frame is after ``t0``.

    A seek can land after its target (index-less or sparse key frames, MPEG-TS): showing that frame in place
    of the earlier ones would shift the segment, so the seek backs off until it lands early enough, at worst at
    the start of the stream. If the stream itself starts after ``t0``, its first frame is the first one used.
    """
    for target in demux.seek_targets(t0):
        demux.seek(target)
        counts = record.frames_decoded, record.frames_restamped, record.frames_dropped
        frames = _stamped_frames(path, demux, record)
        first = next(frames, None)
        if first is None or first[1] <= t0 or target <= demux.stream_start:
            if first is not None:
                yield first
            yield from frames
            return
        # these frames are decoded again after the next seek
        record.frames_decoded, record.frames_restamped, record.frames_dropped = counts


def _grid_frames(path: Path, container, stream, cfg: DecodeConfig, start_s: float | None, end_s: float | None,
                 transform: FrameTransform | None, record: DecodeRecord) -> Iterator[np.ndarray]:
    step = Fraction(1, OUTPUT_FPS)
    origin = container_start(container)
    t0 = None if start_s is None else origin + _exact(start_s)
    t_end = None if end_s is None else origin + _exact(end_s)
    max_hold = _exact(cfg.max_hold_s)
    max_frames = int(cfg.max_video_seconds * OUTPUT_FPS)
    progress_frames = max(1, int(cfg.progress_every_s * OUTPUT_FPS))
    demux = _Demuxer(path, container, stream)
    frames = _first_frame_at_or_before(path, demux, t0, record) if t0 is not None else \
        _stamped_frames(path, demux, record)

    k = 0  # next output index; output frame k is shown at t0 + k * step + shift
    shift = Fraction(0)  # time-stamp gaps skipped so far
    prev = None
    prev_t = Fraction(0)
    prev_rgb: np.ndarray | None = None  # conversion cache: a frame shown twice is converted once
    prev_dur = Fraction(1, OUTPUT_FPS)

    def emit_until(limit: Fraction) -> Iterator[np.ndarray]:
        """Show ``prev`` at every grid time before ``limit`` (and before the segment's end)."""
        nonlocal k, prev_rgb
        while t0 + k * step + shift < limit and (t_end is None or t0 + k * step + shift < t_end):
            if k >= max_frames:
                raise TooLong(path, f"longer than extract.decode.max_video_seconds = {cfg.max_video_seconds:g} s; "
                                    "raise it to extract this video")
            if prev_rgb is None:
                rgb = prev.to_ndarray(format="rgb24")
                prev_rgb = transform(rgb) if transform is not None else rgb
                record.frames_used += 1
            yield prev_rgb
            k += 1
            if k % progress_frames == 0:
                log.info("%s: %.0f s of video decoded", path, k / OUTPUT_FPS)

    first = True
    for frame, t in frames:
        if first:
            # Whole file: the grid starts at the first frame. Segment: at its start, or at the first frame if
            # the stream starts later (never showing a frame before its time).
            t0 = t if t0 is None or t > t0 else t0
            record.video_start_s = float(t0 - origin)
            first = False
        if prev is not None:
            prev_dur = t - prev_t
            if prev_dur > max_hold:  # hold prev for max_hold only, then move the grid on to this frame
                yield from emit_until(prev_t + max_hold)
                gap = t - (t0 + k * step + shift)
                if gap > 0:
                    shift += gap
                    record.gaps_skipped_s += float(gap)
                    record.note(f"time-stamp gaps of {record.gaps_skipped_s:.2f} s in total skipped "
                                f"(a frame is held at most extract.decode.max_hold_s = {cfg.max_hold_s:g} s)")
            else:
                yield from emit_until(t)
        if t_end is not None and t >= t_end:
            prev = None
            break
        prev, prev_t, prev_rgb = frame, t, None
        if frame.duration:
            prev_dur = Fraction(frame.duration) * (frame.time_base or stream.time_base)

    demux.report("video", record.frames_decoded, record)
    if record.frames_decoded == 0:
        raise Unreadable(path, "video stream decodes to zero frames")
    if prev is not None:  # last frame: shown for its own duration (or the previous frame interval)
        stop = prev_t + min(prev_dur, max_hold)
        yield from emit_until(stop if t_end is None else min(stop, t_end))
        if t_end is None:
            _check_truncation(path, demux, origin, cfg, record)
    if k == 0:
        raise TooShort(path, "segment shorter than one output frame")
    if record.frames_restamped or record.frames_dropped:
        record.note(f"video time stamps: {record.frames_restamped} of {record.frames_decoded} frames re-stamped "
                    f"(presentation stamps out of order, e.g. packed B-frames), {record.frames_dropped} dropped "
                    "(out of order)")


# --------------------------------------------------------------------------------------------------
# Video at its native frame rate (CLIP's middle frame, as ClipClap reads it)


def count_native_frames(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                        end_s: float | None = None, record: DecodeRecord | None = None) -> int:
    """The number of frames :func:`iter_native_frames` yields, without converting any of them."""
    return sum(1 for _ in _native_av_frames(Path(path), cfg, start_s, end_s,
                                            record if record is not None else DecodeRecord()))


def iter_native_frames(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                       end_s: float | None = None, transform: FrameTransform | None = None,
                       record: DecodeRecord | None = None, select: Sequence[int] | None = None
                       ) -> Iterator[np.ndarray]:
    """Yield the video's own frames, not resampled, as uint8 RGB [H, W, 3] (after ``transform``).

    Whole file: every picture the decoder outputs, in its output (display) order, which is the sequence OpenCV's
    ``VideoCapture.read`` loop returns: ClipClap's frame ``i`` is this iterator's frame ``i``. Segment: the frames
    whose (settled, :class:`BestEffortClock`) time stamp lies in ``[start_s, end_s)``. ``select``: only these
    indices (sorted) are converted and yielded, and decoding stops after the last of them.
    """
    wanted = None if select is None else sorted({int(i) for i in select})
    if wanted is not None and not wanted:
        return
    record = record if record is not None else DecodeRecord()
    frames = _native_av_frames(Path(path), cfg, start_s, end_s, record)
    try:
        for i, frame in enumerate(frames):
            if wanted is not None and i not in wanted:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            yield transform(rgb) if transform is not None else rgb
            if wanted is not None and i >= wanted[-1]:
                return
    finally:
        frames.close()


def _native_av_frames(path: Path, cfg: DecodeConfig, start_s: float | None, end_s: float | None,
                      record: DecodeRecord) -> Iterator[Any]:
    container = open_container(path)
    try:
        stream = _open_video_stream(path, container, cfg, record)
        origin = container_start(container)
        demux = _Demuxer(path, container, stream)
        rate = Fraction(stream.average_rate or stream.guessed_rate or OUTPUT_FPS)
        max_frames = int(cfg.max_video_seconds * rate) + 1
        n = 0
        if start_s is None and end_s is None:
            # Every decoded picture counts, whatever its stamp: OpenCV counts them so (no re-stamping, no drops).
            stamped = ((f, Fraction(f.pts) * f.time_base if f.pts is not None and f.time_base else None)
                       for f in demux.frames())
            t0 = t_end = None
        else:
            t0 = None if start_s is None else origin + _exact(start_s)
            t_end = None if end_s is None else origin + _exact(end_s)
            stamped = _first_frame_at_or_before(path, demux, t0, record) if t0 is not None else \
                _stamped_frames(path, demux, record)
        for frame, t in stamped:
            if t0 is None and t_end is None:
                record.frames_decoded += 1
            elif t0 is not None and t < t0:
                continue
            if t_end is not None and t >= t_end:
                break
            if n == 0 and t is not None:
                record.video_start_s = float(t - origin)
            if n >= max_frames:
                raise TooLong(path, f"longer than extract.decode.max_video_seconds = {cfg.max_video_seconds:g} s; "
                                    "raise it to extract this video")
            n += 1
            yield frame
        demux.report("video", record.frames_decoded, record)
        if record.frames_decoded == 0:
            raise Unreadable(path, "video stream decodes to zero frames")
        if n == 0:
            raise TooShort(path, "segment holds no frame of the video")
        record.frames_used = n
        if t0 is None and t_end is None:
            _check_truncation(path, demux, origin, cfg, record)
    finally:
        container.close()


def iter_clip_batches(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                      end_s: float | None = None, transform: FramesTransform | None = None,
                      record: DecodeRecord | None = None) -> Iterator[ClipBatch]:
    """Group :func:`iter_frames` into batches of at most ``cfg.clip_batch`` clips.

    Clips are non-overlapping, ``ceil(n_frames / 16)`` per video as in the reference; the last one is
    zero-padded and its ``n_valid`` says how many frames are real. ``transform`` maps a stack of decoded frames
    of one size, uint8 [n, H, W, 3], to [n, h, w, c] (the pipeline passes the network's resize,
    ``VideoExtractor.resize_frames``): frames go to it in groups of at most one clip and ``TRANSFORM_PIXELS``
    source pixels, so a call costs little overhead on small videos and little memory on 4K ones, and a frame
    shown twice is transformed once. At most one batch plus one group is alive inside the generator. Without a
    transform that gives every frame one size, a frame size that changes mid-stream is an error.
    """
    fpc = FRAMES_PER_CLIP
    buf: np.ndarray | None = None
    n_frames_in_buf = 0
    clips_done = 0

    def put(frame: np.ndarray) -> Iterator[ClipBatch]:
        nonlocal buf, n_frames_in_buf, clips_done
        if buf is None:
            buf = np.zeros((cfg.clip_batch, fpc, *frame.shape), dtype=frame.dtype)
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

    frames = iter_frames(path, cfg, start_s, end_s, None, record)
    if transform is None:
        for frame in frames:
            yield from put(frame)
    else:
        for group in _transformed_groups(frames, transform):
            for frame in group:
                yield from put(frame)
    if n_frames_in_buf:
        n_clips = -(-n_frames_in_buf // fpc)
        n_valid = np.full(n_clips, fpc, dtype=np.int64)
        n_valid[-1] = n_frames_in_buf - (n_clips - 1) * fpc
        yield ClipBatch(buf[:n_clips], n_valid, clips_done)  # buf is not written again


FramesTransform = Callable[[np.ndarray], np.ndarray]
# Source pixels per transform call: a 4K frame alone, four 1080p frames, or a whole clip of small frames.
TRANSFORM_PIXELS = 1 << 23


def _transformed_groups(frames: Iterator[np.ndarray], transform: FramesTransform) -> Iterator[list[np.ndarray]]:
    """The output frames in order, transformed in groups of distinct same-size frames (see iter_clip_batches)."""
    unique: list[np.ndarray] = []  # distinct source frames of the group (iter_frames repeats the same array)
    order: list[int] = []  # output frame -> index into unique
    pixels = 0

    def flush() -> list[np.ndarray]:
        nonlocal unique, order, pixels
        out = transform(np.stack(unique))
        assert len(out) == len(unique), f"transform returned {len(out)} frames for {len(unique)}"
        group = [out[j] for j in order]
        unique, order, pixels = [], [], 0
        return group

    for frame in frames:
        if unique and frame is unique[-1]:
            order.append(len(unique) - 1)
            continue
        if unique and (frame.shape != unique[-1].shape or len(order) >= FRAMES_PER_CLIP
                       or pixels + frame.shape[0] * frame.shape[1] > TRANSFORM_PIXELS):
            yield flush()
        unique.append(frame)
        order.append(len(unique) - 1)
        pixels += frame.shape[0] * frame.shape[1]
    if unique:
        yield flush()


# --------------------------------------------------------------------------------------------------
# Audio


def decode_audio(path: str | Path, cfg: DecodeConfig = DecodeConfig(), start_s: float | None = None,
                 end_s: float | None = None, min_samples: int = VGGISH_MIN_SAMPLES,
                 record: DecodeRecord | None = None, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return the audio as a float32 mono waveform at ``rate`` (16 kHz, VGGish's; CLAP takes 32 kHz) in [-1, 1).

    Mirrors the reference chain (ffmpeg -> 16-bit PCM WAV -> /32768 -> mean over channels ->
    resampy ``kaiser_best``): samples are quantised to int16 exactly as ffmpeg's s16 conversion does,
    averaged over all channels, then resampled with a Kaiser-windowed sinc that has kaiser_best's
    parameters (see :mod:`extractors.resample`), chunk by chunk as they are decoded, so only the 16 kHz output
    (4 bytes per sample) grows with the duration. Raises ``TooShort`` below ``min_samples`` samples.
    """
    path = Path(path)
    record = record if record is not None else DecodeRecord()
    container = open_container(path)
    try:
        stream = choose_audio_stream(container)
        record.n_audio_streams = len(container.streams.audio)
        if stream is None:
            raise NoAudio(path, "no audio stream")
        record.audio_stream = stream.index
        origin = container_start(container)
        demux = _Demuxer(path, container, stream)
        resampler = _decode_resampled(path, demux, origin, start_s, end_s, record, rate)
        if end_s is None:
            _check_truncation(path, demux, origin, cfg, record)
    finally:
        container.close()
    wave = resampler.finish()
    if len(wave) < min_samples:
        raise TooShort(path, f"audio is {len(wave) / rate:.3f} s; one VGGish example needs "
                             f"{min_samples / rate:.3f} s")
    return wave


def _decode_resampled(path: Path, demux: _Demuxer, origin: Fraction, start_s: float | None,
                      end_s: float | None, record: DecodeRecord, rate: int = SAMPLE_RATE) -> StreamingResampler:
    """Decode (the segment of) the stream into a resampler to ``rate``, sample-exactly trimmed to the segment."""
    if start_s is None:
        return _decode_from_seek(path, demux, origin, None, end_s, record, rate=rate)
    t0 = origin + _exact(start_s)
    for target in demux.seek_targets(t0):  # a seek that lands after t0 backs off
        demux.seek(target)
        result = _decode_from_seek(path, demux, origin, t0, end_s, record, rate=rate)
        if result is not None:
            return result
    demux.seek(demux.stream_start)  # the stream itself starts after t0: take it from its start
    return _decode_from_seek(path, demux, origin, t0, end_s, record, accept_late=True, rate=rate)


def _decode_from_seek(path: Path, demux: _Demuxer, origin: Fraction, t0: Fraction | None, end_s: float | None,
                      record: DecodeRecord, accept_late: bool = False, rate: int = SAMPLE_RATE
                      ) -> StreamingResampler | None:
    """Decode from the current position; None when ``t0`` is given and the first frame starts after it."""
    resampler: StreamingResampler | None = None
    skip, remaining = 0, None  # native samples to drop before the segment / still wanted in it
    n_frames = 0
    for frame in demux.frames():
        n_frames += 1
        if resampler is None:
            native = frame.sample_rate
            first_t = Fraction(frame.pts) * frame.time_base if frame.pts is not None else origin
            if t0 is not None:
                if first_t > t0 + Fraction(1, native) and not accept_late:
                    return None
                skip = max(0, round((t0 - first_t) * native))
            resampler = StreamingResampler(native, rate)
            begin = first_t + Fraction(skip, native)  # the first sample kept
            record.audio_start_s = float(begin - origin)
            if end_s is not None:
                remaining = max(0, round((origin + _exact(end_s) - begin) * native))
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
    demux.report("audio", n_frames, record)
    if resampler is None:
        raise TooShort(path, "audio stream decodes to zero samples")
    return resampler


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
