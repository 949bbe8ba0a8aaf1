"""The Perceiver baseline of the TCAF paper (Sec. 4.1, Table 1), a temporal model with TCAF's interface.

The paper adapts the Perceiver (Jaegle et al., ICML 2021) to audio-visual (G)ZSL: "the same positional
encodings and model capacity as TCAF", "64 latent tokens and the same number of layers and dimensions as
TCAF", and "the same input features, input embedding functions A_enc and V_enc, learning rate and loss
functions as TCAF". No code for it was released (reference spec §10). Here:

    a (B,Ta,128) -> A_enc -+                                                +-> O_proj -> theta_o (B, d_out)
                           +- TCAF position encoder -> tokens (B, Ta+Tv, dim) |
    v (B,Tv,4096) -> V_enc -+            |                                    +-> D_o -> rho_o (B, d_word)
                                         v (keys / values)                    |
    latents z (64, dim) -> [cross, self, cross, self, ...] (L layers) -> mean over the 64 latents

* A **cross-attention layer** is one TCAF transformer ``Block`` (pre-norm, 8 heads x 64, FFN 128) run on
  ``[z, tokens]`` with a mask that lets each latent attend to every valid token (both modalities) and
  nothing else; only the latent rows are kept, so the tokens stay what the position encoder made them.
* A **latent self-attention layer** is a ``Block`` on the latents alone, every latent attending to every
  latent.
* ``depth`` (TCAF's L: 6 for UCF / ActivityNet, 8 for VGGSound) counts all layers; they alternate one
  cross-attention and ``self_per_cross`` latent self-attention layers, starting with a cross-attention
  (L = 6: C S C S C S). The Perceiver then has exactly TCAF's L transformer layers, hence its capacity:
  its parameters are TCAF's minus the class token plus the 64 x dim latent array.
* The output embedding is the **mean of the final latents** (``latent_pooling="mean"``), the Perceiver's
  own classification read-out (Jaegle et al. average the final latent array before the linear classifier;
  the widely used ``lucidrains/perceiver-pytorch`` does the same, ``Reduce('b n d -> b d', 'mean')``).
  ``"first"`` reads latent 0 instead, as a learnt class latent.

Everything else is TCAF's, inherited: input normalisation, A_enc / V_enc (BN statistics over valid tokens
by default), the position encoder (modality + Fourier time + pad embeddings, concatenated, per-token
Linear), O_proj, D_o, W_proj, D_w, ``losses`` (l_ce + l_reg + l_rec), ``embed_classes`` and the reference
quirks of ``model.config.REFERENCE_QUIRKS``. See docs/methods/perceiver.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from model.attention import attention_bias
from model.config import DATASET_PRESETS as TCAF_DATASET_PRESETS
from model.config import TCAFConfig
from model.methods.common import FieldChecks, TemporalMethodAPI, preset_config
from model.tcaf import TCAF

LATENT_POOLING = ("mean", "first")

# TCAF paper Table 1 (test, %, cls features).
PUBLISHED: dict[str, dict[str, float]] = {
    "vggsound": {"S": 13.25, "U": 3.03, "HM": 4.93, "ZSL": 3.44},
    "ucf": {"S": 46.85, "U": 26.82, "HM": 34.11, "ZSL": 28.12},
    "activitynet": {"S": 18.25, "U": 4.27, "HM": 6.92, "ZSL": 4.47},
}


@dataclass(kw_only=True)
class PerceiverConfig(TCAFConfig):
    """TCAF's configuration (inputs, encoders, position encoder, transformer layer sizes, heads, losses,
    quirks) plus the latent array. ``depth`` counts cross- and self-attention layers together.

    ``attention`` and ``use_class_token`` are TCAF's token-layout switches; the Perceiver has none of
    that layout (latents attend to every valid token, and pool to the output), so they are fixed at
    "full" and False and other values are rejected.
    """

    num_latents: int = 64  # paper Sec. 4.1
    self_per_cross: int = 1  # latent self-attention layers after each cross-attention layer
    latent_pooling: str = "mean"  # "mean" over the final latents (Perceiver) | "first" (a class latent)
    attention: str = "full"
    use_class_token: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        check.positive_ints("num_latents")
        check(isinstance(self.self_per_cross, int) and self.self_per_cross >= 0, "self_per_cross",
              f"must be an integer >= 0, got {self.self_per_cross!r}")
        check(self.latent_pooling in LATENT_POOLING, "latent_pooling",
              f"got {self.latent_pooling!r}, use one of {LATENT_POOLING}")
        check(self.attention == "full", "attention",
              f"got {self.attention!r}; the Perceiver's latents attend to every valid token of both modalities "
              "(TCAF's cross/self token masks do not apply), leave it at 'full'")
        check(not self.use_class_token, "use_class_token",
              "the Perceiver reads its output from the latents (see latent_pooling); leave it false")

    def layer_kinds(self) -> tuple[str, ...]:
        """"cross" / "self" for each of the ``depth`` layers, in order."""
        period = 1 + self.self_per_cross
        return tuple("cross" if i % period == 0 else "self" for i in range(self.depth))


# The paper gives the Perceiver TCAF's hyper-parameters (Sec. 4.1), so the presets are TCAF's.
DATASET_PRESETS: dict[str, dict[str, Any]] = {name: dict(p) for name, p in TCAF_DATASET_PRESETS.items()}


def dataset_config(dataset: str, **overrides: Any) -> PerceiverConfig:
    """The Perceiver configuration for ``dataset`` ("ucf" | "activitynet" | "vggsound"), with overrides."""
    return preset_config(PerceiverConfig, DATASET_PRESETS, dataset, overrides)


class Perceiver(TCAF):
    """TCAF's input side, heads and losses around a latent bottleneck (see the module docstring).

    ``self.transformer.layers`` holds the ``depth`` TCAF blocks; ``self.layer_kinds`` says which of them
    cross-attend to the tokens and which self-attend among the latents.
    """

    name: ClassVar[str] = "perceiver"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED

    def __init__(self, cfg: PerceiverConfig) -> None:
        if not isinstance(cfg, PerceiverConfig):
            raise TypeError(f"Perceiver needs a PerceiverConfig, got {type(cfg).__name__}")
        super().__init__(cfg)  # A_enc, V_enc, W_proj, D_w, position encoder, depth blocks, O_proj, D_o
        self.layer_kinds = cfg.layer_kinds()
        # N(0, 1) as TCAF's class token and the lucidrains Perceiver's latent array.
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, cfg.dim))

    def _pool(self, parts: list[Tensor], valid: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """In place of TCAF's transformer: the latents' attention layers over the tokens -> the pooled latents
        (B, dim) ("pooled"), and "latents" (B, num_latents, dim), the final latent array."""
        cfg = self.cfg
        B = parts[0].shape[0]
        tokens = torch.cat(parts, dim=1)  # (B, T, dim)
        valid_tokens = torch.cat(valid, dim=1)  # (B, T)
        n, device = cfg.num_latents, tokens.device

        # Cross-attention over [latents, tokens]: latent queries may attend to valid tokens only. Token rows
        # attend to nothing (their outputs are dropped). In a sample without any valid token the latents mix
        # no token values (has_key is False) instead of producing NaN or an average over padding.
        key_ok = torch.cat([torch.zeros(B, n, dtype=torch.bool, device=device), valid_tokens], dim=1)
        query_is_latent = torch.arange(n + tokens.shape[1], device=device) < n
        cross = query_is_latent[None, :, None] & key_ok[:, None, :]  # (B, n+T, n+T)
        cross_bias = attention_bias(cross, dtype=tokens.dtype)  # built once, shared by all cross layers
        cross_has_key = cross.any(-1, keepdim=True)
        everything = torch.ones(1, n, n, dtype=torch.bool, device=device)  # latents <-> latents
        self_bias, self_has_key = attention_bias(everything, dtype=tokens.dtype), everything[..., :1]

        z = self.latents.to(tokens.dtype).expand(B, -1, -1)
        for kind, layer in zip(self.layer_kinds, self.transformer.layers, strict=True):
            if kind == "cross":
                z = layer(torch.cat([z, tokens], dim=1), bias=cross_bias, has_key=cross_has_key)[:, :n]
            else:
                z = layer(z, bias=self_bias, has_key=self_has_key)
        if self.transformer.norm is not None:  # cfg.final_layer_norm (off, as in TCAF)
            z = self.transformer.norm(z)

        pooled = z.mean(dim=1) if cfg.latent_pooling == "mean" else z[:, 0]
        return pooled, {"latents": z}



# ---------------------------------------------------------------------------------------------- registry API
# What model/methods/__init__.py calls to build this method for the two-stage protocol.

_API = TemporalMethodAPI(PerceiverConfig, Perceiver, presets=DATASET_PRESETS)
make_config, build = _API.make_config, _API.build
train_defaults, config_from_dict = _API.train_defaults, _API.config_from_dict

MODEL = Perceiver
CONFIG = PerceiverConfig

__all__ = ["CONFIG", "DATASET_PRESETS", "MODEL", "PUBLISHED", "Perceiver", "PerceiverConfig", "dataset_config"]
