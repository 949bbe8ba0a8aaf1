"""AVGZSLNet (Mazumder et al., WACV 2021) as the AVCA-GZSL benchmark code trains and evaluates it.

    audio (B,128)  -- f_a: Linear-BN-ReLU-Dropout-Linear (128->1024->64) --> a (B,64)
    video (B,4096) -- f_v: the same (4096->1024->64) -------------------> v (B,64)
    word  (B,300)  -- f_t: the same (300->300->64) ---------------------> t (B,64)
    a, v, t (B,64) -- decoder: Linear-BN-ReLU-Dropout-Linear (64->64->300), then L2-normalised
                                                              --> x_ta, x_tv, x_tt (B,300)

Training, on positives (a, v, t) and one negative per positive (a_q, v_q, t_q, from another class); w is the
positive's word vector:

    rec      = mean ||x_tt - w|| + mean ||x_ta - w|| + mean ||x_tv - w||  (plain L2 distances)
    cta, ctv = TML(x_tt, x_ta, x_ta_q), TML(x_tt, x_tv, x_tv_q)            (cross-modal decoder loss)
    ta, at   = TML(t, a, a_q), TML(a, t, t_q)                              (composite triplet loss)
    tv, vt   = TML(t, v, v_q), TML(v, t, t_q)
    total    = rec + cta + ctv + ta + at + tv + vt      TML: triplet margin loss, margin 1

Evaluation (the official "both" entry) ranks the classes c by the 64-d embeddings, not the decoder outputs:
||a - t_c|| + ||v - t_c|| (the official sum; the method's average is half of it).

The official code (ExplainableML/AVCA-GZSL, ``src/model.py`` ``AVGZSLNet``, ``src/loss.py`` ``AVGZSLLoss``)
does a few things that change numbers and that one would not guess from the method; each is a switch of
`AVGZSLNetConfig` listed in `REFERENCE_QUIRKS` (off by default, all on with
``dataset_config(..., preset="reference")``). The per-dataset settings of the official run scripts are in
`PRESETS`; docs/methods/avgzslnet.md has the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from model.methods.base import AveragedBatch
from model.methods.checkpoints import (
    load_strictly,
    official_shape,
    read_data_parallel_state_dict,
    rename_prefixes,
)
from model.methods.common import BENCHMARK_TRAIN_DEFAULTS, AveragedMethodAPI, FieldChecks
from model.methods.nets import (
    TRIPLET_NET_PREFIXES,
    EmbeddingNet,
    TripletEmbeddings,
    TripletNetSizes,
    one_batch,
)

OFFICIAL_COMMIT = "2711aeb5d7257ece4c5464fa46d7849a4edf6470"


@dataclass(kw_only=True)
class AVGZSLNetConfig(TripletNetSizes):
    """Sizes, regularisation and loss constants of AVGZSLNet; defaults are the official cls runs (the same
    on UCF, VGGSound and ActivityNet). The sizes of the inputs and of f_a, f_v, f_t come first
    (``TripletNetSizes``)."""

    embedding_batch_norm: bool = True  # --embedding_use_bn (every run script sets it)
    dropout_embedding: float = 0.8  # --embedding_dropout (default, kept by every run script)
    # --- the shared decoder
    decoder_hidden_dim: int = 64  # --decoder_hidden_size
    decoder_batch_norm: bool = True  # --decoder_use_bn
    dropout_decoder: float = 0.5  # --decoder_dropout
    normalize_decoder_outputs: bool = True  # --normalize_decoder_outputs
    # --- losses
    margin: float = 1.0  # --margin of the triplet losses
    # --- reference quirks of the official code (see REFERENCE_QUIRKS)
    sum_modality_distances: bool = False
    bn_per_call: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.positive_ints("decoder_hidden_dim")
        check.dropouts("dropout_embedding", "dropout_decoder")
        check(self.margin > 0, "margin", f"must be positive, got {self.margin!r}")


# The cls runs of run_scripts/<dataset>/avgzslnet.sh: identical on the three datasets (hidden 1024, decoder
# hidden 64, BN in both, normalised decoder outputs, the default dropouts 0.8 / 0.5).
PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"dropout_embedding": 0.8, "dropout_decoder": 0.5},
    "vggsound": {"dropout_embedding": 0.8, "dropout_decoder": 0.5},
    "activitynet": {"dropout_embedding": 0.8, "dropout_decoder": 0.5},
}

# The benchmark's training protocol (main.py, run_scripts/<dataset>/avgzslnet.sh): Adam over every parameter,
# the scheduler stepped with the val "both" HM.
TRAIN_DEFAULTS: dict[str, Any] = dict(BENCHMARK_TRAIN_DEFAULTS)

# Every behaviour of the official code that changes numbers and is not part of the method, as
# AVGZSLNetConfig field -> what the official code does. All off by default ("paper") and
# on under the "reference" preset.
REFERENCE_QUIRKS: dict[str, str] = {
    "sum_modality_distances":
        "evaluation adds the audio and the video distances instead of averaging them, so the calibrated-"
        "stacking grid (0..3) acts on twice the scale: the same as a grid 0..1.5 on the average",
    "bn_per_call":
        "in training, f_a, f_v and f_t run separately on the positives and on the negatives, and the "
        "decoder five times (a, v, t of the positives, a, v of the negatives), so every BatchNorm normalises "
        "each call with its own statistics (and updates the running ones once per call)",
}


# ------------------------------------------------------------------------------- the registry's module API

_API = AveragedMethodAPI("avgzslnet", AVGZSLNetConfig, lambda cfg: AVGZSLNet(cfg), presets=PRESETS,
                         quirks=REFERENCE_QUIRKS, train_defaults=TRAIN_DEFAULTS, presets_named="a AVGZSLNet preset")
dataset_config, make_config, build = _API.dataset_config, _API.make_config, _API.build
train_defaults, config_from_dict = _API.train_defaults, _API.config_from_dict


def l2_distance(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise ||x - y|| (B,), without the epsilon of the triplet loss's distance: the official L2Loss.
    pow(0.5) rather than sqrt, as the official code: the backward passes round differently, and the
    gradients of the Linear biases before BatchNorm are pure rounding noise that Adam scales to +-lr."""
    return (x - y).pow(2).sum(1).pow(0.5)


