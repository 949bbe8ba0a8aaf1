"""TCAF training protocol: config, one epoch of training, evaluation, resumable stages.

Layout follows torchvision's ``references/classification``: ``train_one_epoch`` and ``evaluate``
do one thing each, ``run_stage`` is the epoch loop (the ``main`` of one training stage), and
``model/pipeline.py`` strings stages together for the workflow.

Speed (reference spec 9.3): the data of a split is preloaded once (``model/data.py``), batches are
gathered with vectorised tensor ops from an epoch plan drawn in one go, and the loss terms are
accumulated on the device, so an epoch has exactly one device-to-host sync for the losses (plus
one for the pad lengths in ``max`` mode) instead of several per batch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.data import (
    Batch,
    ClassBalancedSampler,
    SplitData,
    WindowConfig,
    eval_batches,
    make_batch,
    n_eval_batches,
)
from model.metrics import GZSLResult, bias_grid, class_distances, gzsl_metrics

log = logging.getLogger(__name__)

LOSS_KEYS = ("total", "ce", "reg", "rec")
AMP_MODES = ("off", "bf16")
HISTORY_COLUMNS = (
    "seed", "stage", "epoch", "loss", "loss_ce", "loss_reg", "loss_rec",
    "val_S", "val_U", "val_HM", "val_ZSL", "val_bias", "lr", "train_s", "eval_s", "time_s",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


def _known_keys_only(cls: type, d: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    return d


@dataclass(kw_only=True)
class TrainConfig:
    """Training protocol and data loading (config section ``train``).

    Defaults are the paper's UCF-GZSL^cls setting (Sec. 4.1; official ``best_ucf.yaml``).
    """

    lr: float = 7e-5
    weight_decay: float = 1e-5  # coupled L2 (Adam weight_decay), on every parameter as in the reference
    lr_scheduler: bool = True  # ReduceLROnPlateau on val HM; off for VGGSound
    scheduler_patience: int = 3
    scheduler_factor: float = 0.1
    epochs: int = 50  # stage 1; stage 2 runs the stage-1 best epoch + 1
    batch_size: int = 64
    batches_per_epoch: int = 300  # an epoch is a fixed number of class-balanced batches, not a data pass
    eval_batch_size: int = 256  # evaluation is padding-invariant, so larger batches only save time
    seed: int = 42
    seeds: list[int] | None = None  # several seeds: one model per seed, mean/std reported; None -> [seed]
    deterministic: bool = False  # torch.use_deterministic_algorithms + no cudnn autotune
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:i"
    data_device: str = "auto"  # where preloaded splits live: "auto" (device if it fits) | "cpu" | "device"
    video_dtype: str = "float16"  # storage of preloaded C3D features; "float32" for bit-exact store values
    num_threads: int = 0  # torch intra-op CPU threads; 0 keeps torch's default
    # Mixed precision of the training step: "off" (float32, exact) or "bf16" (autocast to bfloat16:
    # matmuls on the CPU's / GPU's bf16 units, weights, optimiser and losses stay float32).
    # Evaluation always runs in float32.
    amp: str = "off"
    progress: bool = True  # tqdm bars (only drawn on a terminal)
    checkpoint_every: int = 1  # epochs between resumable checkpoints
    # Sequence windows (reference spec 3.2): "max" pads to the batch max and never trims (UCF,
    # VGGSound); "fixed" crops video to train_max_len (random) / eval_max_len (centred) tokens.
    seq_mode: str = "max"
    train_max_len: int = 60
    eval_max_len: int = 300
    # --- reference quirks of the official data loading / training loop (REFERENCE_QUIRKS, "train.")
    class_vector_permutation: bool = False  # class id k gets the k-th vector of the sorted readable names
    audio_len_quirk: bool = False  # fixed-mode audio window round(L*0.64*0.96) (37/184) not round(L*0.64/0.96)
    trim_offset_quirk: bool = False  # random crop start in [0, diff-1] (never the last offset)
    extra_bn_pass: bool = False  # one more train-mode forward per step (updates BN statistics again)

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{key}: {msg}")

        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        for key in ("epochs", "batch_size", "batches_per_epoch", "eval_batch_size", "checkpoint_every",
                    "train_max_len", "eval_max_len"):
            value = getattr(self, key)
            check(isinstance(value, int) and value > 0, key, f"must be a positive integer, got {value!r}")
        check(self.seq_mode in ("max", "fixed"), "seq_mode", f"use 'max' or 'fixed', got {self.seq_mode!r}")
        check(self.video_dtype in ("float16", "float32"), "video_dtype", f"use float16 or float32, got {self.video_dtype!r}")
        check(self.data_device in ("auto", "cpu", "device"), "data_device", f"use auto, cpu or device, got {self.data_device!r}")
        check(self.amp in AMP_MODES, "amp", f"use one of {AMP_MODES}, got {self.amp!r}")
        check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            f"use 'auto', 'cpu', 'cuda' or 'cuda:<i>', got {self.device!r}",
        )
        if self.seeds is not None:
            check(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct, non-empty")
            self.seeds = [int(s) for s in self.seeds]

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]

    def window(self) -> WindowConfig:
        return WindowConfig(
            mode=self.seq_mode,
            train_video_len=self.train_max_len,
            eval_video_len=self.eval_max_len,
            audio_len_quirk=self.audio_len_quirk,
            trim_offset_quirk=self.trim_offset_quirk,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrainConfig:
        """Build from the config's ``train`` section; unknown keys are an error."""
        return cls(**_known_keys_only(cls, d, "train config"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class EvalConfig:
    """Evaluation (config section ``evaluate``): the calibrated-stacking grid."""

    bias_grid: list[float] = field(default_factory=lambda: [0.0, 3.0, 0.2])  # start, stop (inclusive), step

    def __post_init__(self) -> None:
        if len(self.bias_grid) != 3:
            raise ValueError(f"evaluate.bias_grid must be [start, stop, step], got {self.bias_grid!r}")
        bias_grid(*self.bias_grid)  # validates

    def grid(self) -> torch.Tensor:
        return bias_grid(*self.bias_grid)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> EvalConfig:
        return cls(**_known_keys_only(cls, d, "evaluate config"))


# Per-dataset protocol of the paper (Sec. 4.1) / official best cls configs.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"lr": 7e-5, "lr_scheduler": True, "seq_mode": "max"},
    "vggsound": {"lr": 6e-5, "lr_scheduler": False, "seq_mode": "max"},
    # 300 + 200 tokens per video at evaluation: smaller eval batches bound the attention memory on CPU
    "activitynet": {"lr": 7e-5, "lr_scheduler": True, "seq_mode": "fixed", "train_max_len": 60, "eval_max_len": 300,
                    "eval_batch_size": 64},
}

# Data-loading / training-loop behaviours of the official code that change numbers and that the
# paper does not describe; switched on together by the "reference" preset (model.config.apply_preset).
TRAIN_REFERENCE_QUIRKS: dict[str, str] = {
    "train.class_vector_permutation":
        "class id k gets the word vector of the k-th readable class name in alphabetical order (spec 2.5)",
    "train.audio_len_quirk":
        "fixed-mode audio window round(L_v*0.64*0.96) = 37/184 tokens instead of duration-matched 40/200",
    "train.trim_offset_quirk": "random video crop start drawn from [0, diff-1]: the last offset is never used",
    "train.extra_bn_pass":
        "after each optimiser step, one more train-mode forward (no grad) updates BatchNorm statistics again",
}


# ----------------------------------------------------------------------------------------------
# Environment: device, seeds, versions
# ----------------------------------------------------------------------------------------------


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; an explicit cuda device falls back to cpu with a warning."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available; using cpu", spec)
        return torch.device("cpu")
    return dev


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every RNG the training touches (python, numpy, torch CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices
    if deterministic:
        # cuBLAS needs a fixed workspace for deterministic matmuls; must be set before first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def library_versions() -> dict[str, str]:
    import zarr

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "zarr": zarr.__version__}
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same directory, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_csv_atomic(path: str | Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = HISTORY_COLUMNS) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def _progress(iterable: Any, *, total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


# ----------------------------------------------------------------------------------------------
# Optimiser
# ----------------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    if not cfg.lr_scheduler:
        return None
    # Reference: mode max on val HM, patience 3, factor 0.1, threshold 1e-4 (rel), cooldown 0.
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=cfg.scheduler_factor, patience=cfg.scheduler_patience
    )


