"""Build the split directory (classes.tsv, six split CSVs, seen_unseen.json) from the official lists.

The split files list every official video whether or not the user has it: the benchmark's
lists are reproduced exactly, and what is actually available is reported by coverage.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from data_splits.common import SPLIT_NAMES, atomic_write_text
from data_splits.io import ClassInfo, SplitRow, write_classes, write_split
from data_splits.lists import OfficialLists, load_official_lists
from data_splits.official import OfficialListsError, dataset_spec

# (stage, role) -> split whose .txt defines the class set. stage_1_val_seen has the same classes
# as stage_1_train and stage_2_test_seen the same as stage_2_train (checked in build).
SEEN_UNSEEN_SOURCES = {
    "stage_1": {"seen": "stage_1_train", "unseen": "stage_1_val_unseen"},
    "stage_2": {"seen": "stage_2_train", "unseen": "stage_2_test_unseen"},
}


class ClassIndex:
    """Benchmark class ids: index of a name in Python's ``sorted()`` of all_class.txt."""

    def __init__(self, all_classes: list[str], readable: dict[str, str], case_insensitive: bool):
        self.case_insensitive = case_insensitive
        names = sorted(set(all_classes))
        if len(names) != len(all_classes):
            raise OfficialListsError("all_class.txt lists a class twice")
        self.classes = [ClassInfo(i, n, readable.get(n, n)) for i, n in enumerate(names)]
        self._by_key = {self._key(c.name): c for c in self.classes}
        if len(self._by_key) != len(self.classes):
            raise OfficialListsError("all_class.txt has names that differ only in case")

    def _key(self, name: str) -> str:
        return name.lower() if self.case_insensitive else name

    def lookup(self, label: str) -> ClassInfo:
        try:
            return self._by_key[self._key(label)]
        except KeyError:
            raise OfficialListsError(f"class {label!r} is not in all_class.txt") from None


@dataclass
class BuildResult:
    out_dir: Path
    classes: list[ClassInfo]
    splits: dict[str, list[SplitRow]]
    seen_unseen: dict[str, dict[str, list[int]]]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> rows filtered out


def make_class_index(lists: OfficialLists) -> ClassIndex:
    spec = dataset_spec(lists.dataset)
    missing = [c for c in lists.all_classes if c not in lists.readable]
    if missing:
        raise OfficialListsError(
            f"{lists.class_split_dir}: {len(missing)} class(es) of all_class.txt have no row in the "
            f"*_w2v_class_names.csv, e.g. {missing[:5]}"
        )
    return ClassIndex(lists.all_classes, lists.readable, spec.case_insensitive)


def split_rows(lists: OfficialLists, index: ClassIndex, split: str) -> tuple[list[SplitRow], dict[str, int]]:
    """Rows of one split, filtered to the classes of its .txt (cls stage_2_test_unseen drops some)."""
    allowed = {index.lookup(c).class_id for c in lists.split_classes[split]}
    rows: list[SplitRow] = []
    dropped: dict[str, int] = {}
    seen_ids: set[str] = set()
    for video in lists.split_videos[split]:
        info = index.lookup(video.label)
        if video.label_code is not None and video.label_code != info.class_id:
            raise OfficialListsError(
                f"{lists.sources[split]}: {video.video_id} has label_code {video.label_code} but {info.name!r} "
                f"has id {info.class_id} (index in sorted all_class.txt); the lists are inconsistent"
            )
        if info.class_id not in allowed:
            dropped[info.name] = dropped.get(info.name, 0) + 1
            continue
        if video.video_id in seen_ids:
            raise OfficialListsError(f"{lists.sources[split]}: {video.video_id} is listed twice")
        seen_ids.add(video.video_id)
        rows.append(SplitRow(video.video_id, info.name, info.class_id))
    return rows, dropped


def seen_unseen(lists: OfficialLists, index: ClassIndex) -> dict[str, dict[str, list[int]]]:
    ids = {s: sorted({index.lookup(c).class_id for c in lists.split_classes[s]}) for s in SPLIT_NAMES}
    for a, b in (("stage_1_train", "stage_1_val_seen"), ("stage_2_train", "stage_2_test_seen")):
        if ids[a] != ids[b]:
            raise OfficialListsError(f"{a}.txt and {b}.txt must list the same classes (benchmark protocol)")
    out = {stage: {role: ids[split] for role, split in roles.items()} for stage, roles in SEEN_UNSEEN_SOURCES.items()}
    for stage, roles in out.items():
        if set(roles["seen"]) & set(roles["unseen"]):
            raise OfficialListsError(f"{stage}: seen and unseen classes overlap")
    return out


def build_from_lists(lists: OfficialLists) -> BuildResult:
    """Pure part of the build: lists in, classes/splits/seen-unseen out (nothing written)."""
    index = make_class_index(lists)
    result = BuildResult(Path(), index.classes, {}, seen_unseen(lists, index))
    for split in SPLIT_NAMES:
        result.splits[split], dropped = split_rows(lists, index, split)
        if dropped:
            result.dropped[split] = dropped
    return result


def write_build(result: BuildResult, out_dir: Path, lists: OfficialLists) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_classes(out_dir / "classes.tsv", result.classes)
    for split, rows in result.splits.items():
        write_split(out_dir / f"{split}.csv", rows)
    atomic_write_text(out_dir / "seen_unseen.json", json.dumps(result.seen_unseen, indent=1) + "\n")
    summary = {
        "dataset": lists.dataset,
        "split_kind": lists.split_kind,
        "n_classes": len(result.classes),
        "splits": {
            s: {"videos": len(rows), "classes": len({r.class_id for r in rows}), "source": lists.sources[s]}
            for s, rows in result.splits.items()
        },
        "dropped_by_class_filter": result.dropped,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")


def build_splits(dataset: str, official_dir: str | Path, out_dir: str | Path, split_kind: str = "cls") -> BuildResult:
    """Write ``out_dir/{classes.tsv, stage_*.csv, seen_unseen.json, summary.json}``.

    Needs no raw video: the split files are the official lists with benchmark class ids.
    """
    lists = load_official_lists(dataset, official_dir, split_kind)
    result = build_from_lists(lists)
    result.out_dir = Path(out_dir)
    write_build(result, result.out_dir, lists)
    return result


def all_split_videos(result: BuildResult) -> dict[str, SplitRow]:
    """Distinct videos over the six splits (first occurrence wins; a video has one class)."""
    out: dict[str, SplitRow] = {}
    for rows in result.splits.values():
        for row in rows:
            prev = out.setdefault(row.video_id, row)
            if prev.class_id != row.class_id:
                raise OfficialListsError(
                    f"{row.video_id} is listed with classes {prev.class_name!r} and {row.class_name!r}"
                )
    return out
