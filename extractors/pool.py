"""A pool of decoder processes: manifest rows -> 16 kHz audio and the network's uint8/float crops, in manifest order.

Each decoder process runs PyAV, the 25 fps resampling and the size-dependent part of the C3D preprocessing
(colour inversion, resize, centre crop: ``FramePreprocessor.crop_frames``) for whole videos, taking the next video
of the manifest as soon as it is free. Frames travel through shared memory: every decoder owns a ring of
``slots`` buffers of one decode batch (``extract.decode.clip_batch`` clips of 16 crops) and blocks while all of them
wait in the main process; audio (one array per video) and the per-video status travel through a queue.

The main process reads the videos back in manifest order whatever the number of decoders and whichever finishes
first, so the networks see the same batches, and the store gets the same bytes, with 1 or N decoders. Ordering
cannot deadlock: a decoder's ring only ever holds the video it works on and videos before it, and the video the
main process waits for is always the oldest one a decoder holds, whose slots it frees as it reads them.

Memory is bounded by the configuration: ``decoders * slots`` batches of crops (4.8 MB each for the reference
preset's uint8 crops, 19 MB for the paper preset's float32 ones at the default 8 clips), plus the audio of the
videos decoded ahead (at most ``slots`` per decoder, since every video takes at least one batch).

``decoders=0`` decodes in a thread of the calling process instead (no processes, no shared memory): the same
messages, a baseline for the benchmarks.

The CLIP and CLAP streams (``streams``) are decoded by the same decoders, after the VGGish/C3D work of a video:
CLAP's 32 kHz audio is a second resampling of the native-rate samples (a second audio decode, with the same
kaiser_best filter; the 16 kHz signal is never resampled up), and CLIP's frame is ClipClap's middle frame at the
video's native rate (``frames: all``: the 25 fps grid's frames; see :func:`_clip_crops`), cropped to CLIP's
224x224 input by the decoder. Both travel in their own shared memory block per video, like the 16 kHz audio.
Without these streams nothing of this runs.

A decode failure is the video's status (``DecodeError.status`` and its reason), never the run's end; a bug or an
out-of-memory in a decoder process ends the run with that process's traceback.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from .c3d import CROP, FramePreprocessor, VideoExtractorConfig
from .clap import SAMPLE_RATE as CLAP_RATE
from .clip import FrameCropper, ImageExtractorConfig, select_frames
from .decode import (
    FRAMES_PER_CLIP,
    BrokenStream,
    DecodeConfig,
    DecodeError,
    DecodeRecord,
    count_native_frames,
    decode_audio,
    iter_clip_batches,
    iter_frames,
    iter_native_frames,
)
from .manifest import ManifestRow
from .store import MODALITIES

log = logging.getLogger(__name__)

MAX_AUTO_DECODERS = 16


# --------------------------------------------------------------------------------------------------
# What the pool yields, per video and in manifest order: VideoAudio, then VideoCrops (0 or more), then VideoDone.


@dataclass
class VideoAudio:
    i: int  # index of the video in the rows given to the pool
    wave: np.ndarray  # float32 mono, 16 kHz (VGGish) or 32 kHz (CLAP: rate)
    rate: int = 16_000


@dataclass
class VideoFrames:
    i: int
    crops: np.ndarray  # [K, 224, 224, 3] uint8: CLIP's input of the selected frames before normalisation


@dataclass
class VideoCrops:
    i: int
    crops: torch.Tensor  # [n, 112, 112, 3] uint8 or float32 (FramePreprocessor.crop_dtype), pinned when asked


@dataclass
class VideoDone:
    i: int
    status: str = "ok"
    reason: str = ""
    record: DecodeRecord | None = None


def resolve_decoders(spec: Any, threads: int, device_type: str, key: str = "extract.decoders") -> int:
    """The number of decoder processes for a job with ``threads`` cores: ``auto`` or an int >= 0 (0 = a thread).

    ``auto``: on a GPU the networks need one core to feed the device, the others decode; on the CPU the networks
    use the cores themselves and a decoder process only competes with them: measured on 2 idle cores, one decoder
    process made extraction 6 % (fp32) and 18 % (bf16) slower per clip than decoding in a thread of the job
    (docs/extraction.md, "Decoder processes"), so ``auto`` decodes in a thread there.
    """
    if spec == "auto" or spec is None:
        if device_type == "cuda":
            return max(1, min(MAX_AUTO_DECODERS, int(threads) - 1))
        return 0
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 0:
        raise ValueError(f"{key} must be 'auto' or an int >= 0 (0 = decode in a thread), got {spec!r}")
    return spec


# --------------------------------------------------------------------------------------------------
# Decoding one video (the same code in a thread and in a process)


def _decode_video(row: ManifestRow, cfg: DecodeConfig, crop, streams: Sequence[str] = MODALITIES,
                  clip: FrameCropper | None = None) -> Iterator[tuple]:
    """("audio", wave), ("audio32", wave), ("crops", array [n,112,112,3])..., ("frames", array [K,224,224,3]), then
    ("done", status, reason, record); only the messages of the selected ``streams``."""
    record = DecodeRecord()
    try:
        # Audio first: it is cheap, and a video without usable audio needs no frames at all.
        if "audio" in streams:
            yield "audio", decode_audio(row.path, cfg, row.start_s, row.end_s, record=record)
        if "clap" in streams:
            # Any audio at all makes a CLAP window (zero-padded to 10 s); VGGish's minimum was checked above.
            yield "audio32", decode_audio(row.path, cfg, row.start_s, row.end_s, min_samples=1, rate=CLAP_RATE,
                                          record=record if "audio" not in streams else DecodeRecord())
        n_native = None
        if "video" in streams:
            for batch in iter_clip_batches(row.path, cfg, row.start_s, row.end_s, transform=crop, record=record):
                n = int(batch.n_valid.sum())  # only the video's last clip can be partial
                yield "crops", batch.frames.reshape(-1, *batch.frames.shape[2:])[:n]
            if row.start_s is None and row.end_s is None:
                n_native = record.frames_decoded  # the C3D pass decoded every picture of the file once
        if "clip" in streams:
            yield "frames", _clip_crops(row, cfg, clip, n_native, None if "video" in streams else record)
        yield "done", "ok", "; ".join(n for n in (row.reason, *record.notes) if n), record
    except DecodeError as err:
        yield "done", err.status, err.reason, record


def _clip_crops(row: ManifestRow, cfg: DecodeConfig, clip: FrameCropper, n_native: int | None,
                record: DecodeRecord | None) -> np.ndarray:
    """CLIP's crops of the selected frames, uint8 [K, 224, 224, 3].

    ``frames: middle`` takes ClipClap's frame: its rule applied to the video's native frames
    (``decode.iter_native_frames``, the sequence OpenCV's read loop returns). The rule needs the native frame
    count first: a whole file's C3D pass counted it (``n_native``), else a counting pass does (no frame converted);
    the second pass stops at the selected frame, so only it is converted and cropped. ``frames: all`` takes every
    frame of the 25 fps grid, the time axis C3D's clips have. ``record`` (when no C3D pass filled it) receives what
    the full pass over the video found.
    """
    if clip.cfg.frames == "all":
        return _grid_crops(row, cfg, clip, record if record is not None else DecodeRecord())
    if n_native is None:
        n_native = count_native_frames(row.path, cfg, row.start_s, row.end_s,
                                       record=record if record is not None else DecodeRecord())
    want = select_frames(n_native, clip.cfg)
    if not want:
        return np.zeros((0, 224, 224, 3), np.uint8)
    out = list(iter_native_frames(row.path, cfg, row.start_s, row.end_s, transform=clip, record=DecodeRecord(),
                                  select=want))
    if len(out) != len(want):  # the second pass must see the frames the first one counted
        raise BrokenStream(row.path, f"CLIP frame(s) {want} of {n_native} native frames did not decode again")
    return np.stack(out)


def _grid_crops(row: ManifestRow, cfg: DecodeConfig, clip: FrameCropper, record: DecodeRecord) -> np.ndarray:
    """CLIP's crops of every frame of the 25 fps grid; a source frame the grid shows twice is cropped once."""
    out: list[np.ndarray] = []
    last_src = last_crop = None
    for frame in iter_frames(row.path, cfg, row.start_s, row.end_s, record=record):
        if frame is not last_src:
            last_src, last_crop = frame, clip(frame)
        out.append(last_crop)
    return np.stack(out) if out else np.zeros((0, 224, 224, 3), np.uint8)


def _to_shared(wave: np.ndarray) -> str:
    """A waveform into a new shared memory block, for the main process to copy and unlink; returns its name.

    Every message on the results queue stays a few hundred bytes, below the size a pipe writes atomically, so a
    decoder killed mid-message (out of memory) cannot leave half a message that the main process would wait on
    for ever; it only finds the decoder dead.
    """
    shm = SharedMemory(create=True, size=max(1, wave.nbytes))
    np.ndarray(wave.shape, wave.dtype, buffer=shm.buf)[:] = wave
    name = shm.name
    shm.close()
    return name


def _from_shared(name: str, n: int | tuple, dtype: str = "float32") -> np.ndarray:
    shm = SharedMemory(name)
    try:
        return np.ndarray(n if isinstance(n, tuple) else (n,), np.dtype(dtype), buffer=shm.buf).copy()
    finally:
        shm.close()
        shm.unlink()


def _process_main(wid: int, rows: list[ManifestRow], cfg: DecodeConfig, video: VideoExtractorConfig,
                  tasks, results, shm_name: str, ring_shape: tuple, dtype: str, free, go,
                  streams: tuple = MODALITIES, clip: ImageExtractorConfig | None = None) -> None:
    """A decoder process: video indices from ``tasks`` until None; crops into its ring, the rest to ``results``."""
    torch.set_num_threads(1)  # one core per decoder: the pool's size is the parallelism
    shm = SharedMemory(shm_name)
    try:
        ring = np.ndarray(ring_shape, dtype=np.dtype(dtype), buffer=shm.buf)[wid]
        crop = FramePreprocessor(video, "cpu").crop_frames
        cropper = FrameCropper(clip) if "clip" in streams else None
        results.put(("ready", -1, wid))
        go.wait()
        k = 0
        while (i := tasks.get()) is not None:
            for msg in _decode_video(rows[i], cfg, crop, streams, cropper):
                if msg[0] == "crops":
                    free.acquire()  # released by the main process once it has copied the slot out
                    slot = k % len(ring)
                    ring[slot, : len(msg[1])] = msg[1]
                    results.put(("crops", i, wid, slot, len(msg[1])))
                    k += 1
                elif msg[0] in ("audio", "audio32", "frames"):
                    results.put((msg[0], i, _to_shared(msg[1]), msg[1].shape, msg[1].dtype.str))
                else:
                    results.put((msg[0], i, *msg[1:]))
    except BaseException:  # noqa: BLE001 - a bug or an OOM: the main process raises it with this traceback
        results.put(("crash", -1, wid, traceback.format_exc()))
    finally:
        del ring
        shm.close()


@contextmanager
def _without_main_module():
    """Start processes that do not re-run the caller's main script.

    A spawned process imports the parent's ``__main__`` from its file before it unpickles its target; a Snakemake
    ``script:`` (or a script on stdin) would run again in every decoder. The decoders need nothing from it (their
    target lives in this module), so the file is hidden from ``multiprocessing`` while they start.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for k in saved:
            setattr(main, k, None) if k == "__spec__" else delattr(main, k)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


# --------------------------------------------------------------------------------------------------
# The pool


class DecoderPool:
    """Iterate to get every row's VideoAudio / VideoCrops / VideoDone in manifest order; use as a context manager.

    ``pin_memory`` (for a CUDA consumer) hands the crops over in page-locked memory, ready for an asynchronous copy.
    Rows whose manifest status is not ``ok`` are not decoded: they come back as VideoDone with that status and reason.
    """

    def __init__(self, rows: Sequence[ManifestRow], decode: DecodeConfig, video: VideoExtractorConfig,
                 decoders: int = 1, slots: int = 4, pin_memory: bool = False, streams: Sequence[str] = MODALITIES,
                 clip: ImageExtractorConfig | None = None):
        if not (isinstance(decoders, int) and decoders >= 0):
            raise ValueError(f"decoders must be an int >= 0, got {decoders!r}")
        if not (isinstance(slots, int) and slots > 0):
            raise ValueError(f"slots must be a positive int, got {slots!r}")
        self.rows, self.decode, self.video = list(rows), decode, video
        todo = [i for i, r in enumerate(self.rows) if r.status == "ok"]
        self.decoders = min(decoders, len(todo)) if decoders else 0
        self.slots, self.pin_memory = slots, pin_memory
        self.streams = tuple(streams)
        self.clip = clip if clip is not None else ImageExtractorConfig()
        self.dtype = FramePreprocessor(video, "cpu").crop_dtype
        self._procs: list = []
        self._shm: SharedMemory | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._early: deque = deque()  # messages that arrived while waiting for the decoders to start
        self._waiting: dict[int, deque] = defaultdict(deque)
        self._ready = 0
        if self.decoders:
            self._start_processes(todo)
        else:
            self._start_thread()

    # ---- start and stop ----------------------------------------------------------------------------------------
    def _start_processes(self, todo: list[int]) -> None:
        # spawn, never fork: the parent may hold a CUDA context and threads, neither of which survives a fork.
        ctx = mp.get_context("spawn")
        ring_shape = (self.decoders, self.slots, self.decode.clip_batch * FRAMES_PER_CLIP, CROP, CROP, 3)
        self._shm = SharedMemory(create=True, size=int(np.prod(ring_shape)) * self.dtype.itemsize)
        self._ring = np.ndarray(ring_shape, dtype=self.dtype, buffer=self._shm.buf)
        self._results = ctx.Queue()
        self._tasks = tasks = ctx.Queue()  # kept: the children unpickle it after start() returns
        for i in todo:
            tasks.put(i)
        for _ in range(self.decoders):
            tasks.put(None)
        self._free = [ctx.Semaphore(self.slots) for _ in range(self.decoders)]
        self._go = ctx.Event()  # set by wait_ready() or the first read: decoders start together
        with _without_main_module():
            for wid in range(self.decoders):
                p = ctx.Process(target=_process_main, name=f"decoder-{wid}", daemon=True,
                                args=(wid, self.rows, self.decode, self.video, tasks, self._results, self._shm.name,
                                      ring_shape, self.dtype.str, self._free[wid], self._go, self.streams,
                                      self.clip))
                p.start()
                self._procs.append(p)

    def _start_thread(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self.slots)
        crop = FramePreprocessor(self.video, "cpu").crop_frames
        cropper = FrameCropper(self.clip) if "clip" in self.streams else None

        def put(item) -> bool:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            try:
                for i, row in enumerate(self.rows):
                    if row.status == "ok":
                        for msg in _decode_video(row, self.decode, crop, self.streams, cropper):
                            if not put((msg[0], i, *msg[1:])):
                                return
            except BaseException:  # noqa: BLE001 - re-raised by the consumer
                put(("crash", -1, 0, traceback.format_exc()))

        self._thread = threading.Thread(target=run, name="decode", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout=10)
        self._procs = []
        if self._shm is not None:  # audio blocks of videos never read (the run ended early)
            for msg in [*self._early, *(m for q in self._waiting.values() for m in q)]:
                if msg[0] in ("audio", "audio32", "frames"):
                    try:
                        _from_shared(msg[2], 0)
                    except FileNotFoundError:
                        pass
            self._early.clear()
            self._waiting.clear()
        if self._shm is not None:
            del self._ring
            self._shm.close()
            self._shm.unlink()
            self._shm = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reading in manifest order -----------------------------------------------------------------------------
    def wait_ready(self) -> float:
        """Block until every decoder process has started (imports, preprocessing set up), then let them all start
        decoding; returns the seconds waited. Without it, decoding starts at the first read."""
        t = time.perf_counter()
        while self._procs and self._ready < len(self._procs):
            msg = self._receive(early=False, until_ready=True)
            if msg[0] != "ready":
                self._early.append(msg)
        if self._procs:
            self._go.set()
        return time.perf_counter() - t

    def _receive(self, early: bool = True, until_ready: bool = False) -> tuple:
        if early and self._early:
            return self._early.popleft()
        while True:
            if until_ready and self._ready == len(self._procs):
                return ("ready", -1, -1)
            try:
                if self._thread is not None:
                    return self._queue.get(timeout=1.0)
                msg = self._results.get(timeout=1.0)
                if msg[0] == "ready":
                    self._ready += 1
                    continue
                return msg
            except queue.Empty:
                dead = [p for p in self._procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"decoder process {dead[0].name} died (exit code {dead[0].exitcode}; "
                                       "killed for memory?) before its videos were decoded") from None
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the decode thread ended before every video was decoded")

    def _crops(self, msg: tuple) -> torch.Tensor:
        if self._thread is not None:
            arr = torch.from_numpy(msg[2])
            return arr.pin_memory() if self.pin_memory else arr
        _, _, wid, slot, n = msg
        src = torch.from_numpy(self._ring[wid, slot, :n])
        out = torch.empty(src.shape, dtype=src.dtype, pin_memory=self.pin_memory)
        out.copy_(src)
        self._free[wid].release()
        return out

    def __iter__(self) -> Iterator[VideoAudio | VideoCrops | VideoDone]:
        if self._procs:
            self._go.set()
        waiting = self._waiting  # messages of videos after the one being read
        for i, row in enumerate(self.rows):
            if row.status != "ok":
                yield VideoDone(i, row.status, row.reason, None)
                continue
            while True:
                if waiting[i]:
                    msg = waiting[i].popleft()
                else:
                    msg = self._receive()
                    if msg[0] == "crash":
                        raise RuntimeError(f"a decoder failed:\n{msg[3]}")
                    if msg[1] != i:
                        waiting[msg[1]].append(msg)
                        continue
                if msg[0] in ("audio", "audio32", "frames"):
                    data = msg[2] if self._thread is not None else _from_shared(msg[2], tuple(msg[3]), msg[4])
                    if msg[0] == "frames":
                        yield VideoFrames(i, data)
                    else:
                        yield VideoAudio(i, data, CLAP_RATE if msg[0] == "audio32" else 16_000)
                elif msg[0] == "crops":
                    yield VideoCrops(i, self._crops(msg))
                else:
                    yield VideoDone(i, msg[2], msg[3], msg[4])
                    waiting.pop(i, None)
                    break


# --------------------------------------------------------------------------------------------------
# Decode-only throughput


def decode_throughput(videos: Sequence[str | Path | ManifestRow], decoders: int = 1,
                      decode: DecodeConfig | None = None, video: VideoExtractorConfig | None = None,
                      pin_memory: bool = False, slots: int = 4) -> dict[str, Any]:
    """Decode ``videos`` as extraction does, without the networks, and time it.

    Decoding, 25 fps resampling, 16 kHz audio and the C3D preprocessing the decoders do (inversion, resize, crop),
    with ``decoders`` processes (0 = one thread of this process), everything handed back in manifest order (and
    into pinned memory with ``pin_memory``), exactly as ``extract_shard`` receives it. ``videos``: paths (whole
    files) or manifest rows. ``video`` picks the preset (default: the paper preset). Returns seconds (including
    starting the processes), videos, frames, clips (ceil(frames / 16) per video), audio_s, statuses, the rates
    per second of each, and the settings used. ``seconds`` starts once every decoder process has started  (they
    then start together); ``startup_s`` is the start-up itself (imports in each new process: seconds, once per
    shard, not part of the decoding rate).
    """
    decode = decode or DecodeConfig()
    video = (video or VideoExtractorConfig()).validate()
    rows = [v if isinstance(v, ManifestRow) else
            ManifestRow(video_id=f"{k}:{Path(v).name}", path=str(v), start_s=None, end_s=None, class_name="",
                        status="ok") for k, v in enumerate(videos)]
    frames = audio_samples = clips = 0
    per_video_frames = 0
    statuses: Counter[str] = Counter()
    t_start = time.perf_counter()
    with DecoderPool(rows, decode, video, decoders, slots, pin_memory) as pool:
        pool.wait_ready()
        t0 = time.perf_counter()
        for msg in pool:
            if isinstance(msg, VideoCrops):
                frames += len(msg.crops)
                per_video_frames += len(msg.crops)
            elif isinstance(msg, VideoAudio):
                audio_samples += len(msg.wave)
            else:
                statuses[msg.status] += 1
                clips += -(-per_video_frames // FRAMES_PER_CLIP) if msg.status == "ok" else 0
                per_video_frames = 0
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "startup_s": t0 - t_start, "videos": len(rows), "frames": frames, "clips": clips,
            "audio_s": audio_samples / 16_000, "statuses": dict(statuses),
            "videos_per_s": len(rows) / seconds, "frames_per_s": frames / seconds, "clips_per_s": clips / seconds,
            "decoders": decoders, "preset": video.preset, "crop_dtype": str(np.dtype(pool.dtype)),
            "pin_memory": pin_memory}