# ----------------------------------------------------------------------------------------------
# One epoch of training, evaluation
# ----------------------------------------------------------------------------------------------


def _forward(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    return model(batch.audio, batch.audio_mask, batch.video, batch.video_mask)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: ClassBalancedSampler,
    device: torch.device,
    cfg: TrainConfig,
    *,
    desc: str = "train",
) -> dict[str, float]:
    """``cfg.batches_per_epoch`` class-balanced steps; returns the epoch mean of each loss term."""
    model.train()
    split = sampler.split
    class_vectors = split.class_vectors
    sums = torch.zeros(len(LOSS_KEYS), device=device)
    batches = _progress(sampler.plan(), total=sampler.n_batches, desc=desc, enabled=cfg.progress)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    for idx, s_a, s_v, la, lv in batches:
        batch = make_batch(split, idx, s_a, s_v, la, lv, device)
        with amp:
            losses = model.losses(_forward(model, batch), batch.labels, class_vectors)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        if cfg.extra_bn_pass:
            # The reference runs its evaluation forward once more in train mode after each step; its
            # outputs are unused but it updates BatchNorm running statistics (spec 6, quirk 7). That
            # pass passes no time stamps, so token k of both modalities is embedded at t = k.
            # It does not run D_o, so the decoder is held in eval mode (no statistics update) here.
            decoder = getattr(model, "output_decoder", None)
            if decoder is not None:
                decoder.eval()
            with torch.no_grad():
                b = batch.audio.shape[0]
                t_a = torch.arange(batch.audio.shape[1], device=device, dtype=torch.float32).expand(b, -1)
                t_v = torch.arange(batch.video.shape[1], device=device, dtype=torch.float32).expand(b, -1)
                model(batch.audio, batch.audio_mask, batch.video, batch.video_mask, t_a, t_v)
                model.embed_classes(class_vectors[batch.labels])
            if decoder is not None:
                decoder.train()
        # Accumulate on the device: .item() here would sync host and device every batch.
        sums += torch.stack([losses[k].detach().float() for k in LOSS_KEYS])
    means = (sums / sampler.n_batches).tolist()
    return dict(zip(LOSS_KEYS, means, strict=True))


