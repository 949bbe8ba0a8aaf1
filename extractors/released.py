"""Import the benchmark's released features into a feature store (``features.source: released``).

Two layouts are read, both one file per modality, split folder and class:

* ``tcaf``, TCAF's temporal features: ``<root>/{audio,video}/<split>/<Class>.pkl``, where ``<root>`` is
  ``features/cls_features_non_averaged`` (what the official configs read) or
  ``features/cls_features_no_averaged`` (what the official splitting script writes). Each pickle holds
  ``{"features": [per-video array], "video_names": [numpy.bytes_], "fps": [25, ...]}``: VGGish codes
  ``uint8 [T_a, 128]`` and C3D fc7 ``float32 [T_v, 4096]``.
* ``avca``, AVCA's averaged features: ``features/cls_features/{audio,video}/<split>/<Class>.h5`` with
  datasets ``data [n, D]`` and ``video_urls``; each video becomes one row per modality.

The class of a file is its stem, matched against ``classes.tsv`` with the official loaders' case rule
(lower-cased for UCF and ActivityNet, exact for VGGSound). The released folders repeat videos: stage 1's
videos reappear under ``stage_2_train`` (which the official loaders never read, and neither does this)
and the seen test classes are the stage-1 classes. The store holds each video once; a repeat must have
the same class and the same features.

Pickles come from the internet, so they are read with an unpickler that can only build numpy arrays,
numpy scalars and builtin containers. Files are converted one class at a time: memory holds one class's
features, whatever the size of the dataset.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_splits.common import SPLIT_NAMES
from data_splits.io import read_classes, read_split
from data_splits.official import NumpyOnlyUnpickler, dataset_spec
from extractors.store import DIMS, MODALITIES, StoreWriter

log = logging.getLogger(__name__)

LAYOUTS = ("tcaf", "avca")
# Feature-method folders under <dataset>/features/, per layout, in the order they are searched.
METHOD_DIRS = {"tcaf": ("cls_features_non_averaged", "cls_features_no_averaged"), "avca": ("cls_features",)}
SUFFIX = {"tcaf": ".pkl", "avca": ".h5"}
# stage_2_train is the union of the three stage-1 folders; the official loaders never read it.
READ_SPLITS = tuple(s for s in SPLIT_NAMES if s != "stage_2_train")
# Dataset folder names of the released archives (the official repositories' dataset roots).
ARCHIVE_ROOTS = ("avgzsl_benchmark_non_averaged_datasets", "avgzsl_benchmark_datasets")


class ReleasedFeaturesError(RuntimeError):
    """The released files are missing, malformed or inconsistent; the message names the file."""


# --------------------------------------------------------------------------------------------------
# Reading one file


def _video_id(name: Any, source: Path) -> str:
    if isinstance(name, bytes | np.bytes_):
        try:
            return bytes(name).decode("utf-8")
        except UnicodeDecodeError:
            raise ReleasedFeaturesError(f"{source}: video name {bytes(name)!r} is not UTF-8") from None
    if isinstance(name, str | np.str_):
        return str(name)
    raise ReleasedFeaturesError(f"{source}: video names must be bytes or text, got {type(name).__name__}")


@dataclass
class ClassFile:
    """The videos of one released file, in file order."""

    path: Path
    sha256: str
    video_ids: list[str]
    features: list[np.ndarray]  # [T, D] per video (T = 1 for averaged features)


def _check_features(arrays: list[np.ndarray], modality: str, path: Path) -> list[np.ndarray]:
    dim = DIMS[modality]
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.ndim == 1:  # one averaged vector
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != dim:
            raise ReleasedFeaturesError(
                f"{path}: video {i} has {modality} features of shape {a.shape}; expected [T, {dim}] "
                f"({'VGGish' if modality == 'audio' else 'C3D fc7'}). Is this a {modality} file of the C3D/VGGish "
                "release (not SeLaVi)?"
            )
        if a.dtype.kind not in "uif":
            raise ReleasedFeaturesError(f"{path}: video {i} has {a.dtype} features; expected numbers")
        out.append(a)
    return out


def read_pickle_file(path: Path, modality: str) -> ClassFile:
    """One TCAF per-class pickle, through the numpy-only unpickler."""
    data = path.read_bytes()
    try:
        obj = NumpyOnlyUnpickler(io.BytesIO(data), str(path), ReleasedFeaturesError,
                                 ". Re-download the file from the official link").load()
    except ReleasedFeaturesError:
        raise
    except Exception as err:  # truncated or not a pickle at all
        raise ReleasedFeaturesError(f"{path}: not a readable pickle ({err}); re-download or re-extract it") from err
    if not isinstance(obj, dict) or not {"features", "video_names"} <= set(obj):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ReleasedFeaturesError(
            f"{path}: expected a dict with 'features' and 'video_names' (TCAF's per-class pickle), got {keys}"
        )
    names, feats = list(obj["video_names"]), list(obj["features"])
    if len(names) != len(feats):
        raise ReleasedFeaturesError(f"{path}: {len(names)} video names but {len(feats)} feature arrays")
    ids = [_video_id(n, path) for n in names]
    return ClassFile(path, hashlib.sha256(data).hexdigest(), ids, _check_features(feats, modality, path))


def read_h5_file(path: Path, modality: str) -> ClassFile:
    """One AVCA per-class h5 file (``data [n, D]``, ``video_urls``)."""
    import h5py

    raw = path.read_bytes()  # hashed and parsed from the same bytes: the file is read once
    try:
        with h5py.File(io.BytesIO(raw), "r") as hf:
            missing = [k for k in ("data", "video_urls") if k not in hf]
            if missing:
                raise ReleasedFeaturesError(
                    f"{path}: missing dataset(s) {missing}; AVCA's per-class files hold 'data' and 'video_urls'"
                )
            data = np.asarray(hf["data"])
            urls = list(hf["video_urls"][()])
    except OSError as err:
        raise ReleasedFeaturesError(f"{path}: not a readable HDF5 file ({err}); re-download it") from err
    if data.ndim != 2 or len(data) != len(urls):
        raise ReleasedFeaturesError(f"{path}: 'data' has shape {data.shape} for {len(urls)} video_urls")
    ids = [_video_id(u, path) for u in urls]
    return ClassFile(path, hashlib.sha256(raw).hexdigest(), ids, _check_features(list(data), modality, path))


def read_class_file(path: Path, modality: str, layout: str) -> ClassFile:
    return read_pickle_file(path, modality) if layout == "tcaf" else read_h5_file(path, modality)


# --------------------------------------------------------------------------------------------------
# Finding the files


@dataclass(frozen=True)
class ReleasedSource:
    layout: str  # tcaf | avca
    root: Path  # the folder holding audio/ and video/

    @property
    def averaged(self) -> bool:
        return self.layout == "avca"


def _has_layout(root: Path, layout: str) -> bool:
    return any(
        any((root / m / s).glob(f"*{SUFFIX[layout]}")) for m in MODALITIES for s in READ_SPLITS
    )


def locate_released(folder: str | Path, dataset: str, layout: str = "auto") -> ReleasedSource:
    """The feature-method folder under ``folder``: the folder itself, ``features/<method>``,
    ``<DS>/features/<method>`` or ``<archive root>/<DS>/features/<method>`` (as the zips unpack)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReleasedFeaturesError(
            f"features.released.dir: {str(folder)!r} is not a folder; set it to where the released features are "
            "unpacked (docs/released.md)"
        )
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"layout must be auto, tcaf or avca, got {layout!r}")
    ds = dataset_spec(dataset).folder
    bases = [folder, folder / ds, *(folder / a / ds for a in ARCHIVE_ROOTS)]
    found: list[ReleasedSource] = []
    for lay in LAYOUTS if layout == "auto" else (layout,):
        candidates = [folder] + [b / "features" / m for b in bases for m in METHOD_DIRS[lay]]
        for root in candidates:
            if root.is_dir() and _has_layout(root, lay):
                found.append(ReleasedSource(lay, root))
                break
    if not found:
        tried = ", ".join(f"{b}/features/{{{','.join(METHOD_DIRS['tcaf'] + METHOD_DIRS['avca'])}}}" for b in bases[:2])
        raise ReleasedFeaturesError(
            f"no released features under {folder}: expected {{audio,video}}/<split>/<Class>.pkl (TCAF) or .h5 "
            f"(AVCA) in the folder itself or in {tried}. Unpack the release there (docs/released.md)"
        )
    if len(found) > 1:
        raise ReleasedFeaturesError(
            f"{folder} holds both TCAF ({found[0].root}) and AVCA ({found[1].root}) features; set "
            "features.released.layout to tcaf or avca"
        )
    return found[0]


