"""The GPU check: extraction and training speed, GPU use and numerical agreement, in one run.

    python benchmarks/gpu_check.py                         # on a GPU node: < 9 min -> results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --quick    # < 1 min on 2 cores (CI: tests/test_gpu_check.py)

Everything it needs is generated into a temporary folder; networks run with seeded random weights (the
cost of the real ones). Four parts (``--parts``), each recorded in the JSON, then the targets
(docs/gpu_check.md explains every field):

1. **Extraction** on a generated corpus (default: 200 videos of 10 s at 320x240 in the demo's three containers
   and codecs in turn: H.264/AAC mp4 at 30 fps, MPEG-4/MP3 mkv at 24 fps, VP8/Opus webm at 25 fps; and 4 of
   5 s at 1920x1080 in H.264 and MPEG-4), for both C3D presets (``paper``, ``reference``): wall time of
   decode-only (the decoders' whole work on every video through the extractor's decoder pool, no network)
   and of the full extraction (``extractors.extract.extract_shard`` into a feature store), both with
   ``--decoders`` processes (default: ``extract.decoders: auto`` for the device and the usable cores),
   clips/s, the GPU utilisation sampled during the run, the peak GPU memory and the CPU share used.
   Target: full extraction within 1.3x of decode-only (the networks hidden behind decoding).
2. **Training throughput** of TCAF (the paper's configuration) on UCF-like and ActivityNet-like synthetic
   features (``benchmarks/train_throughput.py``'s profiles): samples/s of ``model.train.train_one_epoch``
   in fp32, under ``train.amp: bf16`` and, on a GPU, with ``train.allow_tf32``, interleaved; GPU
   utilisation, peak memory.
3. **Determinism**: two short trainings (``run_stage``, ``train.deterministic: true``, same seed) must give
   identical metrics and weights; both extractors and TCAF run on the CPU and on the device with the same
   weights and inputs must agree within ``TOLERANCES`` (with ``--device cpu`` the CPU against itself, which
   only keeps the code running).
4. **CLIP and CLAP** (``clip_clap``), the ClipClap feature pair: ``extract_shard`` with ``extract.streams:
   [clip, clap]`` on the same corpus (``--quick``: its three small videos), from random checkpoints written in
   the published formats (OpenAI's ViT-B/32 archive, WavCaps' HTS-AT; published sizes, tiny ones with
   ``--quick``): decode-only and full wall time, videos/s, GPU utilisation and peak memory; then the rows of a
   few of the videos' frames and 10 s windows on the device in its precision (CLIP fp16, CLAP fp32) against
   the CPU's fp32 rows of the same checkpoints: cosine per row and max relative difference within
   ``CLIP_CLAP_TOLERANCES``.

The targets, each with its measured value and whether it was met, close the JSON and the printed output.

Rounds of the timed parts: ``--repeats`` (the median with min and max). The machine (CPU, cores, GPU, load
before and after) is recorded; a run on a busy machine says so and its figures are not to be published.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Deterministic cuBLAS needs its workspace fixed before the first CUDA call of the process (part 3).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np
import torch
from bench_common import finish_machine_info, machine_info, spread, usable_cores
from decode_throughput import corpus_jobs, decode_only, write_corpus

RESULTS = REPO / "benchmarks" / "results"
PRESETS = ("paper", "reference")
PARTS = ("extraction", "training", "determinism", "clip_clap")
HD_FORMATS = (0, 1)  # indices into the demo's formats: mp4 H.264/AAC, mkv MPEG-4/MP3
EXTRACTION_RATIO_TARGET = 1.3  # full extraction / decode-only wall time
# CPU vs GPU agreement, fp32 with TF32 off on both sides. Relative = max |gpu - cpu| / max |cpu|: the
# summation order of cuDNN's and oneDNN's convolutions differs, nothing else does.
TOLERANCES = {
    "c3d_fc7_rel": 1e-3,
    "vggish_embedding_rel": 1e-3,
    # uint8 codes after PCA and quantisation: a value next to a bin edge may land one bin over
    "vggish_codes_max_abs": 1,
    "vggish_codes_changed_frac": 0.01,
    "tcaf_embedding_rel": 1e-4,
}
CLIP_CLAP_STREAMS = ("clip", "clap")
# The device in the precision the extractor picks there against the CPU in fp32, on L2-normalised rows. CLIP runs
# fp16 on CUDA as clip.load does (fp16 products and activations, fp32 LayerNorms): its fp16 model emulated on the
# CPU with the published-size random checkpoint gave cosines of 0.9999995 and a relative difference of 1.0e-3 on
# corpus frames, whose rows have cosines of up to 0.998 with each other under random weights; so 0.999 would
# barely tell rounding from another frame, and 0.9999 leaves 200x the emulated error for cuBLAS's fp16
# reductions. CLAP runs fp32 with TF32 off on CUDA: only the summation order differs, as for VGGish and C3D.
CLIP_CLAP_TOLERANCES = {
    "clip_cosine_min": 0.9999,
    "clip_rel": 1e-2,
    "clap_cosine_min": 0.9999,
    "clap_rel": 1e-3,
}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# What the hardware did during a timed block


class Usage:
    """GPU utilisation sampled in a thread, peak GPU memory, and the CPU share used, over a ``with`` block.

    Utilisation comes from NVML through ``torch.cuda.utilization`` when pynvml is installed, else from
    ``nvidia-smi``; with neither the samples are absent and ``source`` says why (the run goes on).
    """

    def __init__(self, device: torch.device, interval_s: float = 0.2):
        self.device, self.interval_s = device, interval_s
        self.samples: list[float] = []
        self.source = gpu_utilisation_source(device)
        self._stop = threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._cpu0 = _cpu_times()
        self._t0 = time.perf_counter()
        if self.source in ("nvml", "nvidia-smi"):
            self._thread = threading.Thread(target=self._poll, daemon=True, name="gpu-util")
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            value = read_gpu_utilisation(self.device, self.source)
            if value is not None:
                self.samples.append(value)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        if self.source in ("nvml", "nvidia-smi"):
            self._thread.join(timeout=5)
        cpu1 = _cpu_times()
        self.cpu_busy = None
        if self._cpu0 and cpu1:
            total, idle = cpu1[0] - self._cpu0[0], cpu1[1] - self._cpu0[1]
            self.cpu_busy = round(1 - idle / max(1, total), 3)

    def record(self) -> dict:
        s = self.samples
        out = {
            "gpu_utilisation_pct": ({"mean": round(float(np.mean(s)), 1), "median": float(np.median(s)),
                                     "max": float(np.max(s)), "samples": len(s), "source": self.source}
                                    if s else {"samples": 0, "source": self.source}),
            # share of all the machine's cores busy during the block (every process, ours included)
            "cpu_busy_fraction": self.cpu_busy,
        }
        if self.device.type == "cuda":
            out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            out["peak_gpu_memory_reserved_mb"] = round(torch.cuda.max_memory_reserved(self.device) / 2**20, 1)
        return out


def _cpu_times() -> tuple[int, int] | None:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)


def gpu_utilisation_source(device: torch.device) -> str:
    if device.type != "cuda":
        return "none: not a GPU run"
    if read_gpu_utilisation(device, "nvml") is not None:
        return "nvml"
    if shutil.which("nvidia-smi"):
        for gpu_id in _nvidia_smi_ids(device):
            _SMI_ID[str(device)] = gpu_id
            if read_gpu_utilisation(device, "nvidia-smi") is not None:
                return "nvidia-smi"
    return "none: neither pynvml nor a working nvidia-smi"


def read_gpu_utilisation(device: torch.device, source: str) -> float | None:
    try:
        if source == "nvml":
            return float(torch.cuda.utilization(device))
        out = subprocess.run(["nvidia-smi", f"--id={_SMI_ID[str(device)]}", "--query-gpu=utilization.gpu",
                              "--format=csv,noheader,nounits"], check=True, capture_output=True, text=True, timeout=5)
        return float(out.stdout.strip().splitlines()[0])
    except Exception:  # noqa: BLE001 - a failed sample is a missing sample
        return None


def _nvidia_smi_ids(device: torch.device) -> list[str]:
    """Names nvidia-smi may know the GPU by, best first: its UUID (torch's index counts within
    CUDA_VISIBLE_DEVICES, as SLURM sets it, nvidia-smi's does not), then the index."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return ([f"GPU-{uuid}"] if uuid is not None else []) + [str(index)]


_SMI_ID: dict[str, str] = {}  # device -> the nvidia-smi id that answered


def gpu_info(device: torch.device) -> dict | None:
    if device.type != "cuda":
        return None
    p = torch.cuda.get_device_properties(device)
    return {"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "utilisation_source": gpu_utilisation_source(device)}


# --------------------------------------------------------------------------------------------------
# 1. Extraction


def build_corpus(folder: Path, a: argparse.Namespace) -> list[Path]:
    t = time.perf_counter()
    # the settings in the names: a kept --workdir never hands one run's videos to a run with other sizes
    name = lambda size, duration: f"{size[0]}x{size[1]}_{duration:g}s_"
    jobs = corpus_jobs(folder, a.videos, a.duration, a.size, prefix=name(a.size, a.duration))
    # H.264 and MPEG-4 only at 1080p: VP8 encodes it at a tenth of real time, which would dominate the run
    hd = corpus_jobs(folder, a.hd_videos, a.hd_duration, a.hd_size, start=a.videos,
                     prefix=name(a.hd_size, a.hd_duration), formats=HD_FORMATS)
    paths = write_corpus(hd + jobs, workers=1 if a.quick else usable_cores())  # the slow 1080p ones first
    log(f"corpus: {a.videos} videos of {a.duration:g} s at {a.size[0]}x{a.size[1]} + {a.hd_videos} of "
        f"{a.hd_duration:g} s at {a.hd_size[0]}x{a.hd_size[1]} written in {time.perf_counter() - t:.0f} s")
    return paths


def extract_config(device: torch.device, preset: str, decoders: int, batch_size: int):
    """The ``extract`` section the full extraction runs with (``reference`` as for UCF: colour inversion)."""
    from extractors.extract import ExtractConfig

    section = {"dataset": "ucf" if preset == "reference" else "demo", "device": str(device),
               "video": {"preset": preset, "batch_size": batch_size}, "log_every": 1_000_000}
    section["decoders"] = decoders
    return ExtractConfig.from_dict(section)


def default_decoders(device: torch.device) -> int:
    """The extractor's own choice for this machine's cores and device (``extract.decoders: auto``)."""
    from extractors.pool import resolve_decoders

    return resolve_decoders("auto", usable_cores(), device.type)


def bench_extraction(paths: list[Path], device: torch.device, a: argparse.Namespace, work: Path) -> dict:
    from extractors.c3d import build_video_extractor
    from extractors.manifest import build_manifest
    from extractors.vggish import AudioExtractorConfig, build_audio_extractor

    rows = build_manifest([(p.stem, p, None, None, "c") for p in paths], workers=max(1, a.decoders))
    bad = [r.video_id for r in rows if r.status != "ok"]
    if bad:
        raise RuntimeError(f"generated videos failed their probe: {bad[:5]}")
    audio = build_audio_extractor(AudioExtractorConfig(), device)
    pin = device.type == "cuda"
    out: dict = {"decoders": a.decoders, "c3d_batch_size": a.batch_size, "presets": {}}
    for preset in PRESETS:
        cfg = extract_config(device, preset, a.decoders, a.batch_size)
        video = build_video_extractor(cfg.video, device)
        decode_only(paths[:2], preset, a.decoders, pin)  # warm-up (imports, the preset's frame path)
        if not a.quick:  # warm-up of the networks (cuDNN picks its kernels), outside the timed rounds
            extract_shard_timed(rows[:2], work / f"warm_{preset}.zarr", cfg, audio, video)
        decode_runs, full_runs, usage = [], [], {}
        for r in range(a.repeats):
            with Usage(torch.device("cpu")) as u_dec:
                dec = decode_only(paths, preset, a.decoders, pin)
            with Usage(device) as u_full:
                full = extract_shard_timed(rows, work / f"{preset}_{r}.zarr", cfg, audio, video)
            dec["cpu_busy_fraction"] = u_dec.record()["cpu_busy_fraction"]
            usage = u_full.record()
            decode_runs.append(dec)
            full_runs.append(full)
            log(f"extraction {preset} round {r + 1}/{a.repeats}: decode-only {dec['seconds']:.1f} s "
                f"({dec['clips_per_s']:.1f} clips/s), full {full['seconds']:.1f} s "
                f"({full['clips_per_s']:.1f} clips/s), ratio {full['seconds'] / dec['seconds']:.2f}")
            shutil.rmtree(work / f"{preset}_{r}.zarr", ignore_errors=True)
        if decode_runs[0]["clips"] != full_runs[0]["clips"]:
            raise RuntimeError(f"{preset}: decode-only counted {decode_runs[0]['clips']} clips, the extraction "
                               f"embedded {full_runs[0]['clips']}")
        ratios = [f["seconds"] / d["seconds"] for d, f in zip(decode_runs, full_runs, strict=True)]
        out["presets"][preset] = {
            "videos": len(paths),
            "clips": full_runs[0]["clips"],
            "decode_only": {"seconds": spread([d["seconds"] for d in decode_runs], 3),
                            "startup_s": spread([d["startup_s"] for d in decode_runs], 2),
                            "clips_per_s": spread([d["clips_per_s"] for d in decode_runs], 2),
                            "videos_per_s": spread([d["videos_per_s"] for d in decode_runs], 3),
                            "cpu_busy_fraction": decode_runs[-1]["cpu_busy_fraction"]},
            "full": {"seconds": spread([f["seconds"] for f in full_runs], 3),
                     "startup_s": spread([f["startup_s"] for f in full_runs], 2),
                     "clips_per_s": spread([f["clips_per_s"] for f in full_runs], 2),
                     "videos_per_s": spread([f["videos_per_s"] for f in full_runs], 3),
                     "statuses": full_runs[0]["statuses"], **usage},
            "full_over_decode_only": spread(ratios, 3),
        }
        del video
    return out


def extract_shard_timed(rows, store: Path, cfg, audio, video) -> dict:
    from extractors.extract import extract_shard

    t = time.perf_counter()
    summary = extract_shard(rows, store, cfg, audio, video)
    # The decoder processes' start-up (imports, once per shard) is left out, as on the decode-only side.
    startup = summary.get("decoder_startup_s") or 0.0
    seconds = time.perf_counter() - t - startup
    return {"seconds": seconds, "startup_s": startup, "videos": len(rows), "clips": summary["clips"],
            "statuses": summary["statuses"], "videos_per_s": len(rows) / seconds,
            "clips_per_s": summary["clips"] / seconds}


# --------------------------------------------------------------------------------------------------
# 2. Training throughput


@contextlib.contextmanager
def precision(allow_tf32: bool):
    """TF32 on or off for a block (``train.allow_tf32``, as the pipeline sets it), exact float32 afterwards."""
    from model.environment import configure_precision

    configure_precision(allow_tf32)
    try:
        yield
    finally:
        configure_precision(False)


def bench_training(device: torch.device, a: argparse.Namespace) -> dict:
    from train_throughput import profiles, synthetic

    from model.config import dataset_config
    from model.packing import split_from_sequences
    from model.sampling import ClassBalancedSampler
    from model.tcaf import TCAF
    from model.train import build_optimizer, train_one_epoch
    from model.train_config import TRAIN_PRESETS, TrainConfig

    out = []
    for p in profiles(a.quick):
        mcfg = dataset_config(p.dataset)
        audio, video, labels, w = synthetic(p, mcfg.word_dim)
        split = split_from_sequences(p.name, audio, video, labels, w, np.zeros(p.n_classes, bool), device=device)
        preset = {k: v for k, v in TRAIN_PRESETS[p.dataset].items() if k in ("seq_mode", "train_max_len")}
        torch.manual_seed(0)
        base = TCAF(mcfg)
        steps = a.train_steps
        # name -> (train.amp, train.allow_tf32); TF32 changes nothing on a CPU, so it is timed on a GPU only
        modes = {"fp32": ("off", False), "bf16": ("bf16", False)}
        if device.type == "cuda":
            modes["tf32"] = ("off", True)
        state = {}
        for name, (amp, tf32) in modes.items():
            cfg = TrainConfig(batch_size=a.train_batch, batches_per_epoch=steps, progress=False, amp=amp,
                              allow_tf32=tf32, **preset)
            model = copy.deepcopy(base).to(device)
            opt = build_optimizer(model, cfg)
            if not a.quick:  # warm-up (kernel choice, allocator)
                with precision(tf32):
                    train_one_epoch(model, opt, ClassBalancedSampler(split, cfg.batch_size, 3, cfg.window(), seed=1),
                                    device, cfg)
            state[name] = (model, opt, ClassBalancedSampler(split, cfg.batch_size, steps, cfg.window(), seed=0), cfg)
        runs: dict[str, list[float]] = {name: [] for name in modes}
        usage: dict[str, dict] = {}
        for r in range(a.repeats):  # the modes interleaved, their order alternating: ratios within a round
            for name in (list(modes) if r % 2 == 0 else list(reversed(modes))):
                model, opt, sampler, cfg = state[name]
                with precision(modes[name][1]), Usage(device) as u:
                    train_one_epoch(model, opt, sampler, device, cfg)
                runs[name].append(steps * cfg.batch_size / u.seconds)
                usage[name] = u.record()
        del state
        row = {
            "profile": p.name, "model": f"TCAF, the paper's {p.dataset} configuration",
            "batch_size": a.train_batch, "steps_per_round": steps, "seq_mode": preset["seq_mode"],
            "mean_audio_tokens": round(float(np.mean([len(x) for x in audio])), 1),
            "mean_video_tokens": round(float(np.mean([len(x) for x in video])), 1),
            **{name: {"samples_per_s": spread(runs[name], 3), **usage[name]} for name in modes},
            **{f"{name}_speedup": spread([x / f for f, x in zip(runs["fp32"], runs[name], strict=True)], 3)
               for name in modes if name != "fp32"},
        }
        log(f"training {p.name}: " + ", ".join(
            f"{name} {row[name]['samples_per_s']['median']:.4g} samples/s (GPU "
            f"{row[name]['gpu_utilisation_pct'].get('mean', '-')} %)" for name in modes))
        out.append(row)
        del split, base
    return {"profiles": out}


# --------------------------------------------------------------------------------------------------
# 3. Determinism and CPU/GPU agreement


def check_training_determinism(device: torch.device, a: argparse.Namespace) -> dict:
    from model.config import dataset_config
    from model.environment import seed_everything
    from model.synthetic import PlantedFeatures, SyntheticSpec
    from model.tcaf import TCAF
    from model.train import run_stage
    from model.train_config import TrainConfig

    mcfg = dataset_config("ucf")
    gen = PlantedFeatures(SyntheticSpec(n_seen=8, n_unseen=4, word_dim=mcfg.word_dim, video_dim=mcfg.video_dim,
                                        signal=0.5, seed=0))
    train = gen.split("train", 16, range(8), device=str(device))
    val = gen.split("val", 2 if a.quick else 6, range(12), device=str(device))
    epochs = 1 if a.quick else 2
    cfg = TrainConfig(lr=1e-3, batch_size=8 if a.quick else 32, batches_per_epoch=a.det_steps, deterministic=True,
                      progress=False, device=str(device))
    runs = []
    try:
        for _ in range(2):
            seed_everything(7, deterministic=True)
            net = TCAF(mcfg)
            res = run_stage(net, train, val, cfg, seed=7, epochs=epochs, device=device)
            runs.append((res, {k: v.detach().cpu() for k, v in net.state_dict().items()}))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    keys = ("loss", "loss_ce", "loss_reg", "loss_rec", "val_S", "val_U", "val_HM", "val_ZSL", "val_bias")
    (r1, s1), (r2, s2) = runs
    metrics = [[row.get(k) for k in keys] for row in r1.history], [[row.get(k) for k in keys] for row in r2.history]
    different = [k for k in s1 if not torch.equal(s1[k], s2[k])]
    return {"runs": 2, "epochs": epochs, "batch_size": cfg.batch_size, "steps_per_epoch": a.det_steps, "metric_keys": list(keys),
            "metrics_run1": metrics[0], "metrics_run2": metrics[1],
            "identical_metrics": metrics[0] == metrics[1], "identical_weights": not different,
            "differing_tensors": different[:10]}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def check_cpu_vs_device(device: torch.device, n_clips: int = 4) -> dict:
    """The same weights and inputs on the CPU and on ``device``; agreement against ``TOLERANCES``.

    With ``device`` the CPU the comparison runs against itself: it proves nothing about a GPU, but it keeps the
    comparison's code running in the CPU smoke run.
    """
    from extractors.c3d import VideoExtractorConfig, build_video_extractor
    from extractors.vggish import AudioExtractorConfig, build_audio_extractor
    from model.batching import make_batch
    from model.config import dataset_config
    from model.environment import configure_precision
    from model.synthetic import PlantedFeatures, SyntheticSpec
    from model.tcaf import TCAF

    configure_precision(False)  # exact float32 matmuls for TCAF (the extractors set their own, also exact)
    g = torch.Generator().manual_seed(0)
    out: dict = {"status": ("measured" if device.type != "cpu"
                            else "cpu against itself (no GPU): exercises the comparison, proves nothing"),
                 "devices": ["cpu", str(device)], "tolerances": TOLERANCES}

    clips = torch.randn(n_clips, 3, 16, 112, 112, generator=g)
    c3d = [build_video_extractor(VideoExtractorConfig(seed=0, batch_size=n_clips), d).embed_preprocessed(clips)
           for d in ("cpu", device)]
    out["c3d"] = {"clips": n_clips, "rel_max_diff": _rel(c3d[1], c3d[0])}
    out["c3d"]["ok"] = out["c3d"]["rel_max_diff"] <= TOLERANCES["c3d_fc7_rel"]

    wave = (0.3 * torch.randn(16_000 * 8, generator=g)).clamp(-1, 1)
    raw = [build_audio_extractor(AudioExtractorConfig(postprocess="raw"), d).embed(wave) for d in ("cpu", device)]
    codes = [build_audio_extractor(AudioExtractorConfig(), d).embed(wave).astype(np.int16) for d in ("cpu", device)]
    diff = np.abs(codes[1] - codes[0])
    out["vggish"] = {"examples": len(raw[0]), "rel_max_diff": _rel(raw[1], raw[0]),
                     "codes_max_abs_diff": int(diff.max()), "codes_changed_frac": float((diff > 0).mean())}
    out["vggish"]["ok"] = (out["vggish"]["rel_max_diff"] <= TOLERANCES["vggish_embedding_rel"]
                           and out["vggish"]["codes_max_abs_diff"] <= TOLERANCES["vggish_codes_max_abs"]
                           and out["vggish"]["codes_changed_frac"] <= TOLERANCES["vggish_codes_changed_frac"])

    mcfg = dataset_config("ucf")
    gen = PlantedFeatures(SyntheticSpec(word_dim=mcfg.word_dim, video_dim=mcfg.video_dim, seed=1))
    split = gen.split("agreement", 4, range(9))
    torch.manual_seed(0)
    net = TCAF(mcfg).eval()
    idx = torch.arange(len(split))
    zero = torch.zeros(len(split), dtype=torch.long)
    la, lv = split.audio.max_len, split.video.max_len
    emb = []
    for d in (torch.device("cpu"), device):
        b = make_batch(split, idx, zero, zero, la, lv, d)
        m = copy.deepcopy(net).to(d)
        with torch.no_grad():  # the evaluation forward (model.train.compute_embeddings)
            e = m(b.audio, b.audio_mask, b.video, b.video_mask)["embedding"]
            emb.append(torch.cat([e, m.embed_classes(split.class_vectors.to(d))]).cpu().numpy())
    out["tcaf"] = {"samples": len(idx), "rel_max_diff": _rel(emb[1], emb[0])}
    out["tcaf"]["ok"] = out["tcaf"]["rel_max_diff"] <= TOLERANCES["tcaf_embedding_rel"]
    return out


# --------------------------------------------------------------------------------------------------
# 4. CLIP and CLAP (the ClipClap feature pair)


def write_clip_checkpoint(path: Path, full: bool, seed: int = 0) -> Path:
    """Seeded random CLIP in the format OpenAI publishes ViT-B-32.pt in: a TorchScript archive of fp16 tensors.

    ``full``: ViT-B/32 with its text tower (the published shapes, ~150M parameters), else one narrow layer per
    tower at the same 224 px input and 32 px patches (the CPU smoke run). The extractor reads it as it reads
    OpenAI's file (``open_clip.load_openai_model``: fp16 weights with fp32 LayerNorms on a GPU, fp32 on the CPU).
    """
    import open_clip.model as oc

    from extractors.clip import random_model, write_openai_archive
    from extractors.weights import seeded

    if full:
        model = random_model(seed, "fp32", torch.device("cpu"))
    else:
        with seeded(seed):
            model = oc.CLIP(embed_dim=16, quick_gelu=True,
                            vision_cfg=oc.CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=32, image_size=224),
                            text_cfg=oc.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1))

    return write_openai_archive(model.state_dict(), path, dtype=torch.float16)


