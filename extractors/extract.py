"""Shard driver: manifest rows -> decoded, batched VGGish + C3D (and/or CLIP + CLAP) features -> one feature store.

A pool of decoder processes (``extractors.pool``; ``extract.decoders``) runs PyAV, the 25 fps resampling and the
size-dependent C3D preprocessing (inversion, resize, centre crop) video after video, and hands the 112x112 crops
and the 16 kHz audio back through shared memory, in manifest order. The main process normalises the crops on the
network's device, packs clips of *consecutive videos* into full ``video.batch_size`` batches for C3D (the expensive
step), embeds audio of several videos per VGGish call (its log-mel frontend on the same device), and appends
finished videos to the store in manifest order. Because the order is the manifest's whatever the number of
decoders, the batches, and so the stored bytes, do not depend on it.

On a GPU the crops arrive in page-locked memory and are copied to the device on a side CUDA stream, so the copy of
the next batch runs while the networks work on the previous one; on the CPU the crops are used where they are.

Memory is bounded by the configuration, not by video length or resolution: decoders resize every frame to the
network's input as they decode it, each decoder owns ``prefetch`` shared buffers of ``decode.clip_batch`` clips
(37.6 kB per frame for the reference preset's uint8 crops, 150 kB for the paper preset's float32 ones), and fewer
than ``video.batch_size + decode.clip_batch`` preprocessed clips wait for the network (2.4 MB per clip). Audio is
the exception: VGGish takes a video's 16 kHz waveform whole (4 bytes per sample: 19 MB for 5 min).

``extract.streams`` picks the extractors: ``audio`` (VGGish), ``video`` (C3D), ``clip`` (CLIP ViT-B/32 on the
video's middle frame at its native rate, or every frame of the 25 fps grid with ``frames: all``), ``clap`` (WavCaps
CLAP on 32 kHz audio); each gets its own store group. The decoders hand CLIP's 224x224 uint8 crops and the 32 kHz
waveform over per video (``extractors.pool``); the main process normalises and embeds CLIP crops in ``clip.batch_size`` batches across videos and CLAP waveforms
``audio_batch_videos`` videos per call, as for VGGish. With the default ``[audio, video]`` none of it runs.

A bad video never stops the shard and is never skipped silently: decode failures become the video's
status (``unreadable``, ``no_audio``, ``no_video``, ``too_short``, ``too_long``, ``broken_stream``) with a
reason and zero feature rows; manifest rows that were not ``ok`` are carried into the store as they are. What
decoding noticed in a video that did decode (re-stamped frames, a truncated file, the audio stream chosen among
several, start offsets) goes into its row of the store's table (``extractors.decode.DecodeRecord``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_splits.common import check_keys

from .c3d import VideoExtractorConfig, build_video_extractor
from .clap import SAMPLE_RATE as CLAP_RATE
from .clap import ClapExtractorConfig, build_clap_extractor
from .clip import ImageExtractorConfig, build_image_extractor, normalise_crops
from .decode import DecodeConfig
from .manifest import ManifestRow
from .pool import DecoderPool, VideoAudio, VideoCrops, VideoDone, VideoFrames, resolve_decoders
from .store import STREAMS, StoreWriter, store_streams
from .vggish import AudioExtractorConfig, build_audio_extractor

log = logging.getLogger(__name__)

MAX_PENDING_AUDIO_SAMPLES = 16_000 * 600  # 10 min of 16 kHz audio (38 MB) waiting for one VGGish call


@dataclass
class ExtractConfig:
    """The ``extract`` section of the pipeline config."""

    dataset: str = "demo"
    device: str = "auto"  # "auto" = cuda when available, else cpu; "cuda" without a GPU is an error
    # Extractors to run, one store group each: audio (VGGish), video (C3D), clip (CLIP image), clap (CLAP audio).
    streams: list[str] = field(default_factory=lambda: ["audio", "video"])
    audio: AudioExtractorConfig = field(default_factory=AudioExtractorConfig)
    video: VideoExtractorConfig = field(default_factory=VideoExtractorConfig)
    clip: ImageExtractorConfig = field(default_factory=ImageExtractorConfig)
    clap: ClapExtractorConfig = field(default_factory=ClapExtractorConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shards: int = 1  # number of shard jobs; read by the workflow, listed here so the section validates whole
    prefetch: int = 4  # decoded batches each decoder may have ready ahead of the networks (memory, see docstring)
    # Decoder processes: "auto" (the job's threads less one on a GPU, one on the CPU) or an int; 0 decodes in a
    # thread of the shard's own process.
    decoders: int | str = "auto"
    audio_batch_videos: int = 16  # waveforms per VGGish call
    log_every: int = 50  # videos between progress lines

    def __post_init__(self) -> None:
        for name in ("shards", "prefetch", "audio_batch_videos", "log_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"extract.{name} must be a positive int, got {getattr(self, name)!r}")
        resolve_decoders(self.decoders, 1, "cpu")  # checks the value; the count itself depends on the job
        if not isinstance(self.streams, list | tuple) or not self.streams:
            raise ValueError(f"extract.streams must be a non-empty list of {list(STREAMS)}, got {self.streams!r}")
        self.streams = list(store_streams({"streams": list(self.streams)}))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractConfig:
        check_keys(cls, d, "extract")
        d = dict(d)
        dataset = d.get("dataset", cls.dataset)
        # Sections may already be dataclasses (a caller tweaking a loaded config) or mappings from YAML.
        if not isinstance(d.get("video"), VideoExtractorConfig):
            video = dict(d.get("video") or {})
            video.setdefault("dataset", dataset)  # the reference preset's colour inversion depends on it
            d["video"] = VideoExtractorConfig.from_dict(video)
        if not isinstance(d.get("audio"), AudioExtractorConfig):
            d["audio"] = AudioExtractorConfig.from_dict(dict(d.get("audio") or {}))
        if not isinstance(d.get("clip"), ImageExtractorConfig):
            clip = dict(d.get("clip") or {})
            # The reference preset's frame rule and UCF's inversion depend on the dataset (the demo has its own).
            clip.setdefault("dataset", dataset if dataset in ("ucf", "vggsound", "activitynet", "demo") else None)
            d["clip"] = ImageExtractorConfig.from_dict(clip)
        if not isinstance(d.get("clap"), ClapExtractorConfig):
            d["clap"] = ClapExtractorConfig.from_dict(dict(d.get("clap") or {}))
        if not isinstance(d.get("decode"), DecodeConfig):
            d["decode"] = DecodeConfig.from_dict(d.get("decode"))
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# The driver


class _ToDevice:
    """Crops to the network's device: on CUDA an asynchronous copy on a side stream that the compute stream waits
    for (so it overlaps with the kernels already queued there); on the CPU nothing to do."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        if self.stream is None:
            return crops
        with torch.cuda.stream(self.stream):
            out = crops.to(self.device, non_blocking=True)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_stream(self.stream)
        out.record_stream(compute)  # allocated on the side stream, used and freed on the compute stream
        return out


