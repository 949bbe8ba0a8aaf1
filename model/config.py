"""TCAF architecture configuration, dataset presets and the `reference` / `paper` quirk presets.

`TCAFConfig` holds everything that shapes the network and its losses. Defaults are the UCF-GZSL^cls
setting of the paper (Sec. 4.1), which is also the official code's best UCF config. Fields that only
exist to reproduce behaviour of the official implementation that the paper does not describe (the
"quirks") are listed in `REFERENCE_QUIRKS`; they are all off by default and switched on together by
`apply_preset(cfg, "reference")`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model.methods.common import FieldChecks, MethodConfig, preset_config

ATTENTION_VARIANTS = ("cross", "self", "full")
MODALITIES = ("audio_visual", "audio", "visual")
TIME_EMBEDDINGS = ("fourier", "none")
PRESETS = ("paper", "reference")


@dataclass(kw_only=True)
class TCAFConfig(MethodConfig):
    """Architecture and loss switches of TCAF. Names follow the paper's symbols where it has one."""

    # --- inputs ------------------------------------------------------------------------------
    audio_dim: int = 128  # d_in_a: VGGish embedding size
    video_dim: int = 4096  # d_in_v: C3D fc7 size
    word_dim: int = 300  # class-embedding size; comes from the data (300 fastText, 384 MiniLM)
    modalities: str = "audio_visual"  # "audio_visual" | "audio" | "visual" (paper Table 4)
    # Audio arrives as quantised VGGish bytes (0..255); the model maps it to [0, 1] itself so that
    # callers can keep uint8 storage. Use 1.0 for raw (float) VGGish embeddings.
    audio_input_scale: float = 255.0
    # C3D features are L2-normalised before A/V_enc. Per token by default; see normalise_video_over_time.
    normalise_video: bool = True
    audio_rate_s: float = 0.96  # seconds per audio token (VGGish hop)
    video_rate_s: float = 0.64  # seconds per video token (16 frames at 25 fps)

    # --- modality encoders A_enc / V_enc ------------------------------------------------------
    use_embedding_net: bool = True  # False feeds raw features into the position encoder
    encoder_hidden_dim: int = 512  # d_fhidd
    hidden_batch_norm: bool = True  # BN after the hidden Linear of every MLP block (output BN is always on)
    dropout_enc: float = 0.3  # drop_enc

    # --- position encoder ---------------------------------------------------------------------
    dim: int = 300  # d_dim: transformer width
    pos_dim: int = 64  # d_pos: modality / time embedding size
    time_embedding: str = "fourier"  # "fourier" (random Fourier features of the token time) | "none"
    fourier_scale: float = 10.0  # std of the random frequency matrix
    modality_embedding: bool = True
    dropout_pos: float = 0.2  # drop_prob,pos

    # --- transformer --------------------------------------------------------------------------
    depth: int = 6  # L
    heads: int = 8  # H
    dim_head: int = 64  # d_head
    mlp_dim: int = 128  # d_ff
    dropout_transformer: float = 0.3  # drop_prob: attention output and FFN
    attention: str = "cross"  # "cross" = A_c + A_x (TCAF) | "self" = A_c + A_self | "full"
    use_class_token: bool = True  # False: average the valid output tokens instead (paper Table 3)
    # Paper Eq. (9) and (13) use the same g^LN before attention and FFN and the official code has a
    # single LayerNorm per layer; False gives the usual two LayerNorms.
    shared_layer_norm: bool = True
    final_layer_norm: bool = False  # neither the paper nor the official code has one

    # --- output heads ---------------------------------------------------------------------------
    out_dim: int = 64  # d_out: joint embedding size of theta_o and theta_w
    decoder_hidden_dim: int = 512  # hidden size of O_proj and D_o
    dropout_proj_o: float = 0.1  # drop_proj_o (O_proj, D_o)
    dropout_proj_w: float = 0.1  # drop_proj_w (W_proj, D_w)

    # --- losses (paper Table 2) ---------------------------------------------------------------
    loss_ce: bool = True
    loss_reg: bool = True
    loss_rec: bool = True

    # --- reference quirks of the official code that change the forward pass (see REFERENCE_QUIRKS)
    normalise_video_over_time: bool = False
    integer_time_stamps_at_eval: bool = False
    encoder_bn_over_padding: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self, "TCAFConfig")
        check(self.attention in ATTENTION_VARIANTS, "attention", f"got {self.attention!r}, use one of {ATTENTION_VARIANTS}")
        check(self.modalities in MODALITIES, "modalities", f"got {self.modalities!r}, use one of {MODALITIES}")
        check(
            self.time_embedding in TIME_EMBEDDINGS,
            "time_embedding",
            f"got {self.time_embedding!r}, use one of {TIME_EMBEDDINGS}",
        )
        check.positive_ints("audio_dim", "video_dim", "word_dim", "dim", "pos_dim", "depth", "heads", "dim_head",
                            "mlp_dim", "out_dim", "encoder_hidden_dim", "decoder_hidden_dim")
        check(self.pos_dim % 2 == 0, "pos_dim", f"Fourier features need an even size, got {self.pos_dim}")
        check.dropouts("dropout_enc", "dropout_pos", "dropout_transformer", "dropout_proj_o", "dropout_proj_w")
        check(self.audio_input_scale > 0, "audio_input_scale", "must be > 0 (use 1.0 for no scaling)")
        check(self.audio_rate_s > 0 and self.video_rate_s > 0, "audio_rate_s/video_rate_s", "must be > 0")
        check(
            self.loss_ce or self.loss_reg or self.loss_rec,
            "loss_ce/loss_reg/loss_rec",
            "at least one loss must be on",
        )
        # With a single modality there is nothing to cross-attend to: A_x is empty and every token
        # would only see the class token. The official code asserts the same (full attention only).
        check(
            self.modalities == "audio_visual" or self.attention != "cross",
            "attention",
            f"modalities={self.modalities!r} has no second modality for cross attention; "
            "set attention to 'full' (or 'self', which is the same with one modality)",
        )

    @property
    def uses_audio(self) -> bool:
        return self.modalities in ("audio_visual", "audio")

    @property
    def uses_video(self) -> bool:
        return self.modalities in ("audio_visual", "visual")