def write_clap_checkpoint(path: Path, full: bool, seed: int = 0) -> Path:
    """Seeded random WavCaps HTSAT audio encoder in the format of HTSAT_BERT_zero_shot.pt (``{"model": state
    dict}``, the real log-mel frontend matrices). ``full``: the published HTS-AT (width 96, 2-2-6-2 blocks,
    1024-d projection), else width 16 with one block per stage and a 32-d projection."""
    from extractors.clap import random_wavcaps_state_dict

    sd = (random_wavcaps_state_dict(seed) if full else
          random_wavcaps_state_dict(seed, embed_dim=16, depths=(1, 1, 1, 1), heads=(1, 2, 2, 2), projection_dim=32))
    torch.save({"model": sd}, path)
    return path


def clip_clap_config(device: torch.device, decoders: int, weights: dict[str, Path]):
    """The ``extract`` section of a ClipClap feature run: the CLIP and CLAP streams only, their default settings
    (CLIP ``precision: auto``: fp16 on CUDA, fp32 on the CPU; CLAP fp32 with TF32 off)."""
    from extractors.extract import ExtractConfig

    return ExtractConfig.from_dict({
        "dataset": "demo", "device": str(device), "streams": list(CLIP_CLAP_STREAMS), "decoders": decoders,
        "clip": {"weights": str(weights["clip"])}, "clap": {"weights": str(weights["clap"])},
        "log_every": 1_000_000})


