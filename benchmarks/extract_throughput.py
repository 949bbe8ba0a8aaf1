"""Extraction throughput, decode-bound ratio, official-style baseline and peak memory.

    python benchmarks/extract_throughput.py                # ~3 min on 2 CPU cores
    python benchmarks/extract_throughput.py --quick        # ~1 min
    python benchmarks/extract_throughput.py --device cuda  # on a GPU machine -> extract_cuda.json
    python benchmarks/extract_throughput.py --clip-clap [--quick]  # CLIP + CLAP instead -> extract_clipclap_cpu.json

All inputs are generated into a temporary folder: demo-like videos in the demo's three containers and
codecs (H.264/AAC mp4, MPEG-4/MP3 mkv, VP8/Opus webm), all at 25 fps, and one long 640x360 video for the
memory figures. 25 fps because the official scripts assumed videos already converted to 25 fps (they
read every frame at the container's rate): on these files both sides decode exactly the same frames and
embed the same clips (checked), so the comparison is one of methods, not of frame counts. Both extractors
run with seeded random weights (same cost as the real ones).

Measured on the same files, in one run; every figure is per C3D clip (16 frames, 0.64 s of video, with its
audio), and the ratios are what to compare across machines:
- ours, twice: the exact mode (fp32, the default) and the fast mode (``video.autocast: bf16``), each
  ``extract_shard`` (decoder processes, ``--decoders``, cross-video batches, inference mode, channels-last C3D
  on CPU; the decoder processes' start-up, once per shard, is reported apart and not in the per-clip figures), plus the cosine similarity of the bf16 C3D features to the fp32 ones, row by row;
- decode-only: ``extractors.pool.decode_throughput`` with the same decoder processes (audio to 16 kHz, 25 fps
  frames resized and cropped, handed back in manifest order), no networks; ratio ours / decode-only (on a GPU,
  <= 1.3 means extraction is bound by decoding);
- baseline: the official scripts' method, re-implemented here: the whole video decoded into a float32
  array at native resolution and frame rate (25 fps here; BGR, frame count from the container), per-frame
  torchvision transforms through PIL (float tensor into ToPILImage, as the scripts did), one clip per C3D
  forward with autograd on, in fp32 with the default (contiguous) memory layout and the published layer
  order (out-of-place ReLU before each pool); audio through a 16-bit WAV temp file read back, then VGGish on all the
  video's examples (no ``no_grad``), the PCA parameters re-created per video;
- peak RSS of a fresh process decoding (and, for a shorter one, fully extracting) a long video.

With ``--clip-clap`` the same comparison is made for the CLIP and CLAP extractors (``extract.streams: [clip, clap]``,
seeded random weights at the published sizes), per video (each gets one CLIP and one CLAP row): ours is
``extract_shard`` (decoder processes, the middle frame's crop handed over, CLIP frames and CLAP windows batched
across videos); the baseline is the straightforward per-video implementation of ClipClap's scripts: every frame
decoded into one array, ``ImageExtractor.embed_video`` on it, the audio decoded whole and resampled to 32 kHz mono
by FFmpeg, ``ClapExtractor.embed`` on it, one video at a time. Peak RSS of both on one long video, each in a fresh
process.

Rounds interleave the four measurements; each ratio is taken within a round and reported as the median over
rounds with its minimum and maximum. The machine (CPU model, cores, load before and after) is recorded; a
run on a busy machine says so and its figures are not to be published.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import finish_machine_info, machine_info, spread

RESULTS = REPO / "benchmarks" / "results"
MEMORY_BATCH = 4  # clips per C3D forward in the full-extraction memory runs


# --------------------------------------------------------------------------------------------------
# Inputs


def make_demo_videos(folder: Path, n: int, duration_s: float, size=(160, 120)) -> list[Path]:
    """The demo's containers and codecs in turn, each at 25 fps (see the module docstring)."""
    from data_splits.synthetic import SyntheticConfig, class_catalogue, write_video

    formats = [dataclasses.replace(f, fps=25) for f in SyntheticConfig().formats]
    classes = class_catalogue()
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        fmt = formats[k % len(formats)]
        path = folder / f"demo_{k:02d}.{fmt.container}"
        write_video(path, classes[k % len(classes)], fmt, duration_s, *size, rng)
        paths.append(path)
    return paths


