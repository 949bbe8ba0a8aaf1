"""DeViSE, ALE and SJE on averaged audio-visual features, as the AVCA-GZSL benchmark trains them.

The three share one model: a bias-free linear map W from the L2-normalised concatenation x = [video; audio]
(video first) to the class-vector space, with the compatibility of class c

    s_c = (W x) . t_c        (t_c: the class vector, row c of the split's class matrix)

They differ only in how each sample's hinge violations  v_c = max(0, margin + s_c - s_y),  c != y  are reduced:

    DeViSE   sum_c v_c
    ALE      (beta_k / k) sum_c v_c,  k = #{c : v_c > 0},  beta_k = sum_{i<=k} 1/i  (0 when k = 0)
    SJE      max_c v_c

each then averaged over the batch (margin 0.1). In training, dropout (the dataset's ``dropout``) is applied
to x after normalisation and, in the official code, also to the class-vector matrix. The official evaluation
does not use the compatibility: it ranks classes by the L2 distance between W x and the raw class vectors.

One config (:class:`DeViSEConfig`, whose ``loss`` field names the reduction) and one network class per name
(:class:`DeViSE`, :class:`ALE`, :class:`SJE`); ``build(name, cfg)`` and ``METHODS`` map the registry's names
to them. ``REFERENCE_QUIRKS`` lists the official behaviours that change numbers; the "reference" preset
switches them all on. Official checkpoints (``DeviseModel``: one key ``bilinear.weight``) load with
:func:`load_official_checkpoint`. See docs/methods/devise.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_splits.common import check_keys
from model.methods.base import AveragedBatch
from model.methods.checkpoints import read_official_state_dict
from model.methods.common import (
    BENCHMARK_TRAIN_DEFAULTS,
    FieldChecks,
    MethodConfig,
    check_dataset,
    check_quirk_preset,
    layered_config,
    model_quirks,
)
from model.methods.nets import ConcatFeatureMethod

LOSSES = ("devise", "ale", "sje")


@dataclass(kw_only=True)
class DeViSEConfig(MethodConfig):
    """Model and loss of DeViSE / ALE / SJE (config section ``model``). Defaults: the UCF-GZSL^cls run."""

    loss: str = "devise"  # "devise" | "ale" | "sje": the reduction of the hinge violations
    audio_dim: int = 128  # averaged VGGish (0..255 codes, used as they are)
    video_dim: int = 4096  # averaged C3D fc7
    word_dim: int = 300  # class-vector size (the official model hard-codes 300)
    normalise_inputs: bool = True  # L2-normalise [video; audio] (official --norm_inputs, on for every cls run)
    dropout: float = 0.2  # official --dropout_baselines: on x in training (and on the class matrix, quirk below)
    margin: float = 0.1  # ClsContrastiveLoss margin as main.py sets it for the three

    # --- reference quirks (REFERENCE_QUIRKS): off = the method as its paper defines it ------------------------
    dropout_class_vectors: bool = False
    l2_evaluation: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check(self.loss in LOSSES, "loss", f"got {self.loss!r}, use one of {LOSSES}")
        check.positive_ints("audio_dim", "video_dim", "word_dim")
        check.dropouts("dropout")
        check(self.margin >= 0.0, "margin", f"must be >= 0, got {self.margin}")


# Per-dataset settings of the official cls runs (run_scripts/<dataset>/{devise,ale,sje}.sh, first and second
# stage alike): only --dropout_baselines differs; --norm_inputs is on everywhere.
PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"dropout": 0.2},
    "vggsound": {"dropout": 0.0},
    "activitynet": {"dropout": 0.2},
}

# The benchmark's training protocol (main.py and the run scripts): Adam on W, the only parameter.
TRAIN_DEFAULTS: dict[str, Any] = dict(BENCHMARK_TRAIN_DEFAULTS)

# Behaviours of the official code that change numbers and that the methods' papers do not have, as
# "<config section>.<key>" -> description. All off by default; the "reference" preset turns them on.
REFERENCE_QUIRKS: dict[str, str] = {
    "model.dropout_class_vectors":
        "in training, the dropout of the input (p = dropout, scaled by 1/(1-p)) is also applied to the class-vector "
        "matrix before the compatibility, with its own mask",
    "model.l2_evaluation":
        "classes are ranked by the L2 distance between W x and the raw class vectors, not by the compatibility "
        "(W x) . t that training optimises (distance = -compatibility)",
}

# Test results (%, cls features) of the AVCA-GZSL benchmark, AVCA CVPR 2022 supplementary Table 1; the
# TCAF paper's Table 1 takes its other rows (CJME, AVGZSLNet, AVCA) from the same table but leaves these out.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "devise": {"vggsound": {"S": 29.96, "U": 1.94, "HM": 3.64, "ZSL": 4.72},
               "ucf": {"S": 29.58, "U": 34.80, "HM": 31.98, "ZSL": 35.48},
               "activitynet": {"S": 0.17, "U": 5.84, "HM": 0.33, "ZSL": 5.84}},
    "ale": {"vggsound": {"S": 26.13, "U": 1.72, "HM": 3.23, "ZSL": 4.97},
            "ucf": {"S": 45.42, "U": 29.09, "HM": 35.47, "ZSL": 32.30},
            "activitynet": {"S": 0.89, "U": 6.16, "HM": 1.55, "ZSL": 6.16}},
    "sje": {"vggsound": {"S": 16.94, "U": 2.72, "HM": 4.69, "ZSL": 3.22},
            "ucf": {"S": 19.39, "U": 32.47, "HM": 24.28, "ZSL": 32.47},
            "activitynet": {"S": 37.92, "U": 1.22, "HM": 2.35, "ZSL": 4.35}},
}


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown method {name!r} for model.methods.devise; use one of {LOSSES}")


def dataset_config(name: str, dataset: str | None = None, *, preset: str = "paper", **overrides: Any) -> DeViSEConfig:
    """The config of method ``name`` for ``dataset`` (None: the defaults) under a quirk ``preset``."""
    _check_name(name)
    check_quirk_preset(preset)
    check_dataset(dataset, PRESETS, "a preset")
    return layered_config(DeViSEConfig, overrides, dataset=dataset, preset=preset, dims={}, presets=PRESETS,
                          quirks=model_quirks(REFERENCE_QUIRKS), base={"loss": name})


# ---------------------------------------------------------------------------------------------------- losses


def harmonic_numbers(n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """[n + 1] beta_k = sum_{i<=k} 1/i for k = 0..n (beta_0 = 0), accumulated in float64."""
    beta = torch.zeros(n + 1, dtype=torch.float64, device=device)
    beta[1:] = torch.cumsum(1.0 / torch.arange(1, n + 1, dtype=torch.float64, device=device), 0)
    return beta.to(dtype)


def ranking_loss(scores: Tensor, labels: Tensor, *, reduction: str, margin: float) -> Tensor:
    """The hinge ranking loss of DeViSE / ALE / SJE over compatibilities ``scores`` [B, C] (higher = better)
    and ``labels`` [B] (columns of the true class), averaged over the batch.

    ALE's rank weight is beta_k / k. The official code divides by k + 1e-8: in float32, k + 1e-8 == k for
    every k >= 1, and a row with k = 0 has only zero violations, so its weight does not matter; here it is 0.
    """
    if reduction not in LOSSES:
        raise ValueError(f"reduction must be one of {LOSSES}, got {reduction!r}")
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores must be [B, C] and labels [B], got {tuple(scores.shape)} and {tuple(labels.shape)}")
    batch, n_classes = scores.shape
    positive = scores.gather(1, labels.unsqueeze(1))  # [B, 1]
    own = F.one_hot(labels, n_classes).bool()
    violations = (margin + scores - positive).clamp(min=0).masked_fill(own, 0.0)  # [B, C]
    if reduction == "sje":
        per_sample = violations.topk(1, dim=1).values.sum(1)  # the largest violation
    elif reduction == "ale":
        k = (violations > 0).sum(1)
        beta = harmonic_numbers(n_classes, dtype=scores.dtype, device=scores.device)[k]
        weight = beta / k.clamp(min=1).to(scores.dtype)
        per_sample = violations.sum(1) * weight
    else:
        per_sample = violations.sum(1)
    return per_sample.sum() / batch


# ---------------------------------------------------------------------------------------------------- model


class DeViSE(ConcatFeatureMethod):
    """x = normalize([video; audio]) -> W x, compared with the class vectors (see the module docstring)."""

    name: ClassVar[str] = "devise"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED["devise"]

    def __init__(self, cfg: DeViSEConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else DeViSEConfig(loss=self.name)
        if cfg.loss != self.name:
            raise ValueError(f"{type(self).__name__} trains the {self.name!r} loss but the config has loss="
                             f"{cfg.loss!r}; build it with model.methods.devise.build({cfg.loss!r}, cfg)")
        self.cfg = cfg
        # The official DeviseModel's only parameter: Linear(audio + video -> 300, bias=False), same init.
        self.projection = nn.Linear(cfg.video_dim + cfg.audio_dim, cfg.word_dim, bias=False)

    @property
    def param_dtype(self) -> torch.dtype:
        return self.projection.weight.dtype

    def forward(self, audio: Tensor, video: Tensor) -> Tensor:
        """W x [N, word_dim]; in training mode x is dropped out first."""
        x = F.dropout(self.features(audio, video), self.cfg.dropout, self.training)
        return self.projection(x)

    def scores(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """Compatibilities [N, C] = (W x) . t_c. In training mode the input, and with the quirk
        ``dropout_class_vectors`` the class matrix, are dropped out (in that order: the official RNG order)."""
        projected = self.forward(audio, video)
        classes = self._class_matrix(class_vectors)
        if self.cfg.dropout_class_vectors:
            classes = F.dropout(classes, self.cfg.dropout, self.training)
        return projected @ classes.t()

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """{"rank": the method's ranking loss over the split's classes, "total": the same}."""
        labels = self._labels(batch)
        rank = ranking_loss(self.scores(batch.audio, batch.video, batch.class_vectors), labels,
                            reduction=self.cfg.loss, margin=self.cfg.margin)
        return {"rank": rank, "total": rank}

    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C]: L2 between W x and the raw class vectors (quirk ``l2_evaluation``, the official evaluation),
        else minus the compatibility."""
        return self._distances(self.forward(audio, video), class_vectors)