def decode_only_clip_clap(rows, cfg, pin_memory: bool) -> dict:
    """What the decoders do for the CLIP and CLAP streams (CLIP's frame counted, decoded and cropped to 224x224;
    the audio decoded and resampled to 32 kHz), without a network, through the pool ``extract_shard`` reads and
    with its settings. ``extractors.pool.decode_throughput`` times the VGGish/C3D streams only, hence this loop."""
    from extractors.clap import SAMPLE_RATE as CLAP_RATE
    from extractors.pool import DecoderPool, VideoAudio, VideoDone, VideoFrames

    frames = samples = 0
    statuses: dict[str, int] = {}
    t_start = time.perf_counter()
    with DecoderPool(rows, cfg.decode, cfg.video, cfg.decoders, cfg.prefetch, pin_memory,
                     streams=cfg.streams, clip=cfg.clip) as pool:
        pool.wait_ready()
        t0 = time.perf_counter()
        for msg in pool:
            if isinstance(msg, VideoFrames):
                frames += len(msg.crops)
            elif isinstance(msg, VideoAudio):
                samples += len(msg.wave)
            elif isinstance(msg, VideoDone):
                statuses[msg.status] = statuses.get(msg.status, 0) + 1
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "startup_s": t0 - t_start, "videos": len(rows), "frames": frames,
            "audio_s": samples / CLAP_RATE, "statuses": statuses, "videos_per_s": len(rows) / seconds}


