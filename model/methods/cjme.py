"""CJME (Parida et al., WACV 2020) as the AVCA-GZSL benchmark code trains and evaluates it.

    audio (B,128)  -- f_a: Linear-BN-ReLU-Dropout-Linear-ReLU (128->1024->64)  --> a (B,64)
    video (B,4096) -- f_v: the same (4096->1024->64) ------------------------> v (B,64)
    word  (B,300)  -- f_t: the same (300->300->64) --------------------------> t (B,64)
    [audio; video] (B,4224) -- BN -> Linear -> sigmoid ---------------------> att (B,1), the weight of video

Training, on positives (a, v, t) and one negative per positive (a_q, v_q, t_q, from another class):

    triplet   = (1 - att) * TML(t, a, a_q) + att * TML(t, v, v_q)    TML: triplet margin loss, margin 1
    modality  = MSE(a, v)
    attention = MSE(att, s)   s = 1 where the audio's class scores are more uncertain than the video's
                              (entropy higher by > 0.1), 0 where the video's are, 0.5 otherwise; the
                              scores are softmax(a @ f_t(classes)^T) on detached embeddings
    total     = triplet + modality + attention

Evaluation (the official "both" entry): (1 - att) * ||a - t_c|| + att * ||v - t_c|| for every class c, the
official code thresholding att to 0/1 (one modality decides).

The official code (ExplainableML/AVCA-GZSL, ``src/model.py`` ``CJME``, ``src/loss.py`` ``CJMELoss``) does a
few things that change numbers and that one would not guess from the method; each is a switch of
`CJMEConfig` listed in `REFERENCE_QUIRKS` (off by default, all on with
``dataset_config(..., preset="reference")``). The per-dataset settings of the official run scripts are in
`PRESETS`; docs/methods/cjme.md has the rest.
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
from model.methods.checkpoints import (
    load_strictly,
    official_shape,
    read_data_parallel_state_dict,
    rename_prefixes,
)
from model.methods.common import BENCHMARK_TRAIN_DEFAULTS, AveragedMethodAPI, FieldChecks
from model.methods.nets import TRIPLET_NET_PREFIXES, EmbeddingNet, TripletEmbeddings, TripletNetSizes

OFFICIAL_COMMIT = "2711aeb5d7257ece4c5464fa46d7849a4edf6470"


@dataclass(kw_only=True)
class CJMEConfig(TripletNetSizes):
    """Sizes, regularisation and loss constants of CJME; defaults are the official UCF cls run. The sizes of
    the inputs and of f_a, f_v, f_t come first (``TripletNetSizes``)."""

    batch_norm: bool = True  # --embedding_use_bn (every run script sets it)
    dropout: float = 0.2  # --dropout_baselines (f_a, f_v, f_t; after the hidden ReLU)
    # --- losses
    margin: float = 1.0  # --margin of the triplet losses
    entropy_margin: float = 0.1  # the band |H_a - H_v| <= 0.1 in which the attention target is 0.5
    # --- reference quirks of the official code (see REFERENCE_QUIRKS)
    pairwise_broadcast_loss: bool = False
    hard_attention_at_eval: bool = False
    bn_per_call: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.dropouts("dropout")
        check(self.margin > 0, "margin", f"must be positive, got {self.margin!r}")
        check(self.entropy_margin >= 0, "entropy_margin", f"must be >= 0, got {self.entropy_margin!r}")


# The cls runs of run_scripts/<dataset>/cjme.sh: only the dropout differs between datasets (the architecture
# and the initial weights are the same); --decoder_use_bn / --normalize_decoder_outputs are passed but unused.
PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"dropout": 0.2},
    "vggsound": {"dropout": 0.0},
    "activitynet": {"dropout": 0.2},
}

# The benchmark's training protocol (main.py, run_scripts/<dataset>/cjme.sh): Adam over every parameter, the
# scheduler stepped with the val "both" HM.
TRAIN_DEFAULTS: dict[str, Any] = dict(BENCHMARK_TRAIN_DEFAULTS)

# Every behaviour of the official code that changes numbers and is not part of the method, as
# CJMEConfig field -> what the official code does. All off by default ("paper")
# and on under the "reference" preset.
REFERENCE_QUIRKS: dict[str, str] = {
    "pairwise_broadcast_loss":
        "the attention weights [B,1] times the per-sample triplet losses [B] broadcast to [B,B], so the "
        "triplet term is mean(1-att)*mean(l_ta) + mean(att)*mean(l_tv) instead of "
        "mean((1-att)*l_ta + att*l_tv)",
    "hard_attention_at_eval":
        "evaluation weighs the audio and video distances with the attention thresholded at 0.5 (0 or 1: "
        "one modality decides) instead of the sigmoid weight that training uses",
    "bn_per_call":
        "in training, f_a, f_v and f_t run separately on the positives and on the negatives, so their "
        "BatchNorm normalises each half with its own statistics (and updates the running ones twice per "
        "step)",
}


# ------------------------------------------------------------------------------- the registry's module API

_API = AveragedMethodAPI("cjme", CJMEConfig, lambda cfg: CJME(cfg), presets=PRESETS, quirks=REFERENCE_QUIRKS,
                         train_defaults=TRAIN_DEFAULTS, presets_named="a CJME preset")
dataset_config, make_config, build = _API.dataset_config, _API.make_config, _API.build
train_defaults, config_from_dict = _API.train_defaults, _API.config_from_dict


def attention_supervision(
    audio_emb: Tensor, video_emb: Tensor, class_emb: Tensor, *, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The attention target of each sample and the two entropies it comes from.

    audio_emb, video_emb (B, D); class_emb (C, D), f_t of the split's class vectors. H_m is the entropy of
    softmax(emb_m @ class_emb^T) over the C classes, on detached embeddings (the target carries no
    gradient). The target is 1 (trust the video) where H_a - H_v > margin, 0 (trust the audio) where
    H_v - H_a > margin, and 0.5 in between. Returns target (B,), H_a (B,), H_v (B,).
    """
    same_width = class_emb.ndim == 2 and class_emb.shape[1] == audio_emb.shape[1]
    assert audio_emb.shape == video_emb.shape and same_width, (
        f"need audio/video embeddings (B, D) and class embeddings (C, D), got {tuple(audio_emb.shape)}, "
        f"{tuple(video_emb.shape)}, {tuple(class_emb.shape)}")
    # In float32 outside autocast: under train.amp bf16 the softmax of bf16 scores does not sum to 1 within
    # Categorical's simplex check, and bf16 entropies would move the 0.1 band. A no-op in float32 training.
    with torch.autocast(audio_emb.device.type, enabled=False):
        classes = class_emb.detach().float().T  # (D, C)
        # Categorical, as the official code: its entropy clamps log p at log(float eps), which matters for
        # near-one-hot scores (then both entropies are ~0 and the target is 0.5).
        h_a = torch.distributions.Categorical(probs=F.softmax(audio_emb.detach().float() @ classes, dim=1)).entropy()
        h_v = torch.distributions.Categorical(probs=F.softmax(video_emb.detach().float() @ classes, dim=1)).entropy()
    target = torch.full_like(h_a, 0.5)
    target = torch.where(h_a - h_v > margin, torch.ones_like(target), target)
    target = torch.where(h_v - h_a > margin, torch.zeros_like(target), target)
    return target, h_a, h_v


