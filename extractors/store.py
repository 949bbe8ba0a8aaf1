"""Feature stores: ragged per-video features in a Zarr v3 group, plus a TSV sidecar table.

Layout (schema ``avgzsl.features/1``)::

    <name>.zarr/                  group; attrs: schema, n_videos, dataset, streams [...], one attribute
                                  section per stream (audio{...}, video{...}, clip{...}, clap{...}),
                                  versions{...}, created_utc, complete (set last)
      audio/values  [N_a, 128]    uint8 (PCA-quantised VGGish) or float32
      audio/offsets [n + 1] int64 video i = values[offsets[i]:offsets[i + 1]]
      video/values  [N_v, 4096]   float16 | float32 (C3D fc7 after ReLU)
      video/offsets [n + 1] int64
      clip/values   [N_c, 512]    float32 (CLIP ViT-B/32 image rows, L2-normalised)  } only with these
      clip/offsets  [n + 1] int64                                                     } streams in
      clap/values   [N_l, 1024]   float32 (WavCaps CLAP audio rows, L2-normalised)    } extract.streams
      clap/offsets  [n + 1] int64
      video_ids     [n] str       the row order, checked against the sidecar
    <name>.tsv                    video_id status reason n_audio n_video duration_s class_name path, then
                                  what decoding found (extractors.decode.DecodeRecord): streams used,
                                  start offsets, frames decoded/used/re-stamped/dropped, decoded and
                                  declared durations; then n_clip n_clap (empty without those streams)

A store holds the groups of its ``streams`` attribute (stores written before it existed: audio and video). A
stream's rows per video are whatever its extractor gives (VGGish: one per 0.96 s, C3D: one per 16-frame clip,
CLIP: one per selected frame, CLAP: one per 10 s window); a video whose status is not ``ok`` has none in any.

One process writes a store (:class:`StoreWriter`), into ``<path>.tmp-<pid>``, and renames it into
place after setting ``complete: true``; :class:`FeatureStore` refuses anything without that flag. A store
has one writer at a time (Snakemake runs one job per output), so a new writer removes the temporaries that
killed writers left behind.
Values are appended in whole chunks, so a writer holds at most one chunk row-block per modality.
"""

from __future__ import annotations

import csv
import datetime as dt
import glob
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

log = logging.getLogger(__name__)

SCHEMA = "avgzsl.features/1"
MODALITIES = ("audio", "video")  # the benchmark's VGGish/C3D pair: every store written before `streams` existed
STREAMS = ("audio", "video", "clip", "clap")  # every group a store may hold (extract.streams), in store order
DIMS = {"audio": 128, "video": 4096, "clip": 512, "clap": 1024}
TABLE_COLUMNS = ("video_id", "status", "reason", "n_audio", "n_video", "duration_s", "class_name", "path",
                 "video_stream", "audio_stream", "video_start_s", "audio_start_s", "frames_decoded", "frames_used",
                 "frames_restamped", "frames_dropped", "decoded_s", "declared_s", "n_clip", "n_clap")
# Columns read back as numbers (empty = unknown); stores written before a column existed read it as None.
_INT_COLUMNS = ("n_audio", "n_video", "video_stream", "audio_stream", "frames_decoded", "frames_used",
                "frames_restamped", "frames_dropped", "n_clip", "n_clap")
_FLOAT_COLUMNS = ("duration_s", "video_start_s", "audio_start_s", "decoded_s", "declared_s")
# Chunks of ~1 MiB uncompressed (zarr's guidance), cut along the row axis that readers slice:
# C3D 64 rows x 4096 x 4 B, VGGish 8192 rows x 128 x 1 B. Zstd level 3 measured best on post-ReLU
# features (docs/extraction.md "Chunking and compression").
CHUNK_BYTES = 1 << 20
COMPRESSOR = ZstdCodec(level=3)


class IncompleteStoreError(RuntimeError):
    """A store whose writer did not finish (crashed, killed, or still running)."""


def sidecar_path(store_path: str | Path) -> Path:
    """``features.zarr`` -> ``features.tsv`` (same folder, same stem)."""
    return Path(store_path).with_suffix(".tsv")


def store_streams(attrs: dict[str, Any]) -> tuple[str, ...]:
    """The groups a store with these attributes holds, in store order; refuses unknown names."""
    streams = attrs.get("streams") or MODALITIES
    unknown = [s for s in streams if s not in STREAMS]
    if unknown or len(set(streams)) != len(streams) or not streams:
        raise ValueError(f"feature streams {list(streams)}: each of {list(STREAMS)} at most once, at least one "
                         "(config key extract.streams)")
    return tuple(s for s in STREAMS if s in streams)


