"""The manifest: one row per expected video (or segment) with what a quick PyAV probe found.

A probe reads container metadata and decodes a single frame per stream, so it takes milliseconds per
file and catches files that do not open or whose codec cannot decode. It never raises for a bad file:
the problem becomes the row's ``status`` and ``reason``. Nothing is dropped: rows whose status is not
``ok`` travel through extraction into the feature store's table.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import av

from data_splits.common import atomic_open
from data_splits.matching import DEFAULT_EXTENSIONS

from .decode import (
    VGGISH_MIN_SAMPLES,
    DecodeError,
    choose_audio_stream,
    choose_video_stream,
    open_container,
)
from .store import check_table_name

log = logging.getLogger(__name__)

STATUSES = ("ok", "missing", "unreadable", "no_audio", "no_video", "too_short")
MIN_AUDIO_S = VGGISH_MIN_SAMPLES / 16_000  # 0.975 s: one VGGish example
MIN_VIDEO_S = 1 / 25  # one output frame at 25 fps


@dataclass
class ProbeResult:
    status: str
    reason: str = ""
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    has_audio: bool = False
    has_video: bool = False


@dataclass
class ManifestRow:
    video_id: str
    path: str  # "" when the file is missing
    start_s: float | None
    end_s: float | None
    class_name: str
    status: str
    reason: str = ""
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    has_audio: bool = False
    has_video: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"manifest row {self.video_id!r}: status {self.status!r} is not one of {STATUSES}")


COLUMNS = tuple(f.name for f in fields(ManifestRow))


# --------------------------------------------------------------------------------------------------
# Probing


def probe_video(path: str | Path, start_s: float | None = None, end_s: float | None = None,
                min_duration_s: float = 0.0) -> ProbeResult:
    """Stream layout, duration (of the segment, if given), fps and size; status ``ok`` or why not.

    ``too_short`` when the video is shorter than one 25 fps frame or ``min_duration_s``, or the audio
    is shorter than one VGGish example (0.975 s).
    """
    try:
        container = open_container(path)
    except DecodeError as err:
        return ProbeResult("unreadable", err.reason)
    try:
        return _probe_open(container, path, start_s, end_s, max(min_duration_s, MIN_VIDEO_S))
    except (av.error.FFmpegError, OSError, ValueError) as err:  # metadata that PyAV cannot interpret
        return ProbeResult("unreadable", f"probe failed: {type(err).__name__}: {err}")
    finally:
        container.close()


def _probe_open(container, path, start_s: float | None, end_s: float | None, min_s: float) -> ProbeResult:
    # The streams extraction will use: cover art (an attached picture) is not video.
    vs = choose_video_stream(container)
    as_ = choose_audio_stream(container)
    res = ProbeResult("ok", has_audio=as_ is not None, has_video=vs is not None)
    if vs is not None:
        rate = vs.average_rate or vs.guessed_rate
        res.fps = float(rate) if rate else None
        res.width, res.height = vs.codec_context.width, vs.codec_context.height
    file_s = _duration(container, vs) or _duration(container, as_)
    audio_s = _duration(container, as_)
    start = start_s or 0.0

    def clip(d: float | None) -> float | None:  # duration of the segment inside a stream of length d
        if d is None:
            return None
        return max(0.0, min(d, end_s if end_s is not None else d) - start)

    res.duration_s = clip(file_s) if file_s is not None else (end_s - start if end_s is not None else None)

    if vs is None and as_ is None:
        res.status, res.reason = "unreadable", "no audio or video stream"
    elif vs is None:
        art = " (only cover art)" if container.streams.video else ""
        res.status, res.reason = "no_video", f"no video stream{art}"
    elif not _decodes_one_frame(path, "video", vs.index):
        res.status, res.reason = "unreadable", f"cannot decode a frame of the {vs.codec_context.name} video stream"
    elif as_ is None:
        res.status, res.reason = "no_audio", "no audio stream"
    elif not _decodes_one_frame(path, "audio", as_.index):
        res.status, res.reason = "unreadable", f"cannot decode a frame of the {as_.codec_context.name} audio stream"
    elif res.duration_s is not None and res.duration_s < min_s:
        res.status, res.reason = "too_short", f"{res.duration_s:.3f} s of video is shorter than {min_s:.3f} s"
    elif audio_s is not None and clip(audio_s) < MIN_AUDIO_S:
        res.status, res.reason = "too_short", (f"{clip(audio_s):.3f} s of audio; one VGGish example needs "
                                               f"{MIN_AUDIO_S:.3f} s")
    return res


def _duration(container, stream) -> float | None:
    if stream is None:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else None


def _decodes_one_frame(path, kind: str, index: int) -> bool:
    # A fresh container per stream keeps the other stream's demuxing state out of the way.
    try:
        with av.open(str(path)) as c:
            stream = c.streams[index]
            for _ in c.decode(stream):
                return True
    except (av.error.FFmpegError, OSError, ValueError):
        return False
    return False


# --------------------------------------------------------------------------------------------------
# Building, writing, reading


def scan_folder(directory: str | Path, extensions: Iterable[str] = DEFAULT_EXTENSIONS) -> list[Path]:
    """All files under ``directory`` (recursively) whose suffix is in ``extensions``, sorted by path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"raw video folder {directory} does not exist; set raw_videos.dir in the config")
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def _entry_fields(entry: Any) -> tuple[str, Path | None, float | None, float | None, str, str]:
    """Accept ``data_splits.matching.VideoEntry`` objects or plain (id, path, start, end, class) tuples."""
    if isinstance(entry, tuple):
        video_id, path, start_s, end_s, class_name = entry[:5]
        return video_id, path, start_s, end_s, class_name, ""
    return (entry.video_id, entry.path, entry.start_s, entry.end_s, entry.class_name,
            getattr(entry, "reason", "") or "")


