"""AVCA: audio-visual cross-attention for generalised zero-shot video classification (Mercea et al. 2022).

On features averaged over time (one 128-d audio and one 4096-d video vector per video)::

    a (B,128) -> A_enc -> phi_a --+                              +-> A_proj -> theta_a -> D -> rho_a
                                  +- [phi_a+p_0, phi_v+p_1] -> T -+            `-> A_rec -> phi_a_rec
    v (B,4096) -> V_enc -> phi_v -+   (2 tokens, pre-LN)         +-> V_proj -> theta_v -> D -> rho_v
                                                                              `-> V_rec -> phi_v_rec
    w (B,300) -> W_proj -> theta_w -> D -> rho_w

with ``phi_a_attn = phi_a + T(...)[:, 0]`` (T has its own residuals, so phi_a enters twice). Training pairs
every positive with a negative of another class; the negatives go through their own encoder and attention
passes. Classification (the official evaluation) is by the nearest ``theta_w`` (torch.cdist, L2) to
``theta_v``: the video branch after cross-attention; ``theta_a`` is not used at test time.

Every embedding net is Linear -> BN -> ReLU -> Dropout [-> Linear -> BN -> ReLU -> Dropout], so every
``phi``, ``theta`` and ``rho`` is non-negative. Module creation follows the official constructor, so a seeded
model starts from the official initialisation (the official ``pos_emb1D`` is created last, as here).

Behaviours of the official code (ExplainableML/AVCA-GZSL, 2711aeb) that change numbers and that the paper does
not describe are config switches listed in :data:`REFERENCE_QUIRKS`, off by default and all on with
``dataset_config(..., preset="reference")``; docs/methods/avca.md says what each does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.methods.base import AveragedBatch, AveragedMethod, adam
from model.methods.checkpoints import checkpoint_state, state_mismatches
from model.methods.common import BENCHMARK_TRAIN_DEFAULTS, AveragedMethodAPI, FieldChecks, MethodConfig

TORCH_BN_MOMENTUM = 0.1  # nn.BatchNorm1d's default, which the official BNs without the momentum flag keep


@dataclass(kw_only=True)
class AVCAConfig(MethodConfig):
    """Sizes, dropouts and loss switches of AVCA. Defaults are the official UCF-GZSL^cls run
    (run_scripts/UCF/AVCA.sh, cls features); :data:`PRESETS` holds the per-dataset dropouts."""

    # --- inputs -------------------------------------------------------------------------------------
    audio_dim: int = 128  # averaged VGGish codes, fed un-normalised on the 0..255 scale, as the official code
    video_dim: int = 4096  # averaged C3D fc7
    word_dim: int = 300  # class vectors (W_proj input, D output); the official code hard-codes 300

    # --- sizes (official: --embeddings_hidden_size 512, --decoder_hidden_size 512, dim_out 64) ---------
    dim: int = 300  # phi width = transformer width = A_rec/V_rec output; hard-coded 300 officially
    encoder_hidden_dim: int = 512  # hidden layer of A_enc / V_enc
    decoder_hidden_dim: int = 512  # hidden layer of A_proj / V_proj
    out_dim: int = 64  # theta width (params_model['dim_out'])

    # --- cross-attention transformer (official: Transformer(300, depth, 3, 100, 64)) -----------------
    depth: int = 1  # --depth_transformer
    heads: int = 3
    dim_head: int = 100
    mlp_dim: int = 64

    # --- dropouts: rates per module group, as the official flags name them ------------------------------
    dropout_embedding: float = 0.2  # --embedding_dropout: A_enc, V_enc and the transformer
    dropout_decoder: float = 0.3  # --decoder_dropout: A_proj, V_proj
    dropout_additional: float = 0.5  # --additional_dropout: W_proj, D, A_rec, V_rec

    # --- BatchNorm ---------------------------------------------------------------------------------------
    # --momentum, in torch's convention (weight of the new batch): 0.99 keeps running stats ~ the last batch.
    momentum: float = 0.99

    # --- losses (all weights 1 in the official runs) -------------------------------------------------------
    margin: float = 1.0  # --margin of every triplet loss
    additional_triplets_loss: bool = True  # l_t on (--additional_triplets_loss)
    first_additional_triplet: float = 1.0  # weight of l_t's (theta_a/v, theta_w, theta_a/v^-) pair
    second_additional_triplet: float = 1.0  # weight of l_t's (theta_w, theta_a/v, theta_w^-) pair
    reg_loss: bool = True  # l_r on (--reg_loss)

    # --- reference quirks of the official code (see REFERENCE_QUIRKS; all off by default) ---------------
    frozen_pos_embedding: bool = False
    momentum_second_bn_only: bool = False
    unused_projection_bn_updates: bool = False
    post_step_train_embeddings: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.positive_ints("audio_dim", "video_dim", "word_dim", "dim", "encoder_hidden_dim", "decoder_hidden_dim",
                            "out_dim", "depth", "heads", "dim_head", "mlp_dim")
        check.dropouts("dropout_embedding", "dropout_decoder", "dropout_additional")
        check(0.0 <= self.momentum <= 1.0, "momentum",
              f"must be in [0, 1] (torch convention), got {self.momentum}")
        check(self.margin >= 0.0, "margin", f"must be >= 0, got {self.margin}")


# Per-dataset settings of the official cls runs (run_scripts/<dataset>/AVCA.sh, both stages). Everything
# else (sizes, depth 1, momentum 0.99, both extra triplets, reg loss) is the same on the three datasets.
PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"dropout_embedding": 0.2, "dropout_decoder": 0.3, "dropout_additional": 0.5},
    "vggsound": {"dropout_embedding": 0.0, "dropout_decoder": 0.0, "dropout_additional": 0.0},
    "activitynet": {"dropout_embedding": 0.2, "dropout_decoder": 0.2, "dropout_additional": 0.1},
}

# The benchmark's training protocol (main.py, run_scripts/<dataset>/AVCA.sh), but with the coupled L2 weight
# decay 1e-5 that the AVCA constructor hard-codes into its own Adam, on what build_optimizer returns; the
# scheduler acts on that optimiser (main.py's own optimiser and scheduler are never stepped for AVCA).
TRAIN_DEFAULTS: dict[str, Any] = {**BENCHMARK_TRAIN_DEFAULTS, "weight_decay": 1e-5}

# Every behaviour of the official implementation that changes numbers and that the paper does not describe,
# as AVCAConfig field -> what the official code does. All are off by default (the behaviour the code evidently
# means) and on in the "reference" quirks preset, which reproduces the official numbers.
REFERENCE_QUIRKS: dict[str, str] = {
    "frozen_pos_embedding":
        "pos_emb1D is not in optimizer_gen (the only optimiser stepped), so the two position embeddings keep "
        "their randn initialisation; off: they are trained with the rest",
    "momentum_second_bn_only":
        "--momentum reaches only the second BN of the two-layer nets (A_enc, V_enc, A_proj, V_proj); their "
        "first BN and the BN of W_proj, D, A_rec, V_rec keep torch's 0.1; off: every BN uses the momentum",
    "unused_projection_bn_updates":
        "the training step also runs A_proj(phi_a_rec) and V_proj(phi_v_rec) (se_em_hat1/2, unused), "
        "which in train mode updates A_proj/V_proj BN running stats and draws dropout masks; "
        "off: not computed",
    "post_step_train_embeddings":
        "after each optimiser step, train_step re-embeds the positives with get_embeddings in train mode "
        "(outputs unused), updating the BN running stats of A_enc, V_enc, W_proj, V_proj, A_proj; off: no "
        "such pass (after_step does nothing)",
}

# ------------------------------------------------------------------------------- the registry's module API

_API = AveragedMethodAPI("avca", AVCAConfig, lambda cfg: AVCA(cfg), presets=PRESETS, quirks=REFERENCE_QUIRKS,
                         train_defaults=TRAIN_DEFAULTS, presets_named="an AVCA preset")
dataset_config, make_config, build = _API.dataset_config, _API.make_config, _API.build
train_defaults, config_from_dict = _API.train_defaults, _API.config_from_dict


# ------------------------------------------------------------------------------------------------ modules


class EmbeddingNet(nn.Module):
    """Linear -> BN -> ReLU -> Dropout [-> Linear -> BN -> ReLU -> Dropout] (the official ``EmbeddingNet``).

    The dropout sits on the outputs, so a net's output is dropped out too. ``momenta`` gives each BN's
    momentum (torch convention), first BN first.
    """

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int | None, dropout: float,
                 momenta: tuple[float, ...]) -> None:
        super().__init__()
        assert len(momenta) == (2 if hidden_dim else 1), f"one momentum per BN, got {momenta}"
        width = hidden_dim or out_dim
        self.fc1 = nn.Linear(in_dim, width)
        self.bn1 = nn.BatchNorm1d(width, momentum=momenta[0])
        if hidden_dim:
            self.fc2 = nn.Linear(hidden_dim, out_dim)
            self.bn2 = nn.BatchNorm1d(out_dim, momentum=momenta[1])
        else:
            self.fc2 = self.bn2 = None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, in_dim) -> (B, out_dim)
        x = self.dropout(F.relu(self.bn1(self.fc1(x))))
        if self.fc2 is not None:
            x = self.dropout(F.relu(self.bn2(self.fc2(x))))
        return x


class Attention(nn.Module):
    """Multi-head attention, every token to every token (with 2 tokens: each modality attends to itself and
    to the other). Fused qkv projection without bias, output projection with bias, dropout on the output."""

    def __init__(self, *, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)  # rows stacked q, k, v
        # The official code skips the output projection only for heads == 1 and dim_head == dim.
        self.out = nn.Linear(heads * dim_head, dim) if not (heads == 1 and dim_head == dim) else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, dim) -> (B, N, dim)
        B, N, _ = x.shape
        q, k, v = (t.reshape(B, N, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, h, N, N)
        y = (attn @ v).transpose(1, 2).reshape(B, N, -1)  # (B, N, h * d_head)
        return y if self.out is None else self.dropout(self.out(y))


class FeedForward(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, *, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN layer with two LayerNorms: x = x + Attn(LN(x)); x = x + FF(LN'(x))."""

    def __init__(self, *, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        # Registered in the official order (norm before its sublayer: the order of the parameters); the
        # LayerNorms draw no random numbers, so the Linear layers still take the official init stream.
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads, dim_head=dim_head, dropout=dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim=dim, hidden_dim=mlp_dim, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(self.attn_norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class Transformer(nn.Module):
    def __init__(self, *, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(dim=dim, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim,
                                          dropout=dropout) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:  # (B, N, dim), no final norm
        for layer in self.layers:
            x = layer(x)
        return x


# ------------------------------------------------------------------------------------------------- model


class AVCA(AveragedMethod):
    name = "avca"
    # TCAF paper (ECCV 2022) Table 1, AVCA row: test %, cls features.
    published: ClassVar[dict[str, dict[str, float]]] = {
        "vggsound": {"S": 12.63, "U": 6.19, "HM": 8.31, "ZSL": 6.91},
        "ucf": {"S": 63.15, "U": 30.72, "HM": 41.34, "ZSL": 37.72},
        "activitynet": {"S": 16.77, "U": 7.04, "HM": 9.92, "ZSL": 7.58},
    }

    def __init__(self, cfg: AVCAConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or AVCAConfig()
        self.cfg = cfg
        m = cfg.momentum
        # Reference quirk: the momentum flag only reaches the second BN of the two-layer nets.
        other = TORCH_BN_MOMENTUM if cfg.momentum_second_bn_only else m

        def two_layer(in_dim: int, hidden: int, out_dim: int, dropout: float) -> EmbeddingNet:
            return EmbeddingNet(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden, dropout=dropout,
                                momenta=(other, m))

        def one_layer(in_dim: int, out_dim: int) -> EmbeddingNet:
            return EmbeddingNet(in_dim=in_dim, out_dim=out_dim, hidden_dim=None,
                                dropout=cfg.dropout_additional, momenta=(other,))

        # Created in the official constructor order (A_enc, V_enc, transformer, W_proj, D, A_proj, V_proj,
        # A_rec, V_rec, pos_emb1D), so that a seeded model starts from the official initialisation.
        self.audio_encoder = two_layer(cfg.audio_dim, cfg.encoder_hidden_dim, cfg.dim, cfg.dropout_embedding)
        self.video_encoder = two_layer(cfg.video_dim, cfg.encoder_hidden_dim, cfg.dim, cfg.dropout_embedding)
        self.transformer = Transformer(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head,
                                       mlp_dim=cfg.mlp_dim, dropout=cfg.dropout_embedding)
        self.word_proj = one_layer(cfg.word_dim, cfg.out_dim)  # W_proj
        self.decoder = one_layer(cfg.out_dim, cfg.word_dim)  # D, shared by theta_w, theta_a, theta_v
        self.audio_proj = two_layer(cfg.dim, cfg.decoder_hidden_dim, cfg.out_dim, cfg.dropout_decoder)
        self.video_proj = two_layer(cfg.dim, cfg.decoder_hidden_dim, cfg.out_dim, cfg.dropout_decoder)
        self.audio_rec = one_layer(cfg.out_dim, cfg.dim)  # A_rec: theta_a -> phi_a
        self.video_rec = one_layer(cfg.out_dim, cfg.dim)  # V_rec: theta_v -> phi_v
        # One learned vector per modality token, added before the transformer (randn, as the official init).
        self.pos_embedding = nn.Parameter(torch.randn(2, cfg.dim))
        if cfg.frozen_pos_embedding:
            # Reference quirk: never stepped officially; no gradient here, so no optimiser can step it.
            self.pos_embedding.requires_grad_(False)

    # ------------------------------------------------------------------------------------------ forward
    def _check(self, x: Tensor, dim: int, what: str) -> Tensor:
        assert x.dim() == 2 and x.shape[1] == dim, f"{what} must be (B, {dim}), got {tuple(x.shape)}"
        return x.to(self.pos_embedding.dtype)

    def _attend(self, phi_a: Tensor, phi_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """phi_a, phi_v (B, dim) -> (phi_a_attn, phi_v_attn) (B, dim) and the transformer output (B, 2, dim):
        each token plus the transformer output at its position, which holds its own residual (phi enters
        twice, as in the official code)."""
        pos = self.pos_embedding  # (2, dim): audio token, video token
        tokens = torch.stack((phi_a + pos[0], phi_v + pos[1]), dim=1)  # (B, 2, dim)
        attended = self.transformer(tokens)  # (B, 2, dim)
        return phi_a + attended[:, 0], phi_v + attended[:, 1], attended

    def training_outputs(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """Every embedding of one official training step, keyed by the official attribute names.

        The calls run in the official order. In train mode this order matters twice: each call normalises its
        own batch and updates the BN running statistics in sequence, and the dropout masks are drawn from the
        global RNG in sequence (same order + same seed = the official masks).
        """
        cfg = self.cfg
        a = self._check(batch.audio, cfg.audio_dim, "audio")  # (B, audio_dim)
        v = self._check(batch.video, cfg.video_dim, "video")  # (B, video_dim)
        w = self._check(batch.word, cfg.word_dim, "word")  # (B, word_dim)
        a_neg = self._check(batch.neg_audio, cfg.audio_dim, "neg_audio")
        v_neg = self._check(batch.neg_video, cfg.video_dim, "neg_video")
        w_neg = self._check(batch.neg_word, cfg.word_dim, "neg_word")
        assert a.shape[0] == v.shape[0] == w.shape[0] == a_neg.shape[0] == v_neg.shape[0] == w_neg.shape[0], (
            "positives and negatives must have the same batch size"
        )
        o: dict[str, Tensor] = {"w": w}
        # Positives and negatives are separate BN batches, as in the official step.
        o["phi_a"], o["phi_v"] = self.audio_encoder(a), self.video_encoder(v)  # (B, dim)
        o["phi_a_neg"], o["phi_v_neg"] = self.audio_encoder(a_neg), self.video_encoder(v_neg)
        o["theta_w"], o["theta_w_neg"] = self.word_proj(w), self.word_proj(w_neg)  # (B, out_dim)
        o["rho_w"], o["rho_w_neg"] = self.decoder(o["theta_w"]), self.decoder(o["theta_w_neg"])  # (B, word)
        # The negatives get their own attention pass (their own audio-video pairs).
        o["audio_fe_attn"], o["video_fe_attn"], o["phi_attn"] = self._attend(o["phi_a"], o["phi_v"])
        o["audio_fe_neg_attn"], o["video_fe_neg_attn"], o["phi_attn_neg"] = self._attend(o["phi_a_neg"],
                                                                                         o["phi_v_neg"])
        o["theta_v"] = self.video_proj(o["video_fe_attn"])  # (B, out_dim)
        o["theta_v_neg"] = self.video_proj(o["video_fe_neg_attn"])
        o["theta_a"] = self.audio_proj(o["audio_fe_attn"])
        o["theta_a_neg"] = self.audio_proj(o["audio_fe_neg_attn"])
        o["phi_v_rec"] = self.video_rec(o["theta_v"])  # (B, dim)
        o["phi_a_rec"] = self.audio_rec(o["theta_a"])
        if cfg.unused_projection_bn_updates:
            # Reference quirk: computed and never used; only the BN statistics and the RNG feel it.
            o["se_em_hat1"] = self.audio_proj(o["phi_a_rec"])
            o["se_em_hat2"] = self.video_proj(o["phi_v_rec"])
        o["rho_a"], o["rho_a_neg"] = self.decoder(o["theta_a"]), self.decoder(o["theta_a_neg"])
        o["rho_v"], o["rho_v_neg"] = self.decoder(o["theta_v"]), self.decoder(o["theta_v_neg"])
        return o

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """l_rec, l_ct, l_w, l_t, l_r and total = (l_rec + l_ct) + l_w + l_t + l_r, as the official
        ``AVCA.backward``. A term switched off is reported as 0. Triplets are (anchor, positive, negative)."""
        return self.losses_from(self.training_outputs(batch))

    def losses_from(self, o: Mapping[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg

        def tml(anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
            # nn.TripletMarginLoss: batch mean of max(0, m + d(a, p) - d(a, n)), d = ||x - y + 1e-6||_2.
            return F.triplet_margin_loss(anchor, positive, negative, margin=cfg.margin)

        mse = F.mse_loss  # mean over all elements; gradients reach both arguments
        w, tw, ta, tv = o["w"], o["theta_w"], o["theta_a"], o["theta_v"]
        tw_neg, ta_neg, tv_neg = o["theta_w_neg"], o["theta_a_neg"], o["theta_v_neg"]
        zero = torch.zeros((), dtype=tw.dtype, device=tw.device)
        # The terms are built in the official order (l_t, l_r, l_rec, l_ct, l_w) and summed as officially:
        # autograd runs the backward nodes in reverse creation order, and that order decides how the
        # gradients of shared tensors (theta_w, D, ...) accumulate, hence their float32 rounding. Rounding
        # matters more than usual here: the biases of the Linears before a BN have a true gradient of 0, and
        # Adam turns their rounding noise into steps of up to lr.
        l_t = zero
        if cfg.additional_triplets_loss:
            # Each modality's theta against its own negative, then theta_w against the negative class vector.
            first = cfg.first_additional_triplet * (tml(ta, tw, ta_neg) + tml(tv, tw, tv_neg))
            second = cfg.second_additional_triplet * (tml(tw, ta, tw_neg) + tml(tw, tv, tw_neg))
            l_t = first + second
        l_r = zero
        if cfg.reg_loss:
            # phi are the encoder outputs before attention; theta_a and theta_v are pulled to theta_w.
            l_r = (mse(o["phi_v_rec"], o["phi_v"]) + mse(o["phi_a_rec"], o["phi_a"])
                   + mse(tv, tw) + mse(ta, tw))
        # Reconstruction of the class vector from every theta through the shared decoder D.
        l_rec = mse(w, o["rho_v"]) + mse(w, o["rho_a"]) + mse(w, o["rho_w"])
        # Triplets in the decoded (word) space, anchored on rho_w.
        l_ct_v = tml(o["rho_w"], o["rho_v"], o["rho_v_neg"])
        l_ct_a = tml(o["rho_w"], o["rho_a"], o["rho_a_neg"])
        l_ct = l_ct_a + l_ct_v
        # Triplets between theta_w and each modality, both ways.
        l_tv, l_ta = tml(tw, tv, tv_neg), tml(tw, ta, ta_neg)
        l_at, l_vt = tml(ta, tw, tw_neg), tml(tv, tw, tw_neg)
        l_w = l_ta + l_at + l_tv + l_vt
        total = (l_rec + l_ct) + l_w
        if cfg.additional_triplets_loss:
            total = total + l_t
        if cfg.reg_loss:
            total = total + l_r
        return {"l_rec": l_rec, "l_ct": l_ct, "l_w": l_w, "l_t": l_t, "l_r": l_r, "total": total}

    def embeddings(self, audio: Tensor, video: Tensor, words: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(theta_a, theta_v, theta_w) as the official ``get_embeddings``: audio (N, audio_dim), video
        (N, video_dim) -> (N, out_dim) each; words (C, word_dim) -> (C, out_dim)."""
        cfg = self.cfg
        audio = self._check(audio, cfg.audio_dim, "audio")
        video = self._check(video, cfg.video_dim, "video")
        words = self._check(words, cfg.word_dim, "class vectors")
        assert audio.shape[0] == video.shape[0], (
            f"audio ({audio.shape[0]} rows) and video ({video.shape[0]} rows) must describe the same videos"
        )
        # Official call order (A_enc, V_enc, W_proj, transformer, V_proj, A_proj): in train mode (the
        # post-step pass) it decides the BN statistics and dropout masks.
        phi_a, phi_v = self.audio_encoder(audio), self.video_encoder(video)
        theta_w = self.word_proj(words)
        phi_a, phi_v, _ = self._attend(phi_a, phi_v)
        theta_v = self.video_proj(phi_v)
        theta_a = self.audio_proj(phi_a)
        return theta_a, theta_v, theta_w

    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] L2 distances between theta_v and theta_w (the official evaluation: its "audio", "video" and
        "both" entries are all this video-branch evaluation; theta_a is not used)."""
        _, theta_v, theta_w = self.embeddings(audio, video, class_vectors)
        return torch.cdist(theta_v, theta_w)

    def after_step(self, batch: AveragedBatch) -> None:
        """Call after each optimiser step, in train mode. Reference quirk ``post_step_train_embeddings``: the
        official ``train_step`` embeds the positives once more in train mode, which only moves the BN running
        statistics (and draws dropout masks); otherwise nothing happens."""
        if self.cfg.post_step_train_embeddings and self.training:
            with torch.no_grad():  # outputs unused officially; the statistics do not depend on autograd
                self.embeddings(batch.audio, batch.video, batch.word)

    def build_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """Adam (L2 weight decay, not decoupled) over what the official ``optimizer_gen`` steps, in its order:
        A_proj, V_proj, A_rec, V_rec, V_enc, A_enc, transformer, D, W_proj, and the position embeddings unless
        they are frozen (reference quirk). Official values: lr 1e-3, weight_decay 1e-5."""
        modules = (self.audio_proj, self.video_proj, self.audio_rec, self.video_rec, self.video_encoder,
                   self.audio_encoder, self.transformer, self.decoder, self.word_proj)
        params = [p for module in modules for p in module.parameters()]
        if not self.cfg.frozen_pos_embedding:
            params.append(self.pos_embedding)
        return adam(params, lr=lr, weight_decay=weight_decay)

    def load_official_state_dict(self, state_dict: Mapping[str, Any]) -> AVCA:
        """Load an official AVCA state dict (or its checkpoint dict {"model": ...}) strictly; a key or shape
        mismatch raises with the names."""
        state = convert_official_state_dict(state_dict)
        missing, extra, wrong = state_mismatches(self.state_dict(), state, "official")
        if missing or extra or wrong:
            raise ValueError(
                f"official AVCA state dict does not match this config (missing: {missing[:8]}; unexpected: "
                f"{extra[:8]}; shape mismatches: {wrong[:8]}); set the sizes of AVCAConfig to the run's flags"
            )
        self.load_state_dict(state, strict=True)
        return self


# --------------------------------------------------------------------------- official state-dict conversion

# Official module -> ours. EmbeddingNet.fc indices: 0 Linear, 1 BN, (2 ReLU, 3 Dropout), 4 Linear, 5 BN.
_NETS = {"A_enc": "audio_encoder", "V_enc": "video_encoder", "W_proj": "word_proj", "D": "decoder",
         "A_proj": "audio_proj", "V_proj": "video_proj", "A_rec": "audio_rec", "V_rec": "video_rec"}
_NET_LAYERS = {"0": "fc1", "1": "bn1", "4": "fc2", "5": "bn2"}
_NET_KEY = re.compile(r"^(A_enc|V_enc|W_proj|D|A_proj|V_proj|A_rec|V_rec)\.fc\.(\d+)\.(.+)$")
# cross_attention.layers.<i>.<0 = PreNorm(Attention) | 1 = PreNorm(FeedForward)>.<rest> -> Block.<ours>
_LAYER_KEY = re.compile(r"^cross_attention\.layers\.(\d+)\.([01])\.(.+)$")
_LAYER_PARTS = {("0", "norm."): "attn_norm.", ("0", "fn.to_qkv."): "attn.qkv.",
                ("0", "fn.to_out.0."): "attn.out.", ("1", "norm."): "ff_norm.", ("1", "fn.net.0."): "ff.fc1.",
                ("1", "fn.net.3."): "ff.fc2."}


def convert_official_state_dict(official: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename an official AVCA state dict (``model.state_dict()`` of src/model_improvements.AVCA, or the
    checkpoint dict holding it under "model") into this module's names; tensors are unchanged. Part of a state
    dict (e.g. only the buffers) is renamed too: ``AVCA.load_official_state_dict`` checks completeness."""
    official = checkpoint_state(official)
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in official.items():
        if key == "pos_emb1D":
            out["pos_embedding"] = value
            continue
        m = _NET_KEY.match(key)
        if m is not None and m.group(2) in _NET_LAYERS:
            out[f"{_NETS[m.group(1)]}.{_NET_LAYERS[m.group(2)]}.{m.group(3)}"] = value
            continue
        m = _LAYER_KEY.match(key)
        if m is not None:
            part = next((p for p in _LAYER_PARTS if p[0] == m.group(2) and m.group(3).startswith(p[1])), None)
            if part is not None:
                rest = m.group(3)[len(part[1]):]  # "weight" | "bias"
                out[f"transformer.layers.{m.group(1)}.{_LAYER_PARTS[part]}{rest}"] = value
                continue
        unknown.append(key)
    if unknown:
        raise ValueError(f"official AVCA state dict has keys this model does not know: {sorted(unknown)[:8]} "
                         "(pass the state dict of src/model_improvements.AVCA or its checkpoint dict)")
    return out