def class_files(source: ReleasedSource, split: str) -> dict[str, dict[str, Path]]:
    """{class file stem: {modality: path}} of one split folder (a stem may lack a modality)."""
    out: dict[str, dict[str, Path]] = {}
    for m in MODALITIES:
        for path in sorted((source.root / m / split).glob(f"*{SUFFIX[source.layout]}")):
            out.setdefault(path.stem, {})[m] = path
    return out


def released_files(folder: str | Path, dataset: str, layout: str = "auto") -> list[Path]:
    """Every file an import reads (the workflow lists them as inputs, so a changed file reruns it)."""
    source = locate_released(folder, dataset, layout)
    return [p for s in READ_SPLITS for paths in class_files(source, s).values() for p in paths.values()]


# --------------------------------------------------------------------------------------------------
# Import


@dataclass
class SplitImport:
    class_files: int = 0
    videos: int = 0  # in this folder's files
    listed: int = 0  # in the split list
    listed_found: int = 0  # listed and in this folder's files
    not_listed: int = 0  # in the files, not in the split list
    extra_classes: list[str] = field(default_factory=list)  # class files of classes the split does not use


@dataclass
class ImportResult:
    store: Path
    source: ReleasedSource
    n_videos: int
    splits: dict[str, SplitImport]
    files: dict[str, str]  # relative path -> sha256
    repeats: int  # videos met again in a later split folder (same class, same features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "layout": self.source.layout,
            "root": str(self.source.root),
            "averaged": self.source.averaged,
            "videos": self.n_videos,
            "repeats": self.repeats,
            "splits": {k: vars(v) for k, v in self.splits.items()},
            "files": self.files,
        }


