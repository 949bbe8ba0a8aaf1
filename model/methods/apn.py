"""APN (attribute prototype network) on averaged audio-visual features, as the AVCA-GZSL benchmark trains it.

The benchmark's APN keeps, of the image model, the two attribute heads over one "spatial location": with
x = [video; audio] (video first, L2-normalised) and the class matrix T [C, W],

    final head   a_f = A x        (official ``ALE_vector``)                p_f = softmax(a_f T^T)
    layer4 head  a_4 = P x        (official ``prototype_vectors['layer4']``) p_4 = softmax(a_4 T^T)

A and P are [W, video + audio] (1x1 convolutions in the official code; its max-pool has kernel 1 and does
nothing), initialised to 2e-4 * U(0, 1). The loss, all weights 1:

    CE(p_f, y) + MSE(a_f, t_y) + CE(p_4, y) + MSE(a_4, t_y)

where the official CrossEntropyLoss is applied to the already-softmaxed p (a double softmax; quirk
``double_softmax``) and the MSE target t_y is the sample's own class vector. The two heads share no
parameter and the loss is a sum, so the layer4 head never influences the final one; evaluation uses a_f only:
the L2 distance between a_f and the raw class vectors (quirk ``l2_evaluation``).

See docs/methods/apn.md; official checkpoints load with :func:`load_official_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.methods.base import AveragedBatch
from model.methods.checkpoints import read_official_state_dict
from model.methods.common import (
    BENCHMARK_TRAIN_DEFAULTS,
    AveragedMethodAPI,
    FieldChecks,
    MethodConfig,
    check_dataset,
    check_quirk_preset,
    layered_config,
    model_quirks,
)
from model.methods.nets import ConcatFeatureMethod

INIT_SCALE = 2e-4  # both heads start at INIT_SCALE * U(0, 1), all positive (official)


@dataclass(kw_only=True)
class APNConfig(MethodConfig):
    """Model and loss of APN (config section ``model``). Defaults: the official cls runs (all datasets)."""

    audio_dim: int = 128  # averaged VGGish (0..255 codes, used as they are)
    video_dim: int = 4096  # averaged C3D fc7
    word_dim: int = 300  # class-vector size = number of attribute prototypes (official: 300)
    normalise_inputs: bool = True  # L2-normalise [video; audio] (official --norm_inputs, on for every cls run)

    # --- reference quirks (REFERENCE_QUIRKS): off = the method as its paper defines it ------------------------
    double_softmax: bool = False
    l2_evaluation: bool = False

    def __post_init__(self) -> None:
        FieldChecks(self).positive_ints("audio_dim", "video_dim", "word_dim")


# Per-dataset settings of the official cls runs (run_scripts/<dataset>/apn.sh): none differ (APN has no
# dropout; --norm_inputs is on everywhere).
PRESETS: dict[str, dict[str, Any]] = {"ucf": {}, "vggsound": {}, "activitynet": {}}

# The benchmark's training protocol (main.py and the run scripts): Adam on both heads.
TRAIN_DEFAULTS: dict[str, Any] = dict(BENCHMARK_TRAIN_DEFAULTS)

# Behaviours of the official code that change numbers and that APN's paper does not have, as
# "<config section>.<key>" -> description. All off by default; the "reference" preset turns them on.
REFERENCE_QUIRKS: dict[str, str] = {
    "model.double_softmax":
        "the cross-entropy terms take the softmax probabilities as logits (CrossEntropyLoss after Softmax): "
        "CE(softmax(p)) with p already a softmax lies in [log(C-1+e) - 1, log(C-1+e)], and near a uniform p "
        "its gradient is ~1/C of the single-softmax one",
    "model.l2_evaluation":
        "classes are ranked by the L2 distance between the final head's output A x and the raw class vectors, "
        "not by the compatibility (A x) . t that the CE term trains (distance = -compatibility)",
}

# Test results (%, cls features) of the AVCA-GZSL benchmark, AVCA CVPR 2022 supplementary Table 1 (the TCAF
# paper's Table 1 leaves APN out).
PUBLISHED: dict[str, dict[str, float]] = {
    "vggsound": {"S": 6.46, "U": 6.13, "HM": 6.29, "ZSL": 6.50},
    "ucf": {"S": 13.54, "U": 28.44, "HM": 18.35, "ZSL": 29.69},
    "activitynet": {"S": 3.79, "U": 3.39, "HM": 3.58, "ZSL": 3.97},
}


def dataset_config(dataset: str | None = None, *, preset: str = "paper", **overrides: Any) -> APNConfig:
    """The APN config for ``dataset`` (None: the defaults) under a quirk ``preset``."""
    check_quirk_preset(preset)
    check_dataset(dataset, PRESETS, "a preset")
    return layered_config(APNConfig, overrides, dataset=dataset, preset=preset, dims={}, presets=PRESETS,
                          quirks=model_quirks(REFERENCE_QUIRKS))


class APN(ConcatFeatureMethod):
    """Two bias-free attribute heads over x = normalize([video; audio]) (see the module docstring)."""

    name: ClassVar[str] = "apn"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED

    def __init__(self, cfg: APNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else APNConfig()
        in_dim = cfg.video_dim + cfg.audio_dim
        # Created in the official order (prototypes, then ALE_vector) with the same torch.rand calls, so a
        # seeded model starts from the official initial weights.
        self.prototype_vectors = nn.Parameter(INIT_SCALE * torch.rand(cfg.word_dim, in_dim))  # layer4 head P
        self.ale_vectors = nn.Parameter(INIT_SCALE * torch.rand(cfg.word_dim, in_dim))  # final head A

    @property
    def param_dtype(self) -> torch.dtype:
        return self.ale_vectors.dtype

    def forward(self, audio: Tensor, video: Tensor) -> dict[str, Tensor]:
        """The predicted class vectors of both heads: {"final": A x, "layer4": P x}, each [N, word_dim]."""
        x = self.features(audio, video)
        return {"final": x @ self.ale_vectors.t(), "layer4": x @ self.prototype_vectors.t()}

    def class_scores(self, predicted: Tensor, class_vectors: Tensor) -> Tensor:
        """What the CE terms take as logits: the compatibilities a T^T, or (quirk ``double_softmax``) their
        softmax (the official ``output_final`` / ``pre_class``)."""
        logits = predicted @ self._class_matrix(class_vectors).t()
        return logits.softmax(dim=1) if self.cfg.double_softmax else logits

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """ce_final, mse_final, ce_layer4, mse_layer4 and their sum "total" (weights 1)."""
        labels = self._labels(batch)
        predicted = self.forward(batch.audio, batch.video)
        target = batch.word.to(self.param_dtype)
        out = {}
        for head in ("final", "layer4"):
            out[f"ce_{head}"] = F.cross_entropy(self.class_scores(predicted[head], batch.class_vectors), labels)
            out[f"mse_{head}"] = F.mse_loss(predicted[head], target)
        out["total"] = out["ce_final"] + out["mse_final"] + out["ce_layer4"] + out["mse_layer4"]
        return out

    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] from the final head: L2 to the raw class vectors (quirk ``l2_evaluation``, the official
        evaluation), else minus the compatibility."""
        return self._distances(self.forward(audio, video)["final"], class_vectors)