def extract_clip_clap_timed(rows, store: Path, cfg, clip, clap) -> dict:
    from extractors.extract import extract_shard
    from extractors.store import FeatureStore

    t = time.perf_counter()
    summary = extract_shard(rows, store, cfg, clip_extractor=clip, clap_extractor=clap)
    startup = summary.get("decoder_startup_s") or 0.0  # left out, as on the decode-only side
    seconds = time.perf_counter() - t - startup
    table = FeatureStore(store).table
    return {"seconds": seconds, "startup_s": startup, "videos": len(rows), "statuses": summary["statuses"],
            "clip_rows": sum(int(r["n_clip"]) for r in table), "clap_rows": sum(int(r["n_clap"]) for r in table),
            "videos_per_s": len(rows) / seconds}


def bench_clip_clap(paths: list[Path], device: torch.device, a: argparse.Namespace, work: Path) -> dict:
    """Decode-only and full CLIP + CLAP extraction of ``paths`` in ``--repeats`` rounds, then their agreement."""
    from extractors.clap import build_clap_extractor
    from extractors.clip import build_image_extractor
    from extractors.manifest import build_manifest

    full = not a.quick
    rows = build_manifest([(p.stem, p, None, None, "c") for p in paths], workers=max(1, a.decoders))
    bad = [r.video_id for r in rows if r.status != "ok"]
    if bad:
        raise RuntimeError(f"generated videos failed their probe: {bad[:5]}")
    folder = work / "clip_clap_weights"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    weights = {"clip": write_clip_checkpoint(folder / "ViT-B-32.pt", full),
               "clap": write_clap_checkpoint(folder / "HTSAT_BERT_zero_shot.pt", full)}
    weights_s = time.perf_counter() - t
    cfg = clip_clap_config(device, a.decoders, weights)
    clip, clap = build_image_extractor(cfg.clip, device), build_clap_extractor(cfg.clap, device)
    pin = device.type == "cuda"
    decode_only_clip_clap(rows[:1], cfg, pin)  # warm-up (imports, the 32 kHz resampler)
    if full:  # warm-up of the networks (kernel choice), outside the timed rounds
        extract_clip_clap_timed(rows[:2], work / "warm_clip_clap.zarr", cfg, clip, clap)
    decode_runs, full_runs, usage = [], [], {}
    for r in range(a.repeats):
        with Usage(torch.device("cpu")) as u_dec:
            dec = decode_only_clip_clap(rows, cfg, pin)
        with Usage(device) as u_full:
            ext = extract_clip_clap_timed(rows, work / f"clip_clap_{r}.zarr", cfg, clip, clap)
        dec["cpu_busy_fraction"] = u_dec.record()["cpu_busy_fraction"]
        usage = u_full.record()
        decode_runs.append(dec)
        full_runs.append(ext)
        log(f"clip_clap round {r + 1}/{a.repeats}: decode-only {dec['seconds']:.1f} s "
            f"({dec['videos_per_s']:.2f} videos/s), full {ext['seconds']:.1f} s ({ext['videos_per_s']:.2f} videos/s)")
        shutil.rmtree(work / f"clip_clap_{r}.zarr", ignore_errors=True)
    if decode_runs[0]["frames"] != full_runs[0]["clip_rows"]:
        raise RuntimeError(f"clip_clap: decode-only cropped {decode_runs[0]['frames']} CLIP frames, the extraction "
                           f"stored {full_runs[0]['clip_rows']} rows")
    ratios = [f["seconds"] / d["seconds"] for d, f in zip(decode_runs, full_runs, strict=True)]
    out = {
        "videos": len(rows), "decoders": a.decoders,
        "models": {"size": "published" if full else "tiny (CPU smoke run)", "weights": "random (seeded), written in "
                   "the published formats: OpenAI's TorchScript archive, WavCaps' {'model': state dict}",
                   "checkpoints_written_in_s": round(weights_s, 1)},
        "clip": {"precision": clip.precision, "dim": clip.dim, "frames": cfg.clip.frames, "preset": cfg.clip.preset,
                 "batch_size": cfg.clip.batch_size},
        "clap": {"precision": _dtype_name(clap.model), "allow_tf32": cfg.clap.allow_tf32, "dim": clap.dim,
                 "windows": cfg.clap.windows, "batch_size": cfg.clap.batch_size},
        "clip_rows": full_runs[0]["clip_rows"], "clap_rows": full_runs[0]["clap_rows"],
        "decode_only": {"source": "extractors.pool.DecoderPool with streams [clip, clap] (decode_throughput "
                                  "supports the audio/video streams only)",
                        "seconds": spread([d["seconds"] for d in decode_runs], 3),
                        "startup_s": spread([d["startup_s"] for d in decode_runs], 2),
                        "videos_per_s": spread([d["videos_per_s"] for d in decode_runs], 3),
                        "audio_s": round(decode_runs[0]["audio_s"], 2),
                        "cpu_busy_fraction": decode_runs[-1]["cpu_busy_fraction"]},
        "full": {"seconds": spread([f["seconds"] for f in full_runs], 3),
                 "startup_s": spread([f["startup_s"] for f in full_runs], 2),
                 "videos_per_s": spread([f["videos_per_s"] for f in full_runs], 3),
                 "statuses": full_runs[0]["statuses"], **usage},
        "full_over_decode_only": spread(ratios, 3),
    }
    n = 2 if a.quick else 8
    out["agreement"] = check_clip_clap_agreement(paths[:n], cfg, device, clip, clap)
    log(f"clip_clap agreement ({out['agreement']['status']}): CLIP min cosine "
        f"{out['agreement']['clip']['cosine_min']:.6f}, CLAP min cosine {out['agreement']['clap']['cosine_min']:.6f}")
    return out


