"""Training and evaluation throughput of model/train.py against a per-sample implementation.

All paths train and evaluate the **same model** (the paper's TCAF configuration, same initial
weights, same forward/backward per step: one training forward with real time stamps, the three
losses, one optimiser step) on the same synthetic features; only the data path and, for
``fast_bf16``, the arithmetic precision differ:

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

Every figure is timed over ``--repeats`` interleaved rounds (default 3); the median is reported with the
minimum and maximum, and the machine (CPU model, cores, load before and after) is recorded. On a machine
with fewer cores than the baseline's 4 workers plus the training process, the workers compete with the
model for the CPU, as they would running the official code there.

Lengths: UCF-like clips (~10 audio / ~16 video tokens, untrimmed ``max`` mode) and ActivityNet-like
videos (90-400 video tokens, 60-token random crops in training, centred 300 at evaluation).

Run: ``python benchmarks/train_throughput.py [--quick] [--threads N] [--workers 4] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import finish_machine_info, machine_info, spread

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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="half the batches and eval videos, one timed round")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--workers", type=int, default=OFFICIAL_WORKERS,
                    help=f"DataLoader workers of the per-sample baseline (default {OFFICIAL_WORKERS}, the official setting)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds (default 3, 1 with --quick); medians are reported with min and max")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/results/train_throughput_<device>.json)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    repeats = args.repeats or (1 if args.quick else 3)
    torch.manual_seed(0)
    np.random.seed(0)  # the per-sample path draws its negatives with numpy's global RNG, as the official dataset
    machine = machine_info()
    if args.workers > machine["usable_cores"]:
        print(f"note: the baseline's {args.workers} DataLoader workers share {machine['usable_cores']} cores with the "
              "training process, as the official code would on this machine", flush=True)
    # torch says the same at every DataLoader it builds
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    t0 = time.perf_counter()
    results = []
    for p in profiles(args.quick):
        r = bench_profile(p, device, repeats, args.workers)
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
    command = ("python benchmarks/train_throughput.py" + (" --quick" if args.quick else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + (f" --workers {args.workers}" if args.workers != OFFICIAL_WORKERS else "")
               + (f" --repeats {args.repeats}" if args.repeats else "")
               + (f" --device {args.device}" if args.device != "cpu" else ""))
    out = {
        "benchmark": "train_throughput",
        "command": command,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "per_sample_workers": args.workers,
        "quick": args.quick,
        "repeats": repeats,
        "statistic": "median over the rounds; rounds.* give min and max (ratios taken within each round)",
        "model": "TCAF paper config per dataset (7.27 M parameters)",
        "results": results,
        "wall_s": time.perf_counter() - t0,
        "versions": library_versions(),
        # other processes (and the baseline's own workers) share the CPU: recorded so readers can judge
        "machine": finish_machine_info(machine, own_processes=1 + args.workers),
    }
    path = args.out or Path(__file__).resolve().parent / "results" / f"train_throughput_{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"total {out['wall_s']:.0f} s on {device} with {out['threads']} threads -> {path}")
    return out


if __name__ == "__main__":
    main()
