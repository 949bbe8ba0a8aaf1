"""Configuration of the training protocol: ``TrainConfig`` (section ``train``), ``EvalConfig`` (section
``evaluate``), the per-dataset training presets and the training-side reference quirks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from data_splits.common import check_keys, parse_device
from model.batching import WindowConfig
from model.metrics import bias_grid

AMP_MODES = ("off", "bf16")


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
    device: str = "auto"  # "auto" (cuda if available, else cpu) | "cpu" | "cuda" | "cuda:i"; an absent GPU is an error
    data_device: str = "auto"  # where preloaded splits live: "auto" (device if it fits) | "cpu" | "device"
    video_dtype: str = "float16"  # storage of preloaded C3D features; "float32" for bit-exact store values
    num_threads: int = 0  # torch intra-op CPU threads; 0 keeps torch's default
    # Mixed precision of the training step: "off" (float32, exact) or "bf16" (autocast to bfloat16:
    # matmuls on the CPU's / GPU's bf16 units, weights, optimiser and losses stay float32).
    # Evaluation always runs in float32.
    amp: str = "off"
    # TensorFloat-32 matmuls/convolutions on Ampere+ GPUs: faster, ~1e-3 relative error per product.
    allow_tf32: bool = False
    # torch.compile of the model's training forward (needs a working C++ compiler on CPU / triton on GPU).
    compile: bool = False
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
        parse_device(self.device, "TrainConfig.device")  # format only: whether a GPU is there is checked at run time
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
        return cls(**check_keys(cls, d, "train"))

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
        return cls(**check_keys(cls, d, "evaluate"))


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
