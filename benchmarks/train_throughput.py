"""Training throughput of every method through our shared loop, beside the official training loops.

**Every method** (``--methods``, default all registered methods): samples/s of our training loop on the same
synthetic data, at the official batch size of each method (``train_defaults`` of its module), medians of
``--rounds`` interleaved rounds (default 3) with their min and max:

* averaged methods (AVCA, CJME, AVGZSLNet, DeViSE, ALE, SJE, APN, and the others of the registry without an
  official loop timed here): ``AveragedRecipe.train_one_epoch``
  (``model/methods/train.py``, the loop ``run_stage`` calls) on a UCF-like stage-1 training split of averaged
  features (3174 videos, 30 of 101 classes, audio 128 on the 0..255 scale, video 4096, 300-d class vectors),
  batch 256, with the "reference" preset: our step then does the official step's model work (AVCA's extra
  train-mode pass, DeViSE's class-matrix dropout, per-call BatchNorm, ...).
  With ``--official PATH`` (a checkout or extract of ExplainableML/AVCA-GZSL: ``main.py``, ``src/``,
  ``run_scripts/``) the **official training loop** of each runs in the same process, interleaved with ours
  round by round (the order alternating): ``src.train.train_step`` over main.py's ``DataLoader`` (its
  ``WeightedRandomBatchSampler``, batch 256, **8 workers**, default collation) of the official
  ``ContrastiveDataset`` (per-sample items with a negative each) over the official ``UCFDataset``, with the
  model, criterion and optimiser main.py builds from the flags of ``run_scripts/UCF-GZSL/<method>.sh`` (its
  first-stage cls line, parsed by the official ``args_main``). Only its file loading is replaced (in-memory
  features, same tensors as ours; see ``Official`` for every in-process patch). The workers are persistent and
  started before the timed rounds: the official loader re-forks them every 500-batch epoch, which is measured
  separately (``worker_startup_s``) and folded into ``epoch_500_samples_per_s_with_startup``. Not timed on
  either side: the official per-epoch val-loss pass (``val_step``) and the evaluations.
* temporal methods (TCAF, Attention Fusion, Perceiver): ``model.train.train_one_epoch`` on UCF-like clips,
  batch 64, beside a **stand-in** of the official TCAF data path (below; the TCAF code is not run here, and
  the paper's temporal baselines have no released code: it trains them as TCAF).
* f-VAEGAN-D2: ours only (batch 64, in its 1-batch epochs, so its per-epoch work counts at every step); its
  official training is module-level script code outside ``src/`` (``NO_OFFICIAL_LOOP``).

Our loop is timed in exact mode and, unless ``--no-bf16``, in fast mode (``train.amp: bf16``) beside it; with
``--compile`` the averaged methods also with ``train.compile: true`` (exact arithmetic, ``torch.compile`` of
the method's losses; its compilation happens in the warm-up and is reported as ``compile_s``). A
mode that fails (an exception) is recorded in the JSON and left out. Per method the JSON also records the
CPU time other processes used meanwhile (``cpu_of_other_processes``), so a figure from a shared machine shows.

The table printed at the end gives, per method, ours and the official samples/s and the ratio
(official time / ours, taken within each round) against the target of 3x.

**The detailed TCAF comparison** (``--tcaf-profiles``): all paths train and evaluate the **same model** (the
paper's TCAF configuration, same initial weights, same forward/backward per step: one training forward with
real time stamps, the three losses, one optimiser step) on the same synthetic features; only the data path
and, for ``fast_bf16``, the arithmetic precision differ:

* ``fast`` (exact mode, the default ``train.amp: off``): this project's path. The split is
  preloaded once as packed tensors (uint8 audio, fp16 video), a whole epoch of class-balanced
  indices and crops is drawn in one go, each batch is gathered with one indexing op per modality,
  losses are accumulated on the device and read once per epoch (``model.train.train_one_epoch`` /
  ``model.train.compute_embeddings`` themselves). Evaluation batches are sorted by length and padded
  to their own longest sample.
* ``fast_bf16`` (fast mode, ``train.amp: bf16``): the same training step under bfloat16 autocast
  (weights, optimiser state and loss reduction stay float32). Evaluation is always float32, so
  there is no bf16 evaluation figure.
* ``per_sample``: the official data path, written here (reference spec sections 2.7, 3.1, 3.2 and
  9.3): a ``torch.utils.data.DataLoader`` with the official **4 worker processes** over a per-sample
  ``Dataset`` of per-video numpy arrays in Python lists. Its batch sampler draws each batch with
  ``torch.multinomial`` over per-sample weights (class-balanced, with replacement); each item is a
  **positive** (the sample) and a **negative** (a uniform sample of another, uniformly drawn class,
  numpy RNG); the collator crops and ``np.pad``-s each half in its own Python loop and turns it into
  tensors with ``torch.tensor`` on the list of arrays, with per-sample class vectors and targets
  built from Python lists. The training step moves both halves to the device although only the
  positive half is used, turns numpy float64 time stamps into tensors every step, remaps labels
  with ``.item()`` per element and calls ``loss.item()`` after every batch. Evaluation iterates a
  sequential loader (same worker count) over fixed (sample, negative) pairs, padded to the batch
  maximum (``max``) or to the fixed 300/200-token window (``fixed``), with ``.cpu()`` per batch.
  The workers are started once, before the timed rounds (``persistent_workers``): the official code
  re-forks them every epoch, a cost spread over its 300 batches that would weigh far more on the
  few batches timed here; it is measured separately (``per_sample_worker_startup_s``).
  It does NOT run the official extra train-mode ``get_embeddings`` forward after each step or the
  300 val-loss batches per epoch (model compute that the default here does not do either; with
  them the official epoch is ~2.5x more model compute still).

The batch-building figures time only the training data path of one epoch (sampling, collation,
label remap; no model) for ``fast`` and ``per_sample`` (through its DataLoader and workers).

Every figure is timed over ``--rounds`` (alias ``--repeats``) interleaved rounds (default 3); the median is reported with the
minimum and maximum, and the machine (CPU model, cores, load before and after) is recorded. On a machine
with fewer cores than the baseline's 4 workers plus the training process, the workers compete with the
model for the CPU, as they would running the official code there.

Lengths: UCF-like clips (~10 audio / ~16 video tokens, untrimmed ``max`` mode) and ActivityNet-like
videos (90-400 video tokens, 60-token random crops in training, centred 300 at evaluation).

Run: ``python benchmarks/train_throughput.py [--official PATH] [--methods a,b] [--rounds 3] [--steps N]
[--compile] [--tcaf-profiles] [--profile-steps N] [--quick] [--threads N] [--workers 4] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import finish_machine_info, load_average, machine_info, spread, usable_cores
from official_fixtures.common import COMMIT as OFFICIAL_COMMIT
from official_fixtures.common import (
    install_cpu_cuda,
    install_einops_stub,
    install_reduce_lr_without_verbose,
    install_tensorboard_stub,
)

from model.batching import make_batch
from model.config import TCAFConfig, dataset_config
from model.environment import library_versions
from model.packing import split_from_sequences
from model.sampling import ClassBalancedSampler
from model.tcaf import TCAF
from model.train import build_optimizer, compute_embeddings, train_one_epoch
from model.train_config import TrainConfig

AUDIO_RATE, VIDEO_RATE = 0.96, 0.64
OFFICIAL_WORKERS = 4  # num_workers of the official training and evaluation loaders (main.py)


@dataclass
class Profile:
    name: str
    dataset: str
    n_videos: int
    n_classes: int
    audio_len: tuple[int, int]
    video_len: tuple[int, int]
    mode: str  # "max" | "fixed"
    train_batches: int
    eval_videos: int
    eval_batch: int


def profiles(quick: bool) -> list[Profile]:
    k = 2 if quick else 1
    return [
        Profile("ucf-like", "ucf", 480, 30, (7, 13), (11, 21), "max", 8 // k, 192 // k, 64),
        Profile("activitynet-like", "activitynet", 96, 24, (60, 267), (90, 400), "fixed", 4 // k, 32 // k, 16),
    ]


def synthetic(p: Profile, word_dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, p.n_classes, p.n_videos)
    audio, video = [], []
    for _ in range(p.n_videos):
        la = int(rng.integers(p.audio_len[0], p.audio_len[1] + 1))
        lv = int(rng.integers(p.video_len[0], p.video_len[1] + 1))
        audio.append(rng.integers(0, 256, (la, 128), dtype=np.uint8))
        # C3D-like: non-negative; stored as float16 like the feature store, used as float32 by the baseline
        video.append(np.maximum(rng.standard_normal((lv, 4096), dtype=np.float32), 0).astype(np.float16))
    w = rng.standard_normal((p.n_classes, word_dim)).astype(np.float32)
    return audio, video, labels, w / np.linalg.norm(w, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# The per-sample implementation (what the official loader does per batch)
# ------------------------------------------------------------------------------------------------


def collate_half(samples, mode, max_len, train):
    """One half (positives or negatives) of an official-style batch: a Python loop with np.pad per sample.

    ``samples``: (audio, video) numpy arrays per sample.
    """
    if mode == "fixed":
        lv = max_len
        la = round(max_len * VIDEO_RATE / AUDIO_RATE)
    else:
        lv = max(len(v) for _, v in samples)
        la = max(len(a) for a, _ in samples)
    a_out, v_out, am_out, vm_out = [], [], [], []
    for a, v in samples:  # one Python iteration per sample, as the official collator
        a, v = a.astype(np.float32), v.astype(np.float32)
        s_v = 0
        if len(v) > lv:
            diff = len(v) - lv
            s_v = int(torch.randint(diff + 1, (1,))) if train else diff // 2
            v = v[s_v : s_v + lv]
        if len(a) > la:
            s_a = min(len(a) - la, round(s_v * VIDEO_RATE / AUDIO_RATE)) if s_v > 0 else 0
            a = a[s_a : s_a + la]
        am = np.zeros(la, np.float32)
        am[: len(a)] = 1
        vm = np.zeros(lv, np.float32)
        vm[: len(v)] = 1
        a_out.append(np.pad(a, ((0, la - len(a)), (0, 0))))
        v_out.append(np.pad(v, ((0, lv - len(v)), (0, 0))))
        am_out.append(am)
        vm_out.append(vm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that a list of ndarrays is slow: that is the point
        batch = (torch.tensor(a_out), torch.tensor(am_out), torch.tensor(v_out), torch.tensor(vm_out))
    # time stamps as the official collator: numpy float64, identical rows, turned into tensors per forward
    n = len(samples)
    times = (np.tile(np.arange(la) * AUDIO_RATE, (n, 1)), np.tile(np.arange(lv) * VIDEO_RATE, (n, 1)))
    return batch, times


def _by_class(labels):
    return {int(c): np.nonzero(labels == c)[0] for c in np.unique(labels)}


def _negative(labels, by_class, classes, c, rng) -> int:
    """A uniform sample of another, uniformly drawn class (the official dataset's negative)."""
    other = classes[rng.randint(len(classes))]
    while other == c and len(classes) > 1:
        other = classes[rng.randint(len(classes))]
    return int(rng.choice(by_class[other]))


class PerSampleDataset(Dataset):
    """The official ``ContrastiveDataset``: one item = the sample (positive) and a negative of another class.

    Training draws the negative per item with numpy's global RNG; evaluation fixes (sample, negative) pairs at
    construction. The class vector of each half is looked up per item.
    """

    def __init__(self, audio, video, labels, class_vectors_np, train: bool, n: int | None = None):
        self.audio, self.video, self.labels, self.cv = audio, video, labels, class_vectors_np
        self.train, self.n = train, len(labels) if n is None else n
        self.by_class = _by_class(labels)
        self.classes = list(self.by_class)
        if not train:
            rng = np.random.RandomState(29)
            self.pairs = [(i, _negative(labels, self.by_class, self.classes, int(labels[i]), rng))
                          for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        c = int(self.labels[i])
        j = _negative(self.labels, self.by_class, self.classes, c, np.random) if self.train else self.pairs[i][1]
        half = lambda k: {"audio": self.audio[k], "video": self.video[k], "text": self.cv[self.labels[k]],
                          "target": int(self.labels[k])}
        return {"positive": half(i), "negative": half(j)}


class PerSampleCollator:
    """The official ``DefaultCollator``: each half cropped and padded sample by sample."""

    def __init__(self, mode: str, max_len: int, train: bool):
        self.mode, self.max_len, self.train = mode, max_len, train

    def __call__(self, items: list[dict]):
        halves = []
        for key in ("positive", "negative"):
            part = [it[key] for it in items]
            batch, times = collate_half([(x["audio"], x["video"]) for x in part], self.mode, self.max_len, self.train)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                text = torch.tensor([x["text"] for x in part])
            halves.append((batch, times, text, torch.LongTensor([x["target"] for x in part])))
        return halves


class WeightedRandomBatchSampler(Sampler):
    """Each batch: ``bs`` class-balanced draws with replacement (torch.multinomial); ``n_batches`` per epoch."""

    def __init__(self, labels, n_classes: int, bs: int, n_batches: int):
        counts = np.bincount(labels, minlength=n_classes)
        self.weights = torch.tensor((1.0 / len(np.nonzero(counts)[0])) / counts[labels], dtype=torch.double)
        self.bs, self.n_batches = bs, n_batches

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        for _ in range(self.n_batches):
            yield torch.multinomial(self.weights, self.bs, replacement=True).tolist()


def per_sample_loaders(data, p: Profile, class_vectors, bs: int, workers: int) -> dict[str, DataLoader]:
    """The official loaders: training (weighted batch sampler) and evaluation (sequential), ``workers`` each."""
    audio, video, labels = data
    cv_np = class_vectors.cpu().numpy()
    opts = {"num_workers": workers, "persistent_workers": workers > 0}
    train = DataLoader(PerSampleDataset(audio, video, labels, cv_np, train=True),
                       batch_sampler=WeightedRandomBatchSampler(labels, p.n_classes, bs, p.train_batches),
                       collate_fn=PerSampleCollator(p.mode, 60, train=True), **opts)
    evaluation = DataLoader(PerSampleDataset(audio, video, labels, cv_np, train=False, n=p.eval_videos),
                            batch_size=p.eval_batch, shuffle=False,
                            collate_fn=PerSampleCollator(p.mode, 300, train=False), **opts)
    return {"train": train, "eval": evaluation}


def remap_labels(targets: torch.Tensor, class_map: dict[int, int], device) -> torch.Tensor:
    """The official label remap: ``.item()`` per element (a host-device sync each on a GPU)."""
    return torch.tensor([class_map[t.item()] for t in targets.to(device)], device=device)


def per_sample_train(model, opt, loader: DataLoader, p: Profile, class_vectors, device):
    class_map = {c: c for c in range(p.n_classes)}
    model.train()
    for pos, neg in loader:  # one epoch: the batch sampler's n_batches
        (a, am, v, vm), (ta, tv), _, target = pos
        # the official step moves both halves (and both text halves) to the device
        a, am, v, vm = a.to(device), am.to(device).bool(), v.to(device), vm.to(device).bool()
        _ = [t.to(device) for t in (*neg[0], pos[2], neg[2])]
        y = remap_labels(target, class_map, device)
        ta = torch.tensor(ta, dtype=torch.float32, device=device)
        tv = torch.tensor(tv, dtype=torch.float32, device=device)
        out = model(a, am, v, vm, ta, tv)
        loss = model.losses(out, y, class_vectors)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # logged per batch: a host-device sync per step


def per_sample_batches(loader: DataLoader, p: Profile):
    """Only the batch construction of ``per_sample_train`` (sampling, collation in the workers, label remap)."""
    class_map = {c: c for c in range(p.n_classes)}
    for pos, _ in loader:
        remap_labels(pos[3], class_map, torch.device("cpu"))


@torch.no_grad()
def per_sample_eval(model, loader: DataLoader, class_vectors, device):
    model.eval()
    outs = []
    for pos, _ in loader:  # the official val/test loaders collate fixed (sample, negative) pairs too
        a, am, v, vm = pos[0]
        out = model(a.to(device), am.to(device).bool(), v.to(device), vm.to(device).bool())
        outs.append(out["embedding"].cpu().numpy())
    model.embed_classes(class_vectors)
    return np.concatenate(outs)


# ------------------------------------------------------------------------------------------------


def timed_rounds(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Wall time of each function in each of ``repeats`` rounds, the functions interleaved per round.

    Interleaving spreads a slow spell of a shared machine over all of them. Callers warm up separately.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    return times


def first_batch_seconds(loader: DataLoader) -> float:
    """Start-up of a fresh, non-persistent copy of ``loader`` (forking its workers) up to its first batch: what
    the official loaders pay again at every epoch."""
    fresh = DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn,
                       num_workers=loader.num_workers)
    t = time.perf_counter()
    it = iter(fresh)
    next(it)
    seconds = time.perf_counter() - t
    del it
    return seconds


def bench_profile(p: Profile, device: torch.device, repeats: int, workers: int, bs: int = 64) -> dict:
    mcfg: TCAFConfig = dataset_config(p.dataset)
    audio, video, labels, w = synthetic(p, mcfg.word_dim)
    base = TCAF(mcfg)
    class_vectors = torch.from_numpy(w).to(device)

    # fast path: the project's own functions
    cfg = TrainConfig(batch_size=bs, batches_per_epoch=p.train_batches, seq_mode=p.mode, eval_batch_size=p.eval_batch,
                      progress=False)
    split = split_from_sequences(p.name, audio, video, labels, w, np.zeros(p.n_classes, bool), device=device)
    eval_split = split_from_sequences(p.name, audio[: p.eval_videos], video[: p.eval_videos], labels[: p.eval_videos],
                                      w, np.zeros(p.n_classes, bool), device=device)
    warm_split = split_from_sequences(p.name, audio[:4], video[:4], labels[:4], w, np.zeros(p.n_classes, bool),
                                      device=device)
    fast_model = copy.deepcopy(base).to(device)
    opt = build_optimizer(fast_model, cfg)
    sampler = ClassBalancedSampler(split, bs, p.train_batches, cfg.window(), seed=0)
    train_one_epoch(fast_model, opt, ClassBalancedSampler(split, bs, 1, cfg.window(), seed=1), device, cfg)  # warm-up
    # fast mode: the same step under train.amp: bf16
    cfg_bf16 = dataclasses.replace(cfg, amp="bf16")
    bf16_model = copy.deepcopy(base).to(device)
    opt3 = build_optimizer(bf16_model, cfg_bf16)
    sampler3 = ClassBalancedSampler(split, bs, p.train_batches, cfg.window(), seed=0)
    train_one_epoch(bf16_model, opt3, ClassBalancedSampler(split, bs, 1, cfg.window(), seed=1), device, cfg_bf16)
    compute_embeddings(fast_model, warm_split, device, cfg.window(), 4)
    # per-sample path, same initial model, through the official loaders
    slow_model = copy.deepcopy(base).to(device)
    opt2 = build_optimizer(slow_model, cfg)
    loaders = per_sample_loaders((audio, video, labels), p, class_vectors, bs, workers)
    startup = first_batch_seconds(loaders["train"])
    per_sample_train(slow_model, opt2, loaders["train"], p, class_vectors, device)  # warm-up; starts the workers
    per_sample_eval(slow_model, loaders["eval"], class_vectors, device)
    rounds = timed_rounds({
        "fast_train": lambda: train_one_epoch(fast_model, opt, sampler, device, cfg),
        "bf16_train": lambda: train_one_epoch(bf16_model, opt3, sampler3, device, cfg_bf16),
        "slow_train": lambda: per_sample_train(slow_model, opt2, loaders["train"], p, class_vectors, device),
        "fast_eval": lambda: compute_embeddings(fast_model, eval_split, device, cfg.window(), p.eval_batch),
        "slow_eval": lambda: per_sample_eval(slow_model, loaders["eval"], class_vectors, device),
        # the data path alone: building the training batches of one epoch
        "fast_data": lambda: [make_batch(split, *b, device) for b in sampler.plan()],
        "slow_data": lambda: per_sample_batches(loaders["train"], p),
    }, repeats)
    t = {k: statistics.median(v) for k, v in rounds.items()}
    t_fast_train, t_bf16_train, t_slow_train, t_fast_eval, t_slow_eval, t_fast_data, t_slow_data = t.values()

    n_train = p.train_batches * bs
    per_s = lambda n, key: spread([n / x for x in rounds[key]], 2)
    # ratios within each round (the two sides of a ratio ran back to back)
    ratio = lambda slow, fast: spread([a / b for a, b in zip(rounds[slow], rounds[fast], strict=True)], 3)
    res = {
        "profile": p.name,
        "mode": p.mode,
        "videos": p.n_videos,
        "mean_audio_tokens": float(np.mean([len(a) for a in audio])),
        "mean_video_tokens": float(np.mean([len(v) for v in video])),
        "train_batches": p.train_batches,
        "batch_size": bs,
        "eval_videos": p.eval_videos,
        "eval_batch_size": p.eval_batch,
        "per_sample_workers": workers,
        # medians over the rounds
        "train_samples_per_s": {"fast": n_train / t_fast_train, "fast_bf16": n_train / t_bf16_train,
                                "per_sample": n_train / t_slow_train},
        "eval_samples_per_s": {"fast": p.eval_videos / t_fast_eval, "per_sample": p.eval_videos / t_slow_eval},
        "batch_building_samples_per_s": {"fast": n_train / t_fast_data, "per_sample": n_train / t_slow_data},
        "rounds": {
            "train_samples_per_s": {"fast": per_s(n_train, "fast_train"), "fast_bf16": per_s(n_train, "bf16_train"),
                                    "per_sample": per_s(n_train, "slow_train")},
            "eval_samples_per_s": {"fast": per_s(p.eval_videos, "fast_eval"),
                                   "per_sample": per_s(p.eval_videos, "slow_eval")},
            "train_speedup": ratio("slow_train", "fast_train"),
            "train_speedup_bf16": ratio("slow_train", "bf16_train"),
            "eval_speedup": ratio("slow_eval", "fast_eval"),
        },
        "per_sample_worker_startup_s": startup,
    }
    res["train_speedup"] = res["rounds"]["train_speedup"]["median"]
    res["train_speedup_bf16"] = res["rounds"]["train_speedup_bf16"]["median"]
    res["eval_speedup"] = res["rounds"]["eval_speedup"]["median"]
    bb = res["batch_building_samples_per_s"]
    res["batch_building_speedup"] = bb["fast"] / bb["per_sample"]
    # share of the per-sample training step spent waiting for batches (the part this data path removes)
    res["per_sample_batch_building_share"] = t_slow_data / t_slow_train
    return res


# ------------------------------------------------------------------------------------------------
# Every registered method: our shared loop beside the official training loop
# ------------------------------------------------------------------------------------------------

OFFICIAL_AVCA_WORKERS = 8  # num_workers of every DataLoader in the official AVCA-GZSL main.py
# The UCF-GZSL cls stage-1 training split: 3174 videos of 30 classes (stage_1_train.csv), 101 class names in
# all_class.txt, one 300-d word vector per class name.
UCF_TRAIN_VIDEOS, UCF_TRAIN_CLASSES, UCF_ALL_CLASSES, WORD_DIM = 3174, 30, 101, 300
# Official run script of each method (run_scripts/UCF-GZSL/<script>.sh, its first-stage cls_features line).
OFFICIAL_SCRIPTS = {"avca": "avca", "cjme": "cjme", "avgzslnet": "avgzslnet", "devise": "devise", "ale": "ale",
                    "sje": "sje", "apn": "apn"}
# Timed steps per round and method with the defaults (--steps overrides): a round of the slowest side takes
# some seconds on 2 cores, so that the whole run stays within ~10 minutes.
DEFAULT_STEPS = {"avca": 24, "cjme": 32, "avgzslnet": 32, "devise": 96, "ale": 96, "sje": 96, "apn": 64,
                 "fvaegan": 32, "tcaf": 6, "attention_fusion": 8, "perceiver": 2}
TARGET_RATIO = 3.0  # the target: at least 3x the official loop per method on CPU
# Registered averaged methods whose official training loop is not timed here, and why.
NO_OFFICIAL_LOOP = {
    "fvaegan": ("the official f-VAEGAN-D2 is module-level script code (vae_gan_d2_xu_fsl.py, not in src/) whose "
                "epoch is one batch followed by a classifier fit, run on main features (512/512) only; not one of "
                "the official loops this benchmark times, so ours only"),
}


@dataclass
class AveragedData:
    """UCF-like averaged features, held once and shared by our loop and the official one (same tensors)."""

    audio: torch.Tensor  # [N, 128] float32, averaged VGGish codes on the 0..255 scale
    video: torch.Tensor  # [N, 4096] float32, averaged post-ReLU C3D fc7
    text: torch.Tensor  # [UCF_ALL_CLASSES, 300] unit word vectors, row = class id
    class_ids: np.ndarray  # [30] ascending ids of the training classes
    labels: np.ndarray  # [N] column into class_ids
    names: list[str]  # the class names, sorted: id k is names[k]


def averaged_data(seed: int = 0) -> AveragedData:
    rng = np.random.default_rng(seed)
    class_ids = np.sort(rng.choice(UCF_ALL_CLASSES, UCF_TRAIN_CLASSES, replace=False))
    # every class with several samples: the official dataset loops forever on a single-sample class
    labels = np.concatenate([np.arange(UCF_TRAIN_CLASSES).repeat(2),
                             rng.integers(0, UCF_TRAIN_CLASSES, UCF_TRAIN_VIDEOS - 2 * UCF_TRAIN_CLASSES)])
    rng.shuffle(labels)
    audio = rng.integers(0, 256, (UCF_TRAIN_VIDEOS, 4, 128)).mean(1).astype(np.float32)
    video = np.maximum(rng.standard_normal((UCF_TRAIN_VIDEOS, 4096), dtype=np.float32), 0)
    text = rng.standard_normal((UCF_ALL_CLASSES, WORD_DIM)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    names = [f"class{k:03d}" for k in range(UCF_ALL_CLASSES)]
    return AveragedData(torch.from_numpy(audio), torch.from_numpy(video), torch.from_numpy(text), class_ids,
                        labels, names)


def our_averaged_split(d: AveragedData, device: torch.device):
    from model.methods.data import AveragedSplit

    n = len(d.labels)
    return AveragedSplit("ucf-like averaged", d.audio.to(device), d.video.to(device),
                         torch.from_numpy(d.labels).to(device), [int(c) for c in d.class_ids],
                         torch.zeros(len(d.class_ids), dtype=torch.bool, device=device),
                         d.text[torch.from_numpy(d.class_ids)].to(device), [f"v{i}" for i in range(n)])


def method_experiment(name: str, steps: int, device: torch.device):
    """The method's UCF config: the official training settings of its module (batch size included); averaged
    methods with the "reference" preset, so that our step does the official step's model work (AVCA's extra
    train-mode pass, DeViSE's class-matrix dropout, CJME's and AVGZSLNet's per-call BN, ...); temporal methods
    with the "paper" preset, the model work of the per-sample stand-in (no extra BN pass in either)."""
    from model.methods import TEMPORAL_METHODS
    from model.pipeline import experiment_config

    temporal = name in TEMPORAL_METHODS
    # The averaged data's sizes (audio 128 on the 0..255 scale, video 4096), as a store would give them: a method
    # whose defaults are other features' sizes (e.g. CLIP's) is built for this data.
    store = None if temporal else types.SimpleNamespace(
        audio=[np.zeros((1, 128), np.float32)], video=[np.zeros((1, 4096), np.float32)],
        attrs={"audio": {"value_scale": 255.0}})
    return experiment_config({"dataset": "ucf", "method": name, "preset": "paper" if temporal else "reference",
                              "train": {"batches_per_epoch": steps, "progress": False, "device": device.type}},
                             store=store, word_dim=WORD_DIM)


@contextlib.contextmanager
def _quiet():
    """The official constructors print progress; keep the table readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def close_loader(loader: DataLoader) -> None:
    """Stop the persistent workers of ``loader`` now rather than at garbage collection."""
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    loader._iterator = None


# --- the official AVCA-GZSL code, run in this process -------------------------------------------------------


class Official:
    """The official AVCA-GZSL ``src`` package, imported from a checkout or extract, with in-process shims only.

    Shims (nothing in the official files changes): a ``torch.utils.tensorboard`` stand-in when tensorboard is
    not installed (``src/utils.py`` imports ``SummaryWriter``; nothing here writes to it); an ``einops`` stand-in
    for the two ``rearrange`` patterns of the AVCA attention when einops is not installed; ``ReduceLROnPlateau``
    accepting (and dropping) ``verbose``, which torch 2.11 removed and AVCA's constructor passes; on a CPU
    device, ``torch.Tensor.cuda`` returns the tensor itself (``UCFDataset.map_embeddings_target`` and
    ``CJMELoss`` call ``.cuda()``), the "CPU patch" of reference-avca-code.md. The dataset's feature files are
    replaced by in-memory data (``official_dataset``).
    """

    PATCHES = (
        "torch.utils.tensorboard stand-in when tensorboard is missing (SummaryWriter imported, never used)",
        "einops stand-in when einops is missing (the two rearrange patterns of the AVCA attention)",
        "ReduceLROnPlateau(verbose=...) accepted and dropped (removed in torch 2.11; AVCA's constructor passes it)",
        "CPU only: torch.Tensor.cuda returns the tensor (map_embeddings_target and CJMELoss call .cuda())",
        ("UCFDataset.preprocess / get_data return the in-memory synthetic features (no pickle / h5 files); the "
         "class-split text files it reads at every step are written to a temporary root_dir"),
        ("DataLoader(persistent_workers=True): the 8 workers start before the timed rounds (the official loader "
         "re-forks them every epoch; that start-up is measured separately)"),
    )

    def __init__(self, root: Path, device: torch.device) -> None:
        root = root.resolve()
        for f in ("main.py", "src/train.py", "src/dataset.py", "src/model.py", "src/model_improvements.py"):
            if not (root / f).is_file():
                raise FileNotFoundError(f"--official {root}: {f} missing; extract the official code there: git -C "
                                        f"<mirror> archive {OFFICIAL_COMMIT} src run_scripts main.py | tar -x -C {root}")
        self.root = root
        self.device = device
        self._install_shims()
        sys.path.insert(0, str(root))
        from src import args as o_args
        from src import dataset as o_dataset
        from src import loss as o_loss
        from src import model as o_model
        from src import model_improvements as o_avca
        from src import sampler as o_sampler
        from src import train as o_train
        from src import utils_improvements as o_utils

        self.args_mod, self.dataset, self.loss, self.model = o_args, o_dataset, o_loss, o_model
        self.avca, self.sampler, self.train, self.utils = o_avca, o_sampler, o_train, o_utils
        self.commit = self._commit()
        self.tmp = Path(tempfile.mkdtemp(prefix="official-avca-root-"))

    def _commit(self) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=10, check=False)
            return out.stdout.strip() or None if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    def _install_shims(self) -> None:
        install_tensorboard_stub()
        install_einops_stub()
        install_reduce_lr_without_verbose()
        if self.device.type == "cpu":
            install_cpu_cuda()

    def script_args(self, method: str, root_dir: Path) -> argparse.Namespace:
        """main.py's arguments for the method's first-stage UCF cls run, parsed by the official ``args_main``
        from the line of ``run_scripts/UCF-GZSL/<method>.sh``, with ``--device`` and ``--root_dir`` set here."""
        script = self.root / "run_scripts" / "UCF-GZSL" / f"{OFFICIAL_SCRIPTS[method]}.sh"
        lines = [ln for ln in script.read_text().splitlines() if ln.startswith("python main.py")
                 and "cls_features" in ln and "--retrain_all" not in ln]
        if len(lines) != 1:
            raise ValueError(f"{script}: expected one first-stage cls_features line, found {len(lines)}")
        argv = [*shlex.split(lines[0])[2:], "--device", self.device.type, "--root_dir", str(root_dir)]
        old = sys.argv
        sys.argv = ["main.py", *argv]
        try:
            return self.args_mod.args_main()
        finally:
            sys.argv = old

    def official_dataset(self, d: AveragedData, args: argparse.Namespace):
        """``ContrastiveDataset(UCFDataset(args, "train", "train"))`` as main.py builds it, over ``d``."""
        root = Path(args.root_dir)
        split_dir = root / "class-split" / str(args.zero_shot_split)
        split_dir.mkdir(parents=True, exist_ok=True)
        (root / "class-split" / "all_class.txt").write_text("\n".join(d.names) + "\n")
        (split_dir / "stage_1_train.txt").write_text("\n".join(d.names[c] for c in d.class_ids) + "\n")
        targets = torch.from_numpy(d.class_ids[d.labels]).long()
        urls = np.array([f"v{i}" for i in range(len(d.labels))])
        # the layout of the official preprocessed pickle (read_dataset): per modality data / target / url
        data = {"audio": {"data": d.audio, "target": targets, "url": urls},
                "video": {"data": d.video, "target": targets, "url": urls},
                "text": {"data": d.text, "target": torch.arange(len(d.text))}}

        class InMemoryUCFDataset(self.dataset.UCFDataset):
            def preprocess(self):  # the official one writes pickles from the h5 feature files
                pass

            def get_data(self):  # the official one loads that pickle
                return data

        with _quiet():
            zsl = InMemoryUCFDataset(args=args, dataset_split="train", zero_shot_mode="train")
            return self.dataset.ContrastiveDataset(zsl)

    def loader(self, dataset, args: argparse.Namespace, workers: int) -> DataLoader:
        """main.py's training loader: the class-balanced WeightedRandomBatchSampler (alpha 1, bs, n_batches)
        and ``num_workers`` workers (8 officially), default collation."""
        sampler = self.sampler.SamplerFactory(logging.getLogger("official")).get(
            class_idxs=list(dataset.target_to_indices.values()), batch_size=args.bs, n_batches=args.n_batches,
            alpha=1, kind="random")
        return DataLoader(dataset=dataset, batch_sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0)

    def model_and_criterion(self, args: argparse.Namespace):
        """The model, criterion and main.py optimiser, as main.py builds them from ``args``."""
        o_loss = self.loss
        with _quiet():
            if args.AVCA:
                params = self.utils.get_model_params(
                    args.lr, args.first_additional_triplet, args.second_additional_triplet, args.reg_loss,
                    args.additional_triplets_loss, args.embedding_dropout, args.decoder_dropout,
                    args.additional_dropout, args.embeddings_hidden_size, args.decoder_hidden_size,
                    args.depth_transformer, args.momentum)
                model = self.avca.AVCA(params, input_size_audio=args.input_size_audio,
                                       input_size_video=args.input_size_video)
            elif args.ale or args.devise or args.sje:
                model = self.model.DeviseModel(args)
            elif args.apn:
                model = self.model.APN(args)
            elif args.cjme:
                model = self.model.CJME(args)
            else:
                model = self.model.AVGZSLNet(args)
        model.to(self.device)
        distance_fn = getattr(o_loss, args.distance_fn)()
        if args.ale:
            criterion = o_loss.ClsContrastiveLoss(margin=0.1, max_violation=False, topk=None, reduction="weighted")
        elif args.devise:
            criterion = o_loss.ClsContrastiveLoss(margin=0.1, max_violation=False, topk=None, reduction="sum")
        elif args.sje:
            criterion = o_loss.ClsContrastiveLoss(margin=0.1, max_violation=True, topk=1, reduction="sum")
        elif args.apn:
            criterion = o_loss.APN_Loss()
        elif args.cjme:
            criterion = o_loss.CJMELoss(margin=args.margin, distance_fn=distance_fn)
        elif args.AVCA:
            criterion = None
        else:
            criterion = o_loss.AVGZSLLoss(margin=args.margin, distance_fn=distance_fn)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        return model, criterion, optimizer

    def train_epoch(self, loader, model, criterion, optimizer, args: argparse.Namespace) -> float:
        """One epoch of the official ``src.train.train_step`` (its n_batches steps and loss.item() each)."""
        return self.train.train_step(loader, model, criterion, optimizer, 0, 1, None, self.device, [],
                                     _NoStats(), args.AVCA, args.ale or args.sje or args.devise, args.apn,
                                     args.cjme, args)


class _NoStats:
    def update(self, row) -> None:  # train_step's PD_Stats: a row of the run's CSV log
        pass


def _set_batches(loader: DataLoader, n: int) -> None:
    """Epoch length of an official loader (its batch sampler's n_batches; main.py's --n_batches)."""
    loader.batch_sampler.n_batches = n


# --- one method ----------------------------------------------------------------------------------------------


def _error_line(e: Exception) -> str:
    """The exception's type and the first line of its message, as the JSON records a failure."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


def _optional_mode(fns: dict, errors: dict[str, str], key: str, build) -> None:
    """``fns[key] = build()``: one of our optional modes (bf16, compiled), set up with its warm-up. A mode that
    fails there is a result: its error goes to ``errors[key]`` and the other modes are still timed."""
    try:
        fns[key] = build()
    except Exception as e:  # noqa: BLE001 - a failing optional mode is recorded, not raised
        errors[key] = _error_line(e)


def _interleaved(fns: dict, rounds: int, errors: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Like ``timed_rounds``, with the order alternating from round to round. A function whose key is in
    ``errors`` (a dict, given) may fail: its message goes there and it is left out of the later rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(rounds):
        for k in keys if r % 2 == 0 else keys[::-1]:
            if errors is not None and k in errors:
                continue
            t = time.perf_counter()
            try:
                fns[k]()
            except Exception as e:  # only the optional variants (our bf16 and compiled modes) are allowed to fail
                if errors is None or k == "ours" or k == "official":
                    raise
                errors[k] = _error_line(e)
                print(f"note: {k} failed and is left out: {errors[k]}", flush=True)
                continue
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    return {k: v for k, v in times.items() if v and not (errors and k in errors)}


def bench_averaged_method(name: str, d: AveragedData, steps: int, rounds: int, device: torch.device,
                          official: Official | None, official_workers: int, profile_steps: int, bf16: bool,
                          compiled: bool = False) -> dict:
    from model.methods import method_train_defaults
    from model.pipeline import build_model, recipe_for

    # An epoch of the method's own length when that is shorter than the round (f-VAEGAN-D2: 1 batch per epoch,
    # so its per-epoch work, e.g. banking the training split, counts at every step as in a real run).
    epoch = min(steps, int(method_train_defaults(name, "ucf").get("batches_per_epoch", steps)))
    steps -= steps % epoch
    exp = method_experiment(name, epoch, device)
    bs = exp.train.batch_size
    split = our_averaged_split(d, device)
    recipe = recipe_for(exp, device)
    torch.manual_seed(0)
    base = build_model(exp)

    compile_s = None

    def ours(amp: str, compile_step: bool = False):
        nonlocal compile_s
        cfg = dataclasses.replace(exp.train, amp=amp, compile=compile_step)
        model = copy.deepcopy(base).to(device)
        opt = recipe.build_optimizer(model, cfg)
        sampler = recipe.sampler(split, cfg, 0)
        t = time.perf_counter()
        recipe.train_one_epoch(model, opt, recipe.sampler(split, dataclasses.replace(cfg, batches_per_epoch=2), 1),
                               device, cfg)  # warm-up (and, compiled, the compilation)
        if compile_step:
            compile_s = round(time.perf_counter() - t, 1)

        def run():
            for _ in range(steps // epoch):
                recipe.train_one_epoch(model, opt, sampler, device, cfg)

        return run, model, opt, cfg

    run, model, opt, cfg = ours("off")
    fns = {"ours": run}
    errors: dict[str, str] = {}
    if bf16:
        _optional_mode(fns, errors, "ours_bf16", lambda: ours("bf16")[0])
    if compiled and model.compilable:
        _optional_mode(fns, errors, "ours_compiled", lambda: ours("off", compile_step=True)[0])
    res: dict = {"method": name, "kind": "averaged", "batch_size": bs, "steps_per_round": steps,
                 "samples_per_round": steps * bs, "preset": exp.preset,
                 "ours": {"loop": "model.methods.train.AveragedRecipe.train_one_epoch (shared run_stage loop)"
                                  + (f", epochs of {epoch} batch(es) as the method's train_defaults" if epoch < steps
                                     else ""),
                          "parameters": sum(p.numel() for p in model.parameters())}}
    if compiled:
        res["ours"]["compile_s"] = compile_s
        if not model.compilable:
            res["ours"]["compiled_error"] = "not compilable (train.compile leaves its step eager)"
    loader = None
    if official is not None and name in OFFICIAL_SCRIPTS:
        args = official.script_args(name, official.tmp / name)
        args.n_batches = steps
        if args.bs != bs:
            raise ValueError(f"{name}: the official batch size {args.bs} differs from train_defaults' {bs}")
        dataset = official.official_dataset(d, args)
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        o_model, criterion, o_opt = official.model_and_criterion(args)
        loader = official.loader(dataset, args, official_workers)
        startup = first_batch_seconds(loader)
        _set_batches(loader, 2)
        official.train_epoch(loader, o_model, criterion, o_opt, args)  # warm-up; starts the persistent workers
        _set_batches(loader, steps)
        fns["official"] = lambda: official.train_epoch(loader, o_model, criterion, o_opt, args)
        res["official"] = {
            "kind": "official", "loop": "src.train.train_step of the official code (its DataLoader, Dataset, sampler)",
            "workers": official_workers, "batch_size": args.bs, "run_script": f"run_scripts/UCF-GZSL/{name}.sh",
            "parameters": sum(p.numel() for p in o_model.parameters()), "worker_startup_s": round(startup, 3)}
    elif name not in OFFICIAL_SCRIPTS:
        res["official"] = {"kind": None, "why": NO_OFFICIAL_LOOP.get(name, "no official loop to time")}
    try:
        times = _interleaved(fns, rounds, errors)
    finally:
        if loader is not None:
            close_loader(loader)
    _fill_rates(res, times, steps * bs, errors)
    if res.get("official", {}).get("kind") == "official":
        # what one official epoch (500 batches, workers forked anew) delivers, start-up included
        per_batch = statistics.median(times["official"]) / steps
        res["official"]["epoch_500_samples_per_s_with_startup"] = round(
            500 * bs / (500 * per_batch + res["official"]["worker_startup_s"]), 1)
    if profile_steps:
        res["profile_ours"] = profile_ours(lambda: recipe.train_one_epoch(
            model, opt, recipe.sampler(split, dataclasses.replace(cfg, batches_per_epoch=profile_steps), 2),
            device, cfg))
    return res


def temporal_profile(steps: int) -> Profile:
    """The UCF-like temporal profile of the TCAF comparison, with ``steps`` training batches per round."""
    return dataclasses.replace(profiles(False)[0], train_batches=steps)


def bench_temporal_method(name: str, steps: int, rounds: int, device: torch.device, workers: int,
                          profile_steps: int, bf16: bool) -> dict:
    from model.pipeline import build_model

    exp = method_experiment(name, steps, device)
    cfg = dataclasses.replace(exp.train, seq_mode="max", eval_batch_size=64)
    bs = cfg.batch_size
    p = temporal_profile(steps)
    audio, video, labels, w = synthetic(p, WORD_DIM)
    class_vectors = torch.from_numpy(w).to(device)
    split = split_from_sequences(p.name, audio, video, labels, w, np.zeros(p.n_classes, bool), device=device)
    torch.manual_seed(0)
    base = build_model(exp)

    def ours(amp: str):
        c = dataclasses.replace(cfg, amp=amp)
        model = copy.deepcopy(base).to(device)
        opt = build_optimizer(model, c)
        sampler = ClassBalancedSampler(split, bs, steps, c.window(), seed=0)
        train_one_epoch(model, opt, ClassBalancedSampler(split, bs, 1, c.window(), seed=1), device, c)  # warm-up
        return (lambda: train_one_epoch(model, opt, sampler, device, c)), model, opt

    run, model, opt = ours("off")
    fns = {"ours": run}
    errors: dict[str, str] = {}
    if bf16:
        _optional_mode(fns, errors, "ours_bf16", lambda: ours("bf16")[0])
    slow_model = copy.deepcopy(base).to(device)
    opt2 = build_optimizer(slow_model, cfg)
    loaders = per_sample_loaders((audio, video, labels), p, class_vectors, bs, workers)
    startup = first_batch_seconds(loaders["train"])
    loaders["train"].batch_sampler.n_batches = 1
    per_sample_train(slow_model, opt2, loaders["train"], p, class_vectors, device)  # warm-up; starts the workers
    loaders["train"].batch_sampler.n_batches = steps
    fns["official"] = lambda: per_sample_train(slow_model, opt2, loaders["train"], p, class_vectors, device)
    try:
        times = _interleaved(fns, rounds, errors)
    finally:
        close_loader(loaders["train"])
    no_code = name != "tcaf"
    res: dict = {
        "method": name, "kind": "temporal", "batch_size": bs, "steps_per_round": steps,
        "samples_per_round": steps * bs, "preset": exp.preset,
        "ours": {"loop": "model.train.train_one_epoch (shared run_stage loop)",
                 "parameters": sum(q.numel() for q in model.parameters())},
        "official": {"kind": "stand-in", "workers": workers, "batch_size": bs, "worker_startup_s": round(startup, 3),
                     "loop": ("the official TCAF data path written in this benchmark (per-sample Dataset with "
                              "negatives, Python collation, 4 workers; per_sample_train)"
                              + ("; no official code of this baseline was released, the paper trains it as TCAF"
                                 if no_code else ""))},
    }
    _fill_rates(res, times, steps * bs, errors)
    if profile_steps:
        res["profile_ours"] = profile_ours(lambda: train_one_epoch(
            model, opt, ClassBalancedSampler(split, bs, profile_steps, cfg.window(), seed=2), device, cfg))
    return res


def _fill_rates(res: dict, times: dict[str, list[float]], n: int, errors: dict[str, str]) -> None:
    res["ours"]["samples_per_s"] = spread([n / t for t in times["ours"]], 1)
    for mode in ("bf16", "compiled"):
        if f"ours_{mode}" in errors:
            res["ours"][f"{mode}_error"] = errors[f"ours_{mode}"]
        if f"ours_{mode}" in times:
            res["ours"][f"samples_per_s_{mode}"] = spread([n / t for t in times[f"ours_{mode}"]], 1)
    if "official" in times:
        res["official"]["samples_per_s"] = spread([n / t for t in times["official"]], 1)
        # the two sides of a ratio ran back to back in the same round
        res["ratio"] = spread([o / s for s, o in zip(times["ours"], times["official"], strict=True)], 2)
        res["meets_target"] = res["ratio"]["median"] >= TARGET_RATIO
        for mode in ("bf16", "compiled"):
            if f"ours_{mode}" in times:
                res[f"ratio_{mode}"] = spread([o / s for s, o in zip(times[f"ours_{mode}"], times["official"],
                                                                       strict=True)], 2)
                res[f"meets_target_{mode}"] = res[f"ratio_{mode}"]["median"] >= TARGET_RATIO


def profile_ours(fn) -> list[dict]:
    """torch.profiler over ``fn`` (a few steps of our loop): the ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
             "share_pct": round(100 * e.self_cpu_time_total / max(total, 1), 1)} for e in rows]


def _cell(x: dict | None, digits: int = 1, prefix: str = "") -> str:
    if not x:
        return "-"
    return f"{prefix}{x['median']:.{digits}f} [{x['min']:.{digits}f}-{x['max']:.{digits}f}]"


def methods_table(rows: list[dict], header: bool = True) -> str:
    """Method, our samples/s (exact, bf16), the official (or stand-in) samples/s and the ratios with their spread."""
    compiled = any("samples_per_s_compiled" in r["ours"] for r in rows)
    cols = (("method", 16), ("batch", 5), ("steps", 5), ("ours exact", 25), ("ours bf16", 25),
            *((("ours compiled", 25),) if compiled else ()),
            ("official", 25), ("ratio exact", 17), ("ratio bf16", 17),
            *((("ratio compiled", 17),) if compiled else ()), (f">=x{TARGET_RATIO:g}", 11))
    lines = []
    if header:
        lines += [" ".join(f"{n:<{w}}" for n, w in cols).rstrip(), " ".join("-" * w for _, w in cols)]
    for r in rows:
        off = r.get("official") or {}
        kind = off.get("kind")
        meets = "-" if "ratio" not in r else "/".join(
            ("yes" if r[f"meets_target{m}"] else "no") if f"ratio{m}" in r else "-"
            for m in ("", "_bf16", *(("_compiled",) if compiled else ())))
        cells = (r["method"], str(r["batch_size"]), str(r["steps_per_round"]), _cell(r["ours"]["samples_per_s"]),
                 _cell(r["ours"].get("samples_per_s_bf16")),
                 *((_cell(r["ours"].get("samples_per_s_compiled")),) if compiled else ()),
                 _cell(off.get("samples_per_s")) + ("*" if kind == "stand-in" else ""),
                 _cell(r.get("ratio"), 2, "x"), _cell(r.get("ratio_bf16"), 2, "x"),
                 *((_cell(r.get("ratio_compiled"), 2, "x"),) if compiled else ()), meets)
        lines.append(" ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, cols, strict=True)).rstrip())
    if header:
        lines.append("official: the official training loop; * a stand-in (the official TCAF data path written here); "
                     "- not timed. Ratio = official time / ours, per round; >=x3: exact/bf16"
                     + ("/compiled" if compiled else "") + ".")
    return "\n".join(lines)


class OtherCPU:
    """CPU time that processes other than this one and its (reaped) children used while a method ran: the
    machine-wide busy time of /proc/stat minus our own process tree's (os.times). The DataLoader workers count as
    ours once they are joined (closed loaders). None where /proc/stat cannot be read."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / hz  # all but idle and iowait (guest is in user)
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.monotonic()

    def stop(self) -> dict | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self.start, end, strict=True))
        other = max(0.0, busy - own)
        return {"other_processes_cpu_s": round(other, 1), "own_cpu_s": round(own, 1),
                "other_share_of_cores_pct": round(100 * other / max(wall * usable_cores(), 1e-9), 1)}


def select_methods(spec: str) -> list[str]:
    from model.methods import METHOD_MODULES

    if spec in ("all", ""):
        return list(METHOD_MODULES)
    if spec == "none":
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in METHOD_MODULES]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; the methods are {', '.join(METHOD_MODULES)} (or all, none)")
    return names


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="all",
                    help="comma-separated registered methods to time through our loop (default all; 'none' skips "
                         "the method table)")
    ap.add_argument("--official", type=Path, default=None, metavar="PATH",
                    help="checkout or extract of the official AVCA-GZSL code (holds main.py, src/, run_scripts/): "
                         "time its training loop beside ours for AVCA, CJME, AVGZSLNet, DeViSE, ALE, SJE, APN")
    ap.add_argument("--official-workers", type=int, default=OFFICIAL_AVCA_WORKERS,
                    help=f"DataLoader workers of the official AVCA-GZSL loop (default {OFFICIAL_AVCA_WORKERS}, main.py)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed training steps per round and method (default: per method, "
                         + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    ap.add_argument("--tcaf-profiles", action="store_true",
                    help="also run the detailed TCAF comparison (UCF- and ActivityNet-like profiles: training exact "
                         "and bf16, evaluation, batch building; ~7 more minutes on 2 cores)")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false",
                    help="skip timing our loop in fast mode (train.amp: bf16) beside the exact one")
    ap.add_argument("--compile", action="store_true",
                    help="also time the averaged methods with train.compile: true (torch.compile of the losses; "
                         "minutes of compilation per method on 2 cores, in the warm-up)")
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="torch.profiler over this many steps of our loop per method; top ops go to the JSON")
    ap.add_argument("--quick", action="store_true", help="half the steps/batches, one timed round")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--workers", type=int, default=OFFICIAL_WORKERS,
                    help=f"DataLoader workers of the per-sample TCAF stand-in (default {OFFICIAL_WORKERS}, the "
                         "official TCAF setting)")
    ap.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=None,
                    help="timed rounds, interleaved (default 3, 1 with --quick); medians with min and max")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/results/train_throughput_<device>.json)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rounds = args.rounds or (1 if args.quick else 3)
    methods = select_methods(args.methods)
    torch.manual_seed(0)
    np.random.seed(0)  # the per-sample paths draw their negatives with numpy's global RNG, as the official datasets
    logging.getLogger("official").setLevel(logging.WARNING)
    # torch says the same at every DataLoader it builds
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    official = Official(args.official, device) if args.official is not None else None
    machine = machine_info()
    workers_max = max(args.workers, args.official_workers if official else 0)
    if workers_max > machine["usable_cores"]:
        print(f"note: the baselines' DataLoader workers (up to {workers_max}) share {machine['usable_cores']} cores "
              "with the training process, as the official code would on this machine", flush=True)
    t0 = time.perf_counter()

    rows, failed = [], []
    data = None
    for name in methods:
        from model.methods import TEMPORAL_METHODS

        steps = args.steps or DEFAULT_STEPS.get(name, 32)
        if args.quick:
            steps = max(2, steps // 2)
        load = load_average()
        other = OtherCPU()
        t = time.perf_counter()
        try:
            if name in TEMPORAL_METHODS:
                r = bench_temporal_method(name, steps, rounds, device, args.workers, args.profile_steps, args.bf16)
            else:
                data = data or averaged_data()
                r = bench_averaged_method(name, data, steps, rounds, device, official, args.official_workers,
                                          args.profile_steps, args.bf16, args.compile)
        except Exception as e:  # noqa: BLE001 - one method that cannot run here must not lose the others' figures
            error = _error_line(e)
            print(f"{name}: failed, left out of the table: {error}", flush=True)
            failed.append({"method": name, "error": error})
            continue
        r["wall_s"] = round(time.perf_counter() - t, 1)
        r["load_average_1_min_before"] = load[0] if load else None
        r["cpu_of_other_processes"] = other.stop()  # what else ran on the machine meanwhile
        rows.append(r)
        oc = r["cpu_of_other_processes"]
        print(f"{methods_table([r], header=False)}  ({r['wall_s']:.0f} s"
              + (f"; other processes {oc['other_share_of_cores_pct']:.0f}% of the cores" if oc else "") + ")",
              flush=True)

    results = []
    if args.tcaf_profiles:
        for p in profiles(args.quick):
            r = bench_profile(p, device, rounds, args.workers)
            results.append(r)
            rr = r["rounds"]
            print(f"{r['profile']:>17} train: {r['train_samples_per_s']['fast']:8.1f} samples/s "
                  f"(per-sample, {args.workers} workers: {r['train_samples_per_s']['per_sample']:7.1f}; "
                  f"x{r['train_speedup']:.1f} [{rr['train_speedup']['min']:.1f}-{rr['train_speedup']['max']:.1f}]; "
                  f"bf16 {r['train_samples_per_s']['fast_bf16']:.1f}, x{r['train_speedup_bf16']:.1f} "
                  f"[{rr['train_speedup_bf16']['min']:.1f}-{rr['train_speedup_bf16']['max']:.1f}])   "
                  f"eval: {r['eval_samples_per_s']['fast']:8.1f} samples/s "
                  f"(per-sample {r['eval_samples_per_s']['per_sample']:7.1f}, x{r['eval_speedup']:.1f} "
                  f"[{rr['eval_speedup']['min']:.1f}-{rr['eval_speedup']['max']:.1f}])   "
                  f"batch building x{r['batch_building_speedup']:.0f} "
                  f"({100 * r['per_sample_batch_building_share']:.0f}% of the per-sample step); "
                  f"worker start-up {r['per_sample_worker_startup_s']:.2f} s per epoch", flush=True)

    if rows:
        print()
        print(methods_table(rows))
    command = ("python benchmarks/train_throughput.py"
               + (f" --methods {args.methods}" if args.methods != "all" else "")
               + (" --official <AVCA-GZSL code>" if official else "")
               + (f" --official-workers {args.official_workers}" if args.official_workers != OFFICIAL_AVCA_WORKERS
                  else "")
               + (f" --steps {args.steps}" if args.steps else "")
               + (" --tcaf-profiles" if args.tcaf_profiles else "")
               + ("" if args.bf16 else " --no-bf16")
               + (" --compile" if args.compile else "")
               + (f" --profile-steps {args.profile_steps}" if args.profile_steps else "")
               + (" --quick" if args.quick else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + (f" --workers {args.workers}" if args.workers != OFFICIAL_WORKERS else "")
               + (f" --rounds {args.rounds}" if args.rounds else "")
               + (f" --device {args.device}" if args.device != "cpu" else ""))
    out = {
        "benchmark": "train_throughput",
        "command": command,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "repeats": rounds,
        "quick": args.quick,
        "statistic": "median over the rounds; min and max beside it (ratios taken within each round)",
        "target_ratio": TARGET_RATIO,
        "methods": rows,
        "failed_methods": failed,
        "data": {
            "averaged": (f"UCF-like stage-1 training split: {UCF_TRAIN_VIDEOS} videos, {UCF_TRAIN_CLASSES} of "
                         f"{UCF_ALL_CLASSES} classes, audio 128 (0..255), video 4096, class vectors {WORD_DIM}"),
            "temporal": "UCF-like clips: 480 videos, 30 classes, 7-13 audio / 11-21 video tokens, max mode",
        },
        "official": None if official is None else {
            "path": str(official.root), "commit": official.commit or f"not a git checkout (expected {OFFICIAL_COMMIT})",
            "workers": args.official_workers, "patches": list(Official.PATCHES),
            "not_timed": ("the official val_step (n_batches val-loss batches per epoch) and the per-epoch evaluation; "
                          "only the training loop (train_step) is timed, as ours"),
        },
        "per_sample_workers": args.workers,
        "results": results,  # the detailed TCAF comparison (--tcaf-profiles)
        "wall_s": time.perf_counter() - t0,
        "versions": library_versions(),
        # other processes (and the baselines' own workers) share the CPU: recorded so readers can judge
        "machine": finish_machine_info(machine, own_processes=1 + workers_max),
    }
    path = args.out or Path(__file__).resolve().parent / "results" / f"train_throughput_{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"total {out['wall_s']:.0f} s on {device} with {out['threads']} threads -> {path}")
    return out


if __name__ == "__main__":
    main()
