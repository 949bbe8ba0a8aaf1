"""Peak memory of the finishing job (assembling shard stores into the dataset's store) as the dataset grows.

    python benchmarks/assemble_memory.py                 # ~2-4 min on 2 CPU cores, ~1.5 GB of temp disk
    python benchmarks/assemble_memory.py --shards 1 2 4 8 16 32 --videos-per-shard 1000

The dataset grows the way it does on a cluster: the shard size is fixed (``--videos-per-shard``, each
video with ``--video-rows`` C3D rows in float16 and ``--audio-rows`` VGGish rows in uint8, the
pipeline's default dtypes) and the number of shards grows. Synthetic shard stores are written once with
the pipeline's own writer; then, for each prefix of 1, 2, 4, ... shards, a fresh Python process runs
``extractors.store.assemble`` (what the assemble_features rule calls) and reports its peak resident set
size. The import-only peak of the same process is measured too and subtracted, leaving what assembling
itself costs.

"Flat" means the peak does not grow with the number of videos: assemble streams shard by shard and
block by block, so only the per-video metadata (ids, offsets, the sidecar table) grows with the dataset.
The figure of merit is the added memory per MB of added features (1 or more if everything were loaded;
flat: below 0.1). The constant part scales with the size of one shard's block (at most ``block_rows``
rows of ``assemble``), not with the dataset.
Writes benchmarks/results/assemble_memory.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info
from memory_common import parse_args, remove_store, run_probe, write_report

# A fresh process: import the store module, optionally assemble, print peak RSS (Linux: KiB).
_PROBE = """
import json, resource, sys
sys.path.insert(0, {repo!r})
from extractors.store import assemble
shards = json.loads(sys.argv[1])
if shards:
    assemble(shards, sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_shards(folder: Path, n_shards: int, per_shard: int, video_rows: int, audio_rows: int) -> list[Path]:
    from extractors.store import StoreWriter

    rng = np.random.default_rng(0)
    attrs = {"dataset": "synthetic", "audio": {"dtype": "uint8"}, "video": {"dtype": "float16"}}
    paths = []
    for s in range(n_shards):
        path = folder / f"{s + 1}-of-{n_shards}.zarr"
        with StoreWriter(path, attrs) as w:
            for v in range(per_shard):
                # Post-ReLU-like features: about half zeros, as C3D fc7 and VGGish embeddings are.
                video = np.maximum(rng.standard_normal((video_rows, 4096), dtype=np.float32), 0).astype(np.float16)
                audio = rng.integers(0, 256, (audio_rows, 128), dtype=np.uint8)
                w.append(f"s{s:03d}v{v:06d}", audio, video, {"status": "ok", "duration_s": 10.0, "class_name": "c"})
        paths.append(path)
    return paths


def peak_rss_mb(shards: list[Path], out: Path | None) -> float:
    (peak,) = run_probe(_PROBE, [json.dumps([str(p) for p in shards]), str(out or "")], "assemble", 1)
    return peak


def main() -> None:
    args = parse_args(__doc__, ("--shards", [1, 2, 4, 8, 16]), ("--videos-per-shard", 1000), "assemble_memory.json")
    machine = machine_info()

    results = []
    with tempfile.TemporaryDirectory(prefix="avgzsl-assemble-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        shards = write_shards(root / "shards", max(args.shards), args.videos_per_shard, args.video_rows,
                              args.audio_rows)
        shard_mb = sum(f.stat().st_size for f in shards[0].rglob("*") if f.is_file()) / 2**20
        raw_mb = args.videos_per_shard * (args.video_rows * 4096 * 2 + args.audio_rows * 128) / 2**20
        print(f"{len(shards)} shards of {args.videos_per_shard} videos: {raw_mb:.0f} MB of features each "
              f"({shard_mb:.0f} MB on disk), written in {time.perf_counter() - t0:.0f} s")
        baseline = peak_rss_mb([], None)
        print(f"import-only peak RSS: {baseline:.0f} MB")
        for n in args.shards:
            out = root / f"assembled-{n}.zarr"
            t0 = time.perf_counter()
            peak = peak_rss_mb(shards[:n], out)
            seconds = time.perf_counter() - t0
            videos = n * args.videos_per_shard
            results.append({"shards": n, "videos": videos, "feature_mb": round(n * raw_mb, 1),
                            "peak_rss_mb": round(peak, 1), "assemble_rss_mb": round(peak - baseline, 1),
                            "seconds": round(seconds, 2)})
            print(f"{videos:7d} videos ({n * raw_mb:7.0f} MB of features): peak RSS {peak:6.0f} MB "
                  f"(+{peak - baseline:.0f} MB over imports), {seconds:.1f} s")
            remove_store(out)

    head = {
        "benchmark": "assemble_memory",
        "what": "peak RSS of extractors.store.assemble in a fresh process, fixed shard size, growing shard count",
        "videos_per_shard": args.videos_per_shard, "video_rows_per_video": args.video_rows,
        "audio_rows_per_video": args.audio_rows, "import_only_peak_rss_mb": round(baseline, 1),
    }
    write_report(head, results, "assemble_rss_mb", machine, args.out, "assembling memory")


if __name__ == "__main__":
    main()
