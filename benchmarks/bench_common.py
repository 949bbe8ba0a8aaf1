"""Shared by the benchmark scripts: the machine a figure was measured on, and the spread of repeated runs.

A figure is only as good as the machine was quiet: every script records the CPU model, the cores it could use,
how busy the CPU was just before the start and the load average before and after, and flags a run whose machine
was busy. Figures from a busy machine are
not to be published (README, "Speed and scale").
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def cpu_busy_fraction(seconds: float = 2.0) -> float | None:
    """Share of all cores' time spent busy (not idle, not waiting for I/O) over the next ``seconds`` (/proc/stat).

    Taken before a benchmark starts, it is what other processes use: unlike the load average, it is not still
    counting a run that has just finished.
    """
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (idle1 - idle0) / max(1, total1 - total0), 3)


def machine_info() -> dict:
    """Where the figures come from; call at the start of a run (``finish_machine_info`` adds the end)."""
    import torch

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_busy_fraction_before_start": cpu_busy_fraction(),
        "load_average_1_5_15_min_at_start": load_average(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def finish_machine_info(info: dict, own_processes: int = 1) -> dict:
    """Adds the load at the end and ``busy``: whether other work shared the machine during the run.

    ``own_processes``: how many runnable processes the benchmark itself keeps busy (its own load). The machine
    counts as busy when other processes used a tenth of its cores just before the start, or when the 1-minute
    load at the end exceeds the benchmark's own by half a core.
    """
    end = load_average()
    info["load_average_1_5_15_min_at_end"] = end
    before = info.get("cpu_busy_fraction_before_start")
    reasons = []
    if before is not None and before >= 0.1:
        reasons.append(f"{100 * before:.0f} % of the CPU busy before the start")
    if end is not None and end[0] - min(own_processes, info["usable_cores"]) >= 0.5:
        reasons.append(f"load average {end[0]} at the end (the benchmark's own: {own_processes})")
    info["busy"] = bool(reasons) if (before is not None or end is not None) else None
    if reasons:
        print(f"WARNING: the machine was busy ({'; '.join(reasons)}; {info['usable_cores']} cores): do not publish "
              "these figures; rerun on an idle machine.", flush=True)
    return info


def spread(values: list[float], digits: int = 4) -> dict:
    """Median, minimum, maximum and relative spread ((max - min) / median) of repeated measurements."""
    if not values:
        return {"runs": [], "median": None, "min": None, "max": None, "spread_pct": None}
    med = statistics.median(values)
    return {
        "runs": [round(v, digits) for v in values],
        "median": round(med, digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "spread_pct": round(100 * (max(values) - min(values)) / med, 1) if med else None,
    }