def make_long_video(path: Path, duration_s: float, size=(640, 360), fps: int = 25) -> Path:
    """A moving gradient with a tone: cheap to encode, realistic to decode (H.264 + AAC)."""
    import av

    w, h = size
    base = (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        a = c.add_stream("aac", rate=44_100)
        a.layout = "stereo"
        for i in range(int(duration_s * fps)):
            img = np.stack([np.roll(base, i, axis=1), base, np.roll(base, -i, axis=0)], axis=-1)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        n, t = int(duration_s * 44_100), 0
        while t < n:
            m = min(4096, n - t)
            tone = (0.3 * np.sin(2 * np.pi * 440 * (t + np.arange(m)) / 44_100)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44_100, t
            for p in a.encode(frame):
                c.mux(p)
            t += m
        for p in a.encode():
            c.mux(p)
    return path


# --------------------------------------------------------------------------------------------------
# Ours


class Timed:
    """Wraps a bound method and accumulates its wall time (network time inside the pipeline)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *a, **k):
        t = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t


def build_extractors(device: str, batch_size: int = 16, autocast: str = "none"):
    from extractors.c3d import VideoExtractorConfig, build_video_extractor
    from extractors.vggish import AudioExtractorConfig, build_audio_extractor

    audio = build_audio_extractor(AudioExtractorConfig(weights="random"), device)
    video = build_video_extractor(
        VideoExtractorConfig(weights="random", batch_size=batch_size, autocast=autocast), device
    )
    return audio, video


def run_ours(paths, audio, video, device: str, store: Path, decoders="auto") -> dict:
    """extract_shard's wall time per clip, without the decoder processes' start-up (imports in fresh processes:
    once per shard, which on these short inputs would swamp the per-clip figures; reported as startup_s)."""
    from extractors.extract import ExtractConfig, extract_shard
    from extractors.manifest import build_manifest

    rows = build_manifest([(p.stem, p, None, None, "c") for p in paths])
    cfg = ExtractConfig(device=device, log_every=10_000, decoders=decoders)
    net_v, net_a = Timed(video.embed_preprocessed), Timed(audio.embed_batch)
    video.embed_preprocessed, audio.embed_batch = net_v, net_a
    try:
        t = time.perf_counter()
        summary = extract_shard(rows, store, cfg, audio, video)
        seconds = time.perf_counter() - t
    finally:
        del video.embed_preprocessed, audio.embed_batch
    net = net_v.seconds + net_a.seconds
    startup = summary["decoder_startup_s"]
    return {**per_clip(seconds - startup, net, summary["clips"]), "videos": len(paths),
            "statuses": summary["statuses"], "decoders": summary["decoders"], "startup_s": startup,
            "autocast": video.attrs["autocast"], "memory_format": video.attrs["memory_format"]}


def per_clip(seconds: float, network_s: float, clips: int) -> dict:
    """Wall time split into network and the rest, per C3D clip."""
    return {"seconds": seconds, "clips": clips, "clips_per_s": clips / seconds, "ms_per_clip": 1e3 * seconds / clips,
            "network_s": network_s, "non_network_s": seconds - network_s,
            "network_ms_per_clip": 1e3 * network_s / clips, "non_network_ms_per_clip": 1e3 * (seconds - network_s) / clips}


def feature_agreement(fast_store: Path, exact_store: Path) -> dict:
    """Row-by-row cosine similarity of the fast mode's C3D features to the exact fp32 ones (same videos)."""
    from extractors.store import FeatureStore

    fast, fast_off = FeatureStore(fast_store).read("video")
    exact, exact_off = FeatureStore(exact_store).read("video")
    assert (fast_off == exact_off).all(), "the two runs produced different clip counts"
    a, b = fast.astype(np.float64), exact.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"rows": len(cos), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs_diff_over_max_abs": float(np.abs(a - b).max() / np.abs(b).max()),
            "same_zero_pattern_frac": float(((a == 0) == (b == 0)).mean())}


def run_decode_only(paths, decoders="auto") -> dict:
    """extractors.pool.decode_throughput: decoding, 25 fps, 16 kHz audio and the decoders' resize and crop (the
    demo's paper preset), handed back in manifest order as extraction receives them; no networks."""
    from extractors.pool import decode_throughput, resolve_decoders

    r = decode_throughput(paths, resolve_decoders(decoders, 1, "cpu"))
    return {**per_clip(r["seconds"], 0.0, r["clips"]), "videos": len(paths), "decoders": r["decoders"],
            "startup_s": r["startup_s"]}


# --------------------------------------------------------------------------------------------------
# The official scripts' method (re-implemented for comparison; see module docstring)


def baseline_audio(path: Path, audio, vggish, wav_path: Path) -> tuple[np.ndarray, float]:
    import av
    import torch

    from extractors.decode import resample
    from extractors.vggish.postprocess import IDENTITY, PCAQuantizer

    # ffmpeg -> 16-bit PCM WAV on disk -> read back (pydub export + soundfile.read in the scripts)
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        res = av.AudioResampler(format="s16", layout=st.layout.name, rate=st.rate)
        pcm = [f.to_ndarray().reshape(-1) for fr in c.decode(st) for f in res.resample(fr)]
        channels, rate = st.channels, st.rate
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate(pcm).astype("<i2").tobytes())
    with wave.open(str(wav_path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    x = (data / 32768.0).mean(axis=1)
    x = resample(x, rate, 16_000)
    examples = audio.frontend.examples(torch.from_numpy(x).to(audio.device))
    t = time.perf_counter()
    emb = vggish(examples.float()).detach().cpu().numpy()  # autograd on, as the scripts ran it
    net_s = time.perf_counter() - t
    return PCAQuantizer.from_spec(IDENTITY)(emb), net_s  # PCA parameters re-loaded per video


def baseline_video(path: Path, net, device) -> tuple[np.ndarray, float]:
    import av
    import torch
    from torchvision import transforms

    from extractors.c3d import KINETICS_MEAN, KINETICS_STD

    tf = transforms.Compose([transforms.ToPILImage(), transforms.Resize((128, 171)),
                             transforms.CenterCrop((112, 112)), transforms.ToTensor(),
                             transforms.Normalize(mean=KINETICS_MEAN, std=KINETICS_STD)])
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        f_max = st.frames or round(float(c.duration / av.time_base) * float(st.average_rate))
        buf = np.zeros((f_max, st.height, st.width, 3), np.float32)  # whole video, float32, native res
        fc = 0
        for frame in c.decode(st):
            if fc == f_max:
                break
            buf[fc] = frame.to_ndarray(format="bgr24")
            fc += 1
    clips, net_s = [], 0.0
    for i in range(0, fc, 16):
        frames = [tf(torch.from_numpy(buf[j]).permute(2, 0, 1)) for j in range(i, min(i + 16, fc))]
        clip = torch.zeros(16, 3, 112, 112)
        clip[: len(frames)] = torch.stack(frames)
        x = clip.permute(1, 0, 2, 3).unsqueeze(0).to(device)  # one clip per forward
        t = time.perf_counter()
        clips.append(net(x).detach().cpu().numpy()[0])
        net_s += time.perf_counter() - t
    return np.stack(clips), net_s


def published_c3d():
    """C3D as the published code runs it: out-of-place ReLU before every pool (ours pools first, in place)."""
    from extractors.c3d import C3D, published_order_forward

    class PublishedC3D(C3D):
        def forward(self, x):
            return published_order_forward(self, x)

    return PublishedC3D()


def run_baseline(paths, audio, video, workdir: Path) -> dict:
    # The scripts' network: same weights, fp32, default NCDHW layout (ours runs channels-last on CPU).
    c3d = published_c3d().eval()
    c3d.load_state_dict(video.net.state_dict())
    c3d = c3d.to(video.device)
    from extractors.vggish.model import VGGish

    vggish = VGGish(final_relu=audio.cfg.final_relu).eval()  # default layout too (ours: channels-last on CPU)
    vggish.load_state_dict(audio.net.state_dict())
    vggish = vggish.to(audio.device)
    t = time.perf_counter()
    net, clips = 0.0, 0
    for p in paths:
        _, a_s = baseline_audio(p, audio, vggish, workdir / "dummy.wav")
        v, v_s = baseline_video(p, c3d, video.device)
        net += a_s + v_s
        clips += len(v)
    seconds = time.perf_counter() - t
    return {**per_clip(seconds, net, clips), "videos": len(paths)}


# --------------------------------------------------------------------------------------------------
# CLIP + CLAP (--clip-clap)


def build_clip_clap(device: str):
    from extractors.clap import build_clap_extractor
    from extractors.clip import build_image_extractor

    return build_image_extractor({"weights": "random", "dataset": "demo"}, device), \
        build_clap_extractor({"weights": "random"}, device)


def run_ours_clip_clap(paths, clip, clap, device: str, store: Path, decoders="auto") -> dict:
    from extractors.extract import ExtractConfig, extract_shard
    from extractors.manifest import build_manifest

    rows = build_manifest([(p.stem, p, None, None, "c") for p in paths])
    cfg = ExtractConfig(device=device, log_every=10_000, decoders=decoders, streams=["clip", "clap"],
                        clip=clip.cfg, clap=clap.cfg)
    t = time.perf_counter()
    summary = extract_shard(rows, store, cfg, clip_extractor=clip, clap_extractor=clap)
    seconds = time.perf_counter() - t - summary["decoder_startup_s"]
    return {"seconds": seconds, "videos": len(paths), "ms_per_video": 1e3 * seconds / len(paths),
            "statuses": summary["statuses"], "decoders": summary["decoders"],
            "startup_s": summary["decoder_startup_s"]}


def baseline_clip_clap_video(path: Path, clip, clap) -> tuple[np.ndarray, np.ndarray]:
    """One video the straightforward way: all frames in memory, the whole soundtrack resampled by FFmpeg."""
    import av

    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=32000)
        parts = [f.to_ndarray()[0] for fr in c.decode(audio=0) for f in res.resample(fr)]
        parts += [f.to_ndarray()[0] for f in res.resample(None)]
    wave = np.concatenate(parts).astype(np.float32)
    return clip.embed_video(frames), clap.embed(wave)


def run_baseline_clip_clap(paths, clip, clap) -> dict:
    t = time.perf_counter()
    for p in paths:
        baseline_clip_clap_video(p, clip, clap)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "videos": len(paths), "ms_per_video": 1e3 * seconds / len(paths)}