def chunk_rows(dim: int, dtype: np.dtype | str) -> int:
    return max(1, CHUNK_BYTES // (dim * np.dtype(dtype).itemsize))


def library_versions() -> dict[str, str]:
    import sys
    from importlib.metadata import version

    # Package metadata, not imports: recording versions must not pull torch into a light process.
    versions = {"python": sys.version.split()[0], "numpy": np.__version__, "zarr": zarr.__version__,
                "av": version("av"), "torch": version("torch")}
    if "tensorflow" in sys.modules:  # only when a tfhub backend actually ran
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    return versions


# --------------------------------------------------------------------------------------------------
# Writing


class _RaggedWriter:
    """Appends [rows, dim] blocks to one modality's ``values`` in whole chunks; tracks offsets."""

    def __init__(self, group: zarr.Group, name: str, dim: int, dtype: np.dtype):
        self.dim, self.dtype = dim, np.dtype(dtype)
        self.rows = chunk_rows(dim, self.dtype)
        self.values = group.create_array(f"{name}/values", shape=(0, dim), chunks=(self.rows, dim),
                                         dtype=self.dtype, compressors=COMPRESSOR, fill_value=0)
        self.offsets = [0]
        self.written = 0  # rows already in the Zarr array
        self.pending: list[np.ndarray] = []
        self.n_pending = 0

    def append(self, x: np.ndarray | None) -> int:
        x = np.zeros((0, self.dim), self.dtype) if x is None else np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape [rows, {self.dim}], got {x.shape}")
        if x.dtype != self.dtype and not np.can_cast(x.dtype, self.dtype, casting="same_kind"):
            raise ValueError(f"features of dtype {x.dtype} cannot be stored as {self.dtype}")
        if len(x):
            self.pending.append(x.astype(self.dtype, copy=False))
            self.n_pending += len(x)
        self.offsets.append(self.offsets[-1] + len(x))
        if self.n_pending >= self.rows:
            self._flush(whole_chunks_only=True)
        return len(x)

    def _flush(self, whole_chunks_only: bool) -> None:
        if not self.n_pending:
            return
        block = np.concatenate(self.pending)
        n = (len(block) // self.rows) * self.rows if whole_chunks_only else len(block)
        if n:
            self.values.resize((self.written + n, self.dim))
            self.values[self.written:self.written + n] = block[:n]
            self.written += n
        rest = block[n:]
        self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)

    def close(self, group: zarr.Group, name: str) -> None:
        self._flush(whole_chunks_only=False)
        assert self.written == self.offsets[-1], (self.written, self.offsets[-1])
        off = np.asarray(self.offsets, dtype=np.int64)
        arr = group.create_array(f"{name}/offsets", shape=off.shape, chunks=(max(1, len(off)),),
                                 dtype=np.int64, compressors=COMPRESSOR)
        arr[:] = off


class StoreWriter:
    """Single writer for one feature store; use as a context manager.

    ``append`` one video at a time (any order the caller likes; that order is the store's). Leaving
    the ``with`` block normally finalises (sidecar, ``complete``, rename); an exception leaves only
    the ``.tmp-<pid>`` directory behind, which no reader accepts.
    """

    def __init__(self, path: str | Path, attrs: dict[str, Any], dtypes: dict[str, str] | None = None,
                 dims: dict[str, int] | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self.attrs = dict(attrs)
        self.streams = store_streams(self.attrs)
        self.attrs["streams"] = list(self.streams)
        dims = {**DIMS, **(dims or {})}
        dtypes = dtypes or {m: self.attrs.get(m, {}).get("dtype") for m in self.streams}
        for m in self.streams:
            if dtypes.get(m) is None:
                raise ValueError(f"no dtype for {m} features: give dtypes= or attrs['{m}']['dtype']")
        for stale in self.path.parent.glob(f"{glob.escape(self.path.name)}.tmp-*"):
            log.warning("removing %s, left behind by a writer that did not finish", stale)
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        self.writers = {m: _RaggedWriter(self.group, m, dims[m], np.dtype(dtypes[m])) for m in self.streams}
        self.table: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    def append(self, video_id: str, audio: np.ndarray | None, video: np.ndarray | None,
               row: dict[str, Any] | None = None, more: dict[str, np.ndarray | None] | None = None) -> None:
        """Add one video. ``row`` holds status, reason, duration_s, class_name (n_* are computed); ``more`` the rows
        of the other streams ({"clip": ..., "clap": ...}). A stream the store does not hold must get no rows."""
        if video_id in self._ids:
            raise ValueError(f"video id {video_id!r} appended twice to {self.path}")
        row = dict(row or {})
        if row.get("video_id", video_id) != video_id:
            raise ValueError(f"table row is for {row['video_id']!r} but the features are for {video_id!r}")
        unknown = sorted(set(row) - set(TABLE_COLUMNS))
        if unknown:
            raise ValueError(f"table row for {video_id!r} has unknown columns {unknown}; known: {list(TABLE_COLUMNS)}")
        check_table_name(video_id, "video id")
        check_table_name(row.get("class_name") or "", f"class name of {video_id!r}")
        check_table_name(row.get("path") or "", f"path of {video_id!r}")
        given = {"audio": audio, "video": video, **(more or {})}
        for m, x in given.items():
            if m not in self.writers and x is not None and len(x):
                raise ValueError(f"{len(x)} {m} rows for {video_id!r}, but {self.path} holds only the streams "
                                 f"{list(self.streams)}")
        counts = {f"n_{m}": w.append(given.get(m)) for m, w in self.writers.items()}
        self._ids.add(video_id)
        self.table.append({**row, "video_id": video_id, "status": row.get("status", "ok"),
                           "reason": " ".join(str(row.get("reason") or "").split()), "n_audio": 0, "n_video": 0,
                           **counts, "class_name": row.get("class_name", "")})

    def close(self) -> Path:
        n = len(self.table)
        for m, w in self.writers.items():
            w.close(self.group, m)
        ids = self.group.create_array("video_ids", shape=(n,), chunks=(max(1, n),), dtype=str)
        if n:
            ids[:] = np.array([r["video_id"] for r in self.table], dtype=object)
        _write_table(self.tmp / "_table.tsv.part", self.table)
        self.group.attrs.update({**self.attrs, "schema": SCHEMA, "n_videos": n,
                                 "versions": {**library_versions(), **self.attrs.get("versions", {})},
                                 "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
        self.group.attrs["complete"] = True  # last write inside the store: everything above is on disk
        # Sidecar first, then the store: a complete store always has its table next to it.
        os.replace(self.tmp / "_table.tsv.part", sidecar_path(self.path))
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        log.info("wrote %s: %d videos, rows %s", self.path, n, {m: w.written for m, w in self.writers.items()})
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        # On error the .tmp-<pid> directory stays for inspection; it is never read as a store.


def write_store(path: str | Path, video_ids: Sequence[str], audio_list: Sequence[np.ndarray | None],
                video_list: Sequence[np.ndarray | None], attrs: dict[str, Any],
                table_rows: Sequence[dict[str, Any]] | None = None) -> Path:
    """Write a whole store from in-memory lists (tests, small shards). See :class:`StoreWriter`."""
    n = len(video_ids)
    table_rows = table_rows if table_rows is not None else [{} for _ in range(n)]
    if not (len(audio_list) == len(video_list) == len(table_rows) == n):
        raise ValueError(f"write_store: {n} ids but {len(audio_list)} audio, {len(video_list)} video, "
                         f"{len(table_rows)} table rows")
    with StoreWriter(path, attrs, dtypes=_infer_dtypes(attrs, audio_list, video_list),
                     dims=_infer_dims(audio_list, video_list)) as w:
        for vid, a, v, row in zip(video_ids, audio_list, video_list, table_rows, strict=True):
            w.append(vid, a, v, row)
    return Path(path)


def _infer_dtypes(attrs, audio_list, video_list) -> dict[str, str]:
    out = {}
    for m, arrays in (("audio", audio_list), ("video", video_list)):
        declared = attrs.get(m, {}).get("dtype")
        seen = next((np.asarray(a).dtype for a in arrays if a is not None and len(a)), None)
        out[m] = declared or (seen.name if seen is not None else "float32")
    return out


def _infer_dims(audio_list, video_list) -> dict[str, int]:
    out = {}
    for m, arrays in (("audio", audio_list), ("video", video_list)):
        seen = next((np.asarray(a).shape[1] for a in arrays if a is not None and np.ndim(a) == 2), None)
        if seen is not None:
            out[m] = seen
    return out


def _write_table(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(TABLE_COLUMNS)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in TABLE_COLUMNS])


def _cell(v: Any) -> str:
    # Names (ids, paths, class names) are written as they are: the csv module quotes a cell with a tab or a quote,
    # and a newline in a name is refused when it is appended. Only numbers are formatted here.
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    return str(v)


def check_table_name(name: str, what: str) -> None:
    """Refuse a line break in a name: many tools read these tables a line at a time."""
    if "\n" in name or "\r" in name:
        raise ValueError(f"{what} {name!r} contains a line break; rename the file (tables keep one video per line)")



# --------------------------------------------------------------------------------------------------
# Reading


class FeatureStore:
    """Read-only view of a complete store.

    ``read(modality)`` loads whole arrays (fine for UCF-sized data); ``get(modality, i)`` reads only the
    chunks of video ``i`` (an index or a video id).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"feature store {self.path} does not exist; run the extract rule first")
        try:
            self.group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        except Exception as err:  # any open failure means the same thing to the user
            raise IncompleteStoreError(f"{self.path} is not a readable Zarr v3 group ({err}); delete it and "
                                       "rerun extraction (snakemake --rerun-incomplete)") from err
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        if self.attrs.get("complete") is not True:
            raise IncompleteStoreError(
                f"{self.path} is incomplete (no 'complete: true' attribute: its writer did not finish); "
                "rerun with snakemake --rerun-incomplete, or delete it and rerun extraction")
        if self.attrs.get("schema") != SCHEMA:
            raise ValueError(f"{self.path}: schema {self.attrs.get('schema')!r}, expected {SCHEMA!r}")
        n = int(self.attrs["n_videos"])
        self.video_ids: list[str] = [str(x) for x in self.group["video_ids"][:]] if n else []
        self.table = _read_table(sidecar_path(self.path))
        if [r["video_id"] for r in self.table] != self.video_ids:
            raise ValueError(f"{sidecar_path(self.path)} does not list the videos of {self.path} in store order; "
                             "the sidecar was edited or belongs to another store: rerun extraction")
        self.streams = store_streams(self.attrs)
        self._offsets = {m: self.group[f"{m}/offsets"][:] for m in self.streams}
        self._index = {v: i for i, v in enumerate(self.video_ids)}
        for m in self.streams:
            assert len(self._offsets[m]) == n + 1, f"{self.path}: {m}/offsets has wrong length"

    def __len__(self) -> int:
        return len(self.video_ids)

    def values(self, modality: str) -> zarr.Array:
        """The lazy Zarr array (for streaming readers)."""
        return self.group[f"{self._check(modality)}/values"]

    def offsets(self, modality: str) -> np.ndarray:
        return self._offsets[self._check(modality)]

    def _check(self, m: str) -> str:
        _check_modality(m)
        if m not in self.streams:
            raise ValueError(f"{self.path} holds no {m} features (its streams: {list(self.streams)}); add {m} to "
                             "extract.streams and re-extract, or train on the features it has "
                             "(methods.<name>.features)")
        return m

    def read(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(values [N, D], offsets [n + 1]) fully loaded."""
        return self.values(modality)[:], self.offsets(modality).copy()

    def get(self, modality: str, i: int | str) -> np.ndarray:
        i = self.index_of(i) if isinstance(i, str) else int(i)
        off = self.offsets(modality)
        return self.values(modality)[int(off[i]):int(off[i + 1])]

    def index_of(self, video_id: str) -> int:
        try:
            return self._index[video_id]
        except KeyError:
            raise KeyError(f"video {video_id!r} is not in {self.path}") from None


def _check_modality(m: str) -> str:
    if m not in STREAMS:
        raise ValueError(f"modality must be one of {STREAMS}, got {m!r}")
    return m


def _read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"sidecar table {path} is missing; it is written with the store: rerun extraction")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        for c in _INT_COLUMNS:
            r[c] = int(r[c]) if r.get(c) else None
        for c in _FLOAT_COLUMNS:
            r[c] = float(r[c]) if r.get(c) else None
        for c in ("n_audio", "n_video", "n_clip", "n_clap"):
            r[c] = r[c] or 0
    return rows


# --------------------------------------------------------------------------------------------------
# Assembling shards


# Settings that change how fast a shard ran, or on what, but not what its features are: the device and what follows
# from it (the network's memory layout, TF32, which only a GPU has, the decoder processes), and the per-shard
# bookkeeping. Shards may differ in these (one on a GPU node, one on a CPU node); the assembled store lists what each
# was. Every other attribute (weights and their sha256, preset, dtypes, decoding) must agree.
_PER_SHARD_ATTRS = {"n_videos", "created_utc", "versions", "complete", "device", "devices", "shards", "decoders",
                    "shard_settings"}
DEVICE_DEPENDENT_KEYS = {"device", "memory_format", "allow_tf32", "decoders"}
_BOOKKEEPING = _PER_SHARD_ATTRS - DEVICE_DEPENDENT_KEYS


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _device_dependent(key: str) -> bool:
    return key.split(".")[0] in _PER_SHARD_ATTRS or key.split(".")[-1] in DEVICE_DEPENDENT_KEYS


def check_shard_settings(shards: Sequence[FeatureStore]) -> dict[str, list]:
    """Raise ValueError naming both shards and the setting when two shards were extracted differently; return the
    device-dependent settings that do differ, as {setting: [value of each shard]}."""
    first = _flatten(shards[0].attrs)
    varied: dict[str, list] = {}
    for s in shards[1:]:
        theirs = _flatten(s.attrs)
        for key in sorted(set(first) | set(theirs)):
            a, b = first.get(key), theirs.get(key)
            if a == b:
                continue
            if not _device_dependent(key):
                raise ValueError(f"shards {shards[0].path} and {s.path} were extracted with different settings: "
                                 f"{key} is {a!r} in the first and {b!r} in the second; re-extract one of them "
                                 "with the other's config")
            if key.split(".")[0] not in _BOOKKEEPING:
                varied[key] = None
    return {k: [_flatten(s.attrs).get(k) for s in shards] for k in varied}


def assemble(shard_paths: Sequence[str | Path], out_path: str | Path,
             expected_ids: Sequence[str] | None = None, block_rows: int = 1 << 13) -> Path:
    """Concatenate shard stores into one, streaming ``block_rows`` rows at a time.

    Videos keep shard order then in-shard order. Every video must occur exactly once across shards
    (and, with ``expected_ids``, every expected id exactly once and nothing else). Shards must have been extracted
    with the same settings, except those that depend on the device (:data:`DEVICE_DEPENDENT_KEYS`); the assembled
    store keeps the first shard's values of those, lists every shard's in ``shard_settings`` and the devices used in
    ``devices``.
    """
    if not shard_paths:
        raise ValueError("assemble: no shard stores given")
    shards = [FeatureStore(p) for p in shard_paths]
    first = shards[0]
    common = {k: v for k, v in first.attrs.items() if k not in _PER_SHARD_ATTRS}
    varied = check_shard_settings(shards)
    _check_exactly_once(shards, expected_ids)

    dtypes = {m: first.values(m).dtype.name for m in first.streams}
    dims = {m: first.values(m).shape[1] for m in first.streams}
    devices = sorted({str(d) for s in shards for d in s.attrs.get("devices", [s.attrs.get("device")]) if d})
    attrs = {**common, "shards": len(shards), "devices": devices}
    if varied:
        attrs["shard_settings"] = {"shards": [str(s.path) for s in shards], **varied}
    with StoreWriter(out_path, attrs, dtypes=dtypes, dims=dims) as w:
        for s in shards:
            for m in first.streams:  # every shard has these (check_shard_settings compared `streams`)
                _copy_values(s, m, w.writers[m], block_rows)
            for row in s.table:
                w.table.append(dict(row))
                w._ids.add(row["video_id"])
        log.info("assembled %d shards into %s", len(shards), out_path)
    return Path(out_path)


def _copy_values(shard: FeatureStore, m: str, writer: _RaggedWriter, block_rows: int) -> None:
    """Append one shard's rows and offsets to ``writer`` without loading the shard."""
    src, off = shard.values(m), shard.offsets(m)
    base = writer.offsets[-1]  # rows appended so far (written + pending)
    for start in range(0, int(off[-1]), block_rows):
        block = src[start:min(start + block_rows, int(off[-1]))]
        writer.pending.append(block)
        writer.n_pending += len(block)
        if writer.n_pending >= writer.rows:
            writer._flush(whole_chunks_only=True)
    writer.offsets.extend((base + off[1:]).tolist())


def _check_exactly_once(shards: Sequence[FeatureStore], expected_ids: Sequence[str] | None) -> None:
    where: dict[str, Path] = {}
    for s in shards:
        for vid in s.video_ids:
            if vid in where:
                raise ValueError(f"video {vid!r} is in two shards: {where[vid]} and {s.path}")
            where[vid] = s.path
    if expected_ids is not None:
        expected = list(expected_ids)
        if len(set(expected)) != len(expected):
            raise ValueError("assemble: expected_ids contains duplicates")
        missing = [v for v in expected if v not in where]
        extra = sorted(set(where) - set(expected))
        if missing or extra:
            raise ValueError(f"shards do not hold exactly the expected videos: {len(missing)} missing "
                             f"(e.g. {missing[:5]}), {len(extra)} unexpected (e.g. {extra[:5]})")
