"""Reading a feature store for training: lazily, and only the rows a split needs.

A feature store (``extractors/store.py``) holds each modality as one concatenated ``values [R, D]``
array plus per-video ``offsets``. :func:`open_store` opens it without reading the values;
:func:`_select_rows` then reads the rows of a split in sequential chunk-aligned blocks (~256 MB),
skipping blocks without a wanted row and casting each block to its storage dtype on the fly, so
memory holds the split, never the whole store (ActivityNet's float32 C3D features alone are tens
of GB). ``model/packing.py`` turns the selected rows into a split's packed tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class StoreArrays:
    """A feature store read into memory once, shared by all splits built from it."""

    path: str
    video_ids: list[str]
    audio: tuple[Any, np.ndarray]  # values [R, D] (numpy, or a lazy Zarr array), offsets [n_videos + 1]
    video: tuple[Any, np.ndarray]
    attrs: dict
    status: dict[str, str]
    index: dict[str, int] = field(init=False)
    # The feature pair read (model.methods.FEATURE_SETS): which store groups `audio` and `video` hold.
    features: str = "vggish_c3d"
    groups: tuple[str, str] = ("audio", "video")

    def __post_init__(self) -> None:
        self.index = {v: i for i, v in enumerate(self.video_ids)}

    @property
    def random_weights(self) -> bool:
        """True when either extractor of the pair read ran with random (untrained) weights."""
        return any(bool(((self.attrs.get(m) or {}).get("weights") or {}).get("random", False)) for m in self.groups)

    @property
    def audio_attrs(self) -> dict:
        """The attributes of the group read as the audio input (VGGish's or CLAP's)."""
        return dict(self.attrs.get(self.groups[0]) or {})


def open_store(path: str | Path, *, lazy: bool = True, features: str = "vggish_c3d") -> StoreArrays:
    """Open a feature store for building splits.

    ``features`` picks the pair of groups a method trains on (``model.methods.FEATURE_SETS``): ``vggish_c3d`` reads
    ``audio``/``video``, ``clip_clap`` reads ``clap`` as the audio input and ``clip`` as the video input. A store
    without those groups fails naming the streams it has and the config key that adds them.

    ``lazy`` (default) keeps the values in the store and reads them block by block when a split is
    built, so memory holds only the split's own rows (already in their storage dtype), never the
    whole store: ActivityNet's float32 C3D features alone are tens of GB. ``lazy=False`` loads whole
    arrays (small stores, repeated builds).
    """
    from extractors.store import FeatureStore  # the store format belongs to extractors/
    from model.methods import FEATURE_SETS

    if features not in FEATURE_SETS:
        raise ValueError(f"features {features!r} is not one of {list(FEATURE_SETS)} (config key features.methods)")
    audio_group, video_group = FEATURE_SETS[features]
    store = FeatureStore(path)
    missing = [g for g in (audio_group, video_group) if g not in store.streams]
    if missing:
        raise ValueError(f"{path} holds the streams {list(store.streams)}, not {missing}, which {features} features "
                         f"need: add {' and '.join(missing)} to extract.streams and rerun extraction, or choose the "
                         "features the store has (config key features.methods)")
    attrs = dict(store.attrs)
    status = {str(r.get("video_id")): str(r.get("status", "ok")) for r in (store.table or [])}

    def arrays(m: str) -> tuple[Any, np.ndarray]:
        return (store.values(m), store.offsets(m).copy()) if lazy else store.read(m)

    return StoreArrays(
        path=str(path),
        video_ids=list(store.video_ids),
        audio=arrays(audio_group),
        video=arrays(video_group),
        attrs=attrs,
        status=status,
        features=features,
        groups=(audio_group, video_group),
    )


def _rows_of(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of videos ``idx`` (concatenated) and their lengths, without a Python loop."""
    starts = offsets[idx].astype(np.int64)
    lengths = (offsets[idx + 1] - offsets[idx]).astype(np.int64)
    total = int(lengths.sum())
    first = np.cumsum(lengths) - lengths  # where each video starts in the output
    rows = np.arange(total, dtype=np.int64) - np.repeat(first - starts, lengths)
    return rows, lengths


_BLOCK_BYTES = 256 << 20  # rows read per step from a lazy store: bounded memory, few large reads


def _select_rows(values: Any, rows: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, float]:
    """``values[rows]`` cast to ``dtype`` and the largest absolute value selected.

    A lazy (Zarr) array is read in sequential blocks (skipping blocks without a wanted row) and each
    block is cast on the fly, so peak memory is the output plus one block.
    """
    peak = 0.0
    if isinstance(values, np.ndarray):
        sel = values[rows]
        if sel.size and sel.dtype.kind == "f":
            peak = float(np.abs(sel).max())
        return sel.astype(dtype, copy=False), peak
    n_rows, dim = values.shape
    out = np.empty((len(rows), dim), dtype=dtype)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    chunk = int(getattr(values, "chunks", (1,))[0]) or 1
    block = max(chunk, (_BLOCK_BYTES // max(1, dim * values.dtype.itemsize)) // chunk * chunk)
    start = 0
    while start < n_rows:
        lo = int(np.searchsorted(sorted_rows, start))
        if lo == len(sorted_rows):
            break
        start = int(sorted_rows[lo]) // chunk * chunk
        stop = min(start + block, n_rows)
        hi = int(np.searchsorted(sorted_rows, stop))
        sel = np.asarray(values[start:stop])[sorted_rows[lo:hi] - start]
        if sel.size and sel.dtype.kind == "f":
            peak = max(peak, float(np.abs(sel).max()))
        out[order[lo:hi]] = sel
        start = stop
    return out, peak