class AVGZSLNet(TripletEmbeddings):
    """Audio, video and word embeddings with a shared decoder that reconstructs the word vector."""

    name: ClassVar[str] = "avgzslnet"
    # TCAF paper Table 1 (test, %, cls features), the AVGZSLNet row.
    published: ClassVar[dict[str, dict[str, float]]] = {
        "vggsound": {"S": 15.02, "U": 3.19, "HM": 5.26, "ZSL": 4.81},
        "ucf": {"S": 74.79, "U": 24.15, "HM": 36.51, "ZSL": 31.51},
        "activitynet": {"S": 13.70, "U": 5.96, "HM": 8.30, "ZSL": 6.39},
    }

    def __init__(self, cfg: AVGZSLNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or AVGZSLNetConfig()
        # Created in the official constructor order (f_a, f_v, f_t, then the decoder), so a seeded model
        # starts from the official initial weights.
        emb = {"dropout": cfg.dropout_embedding, "batch_norm": cfg.embedding_batch_norm, "final_relu": False}
        self.audio_net = EmbeddingNet(cfg.audio_dim, cfg.hidden_dim, cfg.out_dim, **emb)
        self.video_net = EmbeddingNet(cfg.video_dim, cfg.hidden_dim, cfg.out_dim, **emb)
        self.word_net = EmbeddingNet(cfg.word_dim, cfg.word_hidden_dim, cfg.out_dim, **emb)
        self.decoder = EmbeddingNet(cfg.out_dim, cfg.decoder_hidden_dim, cfg.word_dim,
                                    dropout=cfg.dropout_decoder, batch_norm=cfg.decoder_batch_norm,
                                    final_relu=False)

    @property
    def param_dtype(self) -> torch.dtype:
        return self.decoder.net[0].weight.dtype

    # ---------------------------------------------------------------------------------------------
    def decode(self, *embeddings: Tensor) -> list[Tensor]:
        """The shared decoder on each (B, out_dim) embedding -> (B, word_dim), L2-normalised when
        normalize_decoder_outputs; one call per embedding with bn_per_call, else one call on all."""
        if self.cfg.bn_per_call:
            decoded = [self.decoder(e) for e in embeddings]
        else:
            decoded = one_batch(self.decoder, *embeddings)
        if self.cfg.normalize_decoder_outputs:
            decoded = [F.normalize(d, dim=1) for d in decoded]
        return decoded

    def forward(
        self, audio: Tensor, video: Tensor, word: Tensor,
        neg_audio: Tensor, neg_video: Tensor, neg_word: Tensor,
    ) -> dict[str, Tensor]:
        """The official forward: embeddings of the positives (a_p, v_p, t_p) and negatives (a_q, v_q, t_q),
        each (B, out_dim), and the decoder outputs x_ta_p, x_tv_p, x_tt_p, x_ta_q, x_tv_q, each
        (B, word_dim). Inputs (B, A|V|W)."""
        _, e = self.embed(audio, video, word, neg_audio, neg_video, neg_word)
        # With bn_per_call the decoder then runs on a_p, v_p, t_p, a_q, v_q in turn, as officially.
        x_ta_p, x_tv_p, x_tt_p, x_ta_q, x_tv_q = self.decode(e["a_p"], e["v_p"], e["t_p"], e["a_q"], e["v_q"])
        return {**e, "x_ta_p": x_ta_p, "x_tv_p": x_tv_p, "x_tt_p": x_tt_p, "x_ta_q": x_ta_q, "x_tv_q": x_tv_q}

    def loss_terms(self, out: Mapping[str, Tensor], word: Tensor) -> dict[str, Tensor]:
        """The losses of a forward output ``out``; ``word`` (B, word_dim) are the positives' word vectors,
        the target of the decoder (compared with the normalised decoder outputs as they are)."""
        m = self.cfg.margin
        w = word.to(self.param_dtype)
        assert w.shape == out["x_tt_p"].shape, f"word {tuple(w.shape)} must be {tuple(out['x_tt_p'].shape)}"

        def tml(anchor: str, positive: str, negative: str) -> Tensor:
            return F.triplet_margin_loss(out[anchor], out[positive], out[negative], margin=m)

        rec = (l2_distance(out["x_tt_p"], w).mean() + l2_distance(out["x_ta_p"], w).mean()
               + l2_distance(out["x_tv_p"], w).mean())
        terms = {"rec": rec,
                 "cta": tml("x_tt_p", "x_ta_p", "x_ta_q"), "ctv": tml("x_tt_p", "x_tv_p", "x_tv_q"),
                 "ta": tml("t_p", "a_p", "a_q"), "at": tml("a_p", "t_p", "t_q"),
                 "tv": tml("t_p", "v_p", "v_q"), "vt": tml("v_p", "t_p", "t_q")}
        # Summed in the official order: the decoder loss (rec + cta + ctv), then the composite triplet loss.
        cmd = terms["rec"] + terms["cta"] + terms["ctv"]
        ct = terms["ta"] + terms["at"] + terms["tv"] + terms["vt"]
        return {**terms, "total": cmd + ct}

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """One official training step's losses (the forward on positives and negatives, AVGZSLLoss)."""
        out = self(batch.audio, batch.video, batch.word, batch.neg_audio, batch.neg_video, batch.neg_word)
        return self.loss_terms(out, batch.word)

    @torch.no_grad()
    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] ||a - t_c|| + ||v - t_c|| (official, sum_modality_distances) or their average."""
        audio_distances, video_distances = self.modality_distances(audio, video, class_vectors)
        both = audio_distances + video_distances
        return both if self.cfg.sum_modality_distances else both / 2


# ------------------------------------------------------------------------------------------------ official
# Official state-dict prefix -> this module's (the Sequential indices are the same).
_OFFICIAL_PREFIXES = {**TRIPLET_NET_PREFIXES, "decoder_net.embedding_net.fc.": "decoder.net."}


def official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """The official state dict of a checkpoint file (``{"epoch", "model", "optimizer", "metric"}``, as
    main.py saves it), of such a dict, or the state dict itself; a ``module.`` prefix is dropped, as the
    official loader does."""
    return read_data_parallel_state_dict(source, "AVGZSLNet", "decoder_net.")


def convert_official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename an official AVGZSLNet state dict into this module's layout."""
    return rename_prefixes(official_state_dict(source), _OFFICIAL_PREFIXES, "AVGZSLNet")