def child_memory_clip_clap(mode: str, path: str, device: str) -> None:
    import torch  # noqa: F401 - imported before measuring, like in a real job

    clip, clap = build_clip_clap(device)
    base = _reset_peak()  # after the weights are in memory
    t = time.perf_counter()
    if mode == "clipclap_baseline":
        baseline_clip_clap_video(Path(path), clip, clap)
    else:
        from extractors.extract import ExtractConfig, extract_shard
        from extractors.manifest import build_manifest

        out = Path(tempfile.mkdtemp()) / "m.zarr"
        extract_shard(build_manifest([("long", path, None, None, "c")]), out,
                      ExtractConfig(device=device, log_every=10_000, decoders=0, streams=["clip", "clap"],
                                    clip=clip.cfg, clap=clap.cfg), clip_extractor=clip, clap_extractor=clap)
    peak = _rss_mb("VmHWM")
    print(json.dumps({"seconds": time.perf_counter() - t, "rss_before_mb": base, "peak_rss_mb": peak,
                      "growth_mb": peak - base}))


def main_clip_clap(args) -> None:
    n_videos, duration = (3, 2.0) if args.quick else (8, 5.0)
    long_s = 20.0 if args.quick else 120.0
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="extract_clipclap_bench_"))
    print(f"inputs in {work}", flush=True)
    paths = make_demo_videos(work, n_videos, duration)
    clip, clap = build_clip_clap(args.device)
    run_ours_clip_clap(paths[:1], clip, clap, args.device, work / "warm.zarr", args.decoders)  # warm-up
    rounds: dict[str, list[dict]] = {"ours": [], "baseline": []}
    for r in range(args.repeats):
        rounds["ours"].append(run_ours_clip_clap(paths, clip, clap, args.device, work / f"ours_{r}.zarr",
                                                 args.decoders))
        rounds["baseline"].append(run_baseline_clip_clap(paths, clip, clap))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]['ms_per_video']:.0f} ms/video"
                                                           for k, v in rounds.items()), flush=True)
    p = make_long_video(work / "long.mp4", long_s)
    memory = []
    for mode in ("clipclap", "clipclap_baseline"):
        out = subprocess.run([sys.executable, __file__, "--child-memory", mode, str(p), "--device", args.device],
                             capture_output=True, text=True, check=True)
        memory.append({"mode": mode, "duration_s": long_s, "size": "640x360", **json.loads(out.stdout.splitlines()[-1])})
        print(f"{mode} {long_s:.0f} s video: peak RSS {memory[-1]['peak_rss_mb']:.0f} MB "
              f"(+{memory[-1]['growth_mb']:.0f} MB)", flush=True)
    ratio = spread([b["ms_per_video"] / o["ms_per_video"] for o, b in zip(rounds["ours"], rounds["baseline"],
                                                                           strict=True)], 3)
    result = {
        "command": "python benchmarks/extract_throughput.py --clip-clap" + (" --quick" if args.quick else "")
                   + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
                   + (f" --device {args.device}" if args.device != "cpu" else "")
                   + (f" --decoders {args.decoders}" if args.decoders != "auto" else ""),
        "device": args.device, "machine": finish_machine_info(machine, own_processes=2),
        "weights": "random (seeded), published sizes: ViT-B/32, HTS-AT + projection",
        "repeats": args.repeats,
        "inputs": {"videos": n_videos, "duration_s": duration, "size": "160x120", "fps": 25},
        "unit": "per video (one CLIP and one CLAP row each); the ratio is baseline / ours, per round",
        "ours": median_round(rounds["ours"]), "baseline": median_round(rounds["baseline"]),
        "rounds_ms_per_video": {k: spread([v["ms_per_video"] for v in runs], 2) for k, runs in rounds.items()},
        "ratio_baseline_over_ours": ratio, "memory": memory,
    }
    out = args.out or RESULTS / f"extract_clipclap_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ratio_baseline_over_ours: {ratio['median']:.2f}x (rounds {ratio['min']:.2f}-{ratio['max']:.2f})")
    print(f"wrote {out}")


