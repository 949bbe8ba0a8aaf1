"""TCAF training loop: one epoch of training, evaluation, and the resumable epoch loop of a stage.

Layout follows torchvision's ``references/classification``: ``train_one_epoch`` and ``evaluate``
do one thing each, ``run_stage`` is the epoch loop (the ``main`` of one training stage), and
``model/pipeline.py`` strings stages together for the workflow. The configuration is in
``model/train_config.py``, seeds, RNG states and versions in ``model/environment.py``.

Speed (reference spec 9.3): the data of a split is preloaded once (``model/packing.py``), batches are
gathered with vectorised tensor ops (``model/batching.py``) from an epoch plan drawn in one go
(``model/sampling.py``), and the loss terms are accumulated on the device, so an epoch has exactly one
device-to-host sync for the losses (plus one for the pad lengths in ``max`` mode) instead of several
per batch.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_splits.common import atomic_torch_save, atomic_write_text
from model.batching import Batch, WindowConfig, eval_batches, make_batch, n_eval_batches
from model.environment import configure_precision, library_versions, rng_state, set_rng_state
from model.metrics import GZSLResult, class_distances, gzsl_metrics
from model.packing import SplitData
from model.sampling import ClassBalancedSampler
from model.train_config import EvalConfig, TrainConfig

log = logging.getLogger(__name__)

LOSS_KEYS = ("total", "ce", "reg", "rec")
HISTORY_COLUMNS = (
    "seed", "stage", "epoch", "loss", "loss_ce", "loss_reg", "loss_rec",
    "val_S", "val_U", "val_HM", "val_ZSL", "val_bias", "lr", "train_s", "eval_s", "time_s",
)  # fmt: skip


def write_csv_atomic(path: str | Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> None:
    """The training history as CSV, written atomically (floats with 6 significant digits). Without
    ``columns``: TCAF's columns, then any other key of the rows (the loss terms of other methods)."""
    if columns is None:
        extra = dict.fromkeys(k for row in rows for k in row if k not in HISTORY_COLUMNS)
        columns = HISTORY_COLUMNS + tuple(extra)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


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


@torch.no_grad()
def extra_bn_pass(model: nn.Module, batch: Batch, class_vectors: torch.Tensor) -> None:
    """The reference's extra forward after an optimiser step (quirk ``train.extra_bn_pass``).

    The official code runs its evaluation forward once more in train mode after each step: its outputs
    are unused, but it updates the BatchNorm running statistics a second time (spec 6, quirk 7). That
    forward passes no time stamps, so token k of both modalities is embedded at t = k, and it has no
    reconstruction decoder D_o, which is therefore skipped here (``reconstruct=False``: no compute, and
    its statistics are left alone). W_proj then runs on the batch's class vectors.
    """
    b, device = batch.audio.shape[0], batch.audio.device
    t_a = torch.arange(batch.audio.shape[1], device=device, dtype=torch.float32).expand(b, -1)
    t_v = torch.arange(batch.video.shape[1], device=device, dtype=torch.float32).expand(b, -1)
    model(batch.audio, batch.audio_mask, batch.video, batch.video_mask, t_a, t_v, reconstruct=False)
    model.embed_classes(class_vectors[batch.labels])


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
            extra_bn_pass(model, batch, class_vectors)
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