# Hyper-parameters of the paper (Sec. 4.1) as set in the official best cls configs. The paper lists
# drop_enc = 0.1 for ActivityNet; the released config that produced the published numbers uses 0.3.
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"depth": 6, "dropout_enc": 0.3, "dropout_pos": 0.2, "dropout_transformer": 0.3,
            "dropout_proj_o": 0.1, "dropout_proj_w": 0.1},
    "activitynet": {"depth": 6, "dropout_enc": 0.3, "dropout_pos": 0.2, "dropout_transformer": 0.4,
                    "dropout_proj_o": 0.1, "dropout_proj_w": 0.1},
    "vggsound": {"depth": 8, "dropout_enc": 0.2, "dropout_pos": 0.1, "dropout_transformer": 0.5,
                 "dropout_proj_o": 0.2, "dropout_proj_w": 0.1},
}


def model_section_problems(model: Mapping[str, Any] | None, dataset: str | None = None) -> list[str]:
    """Problems of the config's `model` section that lie between keys, in config-key terms, one message each
    naming the keys and the fix; empty when training will accept the section.

    Torch-free, so that the workflow can call it while it builds the DAG (before any job). Keys left out
    take the dataset preset and the TCAFConfig defaults, as in training (model/pipeline.py); sizes that
    training takes from the data (audio_dim, video_dim, word_dim) are checked with their defaults. Types
    and single-key ranges are the config schema's job: this assumes a section that passed it.
    """
    given = dict(model or {})
    m = {f.name: f.default for f in dataclasses.fields(TCAFConfig)}
    m.update(DATASET_PRESETS.get(dataset or "", {}))
    m.update(given)

    def shown(key: str) -> str:
        return f"{m[key]!r}" + ("" if key in given else ", the default")

    problems = []
    if m["modalities"] != "audio_visual" and m["attention"] == "cross":
        problems.append(
            f"config keys 'model.modalities' ({shown('modalities')}) and 'model.attention' "
            f"({shown('attention')}): cross attention attends from one modality to the other, and a single "
            "modality has no other; set model.attention to 'full' (or 'self', the same with one modality), "
            "or model.modalities to 'audio_visual'"
        )
    if isinstance(m["pos_dim"], int) and m["pos_dim"] % 2:
        problems.append(
            f"config key 'model.pos_dim' ({shown('pos_dim')}): must be even (the Fourier time embedding is a "
            "sin half and a cos half of pos_dim / 2 frequencies each; required whatever model.time_embedding "
            f"is); use {m['pos_dim'] + 1} or {m['pos_dim'] - 1}"
        )
    if not (m["loss_ce"] or m["loss_reg"] or m["loss_rec"]):
        problems.append(
            "config keys 'model.loss_ce', 'model.loss_reg', 'model.loss_rec': all three are false, so there "
            "is nothing to train; set at least one to true"
        )
    if not problems:  # whatever else TCAFConfig would reject at training time, reported now
        try:
            TCAFConfig.from_dict(m)
        except (TypeError, ValueError) as err:
            problems.append(f"config section 'model': {err}")
    return problems


