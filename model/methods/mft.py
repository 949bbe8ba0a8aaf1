"""MFT: audio-visual GZSL with a multimodal fusion transformer (Yang, Li, Ruan, Li, Tang, Xu; JEIT 47(7), 2025),
on ClipClap-GZSL's framework and features.

The paper's text available to this project gives its abstract and tables only, and no code of it is public; the
design below follows what the abstract states and takes everything else from ClipClap-GZSL, on which the paper
builds (its features, its losses and its Table 2 comparison). docs/methods/mft.md lists every choice with its
evidence. Stated by the paper: multi-head attention for cross-modal interaction between the audio and visual
features; a KL divergence between predicted and target class distributions; a cosine-similarity loss for the
consistency of a class's representations; the ablations of its Tables 3 to 5. Chosen here::

    v (B,V) -- V_enc: Linear-BN-ReLU-Dropout --> v' + m_v --+
                                                            +-- Transformer (pre-LN, multi-head self-attention over
    a (B,A) -- A_enc: Linear-BN-ReLU-Dropout --> a' + m_a --+   the two modality tokens) -- mean of the tokens --> o
    o -> ClipClap's O_proj / D_o; the class vectors -> ClipClap's W_enc / W_proj / D_w (unchanged)

    total = ClipClap's rec + reg + ce
          + kl_weight  * KL(q || softmax(theta_o @ theta_W^T))  q_c = softmax_c(cos(t_y, t_c) / kl_temperature)
          + cos_weight * mean(1 - cos(theta_o, theta_w))

where t are the class vectors the word encoder reads (fixed, so q is a target, not a prediction), W the classes
of the training split, m_v, m_a learned modality embeddings. The ablation switches: ``attention: false`` (Table 3,
"w/o att") fuses as ClipClap does (one encoder on [v; a], no transformer); ``cos_loss`` / ``kl_loss`` (Table 4);
``modality: audio`` / ``video`` (Table 5: one modality token, and the class vectors' CLAP / CLIP part).
Evaluation is ClipClap's: the nearest class theta_w (L2) to theta_o.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.methods.avca import Transformer
from model.methods.clipclap import (
    PRESETS,
    REFERENCE_QUIRKS,
    TRAIN_DEFAULTS,
    TRAIN_PRESETS,
    ClipClap,
    ClipClapConfig,
    EmbeddingNet,
    modality_input,
    text_input,
)
from model.methods.common import AveragedMethodAPI, FieldChecks
from model.published import PUBLISHED


@dataclass(kw_only=True)
class MFTConfig(ClipClapConfig):
    """ClipClap's config (inputs, sizes, dropouts, ClipClap's losses) and MFT's fusion transformer and losses.
    The transformer's sizes are the ``transformer_*`` settings of ClipClap's config/clipclap.yaml (which its own
    model does not read); the loss weights and the temperature are choices (docs/methods/mft.md)."""

    # --- fusion (Table 3: attention off = ClipClap's fusion of [v; a] by one encoder) -----------------------
    attention: bool = True
    depth: int = 3  # transformer_depth
    heads: int = 4  # transformer_heads
    dim_head: int = 64  # transformer_dim_head
    mlp_dim: int = 1024  # transformer_mlp_dim
    dropout_attention: float = 0.3  # transformer_dropout
    # --- losses (Table 4) ---------------------------------------------------------------------------------
    kl_loss: bool = True
    kl_weight: float = 1.0
    kl_temperature: float = 0.1  # of the target distribution over the classes' text similarities
    cos_loss: bool = True
    cos_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.positive_ints("depth", "heads", "dim_head", "mlp_dim")
        check.dropouts("dropout_attention")
        check(self.kl_weight >= 0, "kl_weight", f"must be >= 0, got {self.kl_weight}")
        check(self.cos_weight >= 0, "cos_weight", f"must be >= 0, got {self.cos_weight}")
        check(self.kl_temperature > 0, "kl_temperature", f"must be > 0, got {self.kl_temperature}")


# The variants of the paper's ablation tables (Tables 3 to 5) as config overrides; model/published.py holds
# their published numbers under the same names (MFT_ABLATIONS).
MFT_ABLATION_SWITCHES: dict[str, dict[str, Any]] = {
    "no_attention": {"attention": False},  # Table 3, "w/o att"
    "no_cos_loss": {"cos_loss": False},  # Table 4, "l - l_cos"
    "no_kl_loss": {"kl_loss": False},  # Table 4, "l - l_kl"
    "audio_only": {"modality": "audio"},  # Table 5, "Audio"
    "visual_only": {"modality": "video"},  # Table 5, "Visual"
}

# ------------------------------------------------------------------------------- the registry's module API
# MFT is trained as ClipClap (the paper gives no training settings): the same per-dataset defaults, and
# ClipClap's post-step train-mode pass as the reference quirk.

_API = AveragedMethodAPI("mft", MFTConfig, lambda cfg: MFT(cfg), presets=PRESETS, quirks=REFERENCE_QUIRKS,
                         train_defaults=TRAIN_DEFAULTS, presets_named="an MFT preset")
dataset_config, make_config, build, config_from_dict = (_API.dataset_config, _API.make_config, _API.build,
                                                        _API.config_from_dict)


def train_defaults(name: str, dataset: str | None) -> dict[str, Any]:
    _API.check_name(name)
    return {**TRAIN_DEFAULTS, **TRAIN_PRESETS.get(dataset or "", {})}


def ablation_config(variant: str, dataset: str | None = None, **overrides: Any) -> MFTConfig:
    """The config of one of the paper's ablation variants (a key of :data:`MFT_ABLATION_SWITCHES`)."""
    if variant not in MFT_ABLATION_SWITCHES:
        raise ValueError(f"unknown MFT ablation {variant!r}; use one of {sorted(MFT_ABLATION_SWITCHES)}")
    return dataset_config(dataset, **{**MFT_ABLATION_SWITCHES[variant], **overrides})