class TemporalRecipe:
    """How TCAF and the temporal baselines train and are evaluated; :func:`run_stage` calls a recipe, so a
    method family with another data path (``model/methods/train.py``) shares the epoch loop, model
    selection, scheduler and resumable checkpoints. Under ``train.compile`` the model's forward runs
    compiled (made once per model), in training and evaluation."""

    def __init__(self) -> None:
        self._compiled: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()

    def runner(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
        if not cfg.compile:
            return model
        compiled = self._compiled.get(model)
        if compiled is None:
            compiled = self._compiled[model] = compile_model(model, device)
        return compiled

    def build_optimizer(self, model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
        return build_optimizer(model, cfg)

    def sampler(self, split: SplitData, cfg: TrainConfig, seed: int) -> ClassBalancedSampler:
        return ClassBalancedSampler(split, cfg.batch_size, cfg.batches_per_epoch, cfg.window(), seed=seed)

    def train_one_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, sampler: Any,
                        device: torch.device, cfg: TrainConfig, *, desc: str) -> dict[str, float]:
        return train_one_epoch(self.runner(model, cfg, device), optimizer, sampler, device, cfg, desc=desc)

    def evaluate(self, model: nn.Module, split: SplitData, device: torch.device, cfg: TrainConfig, *,
                 bias: float | None = None, grid: torch.Tensor | None = None) -> GZSLResult:
        return evaluate(self.runner(model, cfg, device), split, device, cfg.window(), batch_size=cfg.eval_batch_size,
                        bias=bias, grid=grid, progress=cfg.progress)


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


# Settings that change neither the batches nor the function computed (the device included: the epoch plan is
# drawn on the CPU, and a checkpoint holds CPU tensors only, so a run resumes on another device).
_RESUME_NEUTRAL = frozenset({"seed", "seeds", "device", "data_device", "num_threads", "progress", "checkpoint_every",
                             "eval_batch_size", "compile"})
# Bumped when the meaning of a resumable checkpoint's sampler state changes (batches drawn on the CPU).
_SAMPLER_FORMAT = "cpu-plan/1"


def runtime_record(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """How a run computed, for checkpoints and summaries: device, precision switches, determinism, compile."""
    return {"device": str(device), "amp": cfg.amp, "allow_tf32": bool(cfg.allow_tf32 and device.type == "cuda"),
            "compile": cfg.compile, "deterministic": cfg.deterministic,
            "sdpa": "math" if cfg.deterministic and device.type == "cuda" else "default"}


def check_compile_support(device: torch.device) -> None:
    """Fail before training when ``train.compile`` cannot work here, naming what is missing.

    torch.compile only compiles at the first call, so a missing compiler would otherwise surface deep
    inside the first epoch. Inductor builds C++ kernels on the CPU and triton kernels on CUDA.
    """
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise RuntimeError("train.compile: torch.compile on CUDA needs triton, which is not importable in this "
                               "environment; install the triton build that matches torch, or set train.compile: false")
        return
    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx
    names = [c for c in (cxx if isinstance(cxx, tuple) else (cxx,)) if c] or ["g++"]
    env_cxx = os.environ.get("CXX")
    if env_cxx:
        names.insert(0, env_cxx)
    if not any(shutil.which(n) for n in names):
        raise RuntimeError(f"train.compile: torch.compile on the CPU needs a C++ compiler ({' or '.join(names)} on "
                           "PATH, or CXX); install one (e.g. g++) or set train.compile: false")


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(model)``: a wrapper that shares the parameters, runs ``forward`` compiled and forwards
    every other attribute (``losses``, ``embed_classes``, ``train()``) to ``model``. Checkpoints keep using
    ``model``'s own state dict, whose keys have no compile prefix.

    Inductor draws random numbers with the eager kernels (``fallback_random``): the dropout masks are those
    of the eager run, so a compiled run follows the eager one up to float rounding instead of taking another
    random stream (and resuming a run with the other setting continues it).
    """
    check_compile_support(device)
    return torch.compile(model, options={"fallback_random": True})


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _on_cpu(obj: Any) -> Any:
    """``obj`` (nested dicts, lists, tuples) with every tensor on the CPU: a checkpoint that loads anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


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
    recipe: Any = None,
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
    recipe = recipe or TemporalRecipe()
    configure_precision(cfg.allow_tf32)
    grid = eval_cfg.grid()
    optimizer = recipe.build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    sampler = recipe.sampler(train_split, cfg, seed)
    # Settings that do not change what is computed are left out, so that e.g. adding a seed or turning
    # progress bars off does not discard a half-finished run.
    semantic = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_NEUTRAL}
    fingerprint = dict(fingerprint or {}) | {"seed": seed, "stage": stage, "train": semantic,
                                             "sampler": _SAMPLER_FORMAT}
    runtime = runtime_record(cfg, device)

    start_epoch, history = 0, []
    best_hm, best_epoch, best, best_state = -1.0, -1, {}, None
    last: dict[str, float] = {}
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path is not None and ckpt_path.is_file():
        # map_location: a checkpoint written on a GPU loads on a CPU-only machine; load_state_dict then moves
        # model and optimiser state to wherever the model is now.
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            log.warning("%s was written for another configuration; starting %s (seed %d) afresh", ckpt_path, stage, seed)
        else:
            written_on = (state.get("runtime") or {}).get("device")
            if written_on is not None and torch.device(written_on).type != device.type:
                log.warning("%s was written on %s and resumes on %s: the batches continue exactly, dropout draws "
                            "from %s's generator", ckpt_path, written_on, device, device.type)
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
        losses = recipe.train_one_epoch(model, optimizer, sampler, device, cfg, desc=f"{stage} s{seed} e{epoch}")
        t1 = time.perf_counter()
        res = recipe.evaluate(model, val_split, device, cfg, grid=grid)
        t2 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the lr this epoch trained with
        if scheduler is not None:
            scheduler.step(res.HM)
        row = {
            "seed": seed, "stage": stage, "epoch": epoch,
            "loss": losses["total"], **{f"loss_{k}": v for k, v in losses.items() if k != "total"},
            "val_S": res.S, "val_U": res.U, "val_HM": res.HM, "val_ZSL": res.ZSL, "val_bias": res.bias,
            "lr": lr, "train_s": t1 - t0, "eval_s": t2 - t1, "time_s": t2 - t0,
        }  # fmt: skip
        history.append(row)
        last = {k: row[f"val_{k}"] for k in ("S", "U", "HM", "ZSL", "bias")}
        # Strictly better HM only: the first epoch with the best HM is kept, as in the reference.
        if res.HM > best_hm:
            best_hm, best_epoch, best, best_state = res.HM, epoch, dict(last), _cpu_state(model)
        terms = " ".join(f"{k} {v:.4f}" for k, v in losses.items() if k != "total")
        log.info(
            "%s seed %d epoch %d: loss %.4f (%s) val S %.4f U %.4f HM %.4f ZSL %.4f bias %.1f lr %.2g [%.1fs + %.1fs]",
            stage, seed, epoch, losses["total"], terms, res.S, res.U, res.HM, res.ZSL, res.bias, lr, t1 - t0, t2 - t1,
        )  # fmt: skip
        if history_csv is not None:
            write_csv_atomic(history_csv, history)
        if on_epoch is not None:
            on_epoch(history)
        if ckpt_path is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == epochs):
            atomic_torch_save(
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "model": _cpu_state(model),
                    "optimizer": _on_cpu(optimizer.state_dict()),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "sampler": _on_cpu(sampler.state_dict()),
                    "rng": rng_state(),
                    "history": history,
                    "best_hm": best_hm,
                    "best_epoch": best_epoch,
                    "best": best,
                    "best_model": best_state,
                    "runtime": runtime,
                    "versions": library_versions(device),
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
