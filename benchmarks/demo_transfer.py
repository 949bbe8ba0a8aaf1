"""Zero-shot transfer on the synthetic demo: ZSL, HM, S and U (mean ± std over seeds) against chance, and the wall
time of the README's first command.

    python benchmarks/demo_transfer.py                      # ~8-15 min on 2 idle cores
    python benchmarks/demo_transfer.py --seeds 1 2 3 4 5    # more seeds, same features
    python benchmarks/demo_transfer.py --workdir /tmp/demo --reuse \\
        --variant 'epochs12={train: {epochs: 12}}'           # reuse a run's features, compare training settings
    python benchmarks/demo_transfer.py --seeds 1 2 --override '{demo: {n_classes: 4, videos_per_class: 3,
        duration_s: 1.0, n_val_unseen: 1, n_test_unseen: 1}}'  # a smoke test of the script (~2 min idle)

What it does, in one folder (a fresh temporary one unless ``--workdir``):

1. runs the README's first command on ``config/config.yaml`` as shipped - ``snakemake --cores 2`` then
   ``snakemake --report results/report.html`` (the install is not timed) - and times it, with the per-rule time
   from Snakemake's benchmark files (``--reuse`` skips this when the folder already holds a finished run);
2. if the config's seeds are not ``--seeds``, retrains and evaluates with those seeds on the SAME features
   (a ``train:`` change reruns training and evaluation only);
3. each ``--variant NAME=YAML`` (a config override, e.g. ``'{train: {epochs: 12}}'``) likewise on the same
   features, with ``--seeds``;
4. measures how much the random-weight features themselves carry (``probe``): per modality, how often each
   attribute of a class never seen is recognised by nearest attribute centroid over the other classes'
   videos, and the ZSL of a ridge regression from the pooled features to the name embeddings (trained on the
   stage-2 training classes): what a linear read-out gets from the same features, beside TCAF's figure.

Chance is 1 / (test-unseen classes) for ZSL. The machine (CPU, cores, load before and after) is recorded; a run
on a busy machine says so, and its times are not to be published (README, "Speed and scale"). Writes
benchmarks/results/demo_transfer.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import finish_machine_info, machine_info, usable_cores

RESULTS = REPO / "benchmarks" / "results"
METRICS = "results/evaluate/demo/cls/tcaf/metrics.json"
KEYS = ("ZSL", "HM", "S", "U")


def snakemake(workdir: Path, cores: int, *args: str, configfiles: list[Path] | None = None) -> float:
    """One Snakemake call in ``workdir`` (the repository's Snakefile and, unless given, its config); seconds."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), *args]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return time.perf_counter() - t0


def rule_times(workdir: Path) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per stage (summed over its jobs) from the Snakemake benchmark files of the run.

    CPU time depends little on what else runs on the machine: on a busy machine it tells what the wall time would
    be on an idle one better than the wall time does."""
    times: dict[str, dict[str, float]] = {}
    for tsv in sorted((workdir / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(workdir / "benchmarks").parts[0]
        t = times.setdefault(stage, {"wall_s": 0.0, "cpu_s": 0.0})
        with open(tsv, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                t["wall_s"] = round(t["wall_s"] + float(row["s"]), 1)
                t["cpu_s"] = round(t["cpu_s"] + float(row.get("cpu_time") or 0), 1)
    return times


def read_metrics(workdir: Path) -> dict:
    m = json.loads((workdir / METRICS).read_text())
    n_unseen = int(m["test"]["unseen_classes"])
    chance = 100.0 / n_unseen
    return {
        "mean": {k: round(m[k], 2) for k in KEYS},
        "std": {k: round(m["std"][k], 2) for k in KEYS},
        "per_seed": [{k: round(p[k], 2) for k in ("seed", *KEYS, "best_epoch")} for p in m["per_seed"]],
        "n_seeds": m["n_seeds"],
        "test_unseen_classes": n_unseen,
        "test_seen_classes": int(m["test"]["classes"]) - n_unseen,
        "zsl_chance": round(chance, 2),
        "zsl_over_chance": round(m["ZSL"] / chance, 2),
    }


# ------------------------------------------------------------------------------------------------------- probe


def _pooled_features(workdir: Path) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Mean-pooled, standardised audio and video features of every decodable listed video, and its class."""
    from extractors.store import FeatureStore

    summary = json.loads((workdir / "results/demo/demo.json").read_text())
    class_of = {v["video_id"]: v["class_name"] for v in summary["videos"] if not v["defect"]}
    store = FeatureStore(workdir / "results/features/demo/features.zarr")
    arrays = {m: store.read(m) for m in ("audio", "video")}
    pooled: dict[str, list[np.ndarray]] = {"audio": [], "video": []}
    labels = []
    for i, vid in enumerate(store.video_ids):
        spans = {m: (int(off[i]), int(off[i + 1])) for m, (_, off) in arrays.items()}
        if vid not in class_of or any(a == b for a, b in spans.values()):
            continue
        for m, (vals, _) in arrays.items():
            pooled[m].append(np.asarray(vals[spans[m][0]:spans[m][1]], dtype=np.float64).mean(0))
        labels.append(class_of[vid])
    feats = {}
    for m, rows in pooled.items():
        a = np.stack(rows)
        feats[m] = (a - a.mean(0)) / (a.std(0) + 1e-6)
    feats["audio+video"] = np.hstack([feats["audio"], feats["video"]])
    return feats, np.array(labels), summary


def probe(workdir: Path) -> dict:
    """What the random-weight features carry, read out without TCAF (see the module docstring)."""
    from data_splits.io import read_class_embeddings

    feats, labels, summary = _pooled_features(workdir)
    classes = {c["name"]: c for c in summary["classes"]}
    attributes = [k for k in summary["classes"][0] if k not in ("name", "readable_name", "role")]
    out: dict = {"videos": len(labels), "attribute_recognition_on_new_classes": {}, "ridge_zsl": {}}
    for m, x in feats.items():
        per_attr = {}
        for a in attributes:
            value = np.array([classes[n][a] for n in labels])
            hits = []
            for held in classes:  # leave one class out: its attribute values are learnt from the other classes
                train, test = labels != held, labels == held
                keys = sorted(set(value[train]))
                centroids = np.stack([x[train & (value == k)].mean(0) for k in keys])
                dist = ((x[test][:, None, :] - centroids[None]) ** 2).sum(-1)
                hits += [keys[j] == classes[held][a] for j in dist.argmin(1)]
            n_values = len({c[a] for c in classes.values()})
            per_attr[a] = {"accuracy": round(100 * float(np.mean(hits)), 1), "chance": round(100 / n_values, 1)}
        out["attribute_recognition_on_new_classes"][m] = per_attr

    emb = read_class_embeddings(workdir / "results/class_embeddings/demo.npz")
    vec = dict(zip(emb.names, emb.vectors, strict=True))
    trained = [n for n, c in classes.items() if c["role"] != "test_unseen"]
    unseen = sorted(n for n, c in classes.items() if c["role"] == "test_unseen")
    targets = np.stack([vec[n] for n in unseen])
    for m, x in feats.items():
        tr, te = np.isin(labels, trained), np.isin(labels, unseen)
        y = np.stack([vec[n] for n in labels[tr]])
        # ridge in its dual form (fewer videos than feature dimensions), regularisation scaled to the features
        gram = x[tr] @ x[tr].T
        w = x[tr].T @ np.linalg.solve(gram + 0.1 * np.trace(gram) / len(gram) * np.eye(len(gram)), y)
        pred = np.array(unseen)[np.argmax(x[te] @ w @ targets.T, axis=1)]
        out["ridge_zsl"][m] = round(100 * float(np.mean([
            np.mean(pred[labels[te] == n] == n) for n in unseen])), 1)
    out["ridge_zsl_chance"] = round(100 / len(unseen), 1)
    return out


# -------------------------------------------------------------------------------------------------------- main


def _override_file(workdir: Path, name: str, override: dict) -> Path:
    path = workdir / f"override-{name}.yaml"
    path.write_text(yaml.safe_dump(override, sort_keys=False))
    return path


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fmt(r: dict) -> str:
    m, s = r["mean"], r["std"]
    cells = "  ".join(f"{k} {m[k]:5.1f} ± {s[k]:4.1f}" for k in KEYS)
    return f"{cells}  (ZSL chance {r['zsl_chance']:.1f}, ZSL/chance {r['zsl_over_chance']:.2f}, {r['n_seeds']} seeds)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--cores", type=int, default=2, help="--cores of the timed command (the README's: 2)")
    ap.add_argument("--workdir", type=Path, default=None, help="run folder (default: a new temporary one)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --workdir: keep a finished run there instead of timing the first command again")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=YAML",
                    help="a config override to train and evaluate on the same features, e.g. "
                         "'epochs12={train: {epochs: 12}}' (repeatable)")
    ap.add_argument("--override", default=None, metavar="YAML",
                    help="a config override for every run, the first command included (a smoke test with a tiny "
                         "demo, say); its figures are then not the shipped config's")
    ap.add_argument("--no-probe", action="store_true", help="skip the read-out of the features without TCAF")
    ap.add_argument("--out", type=Path, default=RESULTS / "demo_transfer.json")
    args = ap.parse_args()
    variants = {}
    for v in args.variant:
        name, _, text = v.partition("=")
        override = yaml.safe_load(text) if text else None
        if not name or not isinstance(override, dict):
            ap.error(f"--variant {v!r}: use NAME=YAML with a mapping, e.g. 'epochs12={{train: {{epochs: 12}}}}'")
        variants[name] = override

    base = yaml.safe_load(args.override) if args.override else {}
    if not isinstance(base, dict):
        ap.error(f"--override {args.override!r}: give a YAML mapping, e.g. '{{demo: {{n_classes: 4}}}}'")
    machine = machine_info()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="demo_transfer-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = _deep_merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), base)
    first_configs = [REPO / "config" / "config.yaml", _override_file(workdir, "base", base)] if base else None
    result: dict = {"machine": machine, "workdir": str(workdir), "config": "config/config.yaml",
                    "override": base or None, "seeds": args.seeds}

    if args.reuse and (workdir / METRICS).is_file():
        # An earlier run's stage times and metrics (its wall time was not measured here).
        print(f"reusing the run in {workdir}", flush=True)
        times = rule_times(workdir)
        result["first_command"] = {"reused": True, "rule_s": times, "metrics": read_metrics(workdir),
                                   "jobs_cpu_s": round(sum(t["cpu_s"] for t in times.values()), 1)}
    else:
        print(f"the first command in {workdir} ...", flush=True)
        run_s = snakemake(workdir, args.cores, configfiles=first_configs)
        report_s = snakemake(workdir, args.cores, "--report", "results/report.html", configfiles=first_configs)
        result["first_command"] = {
            "command": f"snakemake --cores {args.cores} && snakemake --report results/report.html",
            "wall_s": round(run_s + report_s, 1), "run_s": round(run_s, 1), "report_s": round(report_s, 1),
            "rule_s": rule_times(workdir), "metrics": read_metrics(workdir),
        }
        cpu = sum(t["cpu_s"] for t in result["first_command"]["rule_s"].values())
        result["first_command"]["jobs_cpu_s"] = round(cpu, 1)
        print(f"  {run_s + report_s:.0f} s wall (run {run_s:.0f} s, report {report_s:.0f} s; jobs' CPU time "
              f"{cpu:.0f} s); "
              f"{_fmt(result['first_command']['metrics'])}", flush=True)

    configured = config.get("train", {}).get("seeds") or [config.get("train", {}).get("seed", 42)]
    runs: dict[str, dict] = {}
    for name, override in {"config": {}, **variants}.items():
        if not override and list(configured) == args.seeds and result.get("first_command"):
            runs[name] = result["first_command"]["metrics"]
        else:
            merged = _deep_merge(_deep_merge(base, override), {"train": {"seeds": args.seeds}})
            t0 = time.perf_counter()
            snakemake(workdir, args.cores, METRICS,
                      configfiles=[REPO / "config" / "config.yaml", _override_file(workdir, name, merged)])
            runs[name] = {**read_metrics(workdir), "override": merged, "train_eval_s": round(time.perf_counter() - t0, 1)}
        print(f"{name:>12}: {_fmt(runs[name])}", flush=True)
    result["runs"] = runs
    if not args.no_probe:
        result["probe"] = probe(workdir)
        p = result["probe"]
        for m, per_attr in p["attribute_recognition_on_new_classes"].items():
            cells = ", ".join(f"{a} {v['accuracy']:.0f}% (chance {v['chance']:.0f})" for a, v in per_attr.items())
            print(f"  probe {m:>11}: attributes of a class left out: {cells}; ridge ZSL {p['ridge_zsl'][m]:.0f}% "
                  f"(chance {p['ridge_zsl_chance']:.0f})", flush=True)
    # The first command keeps up to two processes busy (--cores 2).
    result["machine"] = finish_machine_info(machine, own_processes=min(args.cores, usable_cores()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
