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

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import finish_machine_info, machine_info

RESULTS = REPO / "benchmarks" / "results"

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
    code = _PROBE.format(repo=str(REPO))
    res = subprocess.run([sys.executable, "-c", code, json.dumps([str(p) for p in shards]), str(out or "")],
                         check=False, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"assemble failed:\n{res.stderr[-3000:]}")
    return int(res.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--videos-per-shard", type=int, default=1000)
    ap.add_argument("--video-rows", type=int, default=8, help="C3D rows per video (a 5 s clip at 0.64 s hop)")
    ap.add_argument("--audio-rows", type=int, default=5, help="VGGish rows per video (0.96 s hop)")
    ap.add_argument("--out", type=Path, default=RESULTS / "assemble_memory.json")
    args = ap.parse_args()
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
            shutil.rmtree(out)  # keep the temp disk to the shards plus one assembled store
            out.with_suffix(".tsv").unlink(missing_ok=True)

    # Loading everything would make the peak grow by at least the added data (slope >= 1); streaming keeps
    # the slope near 0. Flat = less than a tenth of the added feature data shows up as added memory.
    first, last = results[0], results[-1]
    slope = (last["assemble_rss_mb"] - first["assemble_rss_mb"]) / max(last["feature_mb"] - first["feature_mb"], 1e-9)
    report = {
        "benchmark": "assemble_memory",
        "what": "peak RSS of extractors.store.assemble in a fresh process, fixed shard size, growing shard count",
        "videos_per_shard": args.videos_per_shard, "video_rows_per_video": args.video_rows,
        "audio_rows_per_video": args.audio_rows, "import_only_peak_rss_mb": round(baseline, 1),
        "results": results,
        "added_memory_per_added_data": round(slope, 3),
        "flat": slope < 0.1,
        "machine": finish_machine_info(machine),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"features {first['feature_mb']:.0f} -> {last['feature_mb']:.0f} MB, assembling memory "
          f"{first['assemble_rss_mb']:.0f} -> {last['assemble_rss_mb']:.0f} MB: {slope:.3f} MB per MB of data, "
          f"{'flat' if report['flat'] else 'NOT flat'} -> {args.out}")


if __name__ == "__main__":
    main()