def config_from_official_state_dict(
    source: str | Path | Mapping[str, Any], **overrides: Any
) -> AVGZSLNetConfig:
    """The sizes and BatchNorm settings of an official state dict (dropouts, normalisation and quirks from
    ``overrides``)."""
    state = official_state_dict(source)

    def shape(key: str) -> tuple[int, ...]:
        return official_shape(state, key, "AVGZSLNet")

    prefix = "triplet_net.embedding_net{}.fc."
    decoder = "decoder_net.embedding_net.fc."
    embedding_bn = prefix.format(1) + "1.running_mean" in state
    decoder_bn = decoder + "1.running_mean" in state
    hidden, audio = shape(prefix.format(1) + "0.weight")
    word_hidden, word = shape(prefix.format(3) + "0.weight")
    decoder_hidden, out_dim = shape(decoder + "0.weight")
    fields = {"audio_dim": audio, "video_dim": shape(prefix.format(2) + "0.weight")[1], "word_dim": word,
              "hidden_dim": hidden, "word_hidden_dim": word_hidden, "out_dim": out_dim,
              "decoder_hidden_dim": decoder_hidden, "embedding_batch_norm": embedding_bn,
              "decoder_batch_norm": decoder_bn}
    return AVGZSLNetConfig.from_dict({**fields, **overrides})


def load_official_checkpoint(model: AVGZSLNet, source: str | Path | Mapping[str, Any]) -> AVGZSLNet:
    """Load an official AVGZSLNet checkpoint (file, checkpoint dict or state dict) into ``model``, strictly:
    every tensor must land on one of the same shape and every tensor of ``model`` must be covered."""
    return load_strictly(model, convert_official_state_dict(source), what="AVGZSLNet",
                         fix="build the config with "
                             "model.methods.avgzslnet.config_from_official_state_dict(checkpoint)")