def probe_entry(entry: Any, min_duration_s: float = 0.0) -> ManifestRow:
    video_id, path, start_s, end_s, class_name, note = _entry_fields(entry)
    if path is None:
        return ManifestRow(video_id, "", start_s, end_s, class_name, "missing", note or "no raw file found")
    probe = probe_video(path, start_s, end_s, min_duration_s)
    reason = "; ".join(r for r in (probe.reason, note) if r)
    return ManifestRow(video_id, str(path), start_s, end_s, class_name, **{**asdict(probe), "reason": reason})


def build_manifest(entries: Sequence[Any], out_path: str | Path | None = None, *, min_duration_s: float = 0.0,
                   workers: int = 1) -> list[ManifestRow]:
    """Probe every entry and, given ``out_path``, write the manifest TSV there.

    Entries are ``data_splits.matching.VideoEntry`` objects or (id, path|None, start, end, class)
    tuples. Probing runs in ``workers`` threads: it is file I/O and FFmpeg, which release the GIL.
    """
    ids = [_entry_fields(e)[0] for e in entries]
    dup = sorted({v for v in ids if ids.count(v) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise ValueError(f"video ids must be unique; duplicated: {dup[:10]}")
    probe = partial(probe_entry, min_duration_s=min_duration_s)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(probe, entries))
    else:
        rows = [probe(e) for e in entries]
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    log.info("manifest: %d videos, %s", len(rows), ", ".join(f"{s} {n}" for s, n in counts.items() if n))
    if out_path is not None:
        write_manifest(rows, out_path)
    return rows


def write_manifest(rows: Iterable[ManifestRow], path: str | Path) -> Path:
    """Write the manifest TSV; names are written as they are (the csv module quotes tabs and quotes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    for r in rows:
        for what, name in (("video id", r.video_id), ("path", r.path), ("class name", r.class_name)):
            check_table_name(name, f"manifest: {what}")
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_format(getattr(r, c)) for c in COLUMNS])
    return path


def read_manifest(path: str | Path) -> list[ManifestRow]:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: manifest columns {reader.fieldnames} differ from {list(COLUMNS)}")
        return [_parse_row(path, i + 2, r) for i, r in enumerate(reader)]


def shard_rows(path: str | Path, scatteritem: str) -> list[ManifestRow]:
    """The rows of one shard job: scatteritem ``i-of-n`` takes every n-th row starting at row i-1, which spreads
    long and short videos (and classes) evenly over the shards."""
    parts = str(scatteritem).split("-of-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]):
        raise ValueError(f"shard {scatteritem!r} of {path}: expected 'i-of-n' with 1 <= i <= n (Snakemake's "
                         "scatteritem wildcard)")
    i, n = int(parts[0]), int(parts[1])
    return read_manifest(path)[i - 1 :: n]


def _format(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    return str(v)


def _parse_row(path: Path, line: int, r: dict[str, str]) -> ManifestRow:
    def opt(key: str, cast):
        try:
            return cast(r[key]) if r[key] != "" else None
        except ValueError:
            raise ValueError(f"{path}:{line}: column {key!r} has invalid value {r[key]!r}") from None

    def flag(key: str) -> bool:
        if r[key] not in ("true", "false"):
            raise ValueError(f"{path}:{line}: column {key!r} must be true/false, got {r[key]!r}")
        return r[key] == "true"

    return ManifestRow(video_id=r["video_id"], path=r["path"], start_s=opt("start_s", float),
                       end_s=opt("end_s", float), class_name=r["class_name"], status=r["status"],
                       reason=r["reason"], duration_s=opt("duration_s", float), fps=opt("fps", float),
                       width=opt("width", int), height=opt("height", int), has_audio=flag("has_audio"),
                       has_video=flag("has_video"))