def _dtype_name(model: torch.nn.Module) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
        next(model.parameters()).dtype, str(next(model.parameters()).dtype))


def _rows_agreement(other: np.ndarray, cpu: np.ndarray) -> dict:
    a, b = np.asarray(other, np.float64), np.asarray(cpu, np.float64)
    if a.shape != b.shape or not len(b):
        raise RuntimeError(f"clip_clap agreement: {a.shape} rows against {b.shape}")
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    # How alike the rows of different inputs are (random weights map inputs close together): a tolerance that
    # does not separate the devices' rows better than this would not notice a wrong input either.
    unit = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
    between = unit @ unit.T
    off = between[~np.eye(len(b), dtype=bool)]
    return {"rows": len(b), "cosine": [round(float(c), 7) for c in cos], "cosine_min": float(cos.min()),
            "rel_max_diff": _rel(a, b),
            "cosine_between_inputs_max": round(float(off.max()), 6) if len(off) else None}


def check_clip_clap_agreement(paths: list[Path], cfg, device: torch.device, clip, clap) -> dict:
    """CLIP and CLAP rows of the same inputs, on ``device`` in its precision (the extraction's extractors) and on
    the CPU in fp32 (the same checkpoint files loaded again): per-row cosine and max relative difference against
    ``CLIP_CLAP_TOLERANCES``. The inputs are the videos' own: the frame ClipClap embeds and the 10 s window of
    32 kHz audio, decoded as the pool decodes them. With ``device`` the CPU it compares the CPU with itself."""
    from extractors.clap import SAMPLE_RATE as CLAP_RATE
    from extractors.clap import build_clap_extractor
    from extractors.clip import build_image_extractor
    from extractors.decode import count_native_frames, decode_audio, iter_native_frames

    cpu = torch.device("cpu")
    clip_cpu, clap_cpu = build_image_extractor(cfg.clip, cpu), build_clap_extractor(cfg.clap, cpu)
    frames, windows = [], []
    for p in paths:
        want = clip_cpu.select_frames(count_native_frames(p, cfg.decode))
        frames += list(iter_native_frames(p, cfg.decode, select=want))
        windows.append(clap_cpu.windows(decode_audio(p, cfg.decode, min_samples=1, rate=CLAP_RATE)))
    # one preprocess per frame: the videos differ in size
    x, w = torch.cat([clip_cpu.preprocess(f[None]) for f in frames]), torch.cat(windows)
    out: dict = {
        "status": ("measured" if device.type != "cpu" else
                   "cpu against itself (no GPU): the device comparison was not run; this exercises the comparison "
                   "and proves nothing"),
        "devices": ["cpu", str(device)], "tolerances": CLIP_CLAP_TOLERANCES,
        "inputs": f"the middle frame and the centre 10 s of 32 kHz audio of {len(paths)} corpus videos",
    }
    out["clip"] = {"precision": [clip_cpu.precision, clip.precision],
                   **_rows_agreement(clip.embed_preprocessed(x), clip_cpu.embed_preprocessed(x))}
    out["clap"] = {"precision": [_dtype_name(clap_cpu.model), _dtype_name(clap.model)],
                   **_rows_agreement(clap.embed_windows(w), clap_cpu.embed_windows(w))}
    if device.type == "cuda":
        # cuBLAS may reduce fp16 products in fp16 when this is on (torch's default): part of CLIP's difference
        out["cuda_fp16_reduced_precision_reduction"] = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
    for name in CLIP_CLAP_STREAMS:
        r = out[name]
        r["ok"] = (r["cosine_min"] >= CLIP_CLAP_TOLERANCES[f"{name}_cosine_min"]
                   and r["rel_max_diff"] <= CLIP_CLAP_TOLERANCES[f"{name}_rel"])
    return out


