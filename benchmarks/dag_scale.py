"""DAG construction time of the full workflow for a VGGSound-sized dataset (no decoding, no jobs run).

    python benchmarks/dag_scale.py                      # ~1-3 min on 2 CPU cores
    python benchmarks/dag_scale.py --videos 94000 --shards 94 940

Builds, in a temporary folder, what a VGGSound run sees before extraction: official-style lists for
``--videos`` synthetic videos over 276 classes, a raw folder with one (empty) file per video and a
94k-row manifest (results/manifest/vggsound.tsv, as the manifest stage writes it). Then times
``snakemake -n`` (the whole DAG: lists, manifest, every extraction shard, assembly, splits, training,
evaluation, report) for each shard count, in two states:

- ``fresh``: nothing computed yet (every job planned);
- ``resumed``: lists and manifest done, half of the shards extracted (the state after an interrupted
  cluster run), so Snakemake has to compare outputs and plan only what is missing.

The requirement is < 60 s per dry run on a 2-core machine. Wall time includes Python start-up and
importing Snakemake (~3-8 s); CPU time is recorded too, because wall time on a busy shared machine
overstates the cost. Writes benchmarks/results/dag_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import finish_machine_info, machine_info

RESULTS = REPO / "benchmarks" / "results"
SPLITS = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_train", "stage_2_test_seen",
          "stage_2_test_unseen")
N_CLASSES = 276  # VGGSound-GZSL


def make_dataset(root: Path, n_videos: int) -> tuple[Path, Path, list[tuple[str, str]]]:
    """Official-style lists, an empty raw file per video; returns (official_dir, raw_dir, videos)."""
    official = root / "official" / "VGGSound" / "class-split"
    raw = root / "raw"
    classes = [f"class {c:03d}" for c in range(N_CLASSES)]
    videos = [(f"vid{i:07d}_{(i * 7) % 300:06d}", classes[i % N_CLASSES]) for i in range(n_videos)]
    # Class roles as in the benchmark: seen, val-unseen (trained on in stage 2), test-unseen.
    seen, val_unseen, test_unseen = classes[:200], classes[200:238], classes[238:]
    roles = {"stage_1_train": seen, "stage_1_val_seen": seen, "stage_1_val_unseen": val_unseen,
             "stage_2_train": seen + val_unseen, "stage_2_test_seen": seen + val_unseen,
             "stage_2_test_unseen": test_unseen}
    (official / "cls_split").mkdir(parents=True)
    (official / "all_class.txt").write_text("\n".join(classes) + "\n")
    (official / "vggsound_w2v_class_names.csv").write_text(
        "original,manual\n" + "".join(f"{c},{c}\n" for c in classes))
    for split, names in roles.items():
        keep = set(names)
        (official / "cls_split" / f"{split}.txt").write_text("\n".join(names) + "\n")
        rows = [(v, c) for i, (v, c) in enumerate(videos) if c in keep and _split_of(i, split)]
        (official / "cls_split" / f"{split}.csv").write_text(
            "filename,label\n" + "".join(f"{v},{c}\n" for v, c in rows))
    raw.mkdir()
    for v, _ in videos:
        (raw / f"{v}.mp4").touch()
    return official.parents[1], raw, videos


def _split_of(i: int, split: str) -> bool:
    # Stage-1 train / val-seen partition the seen classes' videos; stage 2 train/test-seen likewise.
    if split in ("stage_1_train", "stage_2_train"):
        return i % 5 != 0
    if split in ("stage_1_val_seen", "stage_2_test_seen"):
        return i % 5 == 0
    return True


def write_manifest(path: Path, raw: Path, videos: list[tuple[str, str]]) -> None:
    from extractors.manifest import ManifestRow
    from extractors.manifest import write_manifest as write

    write((ManifestRow(video_id=v, path=str(raw / f"{v}.mp4"), start_s=None, end_s=None, class_name=c,
                       status="ok", duration_s=10.0, fps=25.0, width=640, height=360, has_audio=True,
                       has_video=True) for v, c in videos), path)


def snakemake_dry_run(workdir: Path, config: Path, shards: int) -> tuple[float, float, dict[str, int]]:
    """(wall seconds, CPU seconds of the snakemake process, job counts per rule)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), "--set-scatter", f"extract={shards}",
           "--profile", str(REPO / "profiles" / "local")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time is what a busy shared machine does not inflate; wall time is what the user waits.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    # "--quiet rules" prints the job-count table: "<rule>  <count>" lines.
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.MULTILINE)}
    return seconds, cpu, counts


def make_resumed(workdir: Path, shards: int) -> None:
    """Mark lists + manifest as done and extract half of the shards (empty placeholders; a dry run only
    compares modification times)."""
    prov = workdir / "results" / "official" / "vggsound" / "VGGSound" / "provenance.json"
    prov.parent.mkdir(parents=True, exist_ok=True)
    prov.write_text("{}")
    manifest = workdir / "results" / "manifest" / "vggsound.tsv"
    os.utime(manifest)  # newer than the provenance file
    shard_dir = workdir / "results" / "features" / "vggsound" / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, shards // 2 + 1):
        (shard_dir / f"{i}-of-{shards}.zarr").mkdir(exist_ok=True)
        (shard_dir / f"{i}-of-{shards}.tsv").write_text("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=94_000)
    ap.add_argument("--shards", type=int, nargs="+", default=[94, 940],
                    help="extraction shard counts to time (94 = ~1000 videos per shard)")
    ap.add_argument("--out", type=Path, default=RESULTS / "dag_scale.json")
    args = ap.parse_args()
    machine = machine_info()

    results = []
    with tempfile.TemporaryDirectory(prefix="avgzsl-dag-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        official, raw, videos = make_dataset(root, args.videos)
        print(f"dataset: {len(videos)} videos, {N_CLASSES} classes ({time.perf_counter() - t0:.1f} s to generate)")
        config = root / "vggsound.yaml"
        config.write_text(json.dumps({
            "dataset": "vggsound", "split_kind": "cls",
            "raw_videos": {"dir": str(raw)},
            "official": {"local_dir": str(official), "download": False, "verify": False},
        }))
        for shards in args.shards:
            for state in ("fresh", "resumed"):
                workdir = root / f"run-{shards}-{state}"
                workdir.mkdir()
                write_manifest(workdir / "results" / "manifest" / "vggsound.tsv", raw, videos)
                if state == "resumed":
                    make_resumed(workdir, shards)
                seconds, cpu, counts = snakemake_dry_run(workdir, config, shards)
                planned = counts.get("total", sum(counts.values()))
                results.append({"videos": len(videos), "shards": shards, "state": state, "seconds": round(seconds, 2),
                                "cpu_seconds": round(cpu, 2),
                                "jobs_planned": planned, "extract_shard_jobs": counts.get("extract_shard", 0)})
                print(f"snakemake -n  shards={shards:5d}  {state:8s}  {seconds:6.1f} s wall  {cpu:6.1f} s CPU  "
                      f"({planned} jobs, {counts.get('extract_shard', 0)} extraction shards)")

    worst = max(r["seconds"] for r in results)
    report = {
        "benchmark": "dag_scale",
        "what": "wall time of `snakemake -n` for the whole workflow, VGGSound-sized manifest",
        "requirement_s": 60,
        "worst_s": worst,
        "passes": worst < 60,
        "results": results,
        "machine": finish_machine_info(machine),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"worst {worst:.1f} s (requirement < 60 s): {'OK' if worst < 60 else 'TOO SLOW'} -> {args.out}")


if __name__ == "__main__":
    main()
