"""Peak memory of importing released features (TCAF pickles -> feature store) as the release grows.

    python benchmarks/import_memory.py                      # ~1 min on 2 CPU cores, ~1.7 GB of temp disk
    python benchmarks/import_memory.py --classes 2 4 8 16 32 64 --videos-per-class 200

The release grows the way the real ones differ (UCF: 48 classes, VGGSound: 271): the size of one class file
is fixed (``--videos-per-class`` videos, each with ``--video-rows`` float32 C3D rows and ``--audio-rows``
uint8 VGGish rows, as in TCAF's pickles) and the number of class files grows. The pickles are written once
(protocol 4, as the release); then, for each prefix of 2, 4, ... classes, a fresh Python process runs
``extractors.released.import_released`` (what the import_released_features rule calls) and reports its peak
resident set size from the moment its imports are done (the kernel's peak mark is reset there); the RSS at
that moment is subtracted, leaving what importing costs.

"Flat" means the peak does not grow with the release: the import holds one class (its audio and video files)
at a time, so only per-video metadata grows. The figure of merit is the added memory per MB of added
features (1 or more if the release were loaded whole, as the official loader does; flat: below 0.1). The
constant part is about two class files' worth (the bytes read and the arrays unpickled from them).
Writes benchmarks/results/import_memory.json.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info
from memory_common import parse_args, remove_store, run_probe, write_report

SPLIT = "stage_1_train"

# A fresh process: import the module, reset the kernel's peak-RSS mark (so the imports' own transient peak
# does not hide the import's), optionally run an import, print the RSS before it and the peak (KiB, Linux).
_PROBE = """
import sys
sys.path.insert(0, {repo!r})
from extractors.released import import_released

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
before = status("VmRSS")
if sys.argv[1]:
    import_released(sys.argv[1], sys.argv[2], dataset="demo", splits_dir=sys.argv[3])
print(before, status("VmHWM"))
"""


def write_release(folder: Path, n_classes: int, per_class: int, video_rows: int, audio_rows: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = [f"class{c:03d}" for c in range(n_classes)]
    for modality in ("audio", "video"):
        (folder / modality / SPLIT).mkdir(parents=True)
    for name in names:
        ids = [f"{name}_v{v:05d}" for v in range(per_class)]
        audio = [rng.integers(0, 256, (audio_rows, 128), dtype=np.uint8) for _ in ids]
        video = [np.maximum(rng.standard_normal((video_rows, 4096), dtype=np.float32), 0) for _ in ids]
        for modality, feats in (("audio", audio), ("video", video)):
            blob = {"features": feats, "video_names": [np.bytes_(i.encode()) for i in ids], "fps": [25] * len(ids)}
            with (folder / modality / SPLIT / f"{name}.pkl").open("wb") as fh:
                pickle.dump(blob, fh, protocol=4)
    return names


def write_splits(folder: Path, names: list[str], per_class: int) -> None:
    """classes.tsv and the split CSVs the import counts against (every video listed in stage_1_train)."""
    from data_splits.common import SPLIT_NAMES
    from data_splits.io import ClassInfo, SplitRow, write_classes, write_split

    folder.mkdir(parents=True)
    write_classes(folder / "classes.tsv", [ClassInfo(i, n, n) for i, n in enumerate(names)])
    rows = [SplitRow(f"{n}_v{v:05d}", n, i) for i, n in enumerate(names) for v in range(per_class)]
    for split in SPLIT_NAMES:
        write_split(folder / f"{split}.csv", rows if split == SPLIT else [])


def prefix_release(full: Path, out: Path, names: list[str]) -> Path:
    """A release of the first classes only, as symbolic links (no copy)."""
    for modality in ("audio", "video"):
        (out / modality / SPLIT).mkdir(parents=True)
        for name in names:
            os.symlink(full / modality / SPLIT / f"{name}.pkl", out / modality / SPLIT / f"{name}.pkl")
    return out


def peak_rss_mb(release: Path | None, store: Path | None, splits: Path | None) -> tuple[float, float]:
    """(RSS after the imports, peak RSS from then to the end) of a fresh process, in MB."""
    before, peak = run_probe(_PROBE, [str(release or ""), str(store or ""), str(splits or "")], "import", 2)
    return before, peak


def main() -> None:
    args = parse_args(__doc__, ("--classes", [2, 4, 8, 16, 32]), ("--videos-per-class", 200), "import_memory.json")
    machine = machine_info()

    results = []
    with tempfile.TemporaryDirectory(prefix="avgzsl-import-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        names = write_release(root / "release", max(args.classes), args.videos_per_class, args.video_rows,
                              args.audio_rows)
        write_splits(root / "splits", names, args.videos_per_class)
        class_mb = args.videos_per_class * (args.video_rows * 4096 * 4 + args.audio_rows * 128) / 2**20
        print(f"{len(names)} classes of {args.videos_per_class} videos: {class_mb:.1f} MB of features each, "
              f"written in {time.perf_counter() - t0:.0f} s")
        _, baseline = peak_rss_mb(None, None, None)
        print(f"RSS after the imports: {baseline:.0f} MB")
        for n in args.classes:
            release = prefix_release(root / "release", root / f"release-{n}", names[:n])
            store = root / f"store-{n}.zarr"
            t0 = time.perf_counter()
            _, peak = peak_rss_mb(release, store, root / "splits")
            seconds = time.perf_counter() - t0
            results.append({"classes": n, "videos": n * args.videos_per_class, "feature_mb": round(n * class_mb, 1),
                            "peak_rss_mb": round(peak, 1), "import_rss_mb": round(peak - baseline, 1),
                            "seconds": round(seconds, 2), "mb_per_s": round(n * class_mb / seconds, 1)})
            print(f"{n:4d} classes ({n * class_mb:7.0f} MB of features): peak RSS {peak:6.0f} MB "
                  f"(+{peak - baseline:.0f} MB for the import), {seconds:.1f} s")
            remove_store(store)

    head = {
        "benchmark": "import_memory",
        "what": "peak RSS of extractors.released.import_released in a fresh process, fixed class-file size, "
                "growing class count",
        "videos_per_class": args.videos_per_class, "video_rows_per_video": args.video_rows,
        "audio_rows_per_video": args.audio_rows, "class_file_mb": round(class_mb, 1),
        "rss_after_imports_mb": round(baseline, 1),
    }
    write_report(head, results, "import_rss_mb", machine, args.out, "import memory")


if __name__ == "__main__":
    main()
