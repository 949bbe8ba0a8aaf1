"""A split preloaded once as packed tensors: split and class files in, :class:`SplitData` out.

Why (reference spec sections 2-3 and 9.3-9.4): the official loader rebuilds every batch in Python
(per-sample ``np.pad``, ``torch.tensor`` on lists), which dominates training time for short clips.
Here a split is read from the feature store **once** (``model/store_reader.py``) and kept as packed
tensors, so that every batch is a handful of vectorised tensor ops (``model/batching.py``):

* **Packed storage.** Each modality of a split is ``values [R, D]`` (all rows of all videos of the
  split, concatenated) plus per-video ``offsets``/``lengths``. A batch window is gathered with one
  advanced-indexing op and masked by length: the "padded tensors + lengths" idea without the
  padding (ActivityNet videos reach hundreds of tokens, so padding every video to the longest one
  would multiply memory several times).
* **dtypes.** Audio stays ``uint8`` when the store holds quantised VGGish (exact; the model
  divides by 255). Video (C3D fc7, non-negative, O(1..10) magnitudes) is kept in ``float16`` by
  default: relative rounding error <= 2**-11 (~5e-4) per value, far below the effect of dropout
  0.2-0.5 on the same inputs; it halves memory and host-to-device traffic. ``video_dtype="float32"``
  keeps stores' float32 values bit-exact. Values above the fp16 range fall back to float32.
* **Device.** Packed tensors live on the compute device when they fit (``data_device="auto"``),
  otherwise in host memory, where windows are gathered and then copied.
* **Class vectors** are aligned to class ids by name. ``class_vector_permutation`` reproduces the
  reference's ordering quirk (spec 2.5): class id ``k`` gets the ``k``-th vector after sorting
  the readable ("manual") names alphabetically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_splits.common import SPLIT_NAMES
from data_splits.io import ClassInfo, read_class_embeddings, read_seen_unseen, read_split
from model.store_reader import StoreArrays, _rows_of, _select_rows

log = logging.getLogger(__name__)

# The splits the training code uses: which of the benchmark's split files make up each, and which
# stage's seen/unseen class lists define its candidate classes (reference spec 2.4).
SPLITS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    # name: (split files, stage key in seen_unseen.json, has unseen classes)
    "stage_1_train": (("stage_1_train",), "stage_1", False),
    "stage_1_val": (("stage_1_val_seen", "stage_1_val_unseen"), "stage_1", True),
    "stage_2_train": (("stage_2_train",), "stage_2", False),
    "stage_2_test": (("stage_2_test_seen", "stage_2_test_unseen"), "stage_2", True),
}
assert all(f in SPLIT_NAMES for files, _, _ in SPLITS.values() for f in files)


# ----------------------------------------------------------------------------------------------
# Split and class files
# ----------------------------------------------------------------------------------------------


def load_class_vectors(
    npz_path: str | Path, classes: Sequence[ClassInfo], *, permutation_quirk: bool = False
) -> dict[int, np.ndarray]:
    """Class id -> word vector, aligned by class name.

    ``permutation_quirk=True`` reproduces the official loader (spec 2.5): it sorts the
    readable-name -> vector dict by key and indexes the resulting list **by class id**, so class
    id ``k`` gets the vector of the ``k``-th readable name in alphabetical order, which is another
    class's vector whenever the readable-name order differs from the class-id order (e.g. 79 of 101
    UCF classes). This needs class ids ``0..C-1`` covering every row of the file.
    """
    npz_path = Path(npz_path)
    emb = read_class_embeddings(npz_path)
    names, readable, vectors = emb.names, emb.readable_names, emb.vectors
    row_of = {n: i for i, n in enumerate(names)}
    absent = [c.name for c in classes if c.name not in row_of]
    if absent:
        raise ValueError(
            f"{npz_path}: no vector for class name(s) {absent[:5]}{'...' if len(absent) > 5 else ''}; "
            "rebuild the class embeddings from the same classes.tsv"
        )
    if not permutation_quirk:
        return {c.class_id: vectors[row_of[c.name]] for c in classes}

    # Reference behaviour: dict keyed by readable name (duplicates collapse, as in a dict), sorted.
    by_name: dict[str, np.ndarray] = {}
    for name, vec in zip(readable, vectors, strict=True):
        by_name[name] = vec
    ordered = [by_name[k] for k in sorted(by_name)]
    ids = sorted(c.class_id for c in classes)
    if ids != list(range(len(ordered))):
        raise ValueError(
            f"class_vector_permutation needs class ids 0..{len(ordered) - 1} matching the {len(ordered)} distinct "
            f"readable names in {npz_path} (got ids {ids[:3]}...{ids[-3:]}, {len(ids)} classes); "
            "set train.class_vector_permutation: false or rebuild the embeddings for all classes"
        )
    return {c.class_id: ordered[c.class_id] for c in classes}


def _seen_unseen(splits_dir: Path, stage: str) -> tuple[list[int], list[int]] | None:
    path = splits_dir / "seen_unseen.json"
    if not path.is_file():
        return None
    info = read_seen_unseen(path)[stage]
    return [int(c) for c in info["seen"]], [int(c) for c in info["unseen"]]


# ----------------------------------------------------------------------------------------------
# Packed split tensors
# ----------------------------------------------------------------------------------------------


@dataclass
class Packed:
    """One modality of a split: concatenated rows plus per-video offsets and lengths."""

    values: torch.Tensor  # [R, D]
    offsets: torch.Tensor  # [N] int64, first row of each video
    lengths: torch.Tensor  # [N] int64 (on the same device as values)
    lengths_cpu: torch.Tensor  # host copy: lets the eval loop size batches without a device sync

    @property
    def max_len(self) -> int:
        return int(self.lengths_cpu.max()) if len(self.lengths_cpu) else 0


@dataclass
class SplitData:
    """A split preloaded as packed tensors, with labels as column indices into its class list."""

    name: str
    audio: Packed
    video: Packed
    labels: torch.Tensor  # [N] column index into class_ids (data device)
    labels_cpu: torch.Tensor
    class_ids: list[int]  # column -> benchmark class id (sorted)
    class_names: list[str]
    unseen: torch.Tensor  # [C] bool (compute device)
    class_vectors: torch.Tensor  # [C, D_word] float32 (compute device)
    video_ids: list[str]
    dropped: list[tuple[str, str]]  # (video_id, reason) of split rows that could not be used

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def data_device(self) -> torch.device:
        return self.audio.values.device

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.audio.values, self.video.values))


def _to_torch(values: Any, rows: np.ndarray, dtype: str | None, what: str) -> torch.Tensor:
    """Rows ``rows`` of ``values`` as a tensor; video optionally narrowed to float16."""
    target = np.dtype(dtype) if dtype is not None else np.dtype(values.dtype)
    sel, peak = _select_rows(values, rows, target)
    if target == np.float16 and np.dtype(values.dtype) != np.float16 and peak > 6.0e4:
        log.warning("%s values reach %.3g, beyond float16; keeping float32", what, peak)
        sel, _ = _select_rows(values, rows, np.dtype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(sel))


def pick_data_device(nbytes: int, device: torch.device, data_device: str = "auto") -> torch.device:
    """Where the packed split tensors live: the compute device when they fit, else host memory."""
    if data_device == "cpu" or device.type == "cpu":
        return torch.device("cpu")
    if data_device == "device":
        return device
    if data_device != "auto":
        raise ValueError(f"data_device must be 'auto', 'cpu' or 'device', got {data_device!r}")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Leave room for the model, activations and the other splits.
        return device if nbytes < 0.5 * free else torch.device("cpu")
    return device


def build_split(
    store: StoreArrays,
    splits_dir: str | Path,
    split: str,
    class_vectors: dict[int, np.ndarray],
    classes: Sequence[ClassInfo],
    *,
    device: torch.device | str = "cpu",
    video_dtype: str = "float16",
    data_device: str = "auto",
) -> SplitData:
    """Preload one split (``stage_1_train``, ``stage_1_val``, ``stage_2_train``, ``stage_2_test``).

    Candidate classes come from ``seen_unseen.json`` (so that a class with no extracted video still
    competes at evaluation, as in the reference); without that file, from the split CSVs. Split rows
    whose video is absent from the store or has no audio or no video rows are dropped and listed in
    ``SplitData.dropped``; rows whose class is not a candidate class are dropped like the reference
    does.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if video_dtype not in ("float16", "float32"):
        raise ValueError(f"video_dtype must be 'float16' or 'float32', got {video_dtype!r}")
    device = torch.device(device)
    splits_dir = Path(splits_dir)
    files, stage, has_unseen = SPLITS[split]
    rows: list[tuple[str, str, int]] = []
    unseen_from_csv: set[int] = set()
    for name in files:
        part = read_split(splits_dir / f"{name}.csv")
        rows += part
        if name.endswith("_unseen"):
            unseen_from_csv |= {r[2] for r in part}
    su = _seen_unseen(splits_dir, stage)
    if su is not None:
        seen_ids, unseen_ids = set(su[0]), set(su[1]) if has_unseen else set()
    else:
        unseen_ids = unseen_from_csv
        seen_ids = {r[2] for r in rows} - unseen_ids
    class_ids = sorted(seen_ids | unseen_ids)
    col = {c: i for i, c in enumerate(class_ids)}
    name_of = {c.class_id: c.name for c in classes}
    missing_vec = [c for c in class_ids if c not in class_vectors]
    if missing_vec:
        raise ValueError(f"no class vector / classes.tsv entry for class id(s) {missing_vec[:5]} of split {split}")

    keep_vid, keep_lab, dropped = [], [], []
    a_off, v_off = store.audio[1], store.video[1]
    for vid, _cname, cid in rows:  # one pass over the split list at load time, not per batch
        i = store.index.get(vid)
        if cid not in col:
            dropped.append((vid, f"class id {cid} not in the {split} classes"))
        elif i is None:
            dropped.append((vid, "not in feature store"))
        elif a_off[i + 1] == a_off[i] or v_off[i + 1] == v_off[i]:
            dropped.append((vid, f"no features ({store.status.get(vid, 'empty')})"))
        else:
            keep_vid.append(vid)
            keep_lab.append(col[cid])
    if dropped:
        log.warning("%s: dropped %d of %d videos (e.g. %s: %s)", split, len(dropped), len(rows), *dropped[0])
    if not keep_vid:
        raise ValueError(f"split {split} has no usable video in {store.path} (rows: {len(rows)}, dropped: {len(dropped)})")

    idx = np.array([store.index[v] for v in keep_vid], dtype=np.int64)
    return _make_split(
        split,
        store.audio,
        store.video,
        idx,
        labels=np.asarray(keep_lab, dtype=np.int64),
        class_ids=class_ids,
        class_names=[name_of.get(c, str(c)) for c in class_ids],
        unseen=np.array([c in unseen_ids for c in class_ids], dtype=bool),
        class_vectors=np.stack([class_vectors[c] for c in class_ids]),
        video_ids=keep_vid,
        dropped=dropped,
        device=device,
        video_dtype=video_dtype,
        data_device=data_device,
        what=store.path,
    )