# --------------------------------------------------------------------------------------------------
# Peak memory, each measurement in a fresh process (ru_maxrss is a high-water mark)


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM (peak) of this process from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> float:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so the peak below is
    # what decoding/extraction adds on top of the loaded libraries and weights.
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_mb("VmRSS")


def child_memory(mode: str, path: str, device: str) -> None:
    import torch  # noqa: F401 - imported before measuring, like in a real job

    from extractors.decode import DecodeConfig, decode_audio, iter_clip_batches

    decode_audio(path, DecodeConfig(), end_s=2.0)  # imports and the resampling kernel, before measuring
    base = _reset_peak()
    t = time.perf_counter()
    if mode == "decode":
        cfg = DecodeConfig()
        decode_audio(path, cfg)
        from extractors.c3d import FramePreprocessor, VideoExtractorConfig

        crop = FramePreprocessor(VideoExtractorConfig(), "cpu").crop_frames  # what a decoder does (paper preset)
        n = sum(len(b.frames) for b in iter_clip_batches(path, cfg, transform=crop))
    else:
        from extractors.extract import ExtractConfig, extract_shard
        from extractors.manifest import build_manifest

        # C3D's activations (~100 MB per clip in float32 on CPU) scale with the batch, not with the video;
        # a batch of 4 that both test videos fill keeps this about length alone. Decoding in a thread
        # (decoders: 0) keeps all of the job's memory in the one process whose peak is read.
        audio, video = build_extractors(device, batch_size=MEMORY_BATCH)
        base = _reset_peak()  # after the weights are in memory
        out = Path(tempfile.mkdtemp()) / "m.zarr"
        s = extract_shard(build_manifest([("long", path, None, None, "c")]), out,
                          ExtractConfig(device=device, log_every=10_000, decoders=0), audio, video)
        n = s["clips"]
    peak = _rss_mb("VmHWM")
    print(json.dumps({"clips": n, "seconds": time.perf_counter() - t, "rss_before_mb": base,
                      "peak_rss_mb": peak, "growth_mb": peak - base}))


