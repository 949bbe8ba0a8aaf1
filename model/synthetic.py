"""Synthetic audio-visual features with planted class structure (tests, benchmarks, smoke runs).

Each class c has a low-dimensional latent code z_c; its word vector w_c is a fixed random linear
map of z_c (unit-normalised) and its audio and video token means are other fixed linear maps of
z_c. With fewer latent dimensions than seen classes, unseen codes lie in the span of the seen ones,
so a model that learns the feature -> word-vector relation on seen classes can recognise unseen
classes, which is exactly what a GZSL learning test needs. Audio is quantised to uint8 like post-processed VGGish; video is non-negative like
C3D fc7 after ReLU. Sequence lengths vary per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.data import SplitData, split_from_sequences


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
