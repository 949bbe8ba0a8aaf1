"""Synthetic audio-visual demo dataset: real, decodable video files whose classes are readable phrases.

Every class is a combination of four attributes with three values each: a colour, a shape and a motion (what is
seen) and a sound (what is heard), e.g. "red ball bouncing with a low hum". The classes are chosen so that
zero-shot transfer has something to transfer (:func:`design_classes`): the classes trained on form a balanced
block in which no attribute is confounded with another, and every unseen class is a new combination of values
that trained classes show, spelt out in its name, so that the sentence embeddings of the names carry the same
attributes as the videos. Every value is made to show in what the demo's random-weight extractors see.

Videos are written with PyAV in several containers, codecs and frame rates (the decoding path must cope with
all of them), plus, optionally, two defective files (one without an audio stream, one truncated) so that the
manifest and the coverage report have something to report.

Besides the videos, :func:`generate_demo` writes the benchmark-style list layout that ``data_splits`` reads
for every dataset (see ``docs/splits.md``)::

    <official_dir>/demo/class-split/all_class.txt
    <official_dir>/demo/class-split/demo_w2v_class_names.csv          original,manual
    <official_dir>/demo/class-split/cls_split/stage_{1_train,1_val_seen,1_val_unseen,2_train,
                                               2_test_seen,2_test_unseen}.{txt,csv}

and, for prediction, a held-out set (:func:`write_heldout`): ``<heldout_dir>/videos/``, ``classes.txt``,
``labels.tsv``.
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

# Four attributes with three values each: 81 classes. Every value is made to show in what the random-weight
# extractors see (saturated colours, shapes of different area, large motions, sounds in separate frequency bands),
# and each value is one or two words of the readable name, so that the name embeddings carry the same attributes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 210, 50),
    "blue": (40, 70, 240),
}
SHAPES = ("ball", "square", "triangle")
MOTIONS = ("bouncing", "sliding", "pulsing")
# Each sound: its words in the readable name, its base frequency (Hz, centre of a per-video jitter) and its
# rhythm. The three sit in separate bands of the log-mel spectrogram that VGGish sees.
SOUNDS: dict[str, tuple[str, float]] = {
    "hum": ("a low hum", 140.0),
    "beeping": ("high beeping", 1100.0),
    "warble": ("a warble", 450.0),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "motion": MOTIONS,
    "sound": tuple(SOUNDS),
}


@dataclass(frozen=True)
class SyntheticClass:
    colour: str
    shape: str
    motion: str
    sound: str

    def __post_init__(self) -> None:
        for attribute, values in ATTRIBUTES.items():
            if getattr(self, attribute) not in values:
                raise ValueError(f"{attribute} {getattr(self, attribute)!r} is not one of {list(values)}")

    @property
    def readable_name(self) -> str:
        """The phrase the class-name embedding sees, e.g. 'red ball bouncing with a low hum'."""
        return f"{self.colour} {self.shape} {self.motion} with {SOUNDS[self.sound][0]}"

    @property
    def name(self) -> str:
        """Benchmark-style class name (CamelCase, like UCF101's 'ApplyEyeMakeup')."""
        return "".join(getattr(self, a).capitalize() for a in ATTRIBUTES)

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(getattr(self, a) for a in ATTRIBUTES)

    def agreement(self, other: SyntheticClass) -> int:
        """How many attributes the two classes share."""
        return sum(a == b for a, b in zip(self.values, other.values, strict=True))


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
    heldout_per_class: int = 1  # held-out videos of each test-unseen class, for prediction
    heldout_new_classes: int = 2  # classes of no split: one held-out video each, their names in classes.txt
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
        n_all = len(all_classes())
        if not 3 <= self.n_classes <= n_all:
            raise ValueError(f"demo.n_classes must be in [3, {n_all}], got {self.n_classes}")
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
        if self.heldout_per_class < 0 or self.heldout_new_classes < 0:
            raise ValueError("demo.heldout_per_class and demo.heldout_new_classes must be >= 0, got "
                             f"{self.heldout_per_class} and {self.heldout_new_classes}")
        if not self.formats:
            raise ValueError("demo.formats must list at least one format")
        design_classes(self.n_classes, self.n_val_unseen, self.n_test_unseen, self.heldout_new_classes)


# ---------------------------------------------------------------------------------------------- design


def all_classes() -> list[SyntheticClass]:
    """Every attribute combination, in a fixed shuffled order (the order only breaks ties in the design)."""
    combos = [SyntheticClass(*c) for c in itertools.product(*ATTRIBUTES.values())]
    random.Random(20221023).shuffle(combos)
    return combos


def balanced_block() -> list[SyntheticClass]:
    """Nine classes in which every value of every attribute occurs three times and every pair of values of two
    attributes exactly once: the orthogonal array L9(3^4), rows (i, j, i+j, i+2j) mod 3.

    Trained on these, no attribute is confounded with another (red is as often a ball as a square), so what a
    model learns about "red" is about the colour; any two of them share exactly one attribute. Every other
    combination shares three attributes with exactly one of them (the rows are a perfect code) and is made of
    value pairs that all occur in them: a new combination of what was seen.
    """
    values = list(ATTRIBUTES.values())
    return [SyntheticClass(values[0][i], values[1][j], values[2][(i + j) % 3], values[3][(i + 2 * j) % 3])
            for i in range(3) for j in range(3)]


def value_counts(classes: list[SyntheticClass]) -> dict[tuple[str, str], int]:
    """How many of ``classes`` have each (attribute, value)."""
    counts: dict[tuple[str, str], int] = {}
    for c in classes:
        for a in ATTRIBUTES:
            counts[a, getattr(c, a)] = counts.get((a, getattr(c, a)), 0) + 1
    return counts


def _most_even(pool: list[SyntheticClass], k: int) -> list[SyntheticClass]:
    """The k classes of ``pool`` (at most 9 in it: every subset is tried) in which the most attributes vary (an
    attribute that never varies cannot be learnt), then that show the most values, as evenly as possible (least sum
    of squared value counts); ties: the first in combination order. Kept in pool order."""
    def score(subset: tuple[SyntheticClass, ...]) -> tuple[int, int, int]:
        counts = value_counts(list(subset))
        varying = sum(len({getattr(c, a) for c in subset}) > 1 for a in ATTRIBUTES)
        return -varying, -len(counts), sum(n * n for n in counts.values())

    return list(min(itertools.combinations(pool, k), key=score))


def _spread_pick(candidates: list[SyntheticClass], k: int, apart_from: list[SyntheticClass],
                 avoid: list[SyntheticClass]) -> list[SyntheticClass]:
    """k candidates picked one by one, each sharing as few attributes as possible with those already picked and
    with ``apart_from``, then with ``avoid``; ties in candidate order."""
    picked: list[SyntheticClass] = []
    rest = list(candidates)
    while len(picked) < k and rest:
        def score(c: SyntheticClass) -> tuple[int, int, int]:
            near = max((c.agreement(o) for o in picked + apart_from), default=0)
            close = max((c.agreement(o) for o in avoid), default=0)
            return near, close, rest.index(c)

        best = min(rest, key=score)
        picked.append(best)
        rest.remove(best)
    return picked


@dataclass(frozen=True)
class Design:
    """The demo's classes with their roles, and the classes of no split (held-out videos and names only)."""

    classes: list[SyntheticClass]
    roles: list[str]  # "seen" | "val_unseen" | "test_unseen", aligned with classes
    new_classes: list[SyntheticClass]

    def of_role(self, *roles: str) -> list[SyntheticClass]:
        return [c for c, r in zip(self.classes, self.roles, strict=True) if r in roles]


def design_classes(n_classes: int, n_val_unseen: int, n_test_unseen: int, n_new: int = 0) -> Design:
    """The demo's classes, chosen so that zero-shot transfer has something to transfer.

    * The trained classes (stage-1 seen + validation-unseen = stage-2 training) come from the balanced block
      (:func:`balanced_block`); the stage-1 seen classes among them are the subset that shows the most values,
      most evenly. Past nine, more classes are added, each sharing as few attributes as possible with those taken.
    * The test-unseen classes are new combinations whose every value occurs in the trained classes, differing
      from each other in as many attributes as possible (three or fewer differ in every attribute: recognising
      any one attribute tells them apart).
    * ``n_new`` classes of no split, picked the same way among the rest, for held-out videos and names.

    Deterministic: depends on the sizes only.
    """
    n_trained = n_classes - n_test_unseen
    block = balanced_block()
    # The stage-1 seen classes first, then the validation-unseen ones: both chosen to show every value they can.
    trained = _most_even(block, min(n_trained, len(block)))
    if n_trained > len(block):
        trained += _spread_pick([c for c in all_classes() if c not in block], n_trained - len(block), trained, [])
    n_seen = n_trained - n_val_unseen
    seen = _most_even(trained, n_seen) if len(trained) <= len(block) else trained[:n_seen]
    trained = seen + [c for c in trained if c not in seen]
    counts = value_counts(trained)
    covered = [c for c in all_classes()
               if c not in trained and all(counts.get((a, getattr(c, a)), 0) for a in ATTRIBUTES)]
    if len(covered) < n_test_unseen + n_new:
        raise ValueError(
            f"demo: only {len(covered)} attribute combinations are new and made of values of the {n_trained} "
            f"trained classes; lower demo.n_test_unseen ({n_test_unseen}) or demo.heldout_new_classes ({n_new}), "
            f"or raise demo.n_classes ({n_classes})"
        )
    test = _spread_pick(covered, n_test_unseen, [], trained)
    new = _spread_pick([c for c in covered if c not in test], n_new, test, trained)
    roles = ["seen"] * n_seen + ["val_unseen"] * n_val_unseen + ["test_unseen"] * n_test_unseen
    return Design(trained + test, roles, new)


def class_catalogue() -> list[SyntheticClass]:
    """Every class a demo can have, in design order: the balanced block first, then the rest."""
    return balanced_block() + [c for c in all_classes() if c not in balanced_block()]


# ---------------------------------------------------------------------------------------------- rendering


def _render_frames(cls: SyntheticClass, n_frames: int, fps: float, width: int, height: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of a coloured shape moving on a noisy grey background."""
    t = np.arange(n_frames) / fps
    speed = rng.uniform(0.8, 1.25)  # per-video jitter keeps videos of one class distinct
    phase = rng.uniform(0, 2 * math.pi)
    # Large shapes and large motions: a random-weight C3D responds to how much of the frame has which colour
    # and to how much it changes, not to fine detail.
    size = rng.uniform(0.9, 1.1) * min(width, height) * 0.22
    cx0, cy0 = rng.uniform(0.4, 0.6) * width, rng.uniform(0.4, 0.6) * height
    if cls.motion == "bouncing":  # vertical, |sin| like a ball on a floor
        xs = np.full_like(t, cx0)
        ys = height * 0.8 - np.abs(np.sin(2 * math.pi * 0.9 * speed * t + phase)) * height * 0.6
        rs = np.full_like(t, size)
    elif cls.motion == "sliding":  # horizontal, wraps around
        xs = (cx0 + width * 0.6 * speed * t) % width
        ys = np.full_like(t, cy0)
        rs = np.full_like(t, size)
    else:  # pulsing: fixed position, radius oscillates
        xs, ys = np.full_like(t, cx0), np.full_like(t, cy0)
        rs = size * (1.0 + 0.5 * np.sin(2 * math.pi * 1.5 * speed * t + phase))

    background = int(rng.integers(40, 80))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = np.array(COLOURS[cls.colour], dtype=np.float32) * rng.uniform(0.9, 1.0)
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
    f0 = SOUNDS[cls.sound][1] * rng.uniform(0.92, 1.08)
    if cls.sound == "warble":  # vibrato: frequency modulated at ~6 Hz
        inst = f0 * (1 + 0.15 * np.sin(2 * math.pi * 6.0 * rng.uniform(0.9, 1.1) * t))
        wave = np.sin(2 * math.pi * np.cumsum(inst) / sample_rate)
    else:
        wave = np.sin(2 * math.pi * f0 * t) + 0.3 * np.sin(2 * math.pi * 2 * f0 * t)
    if cls.sound == "beeping":  # on/off at ~3 Hz
        wave = wave * (np.sin(2 * math.pi * 3.0 * rng.uniform(0.9, 1.1) * t + rng.uniform(0, 2 * math.pi)) > 0)
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


def generate_demo(cfg: SyntheticConfig, videos_dir: str | Path, official_dir: str | Path,
                  heldout_dir: str | Path | None = None) -> dict:
    """Write the demo videos under ``videos_dir/<ClassName>/`` and the list layout under ``official_dir``.

    With ``heldout_dir``, also the held-out set for prediction (:func:`write_heldout`). Returns a JSON-able
    summary: the config, the classes (with their role and attributes), every video's format, splits and defect,
    and the held-out files. Deterministic for a given config (seeded), so reruns give identical lists.
    """
    cfg.check()
    videos_dir, official_dir = Path(videos_dir), Path(official_dir)
    design = design_classes(cfg.n_classes, cfg.n_val_unseen, cfg.n_test_unseen, cfg.heldout_new_classes)
    classes, roles = design.classes, design.roles
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
        _truncate(videos_dir / broken.path)
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
    if heldout_dir is not None:
        summary["heldout"] = write_heldout(cfg, design, heldout_dir)
    log.info("wrote %d videos to %s and lists to %s", len(videos), videos_dir, official_dir)
    return summary


def _truncate(path: Path) -> None:
    """Keep the first bytes of a file only: its header promises streams that are not there."""
    data = path.read_bytes()
    path.write_bytes(data[: min(len(data) // 20, 600)])


HELDOUT_COLUMNS = ("file", "class_name", "readable_name", "kind")


def write_heldout(cfg: SyntheticConfig, design: Design, heldout_dir: str | Path) -> dict:
    """New videos and a class list for zero-shot prediction, in no split and never trained on.

    ``<heldout_dir>/videos/``: ``heldout_per_class`` new videos of each test-unseen class, one video of each of
    the ``heldout_new_classes`` classes of no split, and one truncated file (prediction must report it, not stop);
    file names do not give the class away. ``<heldout_dir>/classes.txt``: the readable names of the trained
    classes, of the test-unseen classes and of the classes of no split, one per line. ``<heldout_dir>/labels.tsv``:
    each file's true class and kind (``test_unseen`` / ``new`` / ``broken``). Its own random stream: the
    training videos do not change with these settings.
    """
    root = Path(heldout_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg.seed, 1])
    plan = [(c, "test_unseen") for c in design.of_role("test_unseen") for _ in range(cfg.heldout_per_class)]
    plan += [(c, "new") for c in design.new_classes]
    rows = []
    for k, (cls, kind) in enumerate(plan):
        fmt = cfg.formats[k % len(cfg.formats)]
        name = f"heldout_{k:02d}.{fmt.container}"
        write_video(root / "videos" / name, cls, fmt, cfg.duration_s, cfg.width, cfg.height, rng)
        rows.append({"file": name, "class_name": cls.name, "readable_name": cls.readable_name, "kind": kind})
    # A real video cut short, of a test class: the broken file looks like any other in the folder.
    cls, fmt = design.of_role("test_unseen")[0], cfg.formats[0]
    name = f"heldout_{len(plan):02d}.{fmt.container}"
    write_video(root / "videos" / name, cls, fmt, cfg.duration_s, cfg.width, cfg.height, rng)
    _truncate(root / "videos" / name)
    rows.append({"file": name, "class_name": cls.name, "readable_name": cls.readable_name, "kind": "broken"})

    names = [c.readable_name for c in design.of_role("seen", "val_unseen", "test_unseen") + design.new_classes]
    (root / "classes.txt").write_text(
        "# Demo classes for prediction: trained (seen), test-unseen, and classes of no split (never trained on)\n"
        + "".join(f"{n}\n" for n in names)
    )
    with open(root / "labels.tsv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HELDOUT_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %d held-out files and %d class names to %s", len(rows), len(names), root)
    return {"videos": rows, "classes": names,
            "new_classes": [{"name": c.name, "readable_name": c.readable_name, **asdict(c)} for c in design.new_classes]}


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