METHODS: dict[str, type[APN]] = {"apn": APN}


# ------------------------------------------------------------------------------- the registry's module API


def _check_name(name: str) -> None:
    if name != "apn":
        raise ValueError(f"unknown method {name!r} for model.methods.apn; use 'apn'")


_API = AveragedMethodAPI("apn", APNConfig, lambda cfg: APN(cfg), presets=PRESETS,
                         quirks=model_quirks(REFERENCE_QUIRKS), train_defaults=TRAIN_DEFAULTS,
                         presets_named="a preset", check_name=_check_name)
make_config, build = _API.make_config, _API.build
train_defaults, config_from_dict = _API.train_defaults, _API.config_from_dict


# ---------------------------------------------------------------------------------- official checkpoints

# Official key -> ours; the official tensors are 1x1 convolution weights [W, D, 1, 1], ours [W, D].
_OFFICIAL_KEYS = {"prototype_vectors.layer4": "prototype_vectors", "ALE_vector": "ale_vectors"}


def convert_official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """An official ``APN`` state dict (file, checkpoint dict or state dict) in this module's names and shapes.
    A ``module.`` prefix (DataParallel) is dropped, as the official loader does."""
    source = read_official_state_dict(source, "APN")
    out, unknown = {}, []
    for key, value in source.items():
        key = key.replace("module.", "")
        if key not in _OFFICIAL_KEYS:
            unknown.append(key)
            continue
        if value.ndim != 4 or value.shape[2:] != (1, 1):
            raise ValueError(f"official APN '{key}' must be a [W, D, 1, 1] 1x1-convolution weight, "
                             f"got {tuple(value.shape)}")
        out[_OFFICIAL_KEYS[key]] = value[:, :, 0, 0]
    missing = sorted(set(_OFFICIAL_KEYS) - {k.replace("module.", "") for k in source})
    if unknown or missing:
        raise ValueError(f"not an official APN state dict (expected {sorted(_OFFICIAL_KEYS)}; missing: {missing}; "
                         f"unknown keys: {sorted(unknown)[:8]})")
    return out


def load_official_checkpoint(net: APN, source: str | Path | Mapping[str, Any]) -> APN:
    """Load an official APN checkpoint into ``net``, strictly (the official loader ignores mismatching keys;
    here a wrong shape names the config fields to fix)."""
    state = convert_official_state_dict(source)
    own = net.state_dict()
    wrong = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape}
    if wrong:
        raise ValueError(
            f"official APN shapes differ from the model's (checkpoint, model): {wrong}; the heads are (word_dim, "
            f"video_dim + audio_dim) = ({net.cfg.word_dim}, {net.cfg.video_dim} + {net.cfg.audio_dim}); set "
            "model.word_dim, model.video_dim and model.audio_dim to the run's (official: 300, --input_size_video, "
            "--input_size_audio)")
    net.load_state_dict(state, strict=True)
    return net


def config_from_official_args(args: Mapping[str, Any], *, reference: bool = True, **overrides: Any) -> APNConfig:
    """The config of an official ``--apn`` run from its argument namespace (``vars(args)`` of its ``args.pkl``).
    The official model hard-codes word_dim 300. ``reference=True`` switches every REFERENCE_QUIRKS entry on."""
    if not args.get("apn"):
        raise ValueError("the official arguments are not those of an --apn run")
    if args.get("input_size") is not None:
        audio_dim = video_dim = int(args["input_size"])
    else:
        audio_dim, video_dim = int(args["input_size_audio"]), int(args["input_size_video"])
    fields: dict[str, Any] = {"audio_dim": audio_dim, "video_dim": video_dim, "word_dim": 300,
                              "normalise_inputs": bool(args.get("norm_inputs", False))}
    fields.update(dict.fromkeys(model_quirks(REFERENCE_QUIRKS), reference))
    fields.update(overrides)
    return APNConfig.from_dict(fields)
