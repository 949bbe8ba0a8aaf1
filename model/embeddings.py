"""Input side of TCAF: input normalisation, modality encoders A_enc / V_enc and the position encoder.

Position encoder (paper Eq. 2): a_t^p = Dropout(g_a(concat(phi_a_t, pos_a + pos_t))), where pos_a is a
learnt modality embedding and pos_t a Fourier-feature embedding of the token's time in seconds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import TCAFConfig
from model.layers import MLPBlock

AUDIO, VIDEO = 0, 1  # rows of the modality embedding table (official order)


def normalise_audio(audio: Tensor, mask: Tensor, *, cfg: TCAFConfig) -> Tensor:
    """(B, Ta, 128) raw VGGish values -> float in [0, 1] for quantised input; padding set to 0."""
    audio = audio.float() / cfg.audio_input_scale
    return audio * mask.unsqueeze(-1)


def normalise_video(video: Tensor, mask: Tensor, *, cfg: TCAFConfig) -> Tensor:
    """(B, Tv, 4096) C3D features -> L2-normalised features; padding set to 0.

    Default: each token is scaled to unit norm. Reference quirk `normalise_video_over_time`: the
    official code calls F.normalize with its default dim=1, which on (B, T, C) is the *time* axis,
    so every channel's time series gets unit norm. Padding is zeroed first, so neither variant
    depends on how much padding the batch has.
    """
    video = video.float() * mask.unsqueeze(-1)
    if not cfg.normalise_video:
        return video
    return F.normalize(video, dim=1 if cfg.normalise_video_over_time else -1, eps=1e-12)


def build_modality_encoder(*, in_dim: int, cfg: TCAFConfig) -> MLPBlock:
    """A_enc / V_enc: two Linear layers, each followed by BN, ReLU and dropout (paper Eq. 1)."""
    return MLPBlock(
        in_dim=in_dim,
        out_dim=cfg.dim,
        hidden_dim=cfg.encoder_hidden_dim,
        dropout=cfg.dropout_enc,
        hidden_batch_norm=cfg.hidden_batch_norm,
    )


class FourierTimeEmbedding(nn.Module):
    """pos_t = Linear([sin(2 pi t f), cos(2 pi t f)]) with fixed random frequencies f (Tancik et al.).

    The frequency buffer has the official shape (2, d/2), scale * N(0, 1), and the phase is
    2 pi * [t, t] @ freqs, i.e. each effective frequency is the sum of two draws (std sqrt(2) * scale).
    It is saved with the model but never trained.
    """

    def __init__(self, *, dim: int, scale: float) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("freqs", scale * torch.randn(2, dim // 2))

    def forward(self, t: Tensor) -> Tensor:  # t (B, T) seconds -> (B, T, dim)
        # Same operation order as the official code, so that loaded checkpoints give the same phases
        # to the last bit (phases reach thousands of radians, where float32 rounding is visible).
        positions = t.float().unsqueeze(-1).expand(*t.shape, 2)  # (B, T, 2)
        phase = (2.0 * math.pi * positions) @ self.freqs  # (B, T, dim/2)
        return self.proj(torch.cat([phase.sin(), phase.cos()], dim=-1))


class PositionEncoder(nn.Module):
    """Adds modality, time and padding embeddings to encoded tokens by concatenation + a per-token Linear."""

    def __init__(self, *, cfg: TCAFConfig, audio_in: int, video_in: int) -> None:
        super().__init__()
        self.pos_dim = cfg.pos_dim
        # A modality embedding is a constant with one modality, so unimodal models go without it
        # (as the official code intended with audio_only / video_only).
        self.modality = (
            nn.Embedding(2, cfg.pos_dim) if cfg.modality_embedding and cfg.modalities == "audio_visual" else None
        )
        self.time = FourierTimeEmbedding(dim=cfg.pos_dim, scale=cfg.fourier_scale) if cfg.time_embedding == "fourier" else None
        # Learnt embedding of padded positions. Padded tokens never reach valid ones (they are masked
        # as keys), so it has no effect on outputs; it is kept for checkpoint compatibility.
        self.pad = nn.Embedding(1, cfg.pos_dim)
        # g_a / g_v of Eq. 2 (a kernel-1 Conv1d in the official code, i.e. a per-token Linear).
        self.audio_proj = nn.Linear(audio_in + cfg.pos_dim, cfg.dim) if cfg.uses_audio else None
        self.video_proj = nn.Linear(video_in + cfg.pos_dim, cfg.dim) if cfg.uses_video else None
        self.dropout = nn.Dropout(cfg.dropout_pos)

    def forward(self, x: Tensor, *, mask: Tensor, times: Tensor, modality: int) -> Tensor:
        """x (B, T, d_feat), mask (B, T) bool valid, times (B, T) seconds -> tokens (B, T, dim)."""
        proj = self.audio_proj if modality == AUDIO else self.video_proj
        assert proj is not None, f"modality {modality} is not part of this model"
        emb = x.new_zeros(*x.shape[:2], self.pos_dim)  # (B, T, pos_dim)
        if self.modality is not None:
            emb = emb + self.modality.weight[modality]
        if self.time is not None:
            emb = emb + self.time(times)
        emb = emb + (~mask).unsqueeze(-1).to(emb.dtype) * self.pad.weight[0]
        return self.dropout(proj(torch.cat([x, emb], dim=-1)))
