"""TCAF: temporal and cross-modal attention for audio-visual (generalised) zero-shot learning.

    a (B,Ta,128) --/255--> A_enc --+                                   +--> O_proj -> theta_o (B, d_out)
                                   +-- position encoder -- [x_c, a^p, v^p] -- L x Block --+ c_o
    v (B,Tv,4096) --L2--> V_enc ---+                                   +--> D_o -> rho_o (B, d_word)
    w (C, d_word) -> W_proj -> theta_w -> D_w -> rho_w

Classification is by the nearest theta_w (L2) to theta_o; see `embed_classes`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model import losses as L
from model.attention import attention_bias, build_attention_mask, segment_ids
from model.config import TCAFConfig
from model.embeddings import (
    AUDIO,
    VIDEO,
    PositionEncoder,
    build_modality_encoder,
    normalise_audio,
    normalise_video,
)
from model.heads import output_decoder, output_projection, word_decoder, word_projection
from model.transformer import Transformer


class TCAF(nn.Module):
    def __init__(self, cfg: TCAFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Modules are created in the official constructor order, so a seeded model starts from the
        # same kind of initialisation: A_enc, V_enc, W_proj, D_w, class token, position encoder,
        # transformer, O_proj, D_o.
        enc = cfg.use_embedding_net
        self.audio_encoder = build_modality_encoder(in_dim=cfg.audio_dim, cfg=cfg) if enc and cfg.uses_audio else None
        self.video_encoder = build_modality_encoder(in_dim=cfg.video_dim, cfg=cfg) if enc and cfg.uses_video else None
        self.word_proj = word_projection(cfg)
        self.word_decoder = word_decoder(cfg)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim)) if cfg.use_class_token else None
        self.position = PositionEncoder(
            cfg=cfg,
            audio_in=cfg.dim if enc else cfg.audio_dim,
            video_in=cfg.dim if enc else cfg.video_dim,
        )
        self.transformer = Transformer(
            dim=cfg.dim,
            depth=cfg.depth,
            heads=cfg.heads,
            dim_head=cfg.dim_head,
            mlp_dim=cfg.mlp_dim,
            dropout=cfg.dropout_transformer,
            shared_norm=cfg.shared_layer_norm,
            final_norm=cfg.final_layer_norm,
        )
        self.output_proj = output_projection(cfg)
        self.output_decoder = output_decoder(cfg)

    # ---------------------------------------------------------------------------------------------
    def _times(self, times: Tensor | None, mask: Tensor, rate: float) -> Tensor:
        """(B, T) token times in seconds: given, or index * rate; integer indices for the eval quirk."""
        B, T = mask.shape
        if self.cfg.integer_time_stamps_at_eval and not self.training:
            # Official get_embeddings passes no time stamps, so token k of either modality gets t = k.
            return torch.arange(T, device=mask.device, dtype=torch.float32).expand(B, T)
        if times is None:
            # index * rate in float64, then float32: the official collator's numpy arithmetic.
            return (torch.arange(T, device=mask.device, dtype=torch.float64) * rate).float().expand(B, T)
        assert times.shape == (B, T), f"times {tuple(times.shape)} must match the mask {(B, T)}"
        return times.float()

    def _modality_tokens(
        self, x: Tensor, mask: Tensor, times: Tensor | None, *, modality: int
    ) -> Tensor:
        """Normalise, encode and position-encode one modality: (B, T, d_in) -> (B, T, dim)."""
        cfg = self.cfg
        if modality == AUDIO:
            x, encoder, rate = normalise_audio(x, mask, cfg=cfg), self.audio_encoder, cfg.audio_rate_s
        else:
            x, encoder, rate = normalise_video(x, mask, cfg=cfg), self.video_encoder, cfg.video_rate_s
        x = x.to(self.param_dtype)
        if encoder is not None:
            # Default: BN statistics over valid tokens only, so training does not depend on padding.
            # Reference quirk: over all B*T tokens, padding (zeros) included, as the official code.
            x = encoder(x, None if cfg.encoder_bn_over_padding else mask)
        return self.position(x, mask=mask, times=self._times(times, mask, rate), modality=modality)

    @staticmethod
    def _check_inputs(name: str, x: Tensor | None, mask: Tensor | None, dim: int) -> tuple[Tensor, Tensor]:
        if x is None:
            raise ValueError(f"{name} features are required by this model (cfg.modalities) but got None")
        if x.dim() != 3 or x.shape[-1] != dim:
            raise ValueError(f"{name} must be (B, T, {dim}), got {tuple(x.shape)}; check cfg.{name}_dim")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"{name}_mask must be {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        return x, mask.bool()

    def _input_tokens(
        self,
        audio: Tensor | None,
        audio_mask: Tensor | None,
        video: Tensor | None,
        video_mask: Tensor | None,
        audio_times: Tensor | None,
        video_times: Tensor | None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The position-encoded tokens (B, T_m, dim) and valid masks (B, T_m) of the modalities cfg.modalities
        uses, audio first: what TCAF's transformer and the Perceiver's latents attend to."""
        cfg = self.cfg
        parts, valid = [], []
        if cfg.uses_audio:
            audio, audio_mask = self._check_inputs("audio", audio, audio_mask, cfg.audio_dim)
            parts.append(self._modality_tokens(audio, audio_mask, audio_times, modality=AUDIO))
            valid.append(audio_mask)
        if cfg.uses_video:
            video, video_mask = self._check_inputs("video", video, video_mask, cfg.video_dim)
            parts.append(self._modality_tokens(video, video_mask, video_times, modality=VIDEO))
            valid.append(video_mask)
        B = parts[0].shape[0]
        assert all(p.shape[0] == B for p in parts), "audio and video batch sizes differ"
        return parts, valid

    # ---------------------------------------------------------------------------------------------
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
        """Embed a batch of videos.

        audio (B, Ta, audio_dim) raw values (uint8 VGGish allowed), audio_mask (B, Ta) bool True=valid;
        video (B, Tv, video_dim), video_mask (B, Tv); *_times (B, T) seconds, None = index * rate.
        A modality that cfg.modalities leaves out may be None. Returns "embedding" theta_o (B, d_out),
        "pooled" c_o (B, dim) and "reconstruction" rho_o = D_o(theta_o) (B, d_word) when `reconstruct`
        (default: cfg.loss_rec). Pass reconstruct=False for embedding-only passes: D_o then neither
        runs nor updates its BatchNorm statistics, as in the official evaluation path.
        """
        parts, valid = self._input_tokens(audio, audio_mask, video, video_mask, audio_times, video_times)
        pooled, extra = self._pool(parts, valid)
        theta_o = self.output_proj(pooled)
        out = {"embedding": theta_o, "pooled": pooled, **extra}
        if self.cfg.loss_rec if reconstruct is None else reconstruct:
            out["reconstruction"] = self.output_decoder(theta_o)
        return out

    def _pool(self, parts: list[Tensor], valid: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The transformer over [x_c,] the tokens of ``_input_tokens`` -> c_o (B, dim), and no more outputs.
        What the Perceiver replaces with its latents."""
        cfg = self.cfg
        n_audio = parts[0].shape[1] if cfg.uses_audio else 0
        n_video = parts[-1].shape[1] if cfg.uses_video else 0
        B = parts[0].shape[0]
        if self.cls_token is not None:
            parts.insert(0, self.cls_token.expand(B, -1, -1))
            valid.insert(0, torch.ones(B, 1, dtype=torch.bool, device=parts[0].device))
        x = torch.cat(parts, dim=1)  # (B, N, dim)
        valid_all = torch.cat(valid, dim=1)  # (B, N)

        segments = segment_ids(n_cls=int(cfg.use_class_token), n_audio=n_audio, n_video=n_video, device=x.device)
        allowed = build_attention_mask(valid_all, segments, variant=cfg.attention)  # (B, N, N)
        bias = attention_bias(allowed, dtype=x.dtype)  # built once, shared by all layers
        x = self.transformer(x, bias=bias, has_key=allowed.any(-1, keepdim=True))

        if self.cls_token is not None:
            return x[:, 0], {}  # c_o
        # Without a class token the outputs of the valid tokens are averaged (paper Table 3).
        w = valid_all.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0), {}

    def embed_classes(self, class_vectors: Tensor) -> Tensor:
        """theta_w = W_proj(w): (C, d_word) -> (C, d_out). Call in eval mode for classification."""
        if class_vectors.dim() != 2 or class_vectors.shape[1] != self.cfg.word_dim:
            raise ValueError(
                f"class vectors must be (C, {self.cfg.word_dim}), got {tuple(class_vectors.shape)}; "
                "set model.word_dim to the class-embedding dimension"
            )
        return self.word_proj(class_vectors.to(self.param_dtype))

    @property
    def param_dtype(self) -> torch.dtype:
        return self.word_proj.net[0].weight.dtype

    def losses(self, out: dict[str, Tensor], labels: Tensor, class_vectors: Tensor) -> dict[str, Tensor]:
        """l_ce, l_reg, l_rec and their sum for a forward output.

        labels (B,) long: row indices into class_vectors (C, d_word), the classes the CE runs over.
        As in the official code, W_proj runs twice in training mode: on the per-sample vectors
        (for l_reg / l_rec) and on the class matrix (for l_ce), so its BN sees the C class vectors.
        """
        cfg = self.cfg
        theta_o = out["embedding"]
        if labels.dim() != 1 or labels.shape[0] != theta_o.shape[0]:
            raise ValueError(f"labels must be (B,) = ({theta_o.shape[0]},), got {tuple(labels.shape)}")
        w = class_vectors.to(self.param_dtype)[labels]  # (B, d_word); full precision under autocast
        ce = reg = rec = None
        if cfg.loss_rec and "reconstruction" not in out:
            raise ValueError("l_rec is on but the forward output has no 'reconstruction'; "
                             "call the model with reconstruct=True (the default) before losses()")
        if cfg.loss_reg or cfg.loss_rec:
            theta_w = self.word_proj(w)  # (B, d_out)
            if cfg.loss_reg:
                reg = L.reg_loss(theta_o, theta_w)
            if cfg.loss_rec:
                rec = L.rec_loss(out["reconstruction"], self.word_decoder(theta_w), w)
        if cfg.loss_ce:
            ce = L.ce_loss(theta_o, self.embed_classes(class_vectors), labels)
        return L.total_loss(ce=ce, reg=reg, rec=rec, like=theta_o)
