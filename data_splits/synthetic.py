"""Synthetic audio-visual demo dataset: real, decodable video files whose classes are readable phrases.

Every class is a combination of a visual pattern (colour, shape, motion) and a sound (pitch, rhythm), e.g.
"red ball bouncing with a low hum". Class names share their words, so an unseen class is made of attributes
that seen classes also show: a zero-shot model with sentence embeddings of the names has something to transfer,
even though the extractors in the demo run with random weights.

Videos are written with PyAV in several containers, codecs and frame rates (the decoding path must cope with
all of them), plus, optionally, two defective files (one without an audio stream, one truncated) so that the
manifest and the coverage report have something to report.

Besides the videos, :func:`generate_demo` writes the benchmark-style list layout that ``data_splits`` reads
for every dataset (see ``docs/splits.md``)::

    <official_dir>/demo/class-split/all_class.txt
    <official_dir>/demo/class-split/demo_w2v_class_names.csv          original,manual
    <official_dir>/demo/class-split/cls_split/stage_{1_train,1_val_seen,1_val_unseen,2_train,
                                               2_test_seen,2_test_unseen}.{txt,csv}
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from data_splits.common import SPLIT_NAMES, check_keys

log = logging.getLogger(__name__)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
}
SHAPES = ("ball", "square", "triangle")
MOTIONS = ("bouncing", "sliding", "pulsing")
# Pitch in Hz (centre of a per-video jitter) and the words used in the class name.
PITCHES: dict[str, float] = {"low": 140.0, "high": 1100.0}
RHYTHMS = ("hum", "beeping", "warble")

@dataclass(frozen=True)
class SyntheticClass:
    colour: str
    shape: str
    motion: str
    pitch: str
    rhythm: str

    @property
    def readable_name(self) -> str:
        """The phrase the class-name embedding sees, e.g. 'red ball bouncing with a low hum'."""
        sound = {
            "hum": f"a {self.pitch} hum",
            "beeping": f"{self.pitch} beeping",
            "warble": f"a {self.pitch} warble",
        }[self.rhythm]
        return f"{self.colour} {self.shape} {self.motion} with {sound}"

    @property
    def name(self) -> str:
        """Benchmark-style class name (CamelCase, like UCF101's 'ApplyEyeMakeup')."""
        words = [self.colour, self.shape, self.motion, self.pitch, self.rhythm]
        return "".join(w.capitalize() for w in words)


@dataclass(frozen=True)
class FormatSpec:
    """One container/codec/frame-rate combination; video k of a class uses format k mod len(formats)."""

    container: str = "mp4"
    video_codec: str = "libx264"
    audio_codec: str = "aac"
    fps: int = 30
    sample_rate: int = 44100
    audio_layout: str = "stereo"

    @classmethod
    def from_dict(cls, d: dict) -> FormatSpec:
        return cls(**check_keys(cls, d, "demo.formats[]"))


def _default_formats() -> list[FormatSpec]:
    # Three common real-world combinations: H.264/AAC in MP4 at 30 fps, MPEG-4 Part 2/MP3 in Matroska at
    # 24 fps (film rate, forces a real resampling to 25 fps) and VP8/Opus in WebM at 25 fps (no resampling).
    return [
        FormatSpec("mp4", "libx264", "aac", 30, 44100, "stereo"),
        FormatSpec("mkv", "mpeg4", "libmp3lame", 24, 48000, "mono"),
        FormatSpec("webm", "libvpx", "libopus", 25, 48000, "mono"),
    ]


@dataclass
class SyntheticConfig:
    n_classes: int = 12
    videos_per_class: int = 6
    duration_s: float = 3.0
    width: int = 160
    height: int = 120
    n_val_unseen: int = 3  # classes unseen in stage 1 (validation), seen in stage 2 training
    n_test_unseen: int = 3  # classes unseen in stage 2 (the test's unseen classes)
    defects: bool = True  # add one video without audio and one truncated file to the training lists
    seed: int = 0
    formats: list[FormatSpec] = field(default_factory=_default_formats)

    @classmethod
    def from_dict(cls, d: dict) -> SyntheticConfig:
        d = check_keys(cls, d, "demo")
        if not d.get("formats"):  # empty or absent: the default mix of containers
            d.pop("formats", None)
        else:
            d["formats"] = [f if isinstance(f, FormatSpec) else FormatSpec.from_dict(f) for f in d["formats"]]
        cfg = cls(**d)
        cfg.check()
        return cfg

    def check(self) -> None:
        n_seen = self.n_classes - self.n_val_unseen - self.n_test_unseen
        if not 2 <= self.n_classes <= len(class_catalogue()):
            raise ValueError(f"demo.n_classes must be in [2, {len(class_catalogue())}], got {self.n_classes}")
        if self.n_val_unseen < 1 or self.n_test_unseen < 1 or n_seen < 1:
            raise ValueError(
                "demo: need at least one stage-1 seen, one validation-unseen and one test-unseen class "
                f"(n_classes={self.n_classes}, n_val_unseen={self.n_val_unseen}, "
                f"n_test_unseen={self.n_test_unseen})"
            )
        if self.videos_per_class < 3:
            raise ValueError("demo.videos_per_class must be >= 3 (train, validation and test videos per class)")
        if self.duration_s < 1.0:
            raise ValueError("demo.duration_s must be >= 1.0 (one VGGish window and one C3D clip)")
        if not self.formats:
            raise ValueError("demo.formats must list at least one format")


def class_catalogue() -> list[SyntheticClass]:
    """All attribute combinations in a fixed, seeded order; a demo with n classes takes the first n.

    The order is shuffled once (fixed seed) so that the first classes differ in every attribute instead of
    walking the product in lexicographic order (which would make the first 18 classes all red).
    """
    combos = [SyntheticClass(*c) for c in itertools.product(COLOURS, SHAPES, MOTIONS, PITCHES, RHYTHMS)]
    random.Random(20221023).shuffle(combos)
    return combos


# ---------------------------------------------------------------------------------------------- rendering


def _render_frames(cls: SyntheticClass, n_frames: int, fps: float, width: int, height: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of a coloured shape moving on a noisy grey background."""
    t = np.arange(n_frames) / fps
    speed = rng.uniform(0.8, 1.25)  # per-video jitter keeps videos of one class distinct
    phase = rng.uniform(0, 2 * math.pi)
    size = rng.uniform(0.85, 1.15) * min(width, height) * 0.18
    cx0, cy0 = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    if cls.motion == "bouncing":  # vertical, |sin| like a ball on a floor
        xs = np.full_like(t, cx0)
        ys = height * 0.85 - np.abs(np.sin(2 * math.pi * 0.9 * speed * t + phase)) * height * 0.6
        rs = np.full_like(t, size)
    elif cls.motion == "sliding":  # horizontal, wraps around
        xs = (cx0 + width * 0.45 * speed * t) % width
        ys = np.full_like(t, cy0)
        rs = np.full_like(t, size)
    else:  # pulsing: fixed position, radius oscillates
        xs, ys = np.full_like(t, cx0), np.full_like(t, cy0)
        rs = size * (1.0 + 0.45 * np.sin(2 * math.pi * 1.5 * speed * t + phase))

    background = int(rng.integers(30, 90))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = np.array(COLOURS[cls.colour], dtype=np.float32) * rng.uniform(0.85, 1.0)
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for i in range(n_frames):
        dx, dy, r = xx - xs[i], yy - ys[i], rs[i]
        if cls.shape == "ball":
            mask = dx * dx + dy * dy <= r * r
        elif cls.shape == "square":
            mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        else:  # triangle pointing up
            mask = (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
        img = np.full((height, width, 3), background, dtype=np.float32)
        img += rng.normal(0, 6, size=(height, width, 1))
        img[mask] = colour
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def _render_audio(cls: SyntheticClass, n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 waveform in [-1, 1]."""
    t = np.arange(n_samples) / sample_rate
    f0 = PITCHES[cls.pitch] * rng.uniform(0.9, 1.1)
    if cls.rhythm == "warble":  # vibrato: frequency modulated at ~6 Hz
        inst = f0 * (1 + 0.08 * np.sin(2 * math.pi * 6.0 * t))
        wave = np.sin(2 * math.pi * np.cumsum(inst) / sample_rate)
    else:
        wave = np.sin(2 * math.pi * f0 * t) + 0.3 * np.sin(2 * math.pi * 2 * f0 * t)
    if cls.rhythm == "beeping":  # on/off at ~3 Hz
        wave = wave * (np.sin(2 * math.pi * 3.0 * rng.uniform(0.9, 1.1) * t) > 0)
    wave = 0.4 * wave / np.max(np.abs(wave) + 1e-9) + rng.normal(0, 0.01, n_samples)
    return wave.astype(np.float32)


def write_video(path: Path, cls: SyntheticClass, fmt: FormatSpec, duration_s: float, width: int, height: int,
                rng: np.random.Generator, with_audio: bool = True) -> None:
    """Encode one synthetic video (and its soundtrack) to ``path`` with the given container/codecs."""
    n_frames = round(duration_s * fmt.fps)
    frames = _render_frames(cls, n_frames, fmt.fps, width, height, rng)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(fmt.video_codec, rate=fmt.fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        if fmt.video_codec == "libx264":
            # libx264's macroblock-tree rate control (fed by its lookahead) gives a different bitstream on
            # every run, even single-threaded; without it the demo (and its features and metrics) is
            # identical for the same seed.
            vstream.options = {"x264-params": "rc-lookahead=0:mbtree=0"}
        astream = None
        if with_audio:
            astream = container.add_stream(fmt.audio_codec, rate=fmt.sample_rate)
            astream.layout = fmt.audio_layout
        for index, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = index  # explicit timestamps: without them the encoder's frame order is not reproducible
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            wave = _render_audio(cls, round(duration_s * fmt.sample_rate), fmt.sample_rate, rng)
            channels = 2 if fmt.audio_layout == "stereo" else 1
            planar = np.ascontiguousarray(np.repeat(wave[None, :], channels, axis=0))
            pts, chunk = 0, 1024
            for start in range(0, planar.shape[1], chunk):
                # PyAV's encoder converts the sample format and re-chunks to the codec's frame size.
                frame = av.AudioFrame.from_ndarray(planar[:, start:start + chunk], format="fltp",
                                                   layout=fmt.audio_layout)
                frame.sample_rate, frame.pts = fmt.sample_rate, pts
                pts += frame.samples
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)


# ---------------------------------------------------------------------------------------------- dataset


@dataclass
class DemoVideo:
    video_id: str
    class_name: str
    path: str  # relative to the videos folder
    fmt: str
    splits: list[str]
    defect: str = ""


def _assign_splits(role: str, k: int, n: int) -> list[str]:
    """Split membership of video k (of n) of a class, mirroring the benchmarks' two-stage protocol.

    role 'seen': seen in both stages; 'val_unseen': unseen in stage 1 (validation), trained on in stage 2;
    'test_unseen': never trained on. Stage-2 training = stage-1 training + validation videos, as in the
    benchmark lists; each trained-on class keeps ~20% of its videos (at least one) for the seen test.
    """
    if role == "test_unseen":
        return ["stage_2_test_unseen"]
    n_test = max(1, round(0.2 * n))
    if k < n_test:
        return ["stage_2_test_seen"]
    if role == "val_unseen":
        return ["stage_1_val_unseen", "stage_2_train"]
    n_val = max(1, round(0.2 * n))
    if k < n_test + n_val:
        return ["stage_1_val_seen", "stage_2_train"]
    return ["stage_1_train", "stage_2_train"]


def generate_demo(cfg: SyntheticConfig, videos_dir: str | Path, official_dir: str | Path) -> dict:
    """Write the demo videos under ``videos_dir/<ClassName>/`` and the list layout under ``official_dir``.

    Returns a JSON-able summary: the config, the classes (with their role) and every video's format, splits
    and defect. Deterministic for a given config (seeded), so reruns give identical lists.
    """
    cfg.check()
    videos_dir, official_dir = Path(videos_dir), Path(official_dir)
    classes = class_catalogue()[: cfg.n_classes]
    n_seen = cfg.n_classes - cfg.n_val_unseen - cfg.n_test_unseen
    roles = ["seen"] * n_seen + ["val_unseen"] * cfg.n_val_unseen + ["test_unseen"] * cfg.n_test_unseen
    rng = np.random.default_rng(cfg.seed)

    videos: list[DemoVideo] = []
    for cls, role in zip(classes, roles, strict=True):
        (videos_dir / cls.name).mkdir(parents=True, exist_ok=True)
        for k in range(cfg.videos_per_class):
            fmt = cfg.formats[k % len(cfg.formats)]
            video_id = f"{cls.name}_{k:02d}"
            rel = f"{cls.name}/{video_id}.{fmt.container}"
            write_video(videos_dir / rel, cls, fmt, cfg.duration_s, cfg.width, cfg.height, rng)
            videos.append(DemoVideo(video_id, cls.name, rel, fmt.container, _assign_splits(role, k, cfg.videos_per_class)))
        log.info("class %-40s %-11s %d videos", cls.readable_name, role, cfg.videos_per_class)

    if cfg.defects:
        # Listed like any other training video, so the coverage report must account for them.
        cls, fmt = classes[0], cfg.formats[0]
        silent = DemoVideo(f"{cls.name}_silent", cls.name, f"{cls.name}/{cls.name}_silent.{fmt.container}",
                           fmt.container, ["stage_1_train", "stage_2_train"], "no audio stream")
        write_video(videos_dir / silent.path, cls, fmt, cfg.duration_s, cfg.width, cfg.height, rng,
                    with_audio=False)
        broken = DemoVideo(f"{cls.name}_broken", cls.name, f"{cls.name}/{cls.name}_broken.{fmt.container}",
                           fmt.container, ["stage_1_train", "stage_2_train"], "truncated file")
        write_video(videos_dir / broken.path, cls, fmt, cfg.duration_s, cfg.width, cfg.height, rng)
        data = (videos_dir / broken.path).read_bytes()
        (videos_dir / broken.path).write_bytes(data[: min(len(data) // 20, 600)])
        videos += [silent, broken]

    _write_lists(official_dir / "demo" / "class-split", classes, roles, videos)
    summary = {
        "config": asdict(cfg),
        "classes": [
            {"name": c.name, "readable_name": c.readable_name, "role": r, **asdict(c)}
            for c, r in zip(classes, roles, strict=True)
        ],
        "videos": [asdict(v) for v in videos],
    }
    log.info("wrote %d videos to %s and lists to %s", len(videos), videos_dir, official_dir)
    return summary


def _write_lists(root: Path, classes: list[SyntheticClass], roles: list[str], videos: list[DemoVideo]) -> None:
    split_dir = root / "cls_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(c.name for c in classes)  # label_code = index in the sorted all_class.txt, as in UCF
    code = {n: i for i, n in enumerate(names)}
    (root / "all_class.txt").write_text("".join(f"{n}\n" for n in names))
    with open(root / "demo_w2v_class_names.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["original", "manual"])
        writer.writerows(sorted((c.name, c.readable_name) for c in classes))
    for split in SPLIT_NAMES:
        rows = [v for v in videos if split in v.splits]
        split_classes = sorted({v.class_name for v in rows})
        (split_dir / f"{split}.txt").write_text("".join(f"{n}\n" for n in split_classes))
        with open(split_dir / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label", "label_code"])
            writer.writerows((v.video_id, v.class_name, code[v.class_name]) for v in rows)