class CJME(TripletEmbeddings):
    """Coordinated joint multimodal embeddings with an audio/video attention predictor."""

    name: ClassVar[str] = "cjme"
    # TCAF paper Table 1 (test, %, cls features), the CJME row.
    published: ClassVar[dict[str, dict[str, float]]] = {
        "vggsound": {"S": 10.86, "U": 2.22, "HM": 3.68, "ZSL": 3.72},
        "ucf": {"S": 33.89, "U": 24.82, "HM": 28.65, "ZSL": 29.01},
        "activitynet": {"S": 10.75, "U": 5.55, "HM": 7.32, "ZSL": 6.29},
    }

    def __init__(self, cfg: CJMEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CJMEConfig()
        # Created in the official constructor order (f_a, f_v, f_t, then the attention predictor), so a
        # seeded model starts from the official initial weights.
        net = {"dropout": cfg.dropout, "batch_norm": cfg.batch_norm, "final_relu": True}
        self.audio_net = EmbeddingNet(cfg.audio_dim, cfg.hidden_dim, cfg.out_dim, **net)
        self.video_net = EmbeddingNet(cfg.video_dim, cfg.hidden_dim, cfg.out_dim, **net)
        self.word_net = EmbeddingNet(cfg.word_dim, cfg.word_hidden_dim, cfg.out_dim, **net)
        av = cfg.audio_dim + cfg.video_dim
        # BN over the raw [audio; video] (audio first, un-normalised as the official inputs), then one logit.
        self.attention = nn.Sequential(nn.BatchNorm1d(av), nn.Linear(av, 1), nn.Sigmoid())

    @property
    def param_dtype(self) -> torch.dtype:
        return self.attention[1].weight.dtype

    # ---------------------------------------------------------------------------------------------
    def attention_weights(self, audio: Tensor, video: Tensor) -> Tensor:
        """(B, A), (B, V) -> (B, 1) sigmoid weight of the video modality (1 - it is the audio's)."""
        assert audio.shape[0] == video.shape[0], (
            f"audio {tuple(audio.shape)} and video {tuple(video.shape)} differ in B")
        return self.attention(torch.cat([audio, video], dim=1))

    def forward(
        self, audio: Tensor, video: Tensor, word: Tensor,
        neg_audio: Tensor, neg_video: Tensor, neg_word: Tensor,
    ) -> dict[str, Tensor]:
        """The official forward: embeddings of the positives (a_p, v_p, t_p) and negatives (a_q, v_q, t_q),
        each (B, out_dim), the attention (B, 1) and its 0/1 threshold (B, 1). Inputs (B, A|V|W)."""
        x, embeddings = self.embed(audio, video, word, neg_audio, neg_video, neg_word)
        att = self.attention_weights(x[0], x[1])
        return {**embeddings, "attention": att, "hard_attention": (att >= 0.5).to(att.dtype)}

    def loss_terms(self, out: Mapping[str, Tensor], class_emb: Tensor) -> dict[str, Tensor]:
        """The losses of a forward output ``out`` given f_t of the split's classes (C, out_dim)."""
        cfg = self.cfg
        att = out["attention"]  # (B, 1)
        B = att.shape[0]
        assert att.shape == (B, 1), f"attention must be (B, 1), got {tuple(att.shape)}"
        # The terms are built in the official order (attention target and its MSE first): autograd then
        # accumulates the gradients of att in the official order, to the last bit.
        target, _, _ = attention_supervision(out["a_p"], out["v_p"], class_emb, margin=cfg.entropy_margin)
        attention = F.mse_loss(att, target.unsqueeze(1))
        # Anchor t (the positive's class), positive a / v, negative a_q / v_q: (B,) each.
        l_ta = F.triplet_margin_loss(out["t_p"], out["a_p"], out["a_q"], margin=cfg.margin, reduction="none")
        l_tv = F.triplet_margin_loss(out["t_p"], out["v_p"], out["v_q"], margin=cfg.margin, reduction="none")
        if cfg.pairwise_broadcast_loss:
            # Official: att (B,1) against l (B,) broadcasts to (B,B), entry [i, j] = (1 - att_i) * l_ta_j +
            # att_i * l_tv_j: every attention weight meets every sample's loss, and the mean is
            # mean(1 - att) * mean(l_ta) + mean(att) * mean(l_tv). Computed as the official code does (B^2 is
            # small), so that even the rounding of the gradients is the official one.
            triplet = ((1 - att) * l_ta + att * l_tv).mean()
        else:
            w = att.squeeze(1)  # (B,)
            triplet = ((1 - w) * l_ta + w * l_tv).mean()
        modality = F.mse_loss(out["a_p"], out["v_p"])
        return {"triplet": triplet, "modality": modality, "attention": attention,
                "total": triplet + modality + attention}

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """One official training step's losses: the forward on positives and negatives, then f_t over the
        split's class matrix (in the caller's mode: in training, BN over the C classes with dropout, and its
        running statistics move; no gradient, as the official code detaches it) for the attention target."""
        out = self(batch.audio, batch.video, batch.word, batch.neg_audio, batch.neg_video, batch.neg_word)
        with torch.no_grad():
            class_emb = self.class_embeddings(batch.class_vectors)
        return self.loss_terms(out, class_emb)

    @torch.no_grad()
    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] (1 - att) * ||a - t_c|| + att * ||v - t_c||; att is 0/1 with hard_attention_at_eval."""
        audio_distances, video_distances = self.modality_distances(audio, video, class_vectors)
        dtype = self.param_dtype
        att = self.attention_weights(audio.to(dtype), video.to(dtype))  # (N, 1)
        if self.cfg.hard_attention_at_eval:
            att = (att >= 0.5).to(att.dtype)
        return (1 - att) * audio_distances + att * video_distances


# ------------------------------------------------------------------------------------------------ official
# Official state-dict prefix -> this module's (the Sequential indices are the same).
_OFFICIAL_PREFIXES = {**TRIPLET_NET_PREFIXES, "attention_model.": "attention."}


def official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """The official state dict of a checkpoint file (``{"epoch", "model", "optimizer", "metric"}``, as
    main.py saves it), of such a dict, or the state dict itself; a ``module.`` prefix is dropped, as the
    official loader does."""
    return read_data_parallel_state_dict(source, "CJME", "attention_model.")


def convert_official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename an official CJME state dict into this module's layout."""
    return rename_prefixes(official_state_dict(source), _OFFICIAL_PREFIXES, "CJME")


