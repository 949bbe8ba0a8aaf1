"""Decode-only throughput with 1, 2, ... decoder processes: the ceiling extraction cannot beat.

    python benchmarks/decode_throughput.py                      # ~2 min on 2 CPU cores
    python benchmarks/decode_throughput.py --quick              # ~30 s
    python benchmarks/decode_throughput.py --decoders 1,2,4,8   # on a bigger machine

"Decode-only" is what extraction's decoders do to a video, without any network: the audio decoded and
resampled to 16 kHz, the frames decoded on the 25 fps grid in clip batches and brought to C3D's input size by
the preset (``paper``: torch bilinear, ``reference``: Pillow with the colour inversion of UCF), through the
extractor's own decoder pool (``extractors.pool.decode_throughput``, the pool ``extract_shard`` reads), so the
figures are the extraction's own ceiling. Each decoder process takes whole videos, its torch on one thread, so
N processes use N cores; 0 decodes in a thread of this process. Process start-up is reported apart
(``startup_s``).

The corpus is generated into a temporary folder: the demo's three containers and codecs (H.264/AAC mp4 at
30 fps, MPEG-4/MP3 mkv at 24 fps, VP8/Opus webm at 25 fps) in turn. Rounds interleave the decoder counts, and the speed-up of N processes over one
is taken within each round. The machine (CPU model, cores, load before and after) is recorded; a run on a
busy machine says so and its figures are not to be published.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_common import finish_machine_info, machine_info, spread, usable_cores

RESULTS = REPO / "benchmarks" / "results"


# --------------------------------------------------------------------------------------------------
# The corpus


def _write_one(job: tuple[str, int, float, int, int, int]) -> str:
    import dataclasses

    import numpy as np

    from data_splits.synthetic import SyntheticConfig, class_catalogue, write_video

    path, k, duration_s, width, height, fmt_index = job
    if Path(path).is_file():  # a corpus folder that is kept (--workdir) is written once
        return path
    fmt = SyntheticConfig().formats[fmt_index]
    if fmt.video_codec == "mpeg4" and (width > 1280 or height > 720):
        fmt = dataclasses.replace(fmt, fps=25)  # MPEG-4 part 2 is rarely used for HD: keep the mix realistic
    classes = class_catalogue()
    part = Path(path).with_name("part_" + Path(path).name)  # renamed when complete: no half-written videos
    write_video(part, classes[k % len(classes)], fmt, duration_s, width, height, np.random.default_rng(k))
    os.replace(part, path)
    return path


def corpus_jobs(folder: Path, n: int, duration_s: float, size: tuple[int, int], *, start: int = 0,
                prefix: str = "v", formats: Sequence[int] | None = None) -> list[tuple]:
    """The videos of a corpus, for :func:`write_corpus`: the demo's formats (``formats``: their indices, default
    all) in turn, video ``k`` of the corpus seeded with ``k``."""
    from data_splits.synthetic import SyntheticConfig

    all_formats = SyntheticConfig().formats
    formats = list(formats) if formats is not None else list(range(len(all_formats)))
    jobs = []
    for j in range(n):
        k = start + j
        f = formats[k % len(formats)]
        jobs.append((str(folder / f"{prefix}{k:04d}.{all_formats[f].container}"), k, duration_s, size[0], size[1], f))
    return jobs


def write_corpus(jobs: Sequence[tuple], workers: int = 1) -> list[Path]:
    """Write the videos of ``jobs`` with ``workers`` processes, in the order given (put the slowest first);
    videos already there are kept."""
    for job in jobs:
        Path(job[0]).parent.mkdir(parents=True, exist_ok=True)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            return [Path(p) for p in pool.map(_write_one, jobs)]
    return [Path(_write_one(j)) for j in jobs]


def make_corpus(folder: Path, n: int, duration_s: float, size: tuple[int, int], *, start: int = 0,
                prefix: str = "v", workers: int = 1, formats: Sequence[int] | None = None) -> list[Path]:
    """``n`` synthetic videos with sound in the demo's formats, written by ``workers`` processes."""
    return write_corpus(corpus_jobs(folder, n, duration_s, size, start=start, prefix=prefix, formats=formats),
                        workers)


# --------------------------------------------------------------------------------------------------
# Decode-only work of one video, and a pool of decoder processes

def _video_config(preset: str):
    from extractors.c3d import VideoExtractorConfig

    # The reference preset inverts colours for UCF: the costliest variant of its frame path.
    return VideoExtractorConfig(preset=preset, dataset="ucf" if preset == "reference" else None)


