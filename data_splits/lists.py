"""Parse an official-lists folder (layout in docs/splits.md) into plain Python structures."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from data_splits.common import SPLIT_NAMES
from data_splits.official import OfficialListsError, dataset_spec, split_kind_dir


@dataclass(frozen=True)
class ListedVideo:
    video_id: str
    label: str  # class name as written in the list (may differ in case from all_class.txt)
    label_code: int | None  # as written in the CSV; None when the list has no such column


@dataclass
class OfficialLists:
    dataset: str
    split_kind: str
    class_split_dir: Path
    all_classes: list[str]  # all_class.txt, file order
    readable: dict[str, str]  # all_class name -> readable ("manual") phrase
    split_classes: dict[str, list[str]]  # split -> class names of its .txt
    split_videos: dict[str, list[ListedVideo]]  # split -> videos in list order
    sources: dict[str, str] = field(default_factory=dict)  # split -> file the videos came from


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise OfficialListsError(f"{path} is missing; see docs/splits.md for the expected layout")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_readable_names(path: Path) -> dict[str, str]:
    """``<ds>_w2v_class_names.csv`` -> {original: manual}."""
    if not path.is_file():
        raise OfficialListsError(f"{path} is missing; it maps class names to the phrases that are embedded")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"original", "manual"} <= set(reader.fieldnames or []):
            raise OfficialListsError(f"{path}: header must contain 'original,manual', got {reader.fieldnames}")
        return {r["original"].strip(): r["manual"].strip() for r in reader}


def read_split_csv(path: Path) -> list[ListedVideo]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"filename", "label"} <= cols:
            raise OfficialListsError(f"{path}: header must contain 'filename' and 'label', got {reader.fieldnames}")
        has_code = "label_code" in cols
        return [
            ListedVideo(r["filename"].strip(), r["label"].strip(), int(r["label_code"]) if has_code else None)
            for r in reader
        ]


def read_mapping(path: Path) -> dict[str, list[ListedVideo]]:
    """Mapping JSON {"/.../<modality>/<split>/<Class>.h5": [names]} -> {split: videos}, key order kept."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, list[ListedVideo]] = {}
    for key, names in data.items():
        p = PurePosixPath(key)
        if p.suffix != ".h5":
            raise OfficialListsError(f"{path}: key {key!r} is not '<...>/<split>/<Class>.h5'")
        # Class names may contain '.', e.g. "bee, wasp, etc. buzzing": strip only the suffix.
        label = p.name[: -len(".h5")]
        out.setdefault(p.parent.name, []).extend(ListedVideo(n, label, None) for n in names)
    return out


def _mapping_for(dataset_dir: Path, split_kind: str) -> Path | None:
    # The VGGSound cls mappings were never released; the main ones list the same videos.
    for kind in (split_kind, "main"):
        path = dataset_dir / "mapping" / f"{kind}_audio.json"
        if path.is_file():
            return path
    return None


def load_official_lists(dataset: str, official_dir: str | Path, split_kind: str) -> OfficialLists:
    """Read all lists of ``dataset``/``split_kind`` from ``official_dir/<DS>/...``."""
    spec = dataset_spec(dataset)
    dataset_dir = Path(official_dir) / spec.folder
    cs_dir = dataset_dir / "class-split"
    kind_dir = cs_dir / split_kind_dir(split_kind)
    if not kind_dir.is_dir():
        raise OfficialListsError(
            f"{kind_dir} does not exist: no {split_kind!r} lists for {dataset!r}; run the official-lists stage "
            f"or fix official.local_dir / split_kind"
        )
    lists = OfficialLists(
        dataset=dataset,
        split_kind=split_kind,
        class_split_dir=cs_dir,
        all_classes=read_lines(cs_dir / "all_class.txt"),
        readable=read_readable_names(cs_dir / f"{spec.prefix}_w2v_class_names.csv"),
        split_classes={s: read_lines(kind_dir / f"{s}.txt") for s in SPLIT_NAMES},
        split_videos={},
    )
    mapping: dict[str, list[ListedVideo]] | None = None
    for split in SPLIT_NAMES:
        csv_path = kind_dir / f"{split}.csv"
        if csv_path.is_file():
            lists.split_videos[split] = read_split_csv(csv_path)
            lists.sources[split] = str(csv_path)
            continue
        map_path = _mapping_for(dataset_dir, split_kind)
        if map_path is None:
            raise OfficialListsError(
                f"{csv_path} is missing and there is no {dataset_dir / 'mapping'}/{{{split_kind},main}}_audio.json "
                f"to rebuild it from; run the official-lists stage again"
            )
        mapping = mapping if mapping is not None else read_mapping(map_path)
        if split not in mapping:
            raise OfficialListsError(f"{map_path} has no '{split}' entries to rebuild {csv_path.name} from")
        lists.split_videos[split] = mapping[split]
        lists.sources[split] = str(map_path)
    return lists
