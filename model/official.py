"""Load checkpoints of the official TCAF implementation (`Multimodal_Sequence_Transformer`) into `TCAF`.

The released checkpoints are `torch.save` dicts {"epoch", "model", "optimizer", "metric"} whose
"model" entry is the official state dict. Its layout differs from ours in names only, except that

* the position encoder is registered twice (`position_encoder_block.` and `audiovisual_embeddings.`
  are the same module); both copies must agree and one is used;
* the per-token projections of the position encoder are kernel-1 Conv1d weights (out, in, 1),
  here Linear weights (out, in);
* the attention has separate `to_q`, `to_k`, `to_v` matrices, here one fused `qkv` matrix (rows
  stacked q, k, v).

Official runs save their hyper-parameters in `args.yaml`; `config_from_official_args` turns that
mapping into a `TCAFConfig` with the reference quirks on, which is what reproduces the official
evaluation embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.config import REFERENCE_QUIRKS, TCAFConfig
from model.methods.checkpoints import read_official_state_dict, require_prefix, state_mismatches
from model.methods.common import model_quirks
from model.tcaf import TCAF

# Official MLP blocks (`EmbeddingNet.fc` Sequential) -> ours (`MLPBlock.net`, same indices).
_MLP_PREFIXES = {
    "A_enc.fc.": "audio_encoder.net.",
    "V_enc.fc.": "video_encoder.net.",
    "W_proj.fc.": "word_proj.net.",
    "D_w.fc.": "word_decoder.net.",
    "O_proj.fc.": "output_proj.net.",
    "D_o.fc.": "output_decoder.net.",
}
# The same AudioVisualEmbedding module appears under two attribute names in the official model.
_EMBED_PREFIXES = ("position_encoder_block.", "audiovisual_embeddings.")
_EMBED_KEYS = {
    "modal_embedding.weight": "position.modality.weight",
    "fourier_embeddings.weight": "position.time.proj.weight",
    "fourier_embeddings.bias": "position.time.proj.bias",
    "fourier_randn": "position.time.freqs",
    "pad_embedding.weight": "position.pad.weight",
    "out_proj_audio.weight": "position.audio_proj.weight",  # Conv1d (out, in, 1)
    "out_proj_audio.bias": "position.audio_proj.bias",
    "out_proj_video.weight": "position.video_proj.weight",  # Conv1d (out, in, 1)
    "out_proj_video.bias": "position.video_proj.bias",
}
_LAYER = re.compile(r"^Audio_visual_transformer\.layers\.(\d+)\.(.+)$")
_LAYER_KEYS = {
    "attn.to_out.0.weight": "attn.proj.weight",
    "attn.to_out.0.bias": "attn.proj.bias",
    "ff.net.0.weight": "ff.fc1.weight",
    "ff.net.0.bias": "ff.fc1.bias",
    "ff.net.3.weight": "ff.fc2.weight",
    "ff.net.3.bias": "ff.fc2.bias",
    "norm.weight": "norm.weight",  # one LayerNorm shared by attention and FFN
    "norm.bias": "norm.bias",
}


def _extract_state_dict(source: str | Path | Mapping[str, Any]) -> Mapping[str, Tensor]:
    state = read_official_state_dict(source, "TCAF")
    require_prefix(state, "Audio_visual_transformer.", "Multimodal_Sequence_Transformer")
    return state


def convert_official_state_dict(official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename and reshape an official state dict into this package's `TCAF` layout."""
    official = _extract_state_dict(official)
    out: dict[str, Tensor] = {}
    qkv: dict[int, dict[str, Tensor]] = {}
    embed_seen: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in official.items():
        if key == "cls_token":
            out["cls_token"] = value
            continue
        mlp = next((p for p in _MLP_PREFIXES if key.startswith(p)), None)
        if mlp is not None:
            out[_MLP_PREFIXES[mlp] + key[len(mlp):]] = value
            continue
        emb = next((p for p in _EMBED_PREFIXES if key.startswith(p)), None)
        if emb is not None:
            sub = key[len(emb):]
            if sub not in _EMBED_KEYS:
                unknown.append(key)
                continue
            if sub in embed_seen:
                if not torch.equal(embed_seen[sub], value):
                    raise ValueError(f"official checkpoint: the two copies of '{sub}' differ ({_EMBED_PREFIXES})")
                continue
            embed_seen[sub] = value
            out[_EMBED_KEYS[sub]] = value.squeeze(-1) if sub.startswith("out_proj_") and sub.endswith("weight") else value
            continue
        m = _LAYER.match(key)
        if m is not None:
            i, sub = int(m.group(1)), m.group(2)
            if sub in ("attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight"):
                qkv.setdefault(i, {})[sub[len("attn.to_"):][0]] = value
            elif sub in _LAYER_KEYS:
                out[f"transformer.layers.{i}.{_LAYER_KEYS[sub]}"] = value
            else:
                unknown.append(key)
            continue
        unknown.append(key)
    if unknown:
        raise ValueError(
            f"official checkpoint has keys this model cannot represent: {sorted(unknown)[:8]}"
            + (" ..." if len(unknown) > 8 else "")
            + " (only the 'sinusoid' time embedding and use_spatial=False are supported)"
        )
    for i, parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"official checkpoint: layer {i} lacks one of to_q/to_k/to_v")
        out[f"transformer.layers.{i}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def load_official_checkpoint(net: TCAF, source: str | Path | Mapping[str, Any]) -> TCAF:
    """Load an official checkpoint (file, checkpoint dict or state dict) into `net`, strictly.

    Every official tensor must land on a parameter or buffer of the same shape, and every tensor
    of `net` must be covered; mismatches raise with the key names and the config field to fix.
    """
    if net.cfg.modalities != "audio_visual" or not net.cfg.shared_layer_norm or net.cfg.final_layer_norm:
        raise ValueError(
            "official checkpoints need model.modalities='audio_visual', shared_layer_norm=True and "
            "final_layer_norm=False (the official architecture)"
        )
    state = convert_official_state_dict(source)
    missing, extra, wrong = state_mismatches(net.state_dict(), state)
    if missing or extra or wrong:
        raise ValueError(
            "official checkpoint does not match the model config "
            f"(missing in checkpoint: {missing[:8]}; not in model: {extra[:8]}; shape mismatches: {wrong[:8]}). "
            "Build the config with model.official.config_from_official_args(args.yaml of the run)."
        )
    net.load_state_dict(state, strict=True)
    return net


# Official argument name -> TCAFConfig field (values copied unchanged).
_ARG_FIELDS = {
    "input_size_audio": "audio_dim",
    "input_size_video": "video_dim",
    "embeddings_hidden_size": "encoder_hidden_dim",
    "embedding_dropout": "dropout_enc",
    "embeddings_batch_norm": "hidden_batch_norm",
    "transformer_use_embedding_net": "use_embedding_net",
    "transformer_dim": "dim",
    "transformer_depth": "depth",
    "transformer_heads": "heads",
    "transformer_dim_head": "dim_head",
    "transformer_mlp_dim": "mlp_dim",
    "transformer_dropout": "dropout_transformer",
    "transformer_embedding_dim": "pos_dim",
    "transformer_embedding_dropout": "dropout_pos",
    "transformer_embedding_fourier_scale": "fourier_scale",
    "transformer_embedding_modality": "modality_embedding",
    "transformer_use_class_token": "use_class_token",
    "decoder_hidden_size": "decoder_hidden_dim",
    "decoder_dropout": "dropout_proj_o",
    "additional_dropout": "dropout_proj_w",
    "cross_entropy_loss": "loss_ce",
    "reg_loss": "loss_reg",
    "rec_loss": "loss_rec",
}


def config_from_official_args(args: Mapping[str, Any], *, reference: bool = True, **overrides: Any) -> TCAFConfig:
    """TCAFConfig for an official run's arguments (its `args.yaml` mapping; other keys are ignored).

    The official model hard-codes the word-vector size (300) and d_out (64). With `reference=True`
    every forward-affecting quirk of `REFERENCE_QUIRKS` is on, which is how the official code
    computes its evaluation embeddings.
    """
    fields: dict[str, Any] = {ours: args[theirs] for theirs, ours in _ARG_FIELDS.items() if theirs in args}
    fields.update(word_dim=300, out_dim=64)
    time_type = args.get("transformer_embedding_time_embed_type", "sinusoid")
    if time_type not in ("sinusoid", "none"):
        raise ValueError(
            f"official transformer_embedding_time_embed_type={time_type!r} is not supported; use 'sinusoid' or 'none'"
        )
    fields["time_embedding"] = "fourier" if time_type == "sinusoid" else "none"
    use_self = bool(args.get("use_self_attention", args.get("transformer_attention_use_self_attention", False)))
    use_cross = bool(args.get("use_cross_attention", args.get("transformer_attention_use_cross_attention", True)))
    if not (use_self or use_cross):
        raise ValueError("official runs with both use_self_attention and use_cross_attention off apply no mask at all; "
                         "that variant is not supported")
    fields["attention"] = "full" if use_self and use_cross else ("self" if use_self else "cross")
    if args.get("selavi", False):
        fields.update(audio_rate_s=1.0, video_rate_s=1.0)  # SeLaVi features: one token per second
    fields.update(dict.fromkeys(model_quirks(REFERENCE_QUIRKS), reference))
    fields.update(overrides)
    return TCAFConfig.from_dict(fields)
