"""The Attention Fusion baseline of the TCAF paper (Sec. 4.1, Table 1), with TCAF's interface.

The paper adapts Attention Fusion (Fayek & Kumar, IJCAI 2020), "a method for audio-visual classification
which is trained to classify unimodal information. It then fuses the unimodal predictions with learnt
attention weights", and gives it "the same input features, input embedding functions A_enc and V_enc,
learning rate and loss functions as TCAF"; "we temporally average the input features after A_enc and V_enc
to deal with non-synchronous modality sequences". No code for it was released (reference spec §10). Here:

    a (B,Ta,128)  -> /255 -> A_enc per token -> mean over valid tokens -> O_proj^a -> theta_a (B, d_out)
    v (B,Tv,4096) -> L2   -> V_enc per token -> mean over valid tokens -> O_proj^v -> theta_v (B, d_out)
    alpha = softmax over {a, v} of  G([theta_a ; theta_v])        (B, 2, d_out): per dimension and video
    theta_o = alpha_a * theta_a + alpha_v * theta_v  -> D_o -> rho_o (B, d_word)

* The "unimodal predictions" of a ZSL model are its embeddings in the joint space with the projected class
  vectors (a class is predicted by the nearest theta_w), so the fusion mixes theta_a and theta_v.
* The attention weights are per video and per output dimension, normalised over the two modalities
  (``fusion_weights="per_dimension"``), the joint-space analogue of per-class weights over modalities;
  ``"per_modality"`` gives one scalar weight per modality. G is one Linear layer on the concatenated
  unimodal embeddings. A modality without any valid token gets weight 0.
* ``unimodal_losses`` (default on): the unimodal embeddings are trained to classify too, with TCAF's l_ce and
  l_reg against the same class embeddings, added to the fused embedding's terms (weights 1). l_rec is
  computed on the fused embedding only, as in TCAF.

The modules are TCAF's: ``build_modality_encoder`` (A_enc, V_enc), ``output_projection`` (O_proj^a,
O_proj^v, built like TCAF's O_proj), ``output_decoder`` (D_o), ``word_projection`` / ``word_decoder``
(W_proj, D_w), the input normalisation and the loss functions of ``model.losses``; ``embed_classes`` is
TCAF's. There is no position encoder and no transformer: after the temporal average there is no order
left to encode. See docs/methods/attention_fusion.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from model import losses as L
from model.config import DATASET_PRESETS as TCAF_DATASET_PRESETS
from model.config import TCAFConfig
from model.embeddings import build_modality_encoder, normalise_audio, normalise_video
from model.heads import output_decoder, output_projection, word_decoder, word_projection
from model.methods.common import FieldChecks, TemporalMethodAPI, preset_config
from model.tcaf import TCAF

FUSION_WEIGHTS = ("per_dimension", "per_modality")

# TCAF paper Table 1 (test, %, cls features).
PUBLISHED: dict[str, dict[str, float]] = {
    "vggsound": {"S": 14.13, "U": 3.00, "HM": 4.95, "ZSL": 3.37},
    "ucf": {"S": 39.34, "U": 18.29, "HM": 24.97, "ZSL": 20.21},
    "activitynet": {"S": 11.15, "U": 3.37, "HM": 5.18, "ZSL": 4.88},
}

# TCAFConfig fields that configure parts Attention Fusion does not have. They are accepted (so that a
# TCAF model section, dataset presets and quirk presets load unchanged) and have no effect.
UNUSED_TCAF_FIELDS = (
    "audio_rate_s", "video_rate_s", "pos_dim", "time_embedding", "fourier_scale", "modality_embedding",
    "dropout_pos", "depth", "heads", "dim_head", "mlp_dim", "dropout_transformer", "attention",
    "use_class_token", "shared_layer_norm", "final_layer_norm", "integer_time_stamps_at_eval",
)  # fmt: skip


@dataclass(kw_only=True)
class AttentionFusionConfig(TCAFConfig):
    """TCAF's configuration (inputs, A_enc / V_enc, ``dim`` = their output size, heads, losses, quirks) plus
    the fusion switches. The transformer and position-encoder fields are listed in ``UNUSED_TCAF_FIELDS``."""

    fusion_weights: str = "per_dimension"  # "per_dimension" (B, 2, d_out) | "per_modality" (B, 2, 1)
    unimodal_losses: bool = True  # l_ce and l_reg on theta_a and theta_v as well as on theta_o

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check(self.fusion_weights in FUSION_WEIGHTS, "fusion_weights",
              f"got {self.fusion_weights!r}, use one of {FUSION_WEIGHTS}")
        check(self.modalities == "audio_visual", "modalities",
              f"got {self.modalities!r}; Attention Fusion fuses an audio and a visual prediction and needs both")
        check(self.use_embedding_net, "use_embedding_net",
              "Attention Fusion averages the outputs of A_enc / V_enc (paper Sec. 4.1); it cannot be turned off")


# The paper gives Attention Fusion TCAF's hyper-parameters (Sec. 4.1): TCAF's presets, of which the encoder
# and head dropouts act here (depth, dropout_pos and dropout_transformer have nothing to act on).
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    name: {k: v for k, v in p.items() if k not in UNUSED_TCAF_FIELDS} for name, p in TCAF_DATASET_PRESETS.items()
}


def dataset_config(dataset: str, **overrides: Any) -> AttentionFusionConfig:
    """The Attention Fusion configuration for ``dataset`` ("ucf" | "activitynet" | "vggsound"), with overrides."""
    return preset_config(AttentionFusionConfig, DATASET_PRESETS, dataset, overrides)


class AttentionFusion(nn.Module):
    """Unimodal embeddings of the temporally averaged A_enc / V_enc outputs, fused by learnt attention."""

    name: ClassVar[str] = "attention_fusion"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED

    # TCAF's own methods: they only use cfg, word_proj and param_dtype, which this class has too.
    embed_classes = TCAF.embed_classes
    param_dtype = TCAF.param_dtype
    _check_inputs = staticmethod(TCAF._check_inputs)

    def __init__(self, cfg: AttentionFusionConfig) -> None:
        super().__init__()
        if not isinstance(cfg, AttentionFusionConfig):
            raise TypeError(f"AttentionFusion needs an AttentionFusionConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.audio_encoder = build_modality_encoder(in_dim=cfg.audio_dim, cfg=cfg)  # A_enc
        self.video_encoder = build_modality_encoder(in_dim=cfg.video_dim, cfg=cfg)  # V_enc
        self.word_proj = word_projection(cfg)  # W_proj
        self.word_decoder = word_decoder(cfg)  # D_w
        self.audio_head = output_projection(cfg)  # O_proj^a: dim -> hidden -> d_out
        self.video_head = output_projection(cfg)  # O_proj^v
        per_dim = cfg.fusion_weights == "per_dimension"
        self.fusion = nn.Linear(2 * cfg.out_dim, 2 * cfg.out_dim if per_dim else 2)  # G
        self.output_decoder = output_decoder(cfg)  # D_o

    def _average(self, x: Tensor, mask: Tensor, encoder: nn.Module) -> Tensor:
        """Encode every token, then average the valid ones: (B, T, d_in) -> (B, dim); no valid token -> 0."""
        x = encoder(x.to(self.param_dtype), None if self.cfg.encoder_bn_over_padding else mask)
        w = mask.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)

    def forward(
        self,
        audio: Tensor | None,
        audio_mask: Tensor | None,
        video: Tensor | None,
        video_mask: Tensor | None,
        audio_times: Tensor | None = None,
        video_times: Tensor | None = None,
        *,
        reconstruct: bool | None = None,
    ) -> dict[str, Tensor]:
        """TCAF's signature and outputs (token times are accepted and unused: the averages have no time).

        Returns "embedding" theta_o (B, d_out), "pooled" (B, 2*dim) = [audio average ; video average],
        "reconstruction" rho_o (B, d_word) when ``reconstruct`` (default cfg.loss_rec), and
        "audio_embedding" theta_a, "video_embedding" theta_v (B, d_out), "fusion_weights" (B, 2, d_out or 1)
        (row 0 audio, row 1 video; they sum to 1 over the two rows).
        """
        cfg = self.cfg
        audio, audio_mask = self._check_inputs("audio", audio, audio_mask, cfg.audio_dim)
        video, video_mask = self._check_inputs("video", video, video_mask, cfg.video_dim)
        B = audio.shape[0]
        assert video.shape[0] == B, "audio and video batch sizes differ"
        phi_a = self._average(normalise_audio(audio, audio_mask, cfg=cfg), audio_mask, self.audio_encoder)
        phi_v = self._average(normalise_video(video, video_mask, cfg=cfg), video_mask, self.video_encoder)
        theta_a, theta_v = self.audio_head(phi_a), self.video_head(phi_v)

        logits = self.fusion(torch.cat([theta_a, theta_v], dim=-1)).view(B, 2, -1)  # (B, 2, d_out or 1)
        present = torch.stack([audio_mask.any(1), video_mask.any(1)], dim=1).unsqueeze(-1)  # (B, 2, 1)
        # A modality with no valid token gets weight 0 (both absent: equal weights on two constant vectors).
        logits = logits.masked_fill(~present, torch.finfo(logits.dtype).min / 2)
        weights = logits.softmax(dim=1)
        theta_o = (weights * torch.stack([theta_a, theta_v], dim=1)).sum(dim=1)

        out = {"embedding": theta_o, "pooled": torch.cat([phi_a, phi_v], dim=-1), "audio_embedding": theta_a,
               "video_embedding": theta_v, "fusion_weights": weights}
        if cfg.loss_rec if reconstruct is None else reconstruct:
            out["reconstruction"] = self.output_decoder(theta_o)
        return out

    def losses(self, out: dict[str, Tensor], labels: Tensor, class_vectors: Tensor) -> dict[str, Tensor]:
        """TCAF's l_ce + l_reg + l_rec on theta_o, plus l_ce + l_reg on theta_a and theta_v (``unimodal_losses``).

        "ce" and "reg" are the sums over the embeddings trained; "ce_fused", "ce_audio", ... give the parts.
        W_proj runs on the per-sample vectors and on the class matrix once each, as in ``TCAF.losses``.
        """
        cfg = self.cfg
        theta_o = out["embedding"]
        if labels.dim() != 1 or labels.shape[0] != theta_o.shape[0]:
            raise ValueError(f"labels must be (B,) = ({theta_o.shape[0]},), got {tuple(labels.shape)}")
        if cfg.loss_rec and "reconstruction" not in out:
            raise ValueError("l_rec is on but the forward output has no 'reconstruction'; "
                             "call the model with reconstruct=True (the default) before losses()")
        trained = {"fused": theta_o}
        if cfg.unimodal_losses:
            trained |= {"audio": out["audio_embedding"], "video": out["video_embedding"]}
        w = class_vectors.to(self.param_dtype)[labels]  # (B, d_word)
        parts: dict[str, Tensor] = {}
        ce = reg = rec = None
        if cfg.loss_reg or cfg.loss_rec:
            theta_w = self.word_proj(w)  # (B, d_out)
            if cfg.loss_reg:
                parts |= {f"reg_{k}": L.reg_loss(e, theta_w) for k, e in trained.items()}
                reg = sum(parts[f"reg_{k}"] for k in trained)
            if cfg.loss_rec:
                rec = L.rec_loss(out["reconstruction"], self.word_decoder(theta_w), w)
        if cfg.loss_ce:
            class_theta_w = self.embed_classes(class_vectors)
            parts |= {f"ce_{k}": L.ce_loss(e, class_theta_w, labels) for k, e in trained.items()}
            ce = sum(parts[f"ce_{k}"] for k in trained)
        return {**L.total_loss(ce=ce, reg=reg, rec=rec, like=theta_o), **parts}



# ---------------------------------------------------------------------------------------------- registry API
# What model/methods/__init__.py calls to build this method for the two-stage protocol.

_API = TemporalMethodAPI(AttentionFusionConfig, AttentionFusion, presets=DATASET_PRESETS)
make_config, build = _API.make_config, _API.build
train_defaults, config_from_dict = _API.train_defaults, _API.config_from_dict

MODEL = AttentionFusion
CONFIG = AttentionFusionConfig

__all__ = [
    "CONFIG", "DATASET_PRESETS", "MODEL", "PUBLISHED", "UNUSED_TCAF_FIELDS", "AttentionFusion",
    "AttentionFusionConfig", "dataset_config",
]  # fmt: skip
