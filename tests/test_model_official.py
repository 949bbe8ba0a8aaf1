"""Loading the official checkpoint layout: random official-layout weights, loaded, checked against an
independent forward pass written here with plain torch ops over the official tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from model.config import dataset_config
from model.official import config_from_official_args, convert_official_state_dict, load_official_checkpoint
from model.tcaf import TCAF

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# Official argument names and values of a small run (the real ones use 128/4096/300/6/8/64).
ARGS = {
    "input_size_audio": 6,
    "input_size_video": 10,
    "embeddings_hidden_size": 9,
    "embedding_dropout": 0.3,
    "embeddings_batch_norm": True,
    "transformer_use_embedding_net": True,
    "transformer_dim": 300,
    "transformer_depth": 2,
    "transformer_heads": 2,
    "transformer_dim_head": 4,
    "transformer_mlp_dim": 8,
    "transformer_dropout": 0.3,
    "transformer_embedding_dim": 4,
    "transformer_embedding_dropout": 0.2,
    "transformer_embedding_fourier_scale": 10.0,
    "transformer_embedding_modality": True,
    "transformer_embedding_time_embed_type": "sinusoid",
    "transformer_embedding_time_len": 120,
    "transformer_use_class_token": True,
    "decoder_hidden_size": 5,
    "decoder_dropout": 0.1,
    "additional_dropout": 0.1,
    "cross_entropy_loss": True,
    "reg_loss": True,
    "rec_loss": True,
    "use_self_attention": False,
    "use_cross_attention": True,
    "lr": 7e-5,
    "bs": 64,
    "selavi": False,
}
D_OUT, D_WORD = 64, 300  # hard-coded in the official model


def official_layout(args, g):
    """A random state dict with the key names and shapes of the official Multimodal_Sequence_Transformer."""

    def lin(out_f, in_f, bias=True):
        w = torch.randn(out_f, in_f, generator=g) / math.sqrt(in_f)
        return (w, torch.randn(out_f, generator=g) * 0.1) if bias else (w, None)

    def bn(n):
        return {
            "weight": 1 + 0.2 * torch.randn(n, generator=g),
            "bias": 0.2 * torch.randn(n, generator=g),
            "running_mean": 0.3 * torch.randn(n, generator=g),
            "running_var": 0.5 + torch.rand(n, generator=g),
            "num_batches_tracked": torch.tensor(17),
        }

    sd = {}

    def embedding_net(name, in_f, out_f, hidden):
        idx = 0
        if hidden:
            sd[f"{name}.fc.0.weight"], sd[f"{name}.fc.0.bias"] = lin(hidden, in_f)
            for k, val in bn(hidden).items():
                sd[f"{name}.fc.1.{k}"] = val
            in_f, idx = hidden, 4
        sd[f"{name}.fc.{idx}.weight"], sd[f"{name}.fc.{idx}.bias"] = lin(out_f, in_f)
        for k, val in bn(out_f).items():
            sd[f"{name}.fc.{idx + 1}.{k}"] = val

    d, e = args["transformer_dim"], args["transformer_embedding_dim"]
    embedding_net("A_enc", args["input_size_audio"], d, args["embeddings_hidden_size"])
    embedding_net("V_enc", args["input_size_video"], d, args["embeddings_hidden_size"])
    embedding_net("W_proj", D_WORD, D_OUT, None)
    embedding_net("D_w", D_OUT, D_WORD, None)
    sd["cls_token"] = torch.randn(1, 1, d, generator=g)
    emb = {
        "modal_embedding.weight": torch.randn(2, e, generator=g),
        "fourier_embeddings.weight": lin(e, e)[0],
        "fourier_embeddings.bias": 0.1 * torch.randn(e, generator=g),
        "fourier_randn": args["transformer_embedding_fourier_scale"] * torch.randn(2, e // 2, generator=g),
        "pad_embedding.weight": torch.randn(1, e, generator=g),
        "out_proj_audio.weight": lin(d, d + e)[0].unsqueeze(-1),
        "out_proj_audio.bias": 0.1 * torch.randn(d, generator=g),
        "out_proj_video.weight": lin(d, d + e)[0].unsqueeze(-1),
        "out_proj_video.bias": 0.1 * torch.randn(d, generator=g),
    }
    for prefix in ("position_encoder_block.", "audiovisual_embeddings."):  # one module, two names
        sd.update({prefix + k: v for k, v in emb.items()})
    inner = args["transformer_heads"] * args["transformer_dim_head"]
    for i in range(args["transformer_depth"]):
        p = f"Audio_visual_transformer.layers.{i}."
        for name in ("to_q", "to_k", "to_v"):
            sd[p + f"attn.{name}.weight"] = lin(inner, d, bias=False)[0]
        sd[p + "attn.to_out.0.weight"], sd[p + "attn.to_out.0.bias"] = lin(d, inner)
        sd[p + "ff.net.0.weight"], sd[p + "ff.net.0.bias"] = lin(args["transformer_mlp_dim"], d)
        sd[p + "ff.net.3.weight"], sd[p + "ff.net.3.bias"] = lin(d, args["transformer_mlp_dim"])
        sd[p + "norm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        sd[p + "norm.bias"] = 0.2 * torch.randn(d, generator=g)
    embedding_net("O_proj", d, D_OUT, args["decoder_hidden_size"])
    embedding_net("D_o", D_OUT, d, args["decoder_hidden_size"])
    return sd


def official_eval_embeddings(sd, args, a, am, v, vm, w):
    """The official get_embeddings in eval mode, re-derived from the specification with plain ops."""

    def embedding_net(name, x):
        n_lin = sum(
            1 for k in sd if k.startswith(f"{name}.fc.") and k.endswith(".weight") and sd[k].dim() == 2
        )
        for idx in [0, 4] if n_lin == 2 else [0]:
            x = x @ sd[f"{name}.fc.{idx}.weight"].T + sd[f"{name}.fc.{idx}.bias"]
            b = f"{name}.fc.{idx + 1}."
            x = (x - sd[b + "running_mean"]) / torch.sqrt(sd[b + "running_var"] + 1e-5) * sd[
                b + "weight"
            ] + sd[b + "bias"]
            x = torch.clamp(x, min=0)
        return x

    B, Ta, _ = a.shape
    Tv = v.shape[1]
    a = a / 255.0
    v = F.normalize(v, dim=1)  # official default dim=1: over time
    A = embedding_net("A_enc", a.reshape(B * Ta, -1)).reshape(B, Ta, -1)
    V = embedding_net("V_enc", v.reshape(B * Tv, -1)).reshape(B, Tv, -1)
    pe = "position_encoder_block."

    def tokens(x, mask, modality, proj):
        T = x.shape[1]
        t = torch.arange(T).float()  # get_embeddings passes no time stamps: t = index
        pos = torch.stack([t, t], -1)
        phase = (2 * math.pi * pos) @ sd[pe + "fourier_randn"]
        time = (
            torch.cat([phase.sin(), phase.cos()], -1) @ sd[pe + "fourier_embeddings.weight"].T
            + sd[pe + "fourier_embeddings.bias"]
        )
        e = sd[pe + "modal_embedding.weight"][modality] + time.expand(B, T, -1)
        e = e + (~mask).float().unsqueeze(-1) * sd[pe + "pad_embedding.weight"][0]
        x = torch.cat([x, e], -1)
        return x @ sd[pe + f"out_proj_{proj}.weight"][:, :, 0].T + sd[pe + f"out_proj_{proj}.bias"]

    x = torch.cat([sd["cls_token"].expand(B, 1, -1), tokens(A, am, 0, "audio"), tokens(V, vm, 1, "video")], 1)
    m = torch.cat([torch.ones(B, 1, dtype=torch.bool), am, vm], 1)
    M = m[:, None, :] & m[:, :, None]
    M[:, 1 : Ta + 1, 1 : Ta + 1] = False  # cross-only: no audio->audio
    M[:, Ta + 1 :, Ta + 1 :] = False  # no video->video
    H, dh = args["transformer_heads"], args["transformer_dim_head"]
    for i in range(args["transformer_depth"]):
        p = f"Audio_visual_transformer.layers.{i}."

        def ln(x, p=p):
            return F.layer_norm(x, x.shape[-1:], sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-5)

        h = ln(x)
        q, k, val = (
            (h @ sd[p + f"attn.to_{n}.weight"].T).reshape(B, -1, H, dh).transpose(1, 2) for n in "qkv"
        )
        dots = torch.einsum("bhid,bhjd->bhij", q, k) * dh**-0.5
        dots = dots.masked_fill(~M[:, None], -torch.finfo(dots.dtype).max)
        out = torch.einsum("bhij,bhjd->bhid", dots.softmax(-1), val).transpose(1, 2).reshape(B, -1, H * dh)
        x = x + out @ sd[p + "attn.to_out.0.weight"].T + sd[p + "attn.to_out.0.bias"]
        ff = F.gelu(ln(x) @ sd[p + "ff.net.0.weight"].T + sd[p + "ff.net.0.bias"])
        x = x + ff @ sd[p + "ff.net.3.weight"].T + sd[p + "ff.net.3.bias"]
    theta_o = embedding_net("O_proj", x[:, 0])
    return theta_o, embedding_net("W_proj", w)


def batch(g, B=3, Ta=4, Tv=6):
    a = torch.randint(0, 256, (B, Ta, ARGS["input_size_audio"]), generator=g).float()
    v = torch.rand(B, Tv, ARGS["input_size_video"], generator=g)
    am = torch.arange(Ta)[None] < torch.tensor([4, 2, 3])[:, None]
    vm = torch.arange(Tv)[None] < torch.tensor([6, 5, 1])[:, None]
    # The official collator pads with zeros.
    return a * am[..., None], am, v * vm[..., None], vm


def test_config_from_official_args_maps_every_architecture_field():
    cfg = config_from_official_args(ARGS)
    assert (cfg.audio_dim, cfg.video_dim, cfg.dim, cfg.depth, cfg.heads, cfg.dim_head, cfg.mlp_dim) == (
        6,
        10,
        300,
        2,
        2,
        4,
        8,
    )
    assert (cfg.encoder_hidden_dim, cfg.decoder_hidden_dim, cfg.pos_dim, cfg.out_dim, cfg.word_dim) == (
        9,
        5,
        4,
        64,
        300,
    )
    assert (
        cfg.dropout_enc,
        cfg.dropout_pos,
        cfg.dropout_transformer,
        cfg.dropout_proj_o,
        cfg.dropout_proj_w,
    ) == (0.3, 0.2, 0.3, 0.1, 0.1)
    assert cfg.attention == "cross" and cfg.time_embedding == "fourier" and cfg.use_class_token
    assert cfg.normalise_video_over_time and cfg.integer_time_stamps_at_eval and cfg.encoder_bn_over_padding
    assert config_from_official_args({**ARGS, "use_self_attention": True}).attention == "full"
    assert (
        config_from_official_args(
            {**ARGS, "use_self_attention": True, "use_cross_attention": False}
        ).attention
        == "self"
    )
    assert not config_from_official_args(ARGS, reference=False).normalise_video_over_time
    with pytest.raises(ValueError, match="time_embed_type"):
        config_from_official_args({**ARGS, "transformer_embedding_time_embed_type": "fixed"})


def test_loaded_official_weights_reproduce_independent_official_forward(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = official_layout(ARGS, g)
    path = tmp_path / "Multimodal_Sequence_Transformer_score.pt"
    torch.save({"epoch": 3, "model": sd, "optimizer": {}, "metric": "score"}, path)
    net = load_official_checkpoint(TCAF(config_from_official_args(ARGS)), path).eval()
    a, am, v, vm = batch(g)
    w = F.normalize(torch.randn(5, D_WORD, generator=g), dim=-1)
    exp_theta_o, exp_theta_w = official_eval_embeddings(sd, ARGS, a, am, v, vm, w)
    with torch.no_grad():
        # Real time stamps are passed, as the training forward does; the eval quirk must override them.
        out = net(
            a,
            am,
            v,
            vm,
            audio_times=torch.arange(4.0).expand(3, 4) * 0.96,
            video_times=torch.arange(6.0).expand(3, 6) * 0.64,
        )
        theta_w = net.embed_classes(w)
    assert exp_theta_o.abs().max() > 0.1 and exp_theta_o.std() > 0.05  # a non-degenerate check
    torch.testing.assert_close(out["embedding"], exp_theta_o, rtol=0, atol=1e-5)
    torch.testing.assert_close(theta_w, exp_theta_w, rtol=0, atol=1e-5)


def test_converted_state_dict_layout():
    g = torch.Generator().manual_seed(1)
    sd = official_layout(ARGS, g)
    ours = convert_official_state_dict(sd)
    qkv = ours["transformer.layers.1.attn.qkv.weight"]
    p = "Audio_visual_transformer.layers.1.attn."
    assert torch.equal(qkv, torch.cat([sd[p + "to_q.weight"], sd[p + "to_k.weight"], sd[p + "to_v.weight"]]))
    assert ours["position.audio_proj.weight"].shape == (300, 304)
    assert torch.equal(ours["audio_encoder.net.5.running_var"], sd["A_enc.fc.5.running_var"])
    assert not any(k.startswith("audiovisual_embeddings") for k in ours)


def test_full_size_ucf_layout_loads_and_counts_match():
    g = torch.Generator().manual_seed(2)
    args = {
        **ARGS,
        "input_size_audio": 128,
        "input_size_video": 4096,
        "embeddings_hidden_size": 512,
        "decoder_hidden_size": 512,
        "transformer_depth": 6,
        "transformer_heads": 8,
        "transformer_dim_head": 64,
        "transformer_mlp_dim": 128,
        "transformer_embedding_dim": 64,
    }
    sd = official_layout(args, g)
    cfg = config_from_official_args(args)
    net = load_official_checkpoint(TCAF(cfg), sd)
    assert sum(p.numel() for p in net.parameters()) == 7_269_972
    assert cfg == dataset_config(
        "ucf", normalise_video_over_time=True, integer_time_stamps_at_eval=True, encoder_bn_over_padding=True
    )


def test_mismatching_or_foreign_checkpoints_raise_clear_errors(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd = official_layout(ARGS, g)
    wrong_depth = TCAF(config_from_official_args({**ARGS, "transformer_depth": 3}))
    with pytest.raises(ValueError, match="missing in checkpoint"):
        load_official_checkpoint(wrong_depth, sd)
    wrong_width = TCAF(config_from_official_args({**ARGS, "embeddings_hidden_size": 7}))
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official_checkpoint(wrong_width, sd)
    with pytest.raises(ValueError, match="not an official"):
        load_official_checkpoint(TCAF(config_from_official_args(ARGS)), {"foo": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(TCAF(config_from_official_args(ARGS)), tmp_path / "missing.pt")
    bad = dict(sd)
    bad["audiovisual_embeddings.pad_embedding.weight"] = (
        bad["audiovisual_embeddings.pad_embedding.weight"] + 1
    )
    with pytest.raises(ValueError, match="copies"):
        convert_official_state_dict(bad)