def split_from_sequences(
    name: str,
    audio: Sequence[np.ndarray],
    video: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    class_vectors: np.ndarray,
    unseen: Sequence[bool] | np.ndarray,
    *,
    device: torch.device | str = "cpu",
    video_dtype: str = "float16",
    data_device: str = "auto",
) -> SplitData:
    """A split from in-memory per-video arrays (synthetic data, benchmarks, tests).

    ``labels`` are column indices into ``class_vectors`` ``[C, D]``; ``unseen`` is ``[C]``.
    """
    if len(audio) != len(video) or len(audio) != len(labels):
        raise ValueError(f"need one audio and one video array per label, got {len(audio)}, {len(video)}, {len(labels)}")

    def packed(arrs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrs])]).astype(np.int64)
        return np.concatenate(arrs, axis=0), offsets

    n_cls = len(class_vectors)
    return _make_split(
        name,
        packed(audio),
        packed(video),
        np.arange(len(audio), dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64),
        class_ids=list(range(n_cls)),
        class_names=[f"class_{c}" for c in range(n_cls)],
        unseen=np.asarray(unseen, dtype=bool),
        class_vectors=np.asarray(class_vectors, dtype=np.float32),
        video_ids=[f"{name}_{i}" for i in range(len(audio))],
        dropped=[],
        device=device,
        video_dtype=video_dtype,
        data_device=data_device,
        what=name,
    )