class _ClassLookup:
    """Class file stem -> (class id, all_class.txt name), with the official loaders' case rule."""

    def __init__(self, classes_tsv: Path, dataset: str):
        self.fold = dataset_spec(dataset).case_insensitive
        self.by_key = {self.key(c.name): c for c in read_classes(classes_tsv)}

    def key(self, name: str) -> str:
        return name.lower() if self.fold else name

    def __call__(self, stem: str, path: Path) -> Any:
        info = self.by_key.get(self.key(stem))
        if info is None:
            close = [c.name for c in self.by_key.values() if c.name.lower() == stem.lower()]
            hint = f" (the list spells it {close[0]!r}; VGGSound names match exactly)" if close else ""
            raise ReleasedFeaturesError(
                f"{path}: class {stem!r} is not in the benchmark's all_class.txt{hint}. Remove the file, or check "
                "that features.released.dir belongs to this dataset"
            )
        return info


def _digest(audio: np.ndarray, video: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in (audio, video):
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


def _pairs(source: ReleasedSource, split: str, lookup: _ClassLookup) -> Iterator[tuple[Any, ClassFile, ClassFile]]:
    for stem, paths in class_files(source, split).items():
        missing = [m for m in MODALITIES if m not in paths]
        if missing:
            have = next(iter(paths.values()))
            want = source.root / missing[0] / split / have.name
            raise ReleasedFeaturesError(
                f"{have} has no {missing[0]} counterpart {want}: audio and video files must come in pairs"
            )
        info = lookup(stem, paths["audio"])
        audio = read_class_file(paths["audio"], "audio", source.layout)
        video = read_class_file(paths["video"], "video", source.layout)
        if audio.video_ids != video.video_ids:
            if sorted(audio.video_ids) == sorted(video.video_ids):
                first = next(i for i, (a, v) in enumerate(zip(audio.video_ids, video.video_ids)) if a != v)
                what = f"the same videos in another order (position {first}: {audio.video_ids[first]!r} vs " \
                       f"{video.video_ids[first]!r})"
            else:
                only_a = sorted(set(audio.video_ids) - set(video.video_ids))[:3]
                only_v = sorted(set(video.video_ids) - set(audio.video_ids))[:3]
                what = f"different videos (only in audio: {only_a}, only in video: {only_v})"
            raise ReleasedFeaturesError(
                f"{paths['audio']} and {paths['video']} disagree: {what}. The two files of a class must list the same "
                "videos in the same order; re-download the pair"
            )
        yield info, audio, video


def import_released(folder: str | Path, store_path: str | Path, *, dataset: str, splits_dir: str | Path,
                     layout: str = "auto", video_dtype: str = "float32") -> ImportResult:
    """Convert released features into the store ``store_path`` (plus its ``.tsv`` sidecar).

    ``splits_dir`` is the split folder (``classes.tsv`` and the six split CSVs) built from the official lists:
    class ids come from it, and the per-split counts are taken against it.
    """
    source = locate_released(folder, dataset, layout)
    splits_dir = Path(splits_dir)
    lookup = _ClassLookup(splits_dir / "classes.tsv", dataset)
    listed = {s: {r.video_id: r.class_id for r in read_split(splits_dir / f"{s}.csv")} for s in READ_SPLITS}
    kind = "TCAF temporal" if source.layout == "tcaf" else "AVCA averaged"
    log.info("importing %s features from %s", kind, source.root)

    writer: StoreWriter | None = None
    known: dict[str, tuple[int, bytes, Path]] = {}  # video id -> (class id, feature digest, audio file)
    files: dict[str, str] = {}
    report = {s: SplitImport(listed=len(listed[s])) for s in READ_SPLITS}
    repeats = 0
    try:
        for split in READ_SPLITS:
            rep = report[split]
            split_classes = set(listed[split].values())
            for info, audio, video in _pairs(source, split, lookup):
                rep.class_files += 1
                rep.videos += len(audio.video_ids)
                for cf in (audio, video):
                    files[cf.path.relative_to(source.root).as_posix()] = cf.sha256
                if info.class_id not in split_classes:
                    rep.extra_classes.append(audio.path.stem)
                if writer is None:
                    writer = StoreWriter(store_path, _store_attrs(source, dataset, audio, video_dtype))
                for vid, a, v in zip(audio.video_ids, audio.features, video.features):
                    in_list = listed[split].get(vid)
                    rep.listed_found += in_list is not None
                    rep.not_listed += in_list is None
                    digest = _digest(a, v)
                    prev = known.get(vid)
                    if prev is not None:
                        _check_repeat(vid, prev, info.class_id, digest, audio.path, lookup)
                        repeats += 1
                        continue
                    known[vid] = (info.class_id, digest, audio.path)
                    empty = [m for m, x in (("audio", a), ("video", v)) if len(x) == 0]
                    row = {"class_name": info.name, "path": audio.path.relative_to(source.root).as_posix(),
                           "status": "empty_features" if empty else "ok",
                           "reason": f"no {' or '.join(empty)} rows in the released file" if empty else ""}
                    writer.append(vid, a, v.astype(video_dtype, copy=False), row)
            if rep.extra_classes:
                log.warning("%s: %d class file(s) of classes the split does not use (the official loader skips them "
                            "too): %s", split, len(rep.extra_classes), ", ".join(rep.extra_classes))
            log.info("%s: %d class files, %d videos, %d of %d listed videos found", split, rep.class_files,
                     rep.videos, rep.listed_found, rep.listed)
        if writer is None:
            raise ReleasedFeaturesError(f"{source.root}: no class files in any split folder ({', '.join(READ_SPLITS)})")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return ImportResult(Path(store_path), source, len(known), report, files, repeats)


def _check_repeat(vid: str, prev: tuple[int, bytes, Path], class_id: int, digest: bytes, path: Path,
                  lookup: _ClassLookup) -> None:
    prev_class, prev_digest, prev_path = prev
    if prev_class != class_id:
        raise ReleasedFeaturesError(
            f"video {vid!r} is in two classes: {prev_path} and {path}. A video has one class; remove it from the "
            "wrong file or re-download both"
        )
    if prev_digest != digest:
        raise ReleasedFeaturesError(
            f"video {vid!r} has different features in {prev_path} and {path} (same class, other split folder); "
            "the release repeats videos with identical features, so one of the files is damaged: re-download both"
        )


def _store_attrs(source: ReleasedSource, dataset: str, first_audio: ClassFile, video_dtype: str) -> dict[str, Any]:
    audio_dtype = first_audio.features[0].dtype if first_audio.features else np.dtype(np.uint8)
    # Averaged VGGish codes are floats on the 0..255 scale of the quantised codes they average.
    audio_dtype = "uint8" if audio_dtype == np.uint8 else "float32"
    released = {"random": False, "source": "released features", "layout": source.layout}
    return {
        "dataset": dataset,
        "source": {"kind": "released", "layout": source.layout, "dir": str(source.root),
                   "averaged": source.averaged},
        "audio": {"extractor": "vggish", "weights": released, "dtype": audio_dtype, "postprocess": "pca_quantized",
                  "value_scale": 255.0, "hop_s": 0.96, "averaged": source.averaged},
        "video": {"extractor": "c3d", "weights": released, "dtype": video_dtype, "layer": "fc7", "fps": 25,
                  "frames_per_clip": 16, "hop_s": 16 / 25, "averaged": source.averaged},
    }