# --------------------------------------------------------------------------------------------------
# The run


def targets(res: dict) -> list[dict]:
    out = []
    for preset, r in res.get("extraction", {}).get("presets", {}).items():
        ratio = r["full_over_decode_only"]["median"]
        out.append({"target": f"extraction ({preset}) within {EXTRACTION_RATIO_TARGET}x of decode-only",
                    "value": ratio, "met": ratio <= EXTRACTION_RATIO_TARGET})
    det = res.get("determinism", {})
    if "training" in det:
        t = det["training"]
        out.append({"target": "two deterministic trainings give identical metrics and weights",
                    "value": {"metrics": t["identical_metrics"], "weights": t["identical_weights"]},
                    "met": t["identical_metrics"] and t["identical_weights"]})
    agree = det.get("cpu_vs_device", {})
    for name in ("c3d", "vggish", "tcaf"):
        if name in agree:
            cpu, other = agree["devices"]
            out.append({"target": f"{name}: outputs on {cpu} and {other} agree within tolerance",
                        "value": {k: v for k, v in agree[name].items() if k != "ok"}, "met": agree[name]["ok"]})
    cc = res.get("clip_clap", {}).get("agreement", {})
    for name in CLIP_CLAP_STREAMS:
        if name in cc:
            r, tol = cc[name], cc["tolerances"]
            (cpu, other), (p_cpu, p_other) = cc["devices"], r["precision"]
            out.append({"target": f"{name.upper()} rows on {other} ({p_other}) match {cpu} ({p_cpu}): cosine >= "
                                  f"{tol[f'{name}_cosine_min']} per row, max relative difference <= {tol[f'{name}_rel']}",
                        "value": {"cosine_min": r["cosine_min"], "rel_max_diff": r["rel_max_diff"], "rows": r["rows"]},
                        "met": r["ok"]})
    return out


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
        assert w > 0 and h > 0
        return w, h
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 320x240), got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda | cuda:<i> | cpu (default: cuda)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (a few short videos, a few training steps): the CPU smoke run of CI")
    ap.add_argument("--out", type=Path, help="JSON path (default: results/gpu_check.json, with --device cpu "
                                             "results/gpu_check_cpu.json)")
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per video")
    ap.add_argument("--size", type=parse_size, default=(320, 240))
    ap.add_argument("--hd-videos", type=int, default=4)
    ap.add_argument("--hd-duration", type=float, default=5.0)
    ap.add_argument("--hd-size", type=parse_size, default=(1920, 1080))
    ap.add_argument("--decoders", type=int, default=None,
                    help="decoder processes, 0 = a decode thread (default: extract.decoders: auto for the device)")
    ap.add_argument("--batch-size", type=int, default=32, help="C3D clips per forward")
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=100, help="training steps per timed round")
    ap.add_argument("--det-steps", type=int, default=10, help="steps per epoch of the determinism trainings")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path,
                    help="keep the generated videos here and reuse them on the next run (default: a temporary folder)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    a = ap.parse_args(argv)
    if a.quick:
        a.videos, a.duration, a.size, a.hd_videos, a.hd_duration, a.hd_size = 3, 1.2, (160, 120), 1, 1.0, (640, 360)
        a.batch_size, a.train_batch, a.train_steps, a.det_steps, a.repeats = 4, 8, 1, 2, 1
    a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    unknown = set(a.parts) - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown part(s) {sorted(unknown)}; use {', '.join(PARTS)}")
    if a.decoders is not None and a.decoders < 0:
        ap.error(f"--decoders must be >= 0, got {a.decoders}")
    for name in ("videos", "repeats", "train_batch", "train_steps", "det_steps", "batch_size"):
        if getattr(a, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    return a


def main(argv: list[str] | None = None) -> dict:
    from data_splits.common import resolve_device

    a = parse_args(argv)
    try:
        device = resolve_device(a.device, "--device")
    except (RuntimeError, ValueError) as err:
        raise SystemExit(f"gpu_check: {err}. On a machine without a GPU run: python benchmarks/gpu_check.py "
                         "--device cpu --quick") from None
    if a.decoders is None:
        a.decoders = default_decoders(device)
    out_path = a.out or RESULTS / ("gpu_check.json" if device.type == "cuda" else "gpu_check_cpu.json")
    t0 = time.perf_counter()
    machine = machine_info()
    res: dict = {
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": str(device), "quick": a.quick, "gpu": gpu_info(device), "parts": a.parts,
        "weights": "random (seeded): the cost of the real networks",
    }
    log(f"gpu_check on {device} ({res['gpu']['name'] if res['gpu'] else machine['cpu_model']}), "
        f"{usable_cores()} usable cores, parts: {', '.join(a.parts)}")
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        if {"extraction", "clip_clap"} & set(a.parts):
            t = time.perf_counter()
            paths = build_corpus((a.workdir or work) / "videos", a)
            corpus_s = seconds["corpus"] = time.perf_counter() - t
        if "extraction" in a.parts:
            t = time.perf_counter()
            res["extraction"] = bench_extraction(paths, device, a, work)
            res["extraction"]["corpus"] = {
                "videos": a.videos, "duration_s": a.duration, "size": list(a.size), "hd_videos": a.hd_videos,
                "hd_duration_s": a.hd_duration, "hd_size": list(a.hd_size), "written_in_s": round(corpus_s, 1),
                "formats": "mp4 H.264/AAC 30 fps, mkv MPEG-4/MP3 24 fps, webm VP8/Opus 25 fps, in turn"}
            seconds["extraction"] = time.perf_counter() - t
        if "training" in a.parts:
            t = time.perf_counter()
            res["training"] = bench_training(device, a)
            seconds["training"] = time.perf_counter() - t
        if "determinism" in a.parts:
            t = time.perf_counter()
            res["determinism"] = {"training": check_training_determinism(device, a),
                                  "cpu_vs_device": check_cpu_vs_device(device, 1 if a.quick else 4)}
            seconds["determinism"] = time.perf_counter() - t
            log(f"determinism: identical metrics {res['determinism']['training']['identical_metrics']}, "
                f"weights {res['determinism']['training']['identical_weights']}; CPU vs device: "
                f"{res['determinism']['cpu_vs_device'].get('status')}")
        if "clip_clap" in a.parts:
            t = time.perf_counter()
            # --quick: the three small videos (one per format), not the HD one: the part's smoke run stays short
            subset = paths[a.hd_videos:] if a.quick else paths
            res["clip_clap"] = bench_clip_clap(subset, device, a, work)
            res["clip_clap"]["corpus"] = {
                "videos": len(subset) - (0 if a.quick else a.hd_videos), "duration_s": a.duration,
                "size": list(a.size), "hd_videos": 0 if a.quick else a.hd_videos, "hd_duration_s": a.hd_duration,
                "hd_size": list(a.hd_size), "written_in_s": round(corpus_s, 1)}
            seconds["clip_clap"] = time.perf_counter() - t
    res["targets"] = targets(res)
    res["seconds"] = {k: round(v, 1) for k, v in seconds.items()} | {"total": round(time.perf_counter() - t0, 1)}
    res["host_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["machine"] = finish_machine_info(machine, own_processes=max(1, a.decoders))
    for t in res["targets"]:
        log(f"[{'met' if t['met'] else 'NOT MET'}] {t['target']}: {t['value']}")
    log(f"total {res['seconds']['total']:.0f} s")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=2) + "\n")
    log(f"wrote {out_path}")
    return res


if __name__ == "__main__":
    main()
