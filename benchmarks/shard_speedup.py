"""Extraction of the demo dataset through 1, 2 and 4 local shards: the speed-up curve.

    python benchmarks/shard_speedup.py                   # ~10 min on 2 CPU cores
    python benchmarks/shard_speedup.py --shards 1 2 4 8 --classes 12 --videos-per-class 6

Generates a demo dataset (the workflow's own demo, manifest and all) once, then times the extraction
stage alone - ``snakemake results/features/demo/features.tsv`` (all shards plus the assembling job) - for
each shard count, from scratch, with ``--cores`` = this machine's cores. Each shard job gets
cores / shards threads (at least 1), so that shards run side by side instead of queueing for threads;
speed-up = time(1 shard) / time(n shards).

On a machine with few cores the curve mainly shows the per-shard overhead (a Python process that
imports torch and builds both networks) against the gain from overlapping one shard's decoding with
another's network passes; on a cluster each shard is a job on its own GPU, so the stage time is that of
the slowest shard plus queueing. Writes benchmarks/results/shard_speedup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
FEATURES = "results/features/demo/features.tsv"


def snakemake(workdir: Path, config: Path, *args: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config" / "config.yaml"), str(config),
           "--profile", str(REPO / "profiles" / "local"), "--cores", str(os.cpu_count() or 1), *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--classes", type=int, default=6, help="demo classes (config/config.yaml has 12)")
    ap.add_argument("--videos-per-class", type=int, default=4, help="(config/config.yaml has 6)")
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs per shard count, interleaved; the fastest counts (others' load only adds time)")
    ap.add_argument("--out", type=Path, default=RESULTS / "shard_speedup.json")
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="avgzsl-shards-") as tmp:
        root = Path(tmp)
        config = root / "bench.json"
        config.write_text(json.dumps({"demo": {
            "n_classes": args.classes, "videos_per_class": args.videos_per_class, "duration_s": args.duration_s,
            "n_val_unseen": 1, "n_test_unseen": 1}}))
        base = root / "base"
        base.mkdir()
        snakemake(base, config, "results/manifest/demo.tsv")
        from extractors.manifest import read_manifest

        rows = read_manifest(base / "results/manifest/demo.tsv")
        n_ok = sum(r.status == "ok" for r in rows)
        print(f"demo: {len(rows)} videos ({n_ok} ok), {args.duration_s:g} s each; {cores} cores")

        times: dict[int, list[float]] = {n: [] for n in args.shards}
        for rep in range(args.repeat):
            for n in args.shards:
                threads = max(1, cores // n)
                work = root / f"shards-{n}"
                # Everything up to the manifest is shared: copy it (with Snakemake's metadata, so nothing
                # upstream is considered outdated) instead of regenerating it.
                shutil.copytree(base, work, symlinks=True)
                seconds = snakemake(work, config, FEATURES, "--set-scatter", f"extract={n}",
                                    "--set-threads", f"extract_shard={threads}")
                times[n].append(round(seconds, 2))
                print(f"run {rep + 1}: {n} shard(s) x {threads} thread(s): {seconds:6.1f} s")
                shutil.rmtree(work)
        results = [{"shards": n, "threads_per_shard": max(1, cores // n), "seconds": min(t), "runs_s": t}
                   for n, t in times.items()]

    t1 = next((r["seconds"] for r in results if r["shards"] == 1), None)
    for r in results:
        r["speedup"] = round(t1 / r["seconds"], 3) if t1 else None
    report = {
        "benchmark": "shard_speedup",
        "what": "wall time of the extraction stage (shards + assembly) of a demo dataset, local executor",
        "videos": len(rows), "videos_ok": n_ok, "duration_s": args.duration_s,
        "results": results,
        "load_average_at_end": os.getloadavg(),
        "machine": {"cpus": cores, "platform": platform.platform(), "python": platform.python_version()},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("speed-up: " + ", ".join(f"{r['shards']} -> {r['speedup']}x" for r in results) + f"  -> {args.out}")


if __name__ == "__main__":
    main()
