"""Extraction of the demo dataset through 1, 2, 4, ... local shards: the speed-up curve.

    python benchmarks/shard_speedup.py                   # 1 and 2 shards on 2 cores, 3 runs each: ~15 min
    python benchmarks/shard_speedup.py --shards 1 2 4 8 --classes 12 --videos-per-class 6

Generates a demo dataset (the workflow's own demo, manifest and all) once, then times the extraction
stage alone - ``snakemake results/features/demo/features.tsv`` (all shards plus the assembling job) - for
each shard count, from scratch, with ``--cores`` = this machine's cores. Each shard job gets
cores / shards threads (at least 1), so that shards run side by side instead of queueing for threads.
Each shard count runs ``--repeats`` times (default 3), the counts interleaved in every round; the JSON has
every run, the median and the spread (min, max) per count, and speed-up = median time(1 shard) / median
time(n shards), with the range of the per-round ratios.

By default the counts go up to the cores this process may use: with more shards than cores the shards only
queue for the same cores, so such points say nothing about scaling (they are marked ``oversubscribed``). On a
2-core machine that leaves 1 and 2 shards. The machine (CPU model, cores, load before and after) is recorded,
and a run on a busy machine says so: its figures are not to be published.

On a machine with few cores the curve mainly shows the per-shard overhead (a Python process that
imports torch and builds both networks) against the gain from overlapping one shard's decoding with
another's network passes; on a cluster each shard is a job on its own GPU, so the stage time is that of
the slowest shard plus queueing. Writes benchmarks/results/shard_speedup.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import finish_machine_info, machine_info, spread, usable_cores

RESULTS = REPO / "benchmarks" / "results"
FEATURES = "results/features/demo/features.tsv"


def snakemake(workdir: Path, config: Path, cores: int, *args: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config" / "config.yaml"), str(config),
           "--profile", str(REPO / "profiles" / "local"), "--cores", str(cores), *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def default_shards(cores: int) -> list[int]:
    """1, 2, 4, ... up to the usable cores (at least 1 and 2)."""
    counts = [1, 2]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    return counts


def main() -> None:
    cores = usable_cores()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, nargs="+", default=None,
                    help=f"shard counts (default: 1, 2, 4, ... up to the usable cores: {default_shards(cores)})")
    ap.add_argument("--classes", type=int, default=6, help="demo classes (config/config.yaml has 12)")
    ap.add_argument("--videos-per-class", type=int, default=4, help="(config/config.yaml has 6)")
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--repeats", "--repeat", type=int, default=3,
                    help="runs per shard count, interleaved; the median counts, min and max give the spread")
    ap.add_argument("--out", type=Path, default=RESULTS / "shard_speedup.json")
    args = ap.parse_args()
    shards = args.shards or default_shards(cores)
    machine = machine_info()

    with tempfile.TemporaryDirectory(prefix="avgzsl-shards-") as tmp:
        root = Path(tmp)
        config = root / "bench.json"
        config.write_text(json.dumps({"demo": {
            "n_classes": args.classes, "videos_per_class": args.videos_per_class, "duration_s": args.duration_s,
            "n_val_unseen": 1, "n_test_unseen": 1}}))
        base = root / "base"
        base.mkdir()
        snakemake(base, config, cores, "results/manifest/demo.tsv")
        from extractors.manifest import read_manifest

        rows = read_manifest(base / "results/manifest/demo.tsv")
        n_ok = sum(r.status == "ok" for r in rows)
        print(f"demo: {len(rows)} videos ({n_ok} ok), {args.duration_s:g} s each; {cores} usable cores "
              f"({machine['cpu_model']})")
        if any(n > cores for n in shards):
            print(f"note: more shards than the {cores} usable cores only queue for them; those points are marked "
                  "oversubscribed and say nothing about scaling")

        times: dict[int, list[float]] = {n: [] for n in shards}
        for rep in range(args.repeats):
            for n in shards:
                threads = max(1, cores // n)
                work = root / f"shards-{n}"
                # Everything up to the manifest is shared: copy it (with Snakemake's metadata, so nothing
                # upstream is considered outdated) instead of regenerating it.
                shutil.copytree(base, work, symlinks=True)
                seconds = snakemake(work, config, cores, FEATURES, "--set-scatter", f"extract={n}",
                                    "--set-threads", f"extract_shard={threads}")
                times[n].append(seconds)
                print(f"run {rep + 1}/{args.repeats}: {n} shard(s) x {threads} thread(s): {seconds:6.1f} s", flush=True)
                shutil.rmtree(work)

    t1 = times.get(1)
    results = []
    for n, t in times.items():
        r = {"shards": n, "threads_per_shard": max(1, cores // n), "oversubscribed": n > cores,
             "seconds": spread(t, 2)}
        if t1:
            r["speedup"] = round(statistics.median(t1) / statistics.median(t), 3)
            r["speedup_per_round"] = spread([a / b for a, b in zip(t1, t, strict=True)], 3)
        results.append(r)
    report = {
        "benchmark": "shard_speedup",
        "command": "python benchmarks/shard_speedup.py" + (f" --shards {' '.join(map(str, shards))}" if args.shards else "")
                   + (f" --classes {args.classes}" if args.classes != 6 else "")
                   + (f" --videos-per-class {args.videos_per_class}" if args.videos_per_class != 4 else "")
                   + (f" --duration-s {args.duration_s:g}" if args.duration_s != 3.0 else "")
                   + (f" --repeats {args.repeats}" if args.repeats != 3 else ""),
        "what": "wall time of the extraction stage (shards + assembly) of a demo dataset, local executor",
        "videos": len(rows), "videos_ok": n_ok, "duration_s": args.duration_s,
        "repeats": args.repeats,
        "statistic": "median over the runs (min, max and every run in `seconds`); speed-up = median(1 shard) / "
                     "median(n shards), speedup_per_round = the same ratio within each round",
        "results": results,
        "machine": finish_machine_info(machine, own_processes=cores),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("speed-up (median, per-round range): " + ", ".join(
        f"{r['shards']} -> {r['speedup']}x [{r['speedup_per_round']['min']}-{r['speedup_per_round']['max']}]"
        + (" (oversubscribed)" if r["oversubscribed"] else "") for r in results if "speedup" in r) + f"  -> {args.out}")


if __name__ == "__main__":
    main()
