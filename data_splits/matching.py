"""Match a user's raw copy of a dataset to the benchmark's video names.

Produces the work list of the manifest stage: one :class:`VideoEntry` per distinct video of the
built splits, with the raw file (or ``None`` and a reason when it is missing) and, for
ActivityNet segments cut from untrimmed videos, the segment bounds so that only that segment is
decoded.

Naming rules (reference-feature-extraction spec 3.5):

* UCF: ``UCF-101/<ClassDir>/v_<Class>_gNN_cMM.avi``. The stem is the video id; a few lists and
  folders disagree in case (``HandStandPushups`` vs folder ``HandstandPushups``), and some
  re-distributions normalise file-name case too, so stems are also matched case-insensitively.
* VGGSound: ``<ytid>_<start:06d>.mp4`` anywhere under the folder. YouTube ids are case-sensitive
  (``-8lzdlqUtJQ``), so the match is exact.
* ActivityNet: ``<ytid>_<k>`` is the k-th (0-based) annotated segment of YouTube video ``ytid``.
  Accepted: already-trimmed files ``<anything>/<ytid>_<k>.<ext>`` (``v1-2-trim/<Class>/...``), or
  the untrimmed ``<ytid>.<ext>`` / ``v_<ytid>.<ext>`` plus the ActivityNet annotation JSON
  (``database -> ytid -> annotations[k].segment = [start, end]`` seconds).
* demo: the file stem is the video id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data_splits.build import all_split_videos, build_from_lists
from data_splits.lists import load_official_lists
from data_splits.official import dataset_spec

# Containers FFmpeg reads that video collections come in (raw_videos.extensions replaces the list). Audio-only
# files (.m4a) are listed too: they are found, and the manifest says ``no_video`` instead of ``missing``.
DEFAULT_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp", ".3g2",
    ".flv", ".f4v", ".wmv", ".asf", ".ogv", ".ogg", ".vob", ".mxf", ".divx", ".m4a",
)


@dataclass(frozen=True)
class VideoEntry:
    """One expected video (or segment) and where it is on disk."""

    video_id: str
    path: Path | None  # None: not found in the raw folder
    start_s: float | None  # segment start; None = start of the file
    end_s: float | None  # segment end; None = end of the file
    class_name: str
    reason: str = ""  # why path is None, or how the file was found when not by exact name


@dataclass
class RawIndex:
    """Stem -> files under the raw folder (sorted, so duplicates resolve deterministically).

    ``other_extensions`` holds files whose extension was not searched, by lower-case stem, so that a missing
    video can say that it exists under another extension.
    """

    by_stem: dict[str, list[Path]]
    by_lower: dict[str, list[Path]]
    root: Path | None = None
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    other_extensions: dict[str, list[Path]] = field(default_factory=dict)

    def not_found(self, names: str) -> str:
        """Why no file matched ``names`` (e.g. ``"v_X_g01_c01.<ext>"``): what was searched, and near misses."""
        where = f" under {self.root}" if self.root is not None else ""
        reason = f"no file named {names}{where} (extensions searched: {' '.join(self.extensions)})"
        stem = names.split(".<ext>")[0]
        near = self.other_extensions.get(stem.lower(), [])
        if near:
            reason += (f"; found {', '.join(str(p) for p in near[:3])}: add its extension to raw_videos.extensions "
                       "if it is the video")
        return reason

    def exact(self, stem: str) -> list[Path]:
        return self.by_stem.get(stem, [])

    def folded(self, stem: str) -> list[Path]:
        return self.by_lower.get(stem.lower(), [])

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> RawIndex:
        by_stem: dict[str, list[Path]] = {}
        by_lower: dict[str, list[Path]] = {}
        for path in paths:
            by_stem.setdefault(path.stem, []).append(path)
            by_lower.setdefault(path.stem.lower(), []).append(path)
        return cls(by_stem, by_lower)


def _normalise_extensions(extensions: Iterable[str] | None) -> set[str]:
    exts = DEFAULT_EXTENSIONS if extensions is None else tuple(extensions)
    return {e.lower() if e.startswith(".") else "." + e.lower() for e in exts}


def index_raw_files(raw_dir: str | Path, extensions: Iterable[str] | None = None) -> RawIndex:
    """Walk ``raw_dir`` once (following symlinked folders) and index video files by stem."""
    root = Path(raw_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"raw video folder {root} does not exist; set raw_videos.dir in the config")
    exts = _normalise_extensions(extensions)
    paths: list[Path] = []
    others: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in exts:
                paths.append(Path(dirpath) / name)
            else:
                others.setdefault(stem.lower(), []).append(Path(dirpath) / name)
    index = RawIndex.from_paths(paths)
    index.root, index.extensions, index.other_extensions = root, tuple(sorted(exts)), others
    return index


def _pick(paths: Sequence[Path], how: str = "") -> tuple[Path, str]:
    note = how
    if len(paths) > 1:
        # e.g. ActivityNet segments present in both v1-2-trim and v1-3-trim, or v.mp4 beside v.webm: take the first
        # in sorted order, and name the ones left out (the manifest and the store record the one used).
        extra = (f"{len(paths)} files share this name; used {paths[0]}, not "
                 f"{', '.join(str(p) for p in paths[1:4])}{' ...' if len(paths) > 4 else ''}")
        note = f"{how}; {extra}" if how else extra
    return paths[0], note


def match_by_stem(video_id: str, class_name: str, index: RawIndex, case_insensitive: bool) -> VideoEntry:
    paths = index.exact(video_id)
    how = ""
    if not paths and case_insensitive:
        paths, how = index.folded(video_id), "matched ignoring case"
    if not paths:
        return VideoEntry(video_id, None, None, None, class_name, index.not_found(f"{video_id}.<ext>"))
    path, note = _pick(paths, how)
    return VideoEntry(video_id, path, None, None, class_name, note)


def load_annotations(annotations: str | Path | dict | None) -> dict | None:
    """ActivityNet annotation ``database`` (activity_net.v1-3.min.json format) or None."""
    if annotations is None:
        return None
    if isinstance(annotations, dict):  # already loaded (whole file or just its database)
        return annotations.get("database", annotations)
    path = Path(annotations).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ActivityNet annotation file {path} does not exist; set raw_videos.annotations to "
            f"activity_net.v1-3.min.json (or leave it unset when the raw folder holds trimmed segments)"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if "database" not in data:
        raise ValueError(f"{path}: no 'database' key; expected the activity_net.v1-3.min.json format")
    return data["database"]


def _squash(label: str) -> str:
    # Benchmark class names are ActivityNet labels with the spaces removed ("Applyingsunscreen").
    return label.replace(" ", "").lower()


def match_activitynet_segment(
    video_id: str, class_name: str, index: RawIndex, database: dict | None
) -> VideoEntry:
    """Trimmed file if present, else the untrimmed video plus the annotated segment bounds."""
    trimmed = match_by_stem(video_id, class_name, index, case_insensitive=False)
    if trimmed.path is not None:
        return trimmed
    ytid, sep, k_str = video_id.rpartition("_")  # YouTube ids may contain '_': split at the last one
    if not sep or not k_str.isdigit():
        return VideoEntry(video_id, None, None, None, class_name, "not of the form <ytid>_<k>")
    paths = index.exact(ytid) or index.exact(f"v_{ytid}")
    if not paths:
        return VideoEntry(video_id, None, None, None, class_name,
                          "neither trimmed nor untrimmed video: " + index.not_found(f"{video_id}.<ext>, {ytid}.<ext> "
                                                                                     f"or v_{ytid}.<ext>"))
    path, note = _pick(paths, "untrimmed video, segment from annotations")
    if database is None:
        return VideoEntry(video_id, None, None, None, class_name,
                          f"untrimmed {path.name} found but no annotation file: set raw_videos.annotations")
    anns = database.get(ytid, {}).get("annotations")
    k = int(k_str)
    if not anns or k >= len(anns):
        return VideoEntry(video_id, None, None, None, class_name,
                          f"annotation file has no segment {k} for {ytid} ({len(anns or [])} segments)")
    ann = anns[k]
    if _squash(ann.get("label", "")) != _squash(class_name):
        # A different annotation version would cut the wrong segment: refuse rather than mislabel.
        return VideoEntry(video_id, None, None, None, class_name,
                          f"annotation segment {k} of {ytid} is {ann.get('label')!r}, expected {class_name!r}")
    start, end = (float(x) for x in ann["segment"])
    if not end > start:
        return VideoEntry(video_id, None, None, None, class_name, f"empty annotated segment [{start}, {end}]")
    return VideoEntry(video_id, path, start, end, class_name, note)


def match_entries(
    dataset: str, wanted: Iterable[tuple[str, str]], index: RawIndex, database: dict | None = None
) -> list[VideoEntry]:
    """Match ``(video_id, class_name)`` pairs against an index of raw files (order kept)."""
    if dataset == "activitynet":
        return [match_activitynet_segment(v, c, index, database) for v, c in wanted]
    # VGGSound ids are case-sensitive YouTube ids; UCF (and demo) names are not (spec.case_insensitive).
    case_insensitive = dataset_spec(dataset).case_insensitive
    return [match_by_stem(v, c, index, case_insensitive) for v, c in wanted]


def match_videos(
    dataset: str,
    wanted: Iterable[tuple[str, str]],
    raw_dir: str | Path,
    annotations: str | Path | dict | None = None,
    extensions: Iterable[str] | None = None,
) -> list[VideoEntry]:
    """Match ``(video_id, class_name)`` pairs to files under ``raw_dir`` (order kept)."""
    dataset_spec(dataset)  # fail on an unknown dataset before walking a large folder
    database = load_annotations(annotations) if dataset == "activitynet" else None
    return match_entries(dataset, wanted, index_raw_files(raw_dir, extensions), database)


def expected_videos(
    dataset: str,
    raw_dir: str | Path,
    official_dir: str | Path,
    split_kind: str,
    annotations: str | Path | dict | None = None,
    extensions: Iterable[str] | None = None,
) -> list[VideoEntry]:
    """Every distinct video of the ``split_kind`` splits, matched to the raw folder.

    Only videos the built splits use are listed (the cls ``stage_2_test_unseen`` filter removes
    some classes), in order of first appearance over the six splits.
    """
    result = build_from_lists(load_official_lists(dataset, official_dir, split_kind))
    wanted = [(row.video_id, row.class_name) for row in all_split_videos(result).values()]
    return match_videos(dataset, wanted, raw_dir, annotations, extensions)