# ------------------------------------------------------------------------------------------------- model


class MFT(ClipClap):
    name = "mft"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED["mft"]

    def __init__(self, cfg: MFTConfig | None = None) -> None:
        cfg = cfg or MFTConfig()
        super().__init__(cfg)
        self.cfg: MFTConfig = cfg
        if not cfg.attention:
            return
        self.input_encoder = None  # one encoder per modality instead of ClipClap's on [v; a]
        uses = {"both": ("video", "audio"), "video": ("video",), "audio": ("audio",)}[cfg.modality]
        self.modalities = uses
        dims = {"video": cfg.video_dim, "audio": cfg.audio_dim}
        self.modality_encoders = nn.ModuleDict({m: EmbeddingNet(dims[m], cfg.embed_dim, dropout=cfg.dropout_encoder)
                                                for m in uses})
        # Small random modality embeddings (as a learned position embedding), one row per token.
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(len(uses), cfg.embed_dim))
        self.transformer = Transformer(dim=cfg.embed_dim, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head,
                                       mlp_dim=cfg.mlp_dim, dropout=cfg.dropout_attention)

    def tokens(self, audio: Tensor, video: Tensor) -> Tensor:
        """[B, M, embed_dim] after the transformer: one token per modality used (video first)."""
        modality_input(self.cfg, audio, video)  # checks the input sizes
        inputs = {"video": video.float(), "audio": audio}
        x = torch.stack([self.modality_encoders[m](inputs[m]) for m in self.modalities], dim=1)
        return self.transformer(x + self.modality_embedding)

    def encode(self, audio: Tensor, video: Tensor) -> Tensor:
        if not self.cfg.attention:
            return super().encode(audio, video)
        return self.tokens(audio, video).mean(dim=1)

    def needs_class_scores(self) -> bool:
        return self.cfg.cross_entropy_loss or self.cfg.kl_loss

    def target_distribution(self, class_vectors: Tensor, labels: Tensor) -> Tensor:
        """q: for each sample, softmax over the split's classes of the cosine similarity of its class's text
        vector to theirs, at ``kl_temperature`` (fixed: no gradient)."""
        t = F.normalize(text_input(self.cfg, class_vectors).float(), dim=1)
        return torch.softmax((t[labels] @ t.t()) / self.cfg.kl_temperature, dim=1)

    def extra_loss_terms(self, out: Mapping[str, Tensor], scores: Tensor | None, class_vectors: Tensor,
                         labels: Tensor) -> dict[str, tuple[Tensor, float]]:
        zero = out["theta_o"].new_zeros(())
        terms = {"kl": (zero, 0.0), "cos": (zero, 0.0)}
        if self.cfg.kl_loss:
            target = self.target_distribution(class_vectors, labels)
            kl = F.kl_div(torch.log_softmax(scores.float(), dim=1), target, reduction="batchmean")
            terms["kl"] = (kl, self.cfg.kl_weight)
        if self.cfg.cos_loss:
            cos = (1 - F.cosine_similarity(out["theta_o"].float(), out["theta_w"].float(), dim=1)).mean()
            terms["cos"] = (cos, self.cfg.cos_weight)
        return terms