def _make_split(
    name: str,
    audio: tuple[np.ndarray, np.ndarray],
    video: tuple[np.ndarray, np.ndarray],
    idx: np.ndarray,
    *,
    labels: np.ndarray,
    class_ids: list[int],
    class_names: list[str],
    unseen: np.ndarray,
    class_vectors: np.ndarray,
    video_ids: list[str],
    dropped: list[tuple[str, str]],
    device: torch.device | str,
    video_dtype: str,
    data_device: str,
    what: str,
) -> SplitData:
    """Select videos ``idx`` of packed (values, offsets) arrays into a SplitData."""
    if video_dtype not in ("float16", "float32"):
        raise ValueError(f"video_dtype must be 'float16' or 'float32', got {video_dtype!r}")
    device = torch.device(device)
    packed = {}
    for modality, (values, offsets), dtype in (("audio", audio, None), ("video", video, video_dtype)):
        rows_sel, lengths = _rows_of(np.asarray(offsets), idx)
        tensor = _to_torch(values, rows_sel, dtype, f"{what}:{modality}")
        packed[modality] = (tensor, torch.from_numpy(np.cumsum(lengths) - lengths), torch.from_numpy(lengths))
    nbytes = sum(p[0].numel() * p[0].element_size() for p in packed.values())
    ddev = pick_data_device(nbytes, device, data_device)

    def mk(p: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Packed:
        return Packed(p[0].to(ddev), p[1].to(ddev), p[2].to(ddev), p[2].clone())

    labels_t = torch.as_tensor(labels, dtype=torch.long)
    return SplitData(
        name=name,
        audio=mk(packed["audio"]),
        video=mk(packed["video"]),
        labels=labels_t.to(ddev),
        labels_cpu=labels_t,
        class_ids=list(class_ids),
        class_names=list(class_names),
        unseen=torch.as_tensor(unseen, dtype=torch.bool).to(device),
        class_vectors=torch.as_tensor(class_vectors, dtype=torch.float32).to(device),
        video_ids=list(video_ids),
        dropped=list(dropped),
    )