def decode_only(paths: Sequence[Path], preset: str = "paper", decoders: int = 1, pin_memory: bool = False) -> dict:
    """Decode-only wall time of ``paths`` with ``decoders`` processes (0 = a thread of this process), through the
    extractor's own pool (``extractors.pool.decode_throughput``: what ``extract_shard`` receives, in manifest
    order). The processes' start-up is returned as ``startup_s`` and is not part of ``seconds``."""
    from extractors.pool import decode_throughput

    r = decode_throughput([str(p) for p in paths], decoders, video=_video_config(preset), pin_memory=pin_memory)
    return {"seconds": r["seconds"], "startup_s": r["startup_s"], "clips": r["clips"], "videos": len(paths),
            "decoders": decoders, "preset": preset, "statuses": r["statuses"],
            "videos_per_s": len(paths) / r["seconds"], "clips_per_s": r["clips"] / r["seconds"]}


def measure(paths: Sequence[Path], decoders: Sequence[int], repeats: int, preset: str = "paper",
            log=print) -> dict:
    """Decode-only rounds for every decoder count, interleaved; rates and speed-ups over the first count."""
    decode_only(paths[:1], preset, decoders[0])  # warm-up: imports, the preset's resize
    runs: dict[int, list[dict]] = {n: [] for n in decoders}
    for r in range(repeats):
        order = list(decoders) if r % 2 == 0 else list(reversed(decoders))
        for n in order:
            runs[n].append(decode_only(paths, preset, n))
        log(f"decode-only round {r + 1}/{repeats}: " + "  ".join(
            f"{n} proc {runs[n][-1]['clips_per_s']:.1f} clips/s" for n in decoders))
    base = decoders[0]
    rows = []
    for n in decoders:
        rows.append({
            "decoders": n,
            "startup_s": spread([x["startup_s"] for x in runs[n]], 2),
            "videos": len(paths),
            "clips": runs[n][0]["clips"],
            "videos_per_s": spread([x["videos_per_s"] for x in runs[n]], 3),
            "clips_per_s": spread([x["clips_per_s"] for x in runs[n]], 2),
            f"speedup_vs_{base}": spread([b["seconds"] / x["seconds"] for b, x in zip(runs[base], runs[n],
                                                                                      strict=True)], 3),
        })
    return {"preset": preset, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per video")
    ap.add_argument("--size", default="320x240", help="WxH of the videos")
    ap.add_argument("--decoders", default="1,2",
                    help="comma-separated decoder-process counts (0: decode in a thread of this process)")
    ap.add_argument("--preset", choices=("paper", "reference"), default="paper")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="6 videos of 4 s, 2 repeats")
    ap.add_argument("--out", type=Path, default=RESULTS / "decode_throughput.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.videos, args.duration, args.repeats = 6, 4.0, 2
    try:
        decoders = [int(x) for x in args.decoders.split(",")]
        size = tuple(int(x) for x in args.size.lower().split("x"))
        assert len(size) == 2 and all(d >= 0 for d in decoders) and all(x > 0 for x in size)
    except (ValueError, AssertionError):
        ap.error(f"--decoders must be ints >= 0 'a,b,...' and --size 'WxH', got {args.decoders!r} {args.size!r}")

    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="decode_bench_") as tmp:
        t = time.perf_counter()
        paths = make_corpus(Path(tmp), args.videos, args.duration, size, workers=usable_cores())
        print(f"corpus: {len(paths)} videos of {args.duration:g} s at {size[0]}x{size[1]} in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        res = measure(paths, decoders, args.repeats, args.preset)
    for row in res["rows"]:
        print(f"{row['decoders']} decoder process(es): {row['videos_per_s']['median']:.2f} videos/s, "
              f"{row['clips_per_s']['median']:.1f} clips/s (min {row['clips_per_s']['min']}, max "
              f"{row['clips_per_s']['max']}, spread {row['clips_per_s']['spread_pct']} %), "
              f"speed-up {row[f'speedup_vs_{decoders[0]}']['median']:.2f}x", flush=True)
    out = {
        "command": "python benchmarks/decode_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "corpus": {"videos": args.videos, "duration_s": args.duration, "size": list(size),
                   "formats": "mp4 H.264/AAC 30 fps, mkv MPEG-4/MP3 24 fps, webm VP8/Opus 25 fps, in turn"},
        "repeats": args.repeats,
        **res,
        "machine": finish_machine_info(machine, own_processes=max(1, *decoders)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
