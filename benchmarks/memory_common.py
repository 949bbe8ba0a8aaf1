"""Shared by the memory benchmarks (import_memory.py, assemble_memory.py): a measurement in a fresh Python
process, the command line, and the report of how the peak grows with the data.

Each benchmark measures one job at growing data sizes with a fixed file size; the figure of merit is the added
memory per MB of added features: 1 or more when the data is loaded whole, near 0 when the job streams it.
"Flat" is below a tenth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_common import finish_machine_info

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FLAT_SLOPE = 0.1


def run_probe(probe: str, argv: list[str], what: str, count: int) -> list[float]:
    """Runs ``probe`` (a script template; ``{repo}`` becomes the repository root) in a fresh Python with
    ``argv``, and returns the last ``count`` numbers it prints (KiB, as Linux reports them) in MB."""
    code = probe.format(repo=str(REPO))
    res = subprocess.run([sys.executable, "-c", code, *argv], check=False, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{res.stderr[-3000:]}")
    return [int(x) / 1024 for x in res.stdout.split()[-count:]]


def parse_args(doc: str, sizes: tuple[str, list[int]], per_file: tuple[str, int], out: str) -> argparse.Namespace:
    """The command line of a memory benchmark: ``sizes`` (the option listing the measured file counts, and its
    default), ``per_file`` (the option of the videos per file, and its default), the rows per video of the
    synthetic features, and ``--out`` (default ``benchmarks/results/<out>``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument(sizes[0], type=int, nargs="+", default=sizes[1])
    ap.add_argument(per_file[0], type=int, default=per_file[1])
    ap.add_argument("--video-rows", type=int, default=8, help="C3D rows per video (a 5 s clip at 0.64 s hop)")
    ap.add_argument("--audio-rows", type=int, default=5, help="VGGish rows per video (0.96 s hop)")
    ap.add_argument("--out", type=Path, default=RESULTS / out)
    return ap.parse_args()


def remove_store(store: Path) -> None:
    """A measured job's output store and its sidecar table: the temp disk holds the inputs plus one output."""
    shutil.rmtree(store, ignore_errors=True)
    store.with_suffix(".tsv").unlink(missing_ok=True)


def write_report(head: dict, results: list[dict], rss_key: str, machine: dict, out: Path, label: str) -> dict:
    """``head`` with the results, the added memory per added MB of features (``results[*][rss_key]`` against
    ``results[*]["feature_mb"]``, first to last), whether that is flat, the machine and the date; written to
    ``out`` as JSON and summed up in one line."""
    first, last = results[0], results[-1]
    slope = (last[rss_key] - first[rss_key]) / max(last["feature_mb"] - first["feature_mb"], 1e-9)
    report = {
        **head,
        "results": results,
        "added_memory_per_added_data": round(slope, 3),
        "flat": slope < FLAT_SLOPE,
        "machine": finish_machine_info(machine),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"features {first['feature_mb']:.0f} -> {last['feature_mb']:.0f} MB, {label} "
          f"{first[rss_key]:.0f} -> {last[rss_key]:.0f} MB: {slope:.3f} MB per MB of data, "
          f"{'flat' if report['flat'] else 'NOT flat'} -> {out}")
    return report
