"""C3D forward time per clip on CPU, step by step from the published network to the extractor's modes.

    python benchmarks/c3d_cpu_modes.py            # ~2 min on 2 CPU cores -> benchmarks/results/c3d_cpu_modes.json

Random clips and seeded random weights (same cost as the real ones), inference mode, `--batch-size` clips per
forward (default: the demo config's `extract.video.batch_size`). Rounds interleave the modes; the median round is
reported with its minimum and maximum (the speed-ups are taken within each round). Each mode is compared with the
exact one (`fp32, extractor`) on the same clips. The machine (CPU model, cores, load before and after) is recorded;
a run on a busy machine says so and its figures are not to be published.

How close to the CPU's limit: the FLOPs of one clip's forward are counted from the layer shapes (2 per
multiply-add of every convolution and linear layer; pooling, ReLU and biases left out, < 0.1 %), and each
round also times a large square ``torch.matmul`` in fp32 and in bf16 (``--matmul-size``, best of three
products) on the same threads: the achieved GFLOP/s of each mode is reported as a fraction of the matmul rate
of its arithmetic (fp32 modes against the fp32 product, bf16 modes against the bf16 one), the practical peak of
this CPU for dense arithmetic through the same oneDNN/BLAS kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_common import finish_machine_info, machine_info, spread


def modes(batch_size: int) -> dict:
    """name -> (network, input dtype, memory format, autocast) with one set of weights."""
    import torch
    from extract_throughput import published_c3d

    from extractors.c3d import VideoExtractorConfig, build_video_extractor

    exact = build_video_extractor(VideoExtractorConfig(seed=0, batch_size=batch_size), "cpu").net
    fast = build_video_extractor(VideoExtractorConfig(seed=0, batch_size=batch_size, autocast="bf16"), "cpu").net
    state = exact.state_dict()

    def published(memory_format):
        net = published_c3d().eval()
        net.load_state_dict(state)
        return net.to(memory_format=memory_format)

    cl, plain = torch.channels_last_3d, torch.contiguous_format
    f32, bf16 = torch.float32, torch.bfloat16
    return {
        "fp32, published network (NCDHW, ReLU before pool)": (published(plain), f32, plain, False),
        "fp32, published network, channels-last": (published(cl), f32, cl, False),
        "fp32, extractor (channels-last, pool before ReLU, first block in steps)": (exact, f32, cl, False),
        "bf16 autocast, published network, channels-last": (published(cl), f32, cl, True),
        "bf16, extractor (bf16 weights, pool before ReLU, first block in steps)": (fast, bf16, cl, False),
    }


def clip_flops() -> dict:
    """FLOPs of one 16x112x112 clip through C3D up to fc7, per layer, counted from the output shapes."""
    import torch
    from torch import nn

    from extractors.c3d import C3D, CROP, FRAMES_PER_CLIP

    net = C3D().to("meta").eval()
    per_layer: dict[str, int] = {}

    def count(name):
        def hook(mod, inp, out):
            if isinstance(mod, nn.Conv3d):
                k = mod.in_channels // mod.groups * int(torch.tensor(mod.kernel_size).prod())
            else:
                k = mod.in_features
            per_layer[name] = 2 * k * out[0].numel()  # one multiply and one add per weight and output
        return hook

    for name, mod in net.named_modules():
        if isinstance(mod, (nn.Conv3d, nn.Linear)) and name != "fc8":  # fc8 is never evaluated
            mod.register_forward_hook(count(name))
    net(torch.empty(1, 3, FRAMES_PER_CLIP, CROP, CROP, device="meta"))
    return {"gflop_per_clip": sum(per_layer.values()) / 1e9,
            "gflop_per_layer": {k: round(v / 1e9, 3) for k, v in per_layer.items()}}


def matmul_gflops(n: int, dtype) -> float:
    """Best rate of three n x n products (2 n^3 FLOPs each) on torch's CPU threads."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main() -> None:
    import numpy as np
    import torch
    from extract_throughput import demo_batch_size

    from extractors.c3d import CROP, FRAMES_PER_CLIP

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=demo_batch_size())
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul of the peak")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "c3d_cpu_modes.json")
    args = ap.parse_args()

    clips = torch.randn(args.clips, 3, FRAMES_PER_CLIP, CROP, CROP, generator=torch.Generator().manual_seed(0))
    nets = modes(args.batch_size)

    def run(net, dtype, memory_format, autocast) -> np.ndarray:
        out = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for i in range(0, len(clips), args.batch_size):
                x = clips[i : i + args.batch_size].to(dtype).contiguous(memory_format=memory_format)
                out.append(net(x).float())
        return torch.cat(out).numpy()

    machine = machine_info()
    features = {name: run(*spec) for name, spec in nets.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in nets}
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.repeats):
        for name, spec in nets.items():
            t = time.perf_counter()
            run(*spec)
            times[name].append((time.perf_counter() - t) / len(clips))
        peaks["fp32"].append(matmul_gflops(args.matmul_size, torch.float32))
        peaks["bf16"].append(matmul_gflops(args.matmul_size, torch.bfloat16))
        print(f"round {r + 1}/{args.repeats}: matmul {peaks['fp32'][-1]:.0f} GFLOP/s fp32, "
              f"{peaks['bf16'][-1]:.0f} GFLOP/s bf16", flush=True)
    flops = clip_flops()
    peak = {k: float(np.median(v)) for k, v in peaks.items()}

    base_name = next(iter(nets))
    exact_name = "fp32, extractor (channels-last, pool before ReLU, first block in steps)"
    exact = features[exact_name].astype(np.float64)
    rows = []
    for name, (_, dtype, _, autocast) in nets.items():
        ms = float(np.median(times[name])) * 1000
        arithmetic = "bf16" if autocast or dtype == torch.bfloat16 else "fp32"
        achieved = flops["gflop_per_clip"] / (ms / 1000)
        f = features[name].astype(np.float64)
        cos = (f * exact).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(exact, axis=1))
        rows.append({
            "mode": name,
            "ms_per_clip": ms,
            "rounds_ms_per_clip": spread([t * 1000 for t in times[name]], 2),
            "speedup_vs_published": float(np.median(times[base_name])) * 1000 / ms,
            "speedup_vs_published_per_round": spread([b / t for b, t in zip(times[base_name], times[name],
                                                                             strict=True)], 3),
            "max_abs_diff_over_max_abs_vs_exact": float(np.abs(f - exact).max() / np.abs(exact).max()),
            "cosine_min_vs_exact": float(cos.min()),
            "arithmetic": arithmetic,
            "achieved_gflops": achieved,
            # within each round: the clip rate against the matmul peak measured in the same round
            "fraction_of_matmul_peak": achieved / peak[arithmetic],
            "fraction_of_matmul_peak_per_round": spread([
                flops["gflop_per_clip"] / t / p for t, p in zip(times[name], peaks[arithmetic], strict=True)], 3),
        })
        print(f"{ms:7.1f} ms/clip  {rows[-1]['speedup_vs_published']:4.2f}x  "
              f"diff {rows[-1]['max_abs_diff_over_max_abs_vs_exact']:.1e}  {achieved:6.1f} GFLOP/s "
              f"({100 * rows[-1]['fraction_of_matmul_peak']:.0f} % of the {arithmetic} matmul)  {name}", flush=True)
    result = {
        "command": "python benchmarks/c3d_cpu_modes.py " + " ".join(sys.argv[1:]),
        "batch_size": args.batch_size, "clips": args.clips, "repeats": args.repeats,
        "machine": finish_machine_info(machine, own_processes=torch.get_num_threads()),
        "weights": "random (seeded)",
        "flops": flops,
        "matmul_peak_gflops": {"size": args.matmul_size, "fp32": spread(peaks["fp32"], 1),
                               "bf16": spread(peaks["bf16"], 1)},
        "modes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