class _Batcher:
    """Collects work per video, runs the networks on full batches, releases finished videos in order."""

    def __init__(self, rows, audio, video, writer: StoreWriter, cfg: ExtractConfig, clip=None, clap=None):
        self.rows, self.audio, self.video, self.writer, self.cfg = rows, audio, video, writer, cfg
        self.clip, self.clap = clip, clap
        self.streams = set(cfg.streams)
        self.frames: list[torch.Tensor] = []  # CLIP inputs waiting for a full batch, and whose they are
        self.frame_owners: list[np.ndarray] = []
        self.n_frames = 0
        self.clip_out: dict[int, list[np.ndarray]] = {}
        self.waves32: list[VideoAudio] = []
        self.clap_out: dict[int, np.ndarray] = {}
        self.clips: list[torch.Tensor] = []
        self.owners: list[np.ndarray] = []
        self.n_clips = 0
        self.waves: list[VideoAudio] = []
        self.video_out: dict[int, list[np.ndarray]] = {}
        self.audio_out: dict[int, np.ndarray] = {}
        self.done: dict[int, VideoDone] = {}
        self.next_write = 0
        self.statuses: Counter[str] = Counter()
        self.clips_embedded = 0

    def add_clips(self, i: int, clips: torch.Tensor) -> None:
        self.clips.append(clips)
        self.owners.append(np.full(len(clips), i))
        self.n_clips += len(clips)
        if self.n_clips >= self.video.cfg.batch_size:
            self.run_video(whole_batches_only=True)

    def add_frames(self, msg: VideoFrames) -> None:
        self.clip_out.setdefault(msg.i, [])  # a video with no selected frame is done with zero rows
        if not len(msg.crops):
            return
        self.frames.append(normalise_crops(msg.crops))
        self.frame_owners.append(np.full(len(msg.crops), msg.i))
        self.n_frames += len(msg.crops)
        if self.n_frames >= self.clip.cfg.batch_size:
            self.run_clip()

    def add_audio32(self, msg: VideoAudio) -> None:
        self.waves32.append(msg)
        if (len(self.waves32) >= self.cfg.audio_batch_videos
                or sum(len(w.wave) for w in self.waves32) >= 2 * MAX_PENDING_AUDIO_SAMPLES):
            self.run_clap()

    def run_clip(self) -> None:
        if not self.n_frames:
            return
        owners = np.concatenate(self.frame_owners)
        feats = self.clip.embed_preprocessed(torch.cat(self.frames))
        self.frames, self.frame_owners, self.n_frames = [], [], 0
        for i in np.unique(owners):
            self.clip_out.setdefault(int(i), []).append(feats[owners == i])

    def run_clap(self) -> None:
        if self.waves32:
            codes = self.clap.embed_batch([torch.from_numpy(w.wave) for w in self.waves32])
            for w, c in zip(self.waves32, codes, strict=True):
                self.clap_out[w.i] = c
            self.waves32 = []

    def add_audio(self, msg: VideoAudio) -> None:
        if msg.rate == CLAP_RATE:
            self.add_audio32(msg)
            return
        self.waves.append(msg)
        # Also cap the samples: a few long ActivityNet segments are as much audio as many short clips.
        if (len(self.waves) >= self.cfg.audio_batch_videos
                or sum(len(w.wave) for w in self.waves) >= MAX_PENDING_AUDIO_SAMPLES):
            self.run_audio()

    def finish(self, msg: VideoDone) -> None:
        self.done[msg.i] = msg
        if msg.status != "ok":
            self._drop(msg.i)  # clips of a video that broke mid-way are not worth a forward pass

    def _drop(self, i: int) -> None:
        keep = [(c[o != i], o[o != i]) for c, o in zip(self.clips, self.owners, strict=True)]
        self.clips = [c for c, o in keep if len(o)]
        self.owners = [o for c, o in keep if len(o)]
        self.n_clips = sum(len(o) for o in self.owners)
        self.waves = [w for w in self.waves if w.i != i]
        self.waves32 = [w for w in self.waves32 if w.i != i]
        keep = [(f[o != i], o[o != i]) for f, o in zip(self.frames, self.frame_owners, strict=True)]
        self.frames = [f for f, o in keep if len(o)]
        self.frame_owners = [o for f, o in keep if len(o)]
        self.n_frames = sum(len(o) for o in self.frame_owners)

    def run_video(self, whole_batches_only: bool) -> None:
        if not self.n_clips:
            return
        bs = self.video.cfg.batch_size
        n = (self.n_clips // bs) * bs if whole_batches_only else self.n_clips
        if not n:
            return
        clips, owners = torch.cat(self.clips), np.concatenate(self.owners)
        feats = self.video.embed_preprocessed(clips[:n])
        self.clips, self.owners = ([clips[n:]], [owners[n:]]) if n < len(owners) else ([], [])
        self.n_clips = len(owners) - n
        self.clips_embedded += n
        for i in np.unique(owners[:n]):
            self.video_out.setdefault(int(i), []).append(feats[owners[:n] == i])

    def run_audio(self) -> None:
        if self.waves:
            codes = self.audio.embed_batch([torch.from_numpy(w.wave) for w in self.waves])
            for w, c in zip(self.waves, codes, strict=True):
                self.audio_out[w.i] = c
            self.waves = []

    def _ready(self, i: int) -> bool:
        if i not in self.done:
            return False
        if self.done[i].status != "ok":
            return True
        return (("audio" not in self.streams or i in self.audio_out)
                and not any((o == i).any() for o in self.owners)
                and ("clap" not in self.streams or i in self.clap_out)
                and ("clip" not in self.streams
                     or (i in self.clip_out and not any((o == i).any() for o in self.frame_owners))))

    def write_ready(self) -> None:
        while self.next_write < len(self.rows) and self._ready(self.next_write):
            i = self.next_write
            row, msg = self.rows[i], self.done[i]
            audio, video = self.audio_out.pop(i, None), self.video_out.pop(i, [])
            clip, clap = self.clip_out.pop(i, []), self.clap_out.pop(i, None)
            if msg.status != "ok":
                audio, video, clip, clap = None, [], [], None
            record = msg.record.table_fields() if msg.record is not None else {}
            self.writer.append(row.video_id, audio, np.concatenate(video) if video else None,
                               {"status": msg.status, "reason": msg.reason, "duration_s": row.duration_s,
                                "class_name": row.class_name, "path": row.path, **record},
                               more={"clip": np.concatenate(clip) if clip else None, "clap": clap})
            self.statuses[msg.status] += 1
            del self.done[i]
            self.next_write += 1

    def flush(self) -> None:
        self.run_audio()
        self.run_video(whole_batches_only=False)
        self.run_clip()
        self.run_clap()
        self.write_ready()


def extract_shard(manifest_rows: Sequence[ManifestRow], out_store: str | Path, cfg: ExtractConfig,
                  audio_extractor=None, video_extractor=None, threads: int | None = None,
                  clip_extractor=None, clap_extractor=None) -> dict[str, Any]:
    """Extract every row of ``manifest_rows`` into the store ``out_store`` (one writer, atomic).

    ``audio_extractor``/``video_extractor`` default to ``build_*_extractor(cfg.audio/cfg.video,
    cfg.device)``; passing them lets a caller reuse loaded networks (the decoders then preprocess with the
    video extractor's own config). ``threads``: the cores of the job, which size ``extract.decoders: auto``
    (default: torch's thread count). Returns a summary (counts, timing, decoders).
    """
    rows = list(manifest_rows)
    ids = [r.video_id for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"extract_shard: duplicate video ids in the manifest rows for {out_store}")
    streams = cfg.streams
    # Only the selected extractors are built (a CLIP/CLAP-only run loads no VGGish or C3D, and the reverse).
    audio = (audio_extractor or build_audio_extractor(cfg.audio, cfg.device)) if "audio" in streams else None
    video = (video_extractor or build_video_extractor(cfg.video, cfg.device)) if "video" in streams else None
    clip = (clip_extractor or build_image_extractor(cfg.clip, cfg.device)) if "clip" in streams else None
    clap = (clap_extractor or build_clap_extractor(cfg.clap, cfg.device)) if "clap" in streams else None
    built = {"audio": audio, "video": video, "clip": clip, "clap": clap}
    device = torch.device(getattr(next(x for x in (video, clip, audio, clap) if x is not None), "device", "cpu"))
    decoders = resolve_decoders(cfg.decoders, threads or torch.get_num_threads(), device.type)
    video_cfg = video.cfg if video is not None and isinstance(video.cfg, VideoExtractorConfig) else cfg.video
    clip_cfg = clip.cfg if clip is not None else cfg.clip
    attrs = {"dataset": cfg.dataset, "streams": list(streams), **{m: built[m].attrs for m in streams},
             "decode": asdict(cfg.decode), "device": str(device), "decoders": decoders}
    dims = {m: int(built[m].dim) for m in ("clip", "clap") if m in streams}

    t0 = time.perf_counter()
    to_device = _ToDevice(device)
    writer = StoreWriter(out_store, attrs, dims=dims)
    batcher = _Batcher(rows, audio, video, writer, cfg, clip=clip, clap=clap)
    try:
        with DecoderPool(rows, cfg.decode, video_cfg, decoders, cfg.prefetch,
                         pin_memory=device.type == "cuda", streams=streams, clip=clip_cfg) as pool:
            startup = pool.wait_ready()
            for msg in pool:
                if isinstance(msg, VideoCrops):
                    batcher.add_clips(msg.i, video.make_clips(video.normalise_crops(to_device(msg.crops))))
                elif isinstance(msg, VideoFrames):
                    batcher.add_frames(msg)
                elif isinstance(msg, VideoAudio):
                    batcher.add_audio(msg)
                else:
                    batcher.finish(msg)
                    if msg.status != "ok":
                        log.warning("%s: %s (%s)", rows[msg.i].video_id, msg.status, msg.reason)
                    _log_progress(msg.i + 1, len(rows), batcher, t0, cfg.log_every)
                batcher.write_ready()
        batcher.flush()
    except BaseException:
        writer.abort()
        raise
    assert batcher.next_write == len(rows), "every manifest row must reach the store"
    writer.close()
    seconds = time.perf_counter() - t0
    summary = {"videos": len(rows), "statuses": dict(batcher.statuses), "clips": batcher.clips_embedded,
               "seconds": seconds, "videos_per_s": len(rows) / seconds if seconds else None,
               "clips_per_s": batcher.clips_embedded / seconds if seconds else None, "decoders": decoders,
               "decoder_startup_s": startup, "device": str(device)}
    log.info("%s: %s", out_store, summary)
    return summary


def _log_progress(done: int, total: int, batcher: _Batcher, t0: float, every: int) -> None:
    if done % every and done != total:
        return
    dt = time.perf_counter() - t0
    log.info("decoded %d/%d videos in %.0f s (%.2f videos/s, %.1f clips/s embedded); %s", done, total, dt,
             done / dt, batcher.clips_embedded / dt, dict(batcher.statuses))