def measure_memory(mode: str, path: Path, duration_s: float, device: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child-memory", mode, str(path), "--device", device],
                         capture_output=True, text=True, check=True)
    info = {"mode": mode, "duration_s": duration_s, "size": "640x360"}
    if mode == "full":
        info["video_batch_size"] = MEMORY_BATCH
    return {**info, **json.loads(out.stdout.splitlines()[-1])}


# --------------------------------------------------------------------------------------------------


def median_round(runs: list[dict]) -> dict:
    """The run with the median wall time (a whole run, so its parts still add up)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def demo_batch_size() -> int:
    import yaml

    return int(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["extract"]["video"]["batch_size"])


def cpu_bf16_flags() -> list[str]:
    """The CPU features bf16 autocast depends on (without them oneDNN emulates bf16, slower than fp32)."""
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in flags if f in {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer/shorter videos (~3 min on 2 cores)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (results go to extract_<device>.json)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/extract_<device>.json)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median round is reported")
    default_batch_size = demo_batch_size()
    ap.add_argument("--batch-size", type=int, default=default_batch_size,
                    help="C3D clips per forward for ours (default: the demo config's extract.video.batch_size)")
    ap.add_argument("--decoders", default="auto", type=lambda v: v if v == "auto" else int(v),
                    help="extract.decoders for ours and decode-only: auto (1 on the CPU) or a count; 0 = a thread")
    ap.add_argument("--clip-clap", action="store_true",
                    help="measure the CLIP and CLAP extractors instead (-> extract_clipclap_<device>.json)")
    ap.add_argument("--child-memory", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        if args.child_memory[0].startswith("clipclap"):
            child_memory_clip_clap(*args.child_memory, args.device)
        else:
            child_memory(*args.child_memory, args.device)
        return
    if args.clip_clap:
        main_clip_clap(args)
        return


    n_videos, duration = (3, 2.0) if args.quick else (6, 3.0)
    long_s = (20.0, 60.0) if args.quick else (60.0, 300.0)  # decode-only memory
    # Full extraction: both lengths above one VGGish batch (64 examples = 61 s), whose activations are the last
    # thing that grows with the video (C3D on CPU is slow, hence not 5 minutes).
    full_s = (4.0, 8.0) if args.quick else (75.0, 150.0)
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="extract_bench_"))
    print(f"inputs in {work}", flush=True)
    paths = make_demo_videos(work, n_videos, duration)
    audio, video = build_extractors(args.device, args.batch_size)
    video_bf16 = build_extractors(args.device, args.batch_size, autocast="bf16")[1]

    run_decode_only(paths[:1], args.decoders)  # warm-up: imports, codec initialisation
    # Rounds interleave the four measurements so that a slow spell of a shared machine hits all of them; the
    # median round of each is reported, every ratio is taken within a round (all rounds are kept in the JSON).
    rounds: dict[str, list[dict]] = {"decode_only": [], "ours": [], "ours_bf16": [], "baseline": []}
    for r in range(args.repeats):
        rounds["decode_only"].append(run_decode_only(paths, args.decoders))
        rounds["ours"].append(run_ours(paths, audio, video, args.device, work / f"ours_fp32_{r}.zarr", args.decoders))
        rounds["ours_bf16"].append(run_ours(paths, audio, video_bf16, args.device, work / f"ours_bf16_{r}.zarr",
                                            args.decoders))
        rounds["baseline"].append(run_baseline(paths, audio, video, work))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]['ms_per_clip']:.0f} ms/clip"
                                                           for k, v in rounds.items()), flush=True)
    clip_counts = {k: sorted({run["clips"] for run in runs}) for k, runs in rounds.items()}
    if len({c for counts in clip_counts.values() for c in counts}) != 1:
        raise RuntimeError(f"the two sides did not embed the same clips: {clip_counts}")
    decode, ours, fast, base = (median_round(rounds[k]) for k in ("decode_only", "ours", "ours_bf16", "baseline"))
    agreement = feature_agreement(work / "ours_bf16_0.zarr", work / "ours_fp32_0.zarr")
    print(f"bf16 vs fp32 C3D features: cosine min {agreement['cosine_min']:.6f}", flush=True)
    del video_bf16

    memory = []
    for mode, lengths, label in (("decode", long_s, "decode-only"), ("full", full_s, "full extraction")):
        for d in lengths:
            p = make_long_video(work / f"{mode}_{int(d)}.mp4", d)
            memory.append(measure_memory(mode, p, d, args.device))
            print(f"{label} {d:.0f} s video: peak RSS {memory[-1]['peak_rss_mb']:.0f} MB "
                  f"(+{memory[-1]['growth_mb']:.0f} MB)", flush=True)
            p.unlink()

    def ratio(num: str, den: str, field: str = "ms_per_clip") -> dict:
        """num / den per clip, within each round: median, min, max over the rounds."""
        return spread([a[field] / b[field] for a, b in zip(rounds[num], rounds[den], strict=True)], 3)

    frames_5min = 300 * 25
    result = {
        "command": "python benchmarks/extract_throughput.py" + (" --quick" if args.quick else "")
                   + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
                   + (f" --batch-size {args.batch_size}" if args.batch_size != default_batch_size else "")
                   + (f" --device {args.device}" if args.device != "cpu" else "")
                   + (f" --decoders {args.decoders}" if args.decoders != "auto" else ""),
        "device": args.device, "machine": finish_machine_info(machine, own_processes=2),
        "cpu_flags": cpu_bf16_flags(),
        "weights": "random (seeded); same network cost as the real weights",
        "repeats": args.repeats, "video_batch_size": args.batch_size, "decoders": ours["decoders"],
        "inputs": {"videos": n_videos, "duration_s": duration, "size": "160x120", "fps": 25,
                   "formats": "mp4 h264/aac, mkv mpeg4/mp3, webm vp8/opus (in turn), all 25 fps",
                   "clips": ours["clips"]},
        "unit": "per C3D clip (16 frames at 25 fps, with its audio); ratios are baseline / ours, per round",
        "ours": ours, "ours_bf16": fast, "decode_only": decode, "baseline": base,
        "rounds_ms_per_clip": {k: spread([v["ms_per_clip"] for v in runs], 2) for k, runs in rounds.items()},
        "bf16_vs_fp32_video_features": agreement,
        "ratio_ours_over_decode_only": ratio("ours", "decode_only"),
        "ratio_ours_bf16_over_decode_only": ratio("ours_bf16", "decode_only"),
        "ratio_baseline_over_ours": ratio("baseline", "ours"),
        "ratio_baseline_over_ours_non_network": ratio("baseline", "ours", "non_network_ms_per_clip"),
        "ratio_baseline_over_ours_network": ratio("baseline", "ours", "network_ms_per_clip"),
        "ratio_baseline_over_ours_bf16": ratio("baseline", "ours_bf16"),
        "ratio_baseline_over_ours_bf16_non_network": ratio("baseline", "ours_bf16", "non_network_ms_per_clip"),
        "ratio_baseline_over_ours_bf16_network": ratio("baseline", "ours_bf16", "network_ms_per_clip"),
        "memory": memory,
        "baseline_float32_buffer_gb_5min_640x360": frames_5min * 640 * 360 * 3 * 4 / 1e9,
    }
    out = args.out or RESULTS / f"extract_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"per clip ({ours['clips']} clips, {args.repeats} rounds): ours {ours['ms_per_clip']:.0f} ms, "
          f"bf16 {fast['ms_per_clip']:.0f} ms, baseline {base['ms_per_clip']:.0f} ms, "
          f"decode only {decode['ms_per_clip']:.1f} ms")
    for k, v in result.items():
        if k.startswith("ratio"):
            print(f"{k}: {v['median']:.2f}x (rounds {v['min']:.2f}-{v['max']:.2f})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
