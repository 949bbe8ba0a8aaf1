"""Read/write helpers for the split directory and the class-embedding file.

These are the only functions ``model/`` needs; formats are described in docs/splits.md.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from data_splits.common import atomic_open, atomic_write_text

SPLIT_COLUMNS = ("video_id", "class_name", "class_id")
CLASS_COLUMNS = ("class_id", "name", "readable_name")


class SplitRow(NamedTuple):
    """One listed video of a split (a tuple, so ``video_id, class_name, class_id = row`` works)."""

    video_id: str
    class_name: str
    class_id: int


@dataclass(frozen=True)
class ClassInfo:
    class_id: int  # as the benchmark defines it (index in the sorted all_class.txt)
    name: str  # all_class.txt name; the key everything is aligned by
    readable_name: str  # the phrase that is embedded ("manual" name)


def _open_table(path: Path, columns: Sequence[str], delimiter: str) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the splits stage first")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        return list(reader)


def read_split(path: str | Path) -> list[SplitRow]:
    """Rows of one split CSV (``video_id,class_name,class_id``) in file order."""
    rows = _open_table(Path(path), SPLIT_COLUMNS, ",")
    return [SplitRow(r["video_id"], r["class_name"], int(r["class_id"])) for r in rows]


def write_split(path: str | Path, rows: Iterable[SplitRow]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(SPLIT_COLUMNS)
        writer.writerows(rows)


def read_classes(path: str | Path) -> list[ClassInfo]:
    """``classes.tsv`` rows sorted by class id."""
    rows = _open_table(Path(path), CLASS_COLUMNS, "\t")
    infos = [ClassInfo(int(r["class_id"]), r["name"], r["readable_name"]) for r in rows]
    return sorted(infos, key=lambda c: c.class_id)


def write_classes(path: str | Path, classes: Iterable[ClassInfo]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(CLASS_COLUMNS)
        writer.writerows((c.class_id, c.name, c.readable_name) for c in classes)


def read_seen_unseen(path: str | Path) -> dict[str, dict[str, list[int]]]:
    """``seen_unseen.json``: {"stage_1": {"seen": [...], "unseen": [...]}, "stage_2": {...}}."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for stage in ("stage_1", "stage_2"):
        if stage not in data or not {"seen", "unseen"} <= set(data[stage]):
            raise ValueError(f"{path}: expected {stage}.seen and {stage}.unseen")
    return data


def filter_available(rows: Iterable[SplitRow], available_ids: Iterable[str]) -> list[SplitRow]:
    """Rows whose video has features; split files list every official video, extracted or not."""
    keep = set(available_ids)
    return [r for r in rows if r.video_id in keep]


@dataclass
class ClassEmbeddings:
    """Contents of ``results/class_embeddings/{dataset}.npz`` (+ its JSON sidecar)."""

    names: list[str]
    readable_names: list[str]
    vectors: np.ndarray  # float32 [C, D], rows L2-normalised
    meta: dict = field(default_factory=dict)

    def aligned(self, names: Sequence[str]) -> np.ndarray:
        """Vectors for ``names`` in that order, looked up BY NAME (never by row position)."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(
                f"class embeddings lack {len(missing)} class(es), e.g. {missing[:5]}; rebuild them from the "
                f"same classes.tsv"
            )
        return self.vectors[[index[n] for n in names]]


def write_class_embeddings(
    npz_path: str | Path,
    names: Sequence[str],
    readable_names: Sequence[str],
    vectors: np.ndarray,
    meta: dict,
) -> Path:
    """Write the ``.npz`` and its ``.json`` sidecar (same stem); returns the sidecar path."""
    npz_path = Path(npz_path)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[0] != len(names) or len(names) != len(readable_names):
        raise ValueError(f"{npz_path}: {len(names)} names, {len(readable_names)} phrases, {vectors.shape[0]} rows")
    with atomic_open(npz_path, "wb") as fh:  # a file handle stops numpy from appending a second ".npz"
        np.savez(fh, names=np.array(names), readable_names=np.array(readable_names), vectors=vectors)
    sidecar = npz_path.with_suffix(".json")
    atomic_write_text(sidecar, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return sidecar


def read_class_embeddings(path: str | Path) -> ClassEmbeddings:
    """Load ``{dataset}.npz`` (arrays names/readable_names/vectors) and the sidecar if present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the class_embeddings stage first")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("names", "readable_names", "vectors") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; expected names, readable_names, vectors")
        emb = ClassEmbeddings(
            [str(x) for x in z["names"]], [str(x) for x in z["readable_names"]], z["vectors"].astype(np.float32)
        )
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        emb.meta = json.loads(sidecar.read_text(encoding="utf-8"))
    return emb