@torch.no_grad()
def compute_embeddings(
    model: nn.Module, split: SplitData, device: torch.device, win: WindowConfig, batch_size: int, *, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """theta_o of every sample (split order) and theta_w of the split's classes, in eval mode."""
    model.eval()
    out: torch.Tensor | None = None
    batches = _progress(eval_batches(split, batch_size, win, device), total=n_eval_batches(split, batch_size),
                        desc=f"eval {split.name}", enabled=progress)
    for idx, batch in batches:
        emb = _forward(model, batch)["embedding"]
        if out is None:
            out = torch.empty(len(split), emb.shape[1], dtype=emb.dtype, device=device)
        out[idx.to(device)] = emb
    assert out is not None
    return out, model.embed_classes(split.class_vectors)


def evaluate(
    model: nn.Module,
    split: SplitData,
    device: torch.device,
    win: WindowConfig,
    *,
    batch_size: int = 256,
    bias: float | None = None,
    grid: torch.Tensor | None = None,
    progress: bool = False,
) -> GZSLResult:
    """GZSL metrics of ``model`` on ``split``: a fixed ``bias``, or the best bias of ``grid``."""
    emb, cls = compute_embeddings(model, split, device, win, batch_size, progress=progress)
    return gzsl_metrics(class_distances(emb, cls), split.labels.to(device), split.unseen, bias=bias, grid=grid)


# ----------------------------------------------------------------------------------------------
# A training stage (the epoch loop), resumable
# ----------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    seed: int
    epochs: int
    best_epoch: int  # 0-based index of the epoch with the best val HM (first on ties)
    best: dict[str, float]  # val S/U/HM/ZSL/bias at best_epoch
    last: dict[str, float]  # val metrics after the last epoch
    history: list[dict[str, Any]]
    best_state: dict[str, torch.Tensor]  # model weights at best_epoch (CPU)
    last_state: dict[str, torch.Tensor]  # model weights after the last epoch (CPU)


_RESUME_NEUTRAL = frozenset({"seed", "seeds", "device", "data_device", "num_threads", "progress", "checkpoint_every",
                             "eval_batch_size"})


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def run_stage(
    model: nn.Module,
    train_split: SplitData,
    val_split: SplitData,
    cfg: TrainConfig,
    *,
    seed: int,
    epochs: int,
    device: torch.device,
    eval_cfg: EvalConfig | None = None,
    stage: str = "stage1",
    checkpoint: str | Path | None = None,
    history_csv: str | Path | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> StageResult:
    """Train ``epochs`` epochs, evaluating HM on ``val_split`` after each (model selection, scheduler).

    The caller seeds the RNGs (``seed_everything(seed)``) before building ``model`` so that a stage
    always starts from the same initialisation. With ``checkpoint`` the full training state
    (model, optimiser, scheduler, sampler and global RNG states, best-so-far, history) is saved
    atomically every ``cfg.checkpoint_every`` epochs and training resumes from it when the file
    exists and was written for the same ``fingerprint`` (configs, seed, stage). Under
    ``cfg.deterministic`` a resumed run continues exactly like an uninterrupted one.
    """
    eval_cfg = eval_cfg or EvalConfig()
    win = cfg.window()
    grid = eval_cfg.grid()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    sampler = ClassBalancedSampler(train_split, cfg.batch_size, cfg.batches_per_epoch, win, seed=seed)
    # Settings that do not change what is computed are left out, so that e.g. adding a seed or turning
    # progress bars off does not discard a half-finished run.
    semantic = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_NEUTRAL}
    fingerprint = dict(fingerprint or {}) | {"seed": seed, "stage": stage, "train": semantic}

    start_epoch, history = 0, []
    best_hm, best_epoch, best, best_state = -1.0, -1, {}, None
    last: dict[str, float] = {}
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path is not None and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            log.warning("%s was written for another configuration; starting %s (seed %d) afresh", ckpt_path, stage, seed)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            sampler.load_state_dict(state["sampler"])
            set_rng_state(state["rng"])
            start_epoch, history = state["epoch"] + 1, state["history"]
            best_hm, best_epoch, best, best_state = state["best_hm"], state["best_epoch"], state["best"], state["best_model"]
            last = history[-1] if history else {}
            log.info("resumed %s seed %d from %s after epoch %d", stage, seed, ckpt_path, state["epoch"])

    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        losses = train_one_epoch(model, optimizer, sampler, device, cfg, desc=f"{stage} s{seed} e{epoch}")
        t1 = time.perf_counter()
        res = evaluate(model, val_split, device, win, batch_size=cfg.eval_batch_size, grid=grid, progress=cfg.progress)
        t2 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the lr this epoch trained with
        if scheduler is not None:
            scheduler.step(res.HM)
        row = {
            "seed": seed, "stage": stage, "epoch": epoch,
            "loss": losses["total"], "loss_ce": losses["ce"], "loss_reg": losses["reg"], "loss_rec": losses["rec"],
            "val_S": res.S, "val_U": res.U, "val_HM": res.HM, "val_ZSL": res.ZSL, "val_bias": res.bias,
            "lr": lr, "train_s": t1 - t0, "eval_s": t2 - t1, "time_s": t2 - t0,
        }  # fmt: skip
        history.append(row)
        last = {k: row[f"val_{k}"] for k in ("S", "U", "HM", "ZSL", "bias")}
        # Strictly better HM only: the first epoch with the best HM is kept, as in the reference.
        if res.HM > best_hm:
            best_hm, best_epoch, best, best_state = res.HM, epoch, dict(last), _cpu_state(model)
        log.info(
            "%s seed %d epoch %d: loss %.4f (ce %.4f reg %.4f rec %.4f) val S %.4f U %.4f HM %.4f ZSL %.4f "
            "bias %.1f lr %.2g [%.1fs + %.1fs]", stage, seed, epoch, losses["total"], losses["ce"], losses["reg"],
            losses["rec"], res.S, res.U, res.HM, res.ZSL, res.bias, lr, t1 - t0, t2 - t1,
        )  # fmt: skip
        if history_csv is not None:
            write_csv_atomic(history_csv, history)
        if on_epoch is not None:
            on_epoch(history)
        if ckpt_path is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == epochs):
            atomic_save(
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "sampler": sampler.state_dict(),
                    "rng": rng_state(),
                    "history": history,
                    "best_hm": best_hm,
                    "best_epoch": best_epoch,
                    "best": best,
                    "best_model": best_state,
                    "versions": library_versions(),
                },
                ckpt_path,
            )
    if history_csv is not None and not history:
        write_csv_atomic(history_csv, history)
    return StageResult(
        seed=seed,
        epochs=epochs,
        best_epoch=best_epoch,
        best=best,
        last=last,
        history=history,
        best_state=best_state if best_state is not None else _cpu_state(model),
        last_state=_cpu_state(model),
    )