class ALE(DeViSE):
    name: ClassVar[str] = "ale"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED["ale"]


class SJE(DeViSE):
    name: ClassVar[str] = "sje"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED["sje"]


METHODS: dict[str, type[DeViSE]] = {"devise": DeViSE, "ale": ALE, "sje": SJE}


# ------------------------------------------------------------------------------- the registry's module API


def make_config(name: str, model: Mapping[str, Any], *, dataset: str | None, preset: str,
                dims: Mapping[str, Any]) -> DeViSEConfig:
    """``model`` values > reference quirks (preset "reference") > dataset preset > defaults; ``dims`` (sizes read
    from the data) fill the sizes ``model`` leaves out. Datasets without a preset use the defaults."""
    _check_name(name)
    check_quirk_preset(preset)
    model = check_keys(DeViSEConfig, model, "model")
    if model.get("loss", name) != name:
        raise ValueError(f"model.loss is {model['loss']!r} but the method is {name!r}; remove model.loss "
                         "(the method's name sets it)")
    return layered_config(DeViSEConfig, model, dataset=dataset, preset=preset, dims=dims, presets=PRESETS,
                          quirks=model_quirks(REFERENCE_QUIRKS), base={"loss": name})


def build(name: str, cfg: DeViSEConfig | None = None) -> DeViSE:
    """The network of method ``name`` ("devise", "ale" or "sje") for ``cfg`` (default: UCF defaults, paper)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} for model.methods.devise; use one of {sorted(METHODS)}")
    return METHODS[name](cfg if cfg is not None else dataset_config(name))


def train_defaults(name: str, dataset: str | None) -> dict[str, Any]:
    """The official training protocol (identical for the three methods and for every dataset)."""
    _check_name(name)
    return dict(TRAIN_DEFAULTS)


def config_from_dict(name: str, d: Mapping[str, Any]) -> DeViSEConfig:
    cfg = DeViSEConfig.from_dict(d)
    if cfg.loss != name:
        raise ValueError(f"config has loss={cfg.loss!r} but the method is {name!r}")
    return cfg


# ---------------------------------------------------------------------------------- official checkpoints

_OFFICIAL_KEYS = {"bilinear.weight": "projection.weight"}


def convert_official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """An official ``DeviseModel`` state dict (file, checkpoint dict or state dict) in this module's names.

    The layouts are the same (W: [300, video + audio], video columns first); only the name differs. A
    ``module.`` prefix (DataParallel) is dropped, as the official loader does."""
    out, unknown = {}, []
    for key, value in read_official_state_dict(source, "DeviseModel").items():
        key = key.replace("module.", "")
        if key in _OFFICIAL_KEYS:
            out[_OFFICIAL_KEYS[key]] = value
        else:
            unknown.append(key)
    if unknown or not out:
        raise ValueError(f"not an official DeviseModel state dict (expected the single key 'bilinear.weight'; "
                         f"unknown keys: {sorted(unknown)[:8]})")
    return out


def load_official_checkpoint(net: DeViSE, source: str | Path | Mapping[str, Any]) -> DeViSE:
    """Load an official DeViSE/ALE/SJE checkpoint into ``net``, strictly (the official loader ignores
    mismatching keys; here a wrong shape names the config fields to fix)."""
    state = convert_official_state_dict(source)
    weight, own = state["projection.weight"], net.projection.weight
    if weight.shape != own.shape:
        raise ValueError(
            f"official W is {tuple(weight.shape)} but the model's is {tuple(own.shape)} = (word_dim, video_dim + "
            f"audio_dim) = ({net.cfg.word_dim}, {net.cfg.video_dim} + {net.cfg.audio_dim}); set model.word_dim, "
            "model.video_dim and model.audio_dim to the run's (official: 300, --input_size_video, --input_size_audio)")
    net.load_state_dict(state, strict=True)
    return net


def config_from_official_args(args: Mapping[str, Any], *, reference: bool = True, **overrides: Any) -> DeViSEConfig:
    """The config of an official run from its argument namespace (``vars(args)`` of its ``args.pkl``).

    The method is the one of the ``devise`` / ``ale`` / ``sje`` flags that is set; the official model
    hard-codes word_dim 300. ``reference=True`` switches every REFERENCE_QUIRKS entry on."""
    flags = [n for n in LOSSES if args.get(n)]
    if len(flags) != 1:
        raise ValueError(f"exactly one of the flags {LOSSES} must be set in the official arguments, got {flags}")
    if args.get("input_size") is not None:
        audio_dim = video_dim = int(args["input_size"])
    else:
        audio_dim, video_dim = int(args["input_size_audio"]), int(args["input_size_video"])
    fields: dict[str, Any] = {"loss": flags[0], "audio_dim": audio_dim, "video_dim": video_dim, "word_dim": 300,
                              "normalise_inputs": bool(args.get("norm_inputs", False)),
                              "dropout": float(args.get("dropout_baselines", 0.2))}
    fields.update(dict.fromkeys(model_quirks(REFERENCE_QUIRKS), reference))
    fields.update(overrides)
    return DeViSEConfig.from_dict(fields)