def dataset_config(dataset: str, **overrides: Any) -> TCAFConfig:
    """The paper's model configuration for `dataset` ("ucf" | "activitynet" | "vggsound"), with overrides."""
    return preset_config(TCAFConfig, DATASET_PRESETS, dataset, overrides)


# Every behaviour of the official implementation that changes numbers and that the paper does not
# describe, as "<config section>.<key>" -> one-line description. The `model` entries are TCAFConfig
# fields. Entries of other sections (data loading and training, owned by model/packing.py and
# model/train_config.py) are added below under their own section name. Quirks that the paper and the code
# share (ReLU + dropout at the end of every projection, one LayerNorm per layer, no self-attention
# inside A_x, CE over plain dot products) are architecture, not quirks, and are not listed here.
REFERENCE_QUIRKS: dict[str, str] = {
    "model.normalise_video_over_time":
        "L2-normalise each C3D channel over time (F.normalize default dim=1 on [B,T,4096]) instead of each token",
    "model.integer_time_stamps_at_eval":
        "in eval mode, time-embed token k of both modalities at t=k (integer index) instead of its real time",
    "model.encoder_bn_over_padding":
        "A_enc/V_enc BatchNorm statistics in training include the zero padding tokens of the batch",
    # --- data loading / training quirks: section "train" (model/packing.py, model/train_config.py) ---------
}


def apply_preset(cfg_dict: Mapping[str, Any], preset: str) -> dict[str, Any]:
    """Set every quirk of `REFERENCE_QUIRKS` for `preset` in a full config mapping (sections as keys).

    "reference" turns all quirks on (reproduce the official code's numbers), "paper" turns them off
    (the method as the paper describes it). Values the user wrote explicitly win over the preset, so
    a single quirk can be toggled on top of either preset. Returns a new dict; the input is untouched.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {PRESETS}")
    out = copy.deepcopy(dict(cfg_dict))
    for dotted in REFERENCE_QUIRKS:
        section, key = dotted.split(".", 1)
        sub = out.get(section)
        if sub is None:
            sub = out[section] = {}
        if not isinstance(sub, dict):
            raise TypeError(f"config section {section!r} must be a mapping to apply preset {preset!r}")
        sub.setdefault(key, preset == "reference")
    return out