def config_from_official_state_dict(source: str | Path | Mapping[str, Any], **overrides: Any) -> CJMEConfig:
    """The sizes and BatchNorm setting of an official state dict (dropout and quirks from ``overrides``)."""
    state = official_state_dict(source)

    def shape(key: str) -> tuple[int, ...]:
        return official_shape(state, key, "CJME")

    prefix = "triplet_net.embedding_net{}.fc."
    batch_norm = prefix.format(1) + "1.running_mean" in state
    last = 4 if batch_norm else 3
    hidden, audio = shape(prefix.format(1) + "0.weight")
    word_hidden, word = shape(prefix.format(3) + "0.weight")
    fields = {"audio_dim": audio, "video_dim": shape(prefix.format(2) + "0.weight")[1], "word_dim": word,
              "hidden_dim": hidden, "word_hidden_dim": word_hidden,
              "out_dim": shape(prefix.format(1) + f"{last}.weight")[0], "batch_norm": batch_norm}
    return CJMEConfig.from_dict({**fields, **overrides})


def load_official_checkpoint(model: CJME, source: str | Path | Mapping[str, Any]) -> CJME:
    """Load an official CJME checkpoint (file, checkpoint dict or state dict) into ``model``, strictly:
    every tensor must land on one of the same shape and every tensor of ``model`` must be covered."""
    return load_strictly(model, convert_official_state_dict(source), what="CJME",
                         fix="build the config with "
                             "model.methods.cjme.config_from_official_state_dict(checkpoint)")
