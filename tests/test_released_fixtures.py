"""Builders of small files in the two released feature layouts (no tests here).

The files are laid out from the official mapping lists (``<DS>/mapping/cls_audio.json`` in the official
lists' folder), which name, per split folder and class, the videos of each released file in release
order, exactly as the official splitting script consumed them: so the extra classes of UCF's
``stage_2_test_unseen`` folder, the repeats of stage-1 videos under ``stage_2_train`` and ActivityNet's
unsorted lists are all there. Features are small random arrays seeded by the video id, so a video that
appears in several folders has the same features in each.
"""

from __future__ import annotations

import json
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Where the official scripts put the features of one dataset, relative to the unpacked archive.
ARCHIVE = {"tcaf": "avgzsl_benchmark_non_averaged_datasets", "avca": "avgzsl_benchmark_datasets"}


def features_of(video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Temporal features of a video: VGGish codes uint8 [T_a, 128], C3D float32 [T_v, 4096] (>= 0)."""
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    t_a, t_v = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    audio = rng.integers(0, 256, (t_a, 128), dtype=np.uint8)
    video = np.maximum(rng.standard_normal((t_v, 4096), dtype=np.float32), 0)
    return audio, video


def averaged_features_of(video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """AVCA's averages: float64 mean of the codes [128], float32 mean of the C3D rows [4096]."""
    audio, video = features_of(video_id)
    return audio.astype(np.float64).mean(0), video.mean(0)


def official_mapping(official_dir: Path, folder: str) -> dict[str, list[str]]:
    """{'/avgzsl_benchmark_datasets/<DS>/features/cls_features/audio/<split>/<Class>.h5': [video ids]}."""
    return json.loads((official_dir / folder / "mapping" / "cls_audio.json").read_text())


def write_released(
    root: Path,
    official_dir: Path,
    folder: str,
    *,
    layout: str = "tcaf",
    method: str | None = None,
    per_class: int | None = 3,
    keep: Callable[[str, str], bool] = lambda split, cls: True,
    full_lists: tuple[str, ...] = (),
) -> Path:
    """Write released files under ``root`` as the archives unpack; returns the dataset folder
    (``root/<archive>/<DS>``). ``per_class`` videos per file (None: all; classes in ``full_lists`` keep
    all), ``keep(split, class)`` selects files; ``method`` overrides the feature-method folder name
    (TCAF: ``cls_features_no_averaged`` as the official script writes it, or ``cls_features_non_averaged``
    as its configs read it)."""
    import h5py

    method = method or ("cls_features_no_averaged" if layout == "tcaf" else "cls_features")
    for key, videos in official_mapping(official_dir, folder).items():
        *_, split, file_name = key.split("/")
        cls = file_name.rsplit(".", 1)[0]
        if not keep(split, cls):
            continue
        if per_class is not None and cls not in full_lists:
            videos = videos[:per_class]
        for modality in ("audio", "video"):
            out = root / ARCHIVE[layout] / folder / "features" / method / modality / split
            out.mkdir(parents=True, exist_ok=True)
            pick = 0 if modality == "audio" else 1
            if layout == "tcaf":
                blob = {
                    "features": [features_of(v)[pick] for v in videos],
                    "video_names": [np.bytes_(v.encode()) for v in videos],
                    "fps": [25] * len(videos),
                }
                with (out / f"{cls}.pkl").open("wb") as fh:
                    pickle.dump(blob, fh, protocol=4)  # Python 3.8's default, which the release was written with
            else:
                data = np.stack([averaged_features_of(v)[pick] for v in videos])
                with h5py.File(out / f"{cls}.h5", "w") as hf:
                    hf.create_dataset("data", data=data)
                    hf.create_dataset("video_urls", data=videos, dtype=h5py.special_dtype(vlen=str))
    return root / ARCHIVE[layout] / folder


def write_pickle(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return path


def read_pickle(path: Path) -> dict:
    """A test's own written file, read back to build variations of it (trusted: the test wrote it)."""
    with path.open("rb") as fh:
        return pickle.load(fh)
