"""Synthetic audio-visual features with planted class structure (tests, benchmarks, smoke runs).

Each class c has a low-dimensional latent code z_c; its word vector w_c is a fixed random linear
map of z_c (unit-normalised) and its audio and video token means are other fixed linear maps of
z_c. With fewer latent dimensions than seen classes, unseen codes lie in the span of the seen ones,
so a model that learns the feature -> word-vector relation on seen classes can recognise unseen
classes, which is exactly what a GZSL learning test needs. Audio is quantised to uint8 like post-processed VGGish; video is non-negative like
C3D fc7 after ReLU. Sequence lengths vary per video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.packing import SplitData, split_from_sequences


@dataclass
class SyntheticSpec:
    n_seen: int = 6
    n_unseen: int = 3
    latent_dim: int = 3  # < n_seen so that unseen classes are combinations of seen ones
    word_dim: int = 32
    audio_dim: int = 128
    video_dim: int = 4096
    audio_len: tuple[int, int] = (6, 12)  # min, max tokens (inclusive)
    video_len: tuple[int, int] = (9, 18)
    signal: float = 1.0  # class-mean strength relative to unit noise
    seed: int = 0


class PlantedFeatures:
    """Generator of per-video features for a fixed set of classes (one random "world" per seed)."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        n_cls = spec.n_seen + spec.n_unseen
        z = rng.standard_normal((n_cls, spec.latent_dim)).astype(np.float32)
        self.codes = z / np.linalg.norm(z, axis=1, keepdims=True)
        w = self.codes @ rng.standard_normal((spec.latent_dim, spec.word_dim)).astype(np.float32)
        self.class_vectors = w / np.linalg.norm(w, axis=1, keepdims=True)
        # Features and word vectors are linear in the same code: the structure a model can transfer.
        self.audio_map = rng.standard_normal((spec.latent_dim, spec.audio_dim)).astype(np.float32)
        self.video_map = rng.standard_normal((spec.latent_dim, spec.video_dim)).astype(np.float32)
        self.unseen = np.arange(n_cls) >= spec.n_seen
        self.rng = rng

    def video(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        s, rng, z = self.spec, self.rng, self.codes[label]
        la = int(rng.integers(s.audio_len[0], s.audio_len[1] + 1))
        lv = int(rng.integers(s.video_len[0], s.video_len[1] + 1))
        a_mean = s.signal * (z @ self.audio_map)  # [128], O(1) entries
        v_mean = s.signal * (z @ self.video_map)
        audio = 128 + 30 * (a_mean + rng.standard_normal((la, s.audio_dim)))
        audio = np.clip(np.rint(audio), 0, 255).astype(np.uint8)
        video = np.maximum(v_mean + rng.standard_normal((lv, s.video_dim)), 0).astype(np.float32)
        return audio, video

    def split(
        self,
        name: str,
        per_class: int,
        classes: np.ndarray | list[int],
        *,
        device: str = "cpu",
        data_device: str = "auto",
        video_dtype: str = "float16",
    ) -> SplitData:
        """``per_class`` videos of each class in ``classes``; candidates are exactly ``classes``.

        Labels are column indices into the split's own class list (the classes in ascending order).
        """
        classes = sorted(int(c) for c in classes)
        audio, video, labels = [], [], []
        for col, c in enumerate(classes):
            for _ in range(per_class):
                a, v = self.video(c)
                audio.append(a)
                video.append(v)
                labels.append(col)
        split = split_from_sequences(
            name,
            audio,
            video,
            labels,
            self.class_vectors[classes],
            self.unseen[classes],
            device=device,
            video_dtype=video_dtype,
            data_device=data_device,
        )
        split.class_ids = classes
        return split


def write_synthetic_dataset(
    root: str | Path,
    spec: SyntheticSpec | None = None,
    *,
    n_train_classes: int | None = None,
    n_val_unseen: int = 2,
    per_class: dict[str, int] | None = None,
    n_missing: int = 1,
    random_weights: bool = True,
) -> dict[str, Path]:
    """Write a tiny dataset in the pipeline's on-disk formats: feature store, splits, class vectors.

    Classes ``0..n_train-1`` are the stage-1 seen classes, the next ``n_val_unseen`` the stage-1
    unseen (validation) classes, the rest (``spec.n_seen + spec.n_unseen`` in total) the stage-2
    unseen (test) classes. ``n_missing`` listed videos per split file have no features (as videos
    missing from a download). Returns the paths ``store``, ``splits_dir``, ``class_embeddings``.
    """
    from data_splits.io import ClassInfo, SplitRow, write_class_embeddings, write_classes, write_split
    from extractors.store import write_store

    spec = spec or SyntheticSpec()
    gen = PlantedFeatures(spec)
    n_cls = spec.n_seen + spec.n_unseen
    n_train = n_train_classes if n_train_classes is not None else spec.n_seen - n_val_unseen
    train_cls = list(range(n_train))
    val_unseen = list(range(n_train, n_train + n_val_unseen))
    test_unseen = list(range(n_train + n_val_unseen, n_cls))
    counts = {"stage_1_train": 12, "stage_1_val_seen": 3, "stage_1_val_unseen": 6, "stage_2_test_seen": 3,
              "stage_2_test_unseen": 6} | (per_class or {})
    root = Path(root)
    splits_dir = root / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    classes = [ClassInfo(c, f"Class{c:02d}", f"class {c:02d}") for c in range(n_cls)]
    write_classes(splits_dir / "classes.tsv", classes)

    ids, audio, video, table = [], [], [], []
    rows: dict[str, list] = {}
    for split, cls_list in (("stage_1_train", train_cls), ("stage_1_val_seen", train_cls),
                            ("stage_1_val_unseen", val_unseen), ("stage_2_test_seen", train_cls + val_unseen),
                            ("stage_2_test_unseen", test_unseen)):
        rows[split] = []
        for c in cls_list:
            for k in range(counts[split]):
                vid = f"{split}_{c:02d}_{k:03d}"
                rows[split].append(SplitRow(vid, classes[c].name, c))
                a, v = gen.video(c)
                ids.append(vid)
                audio.append(a)
                video.append(v)
                table.append({"video_id": vid, "status": "ok", "n_audio": len(a), "n_video": len(v),
                              "class_name": classes[c].name})
        for k in range(n_missing):  # listed in the split, never extracted
            c = cls_list[k % len(cls_list)]
            rows[split].append(SplitRow(f"{split}_missing_{k}", classes[c].name, c))
    rows["stage_2_train"] = rows["stage_1_train"] + rows["stage_1_val_seen"] + rows["stage_1_val_unseen"]
    for split, r in rows.items():
        write_split(splits_dir / f"{split}.csv", r)
    (splits_dir / "seen_unseen.json").write_text(json.dumps({
        "stage_1": {"seen": train_cls, "unseen": val_unseen},
        "stage_2": {"seen": train_cls + val_unseen, "unseen": test_unseen},
    }))
    weights = {"source": "random" if random_weights else "synthetic", "sha256": None, "random": random_weights,
               "seed": spec.seed}
    attrs = {"dataset": "synthetic", "audio": {"extractor": "vggish", "weights": weights, "dtype": "uint8"},
             "video": {"extractor": "c3d", "weights": weights, "dtype": "float16"}}
    store = root / "features.zarr"
    write_store(store, ids, audio, [v.astype(np.float16) for v in video], attrs, table)
    emb = root / "class_embeddings.npz"
    write_class_embeddings(emb, [c.name for c in classes], [c.readable_name for c in classes], gen.class_vectors,
                           {"backend": "synthetic", "dim": spec.word_dim})
    return {"store": store, "splits_dir": splits_dir, "class_embeddings": emb}
