"""AVGZSLNet against the official code: tests/fixtures/methods/avgzslnet.pt holds what the official model
computed (benchmarks/official_fixtures/avgzslnet.py), at small sizes, from its own state dict and inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from model.methods import (
    build_method,
    config_from_dict,
    get_method_module,
    method_config,
    method_train_defaults,
)
from model.methods.avgzslnet import (
    PRESETS,
    REFERENCE_QUIRKS,
    TRAIN_DEFAULTS,
    AVGZSLNet,
    AVGZSLNetConfig,
    config_from_official_state_dict,
    convert_official_state_dict,
    dataset_config,
    load_official_checkpoint,
)
from model.methods.base import AveragedBatch
from model.methods.train import AveragedRecipe
from model.published import PUBLISHED
from model.synthetic import PlantedFeatures, SyntheticSpec
from model.train import run_stage
from model.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "methods" / "avgzslnet.pt"
OFFICIAL_PARAMS_UCF = 4_596_672  # reference-avca-code.md; the fixture re-measures it
TOL = {"rtol": 1e-5, "atol": 1e-5}
TERMS = ("rec", "cta", "ctv", "ta", "at", "tv", "vt", "total")


@pytest.fixture(scope="module")
def fx() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def small_config(fx: dict, **overrides) -> AVGZSLNetConfig:
    s = fx["small"]
    fields = {"audio_dim": s["audio"], "video_dim": s["video"], "word_dim": s["word"],
              "hidden_dim": s["hidden"], "word_hidden_dim": s["word_hidden"], "out_dim": s["out"],
              "decoder_hidden_dim": s["decoder_hidden"], "dropout_embedding": 0.0, "dropout_decoder": 0.0}
    fields.update(dict.fromkeys(REFERENCE_QUIRKS, True))
    return AVGZSLNetConfig(**{**fields, **overrides})


def official_model(fx: dict, **overrides) -> AVGZSLNet:
    """The re-implementation with the official weights of the fixture, reference quirks on."""
    return load_official_checkpoint(AVGZSLNet(small_config(fx, **overrides)), fx["state"])


def batch(fx: dict) -> AveragedBatch:
    x = fx["inputs"]
    return AveragedBatch(audio=x["audio"], video=x["video"], labels=x["labels"], word=x["word"],
                         neg_audio=x["neg_audio"], neg_video=x["neg_video"], neg_labels=x["neg_labels"],
                         neg_word=x["neg_word"], class_ids=torch.arange(len(x["class_vectors"])),
                         class_vectors=x["class_vectors"])


def forward(model: AVGZSLNet, b: AveragedBatch) -> dict[str, torch.Tensor]:
    return model(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)


def buffers(model: AVGZSLNet) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def pre_bn_biases(model: AVGZSLNet) -> set[str]:
    """Linear biases directly followed by BatchNorm: BN removes them, so their true gradient is 0."""
    out = set()
    if model.cfg.embedding_batch_norm:
        out |= {f"{name}.net.0.bias" for name in ("audio_net", "video_net", "word_net")}
    if model.cfg.decoder_batch_norm:
        out.add("decoder.net.0.bias")
    return out


# ------------------------------------------------------------------------------------------ structure
def test_shapes_and_terms():
    cfg = AVGZSLNetConfig(audio_dim=5, video_dim=7, word_dim=9, hidden_dim=11, word_hidden_dim=6, out_dim=4,
                          decoder_hidden_dim=3)
    model = AVGZSLNet(cfg).train()
    B, C = 6, 3
    b = AveragedBatch(audio=torch.rand(B, 5) * 255, video=torch.rand(B, 7),
                      labels=torch.zeros(B, dtype=torch.long), word=torch.randn(B, 9),
                      neg_audio=torch.rand(B, 5) * 255, neg_video=torch.rand(B, 7),
                      neg_labels=torch.ones(B, dtype=torch.long), neg_word=torch.randn(B, 9),
                      class_ids=torch.arange(C), class_vectors=torch.randn(C, 9))
    out = forward(model, b)
    for key in ("a_p", "v_p", "t_p", "a_q", "v_q", "t_q"):
        assert out[key].shape == (B, 4), key
    for key in ("x_ta_p", "x_tv_p", "x_tt_p", "x_ta_q", "x_tv_q"):
        assert out[key].shape == (B, 9), key
        torch.testing.assert_close(out[key].norm(dim=1), torch.ones(B))  # normalised decoder outputs
    losses = model.losses(b)
    assert set(losses) == set(TERMS)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["total"], sum(losses[k] for k in TERMS[:-1]))
    model.eval()
    assert model.distances(b.audio, b.video, b.class_vectors).shape == (B, C)
    with pytest.raises(AssertionError, match=r"class vectors must be \(C, 9\)"):
        model.distances(b.audio, b.video, torch.randn(C, 8))


def test_parameter_counts_equal_the_official(fx):
    assert fx["param_count_ucf"] == OFFICIAL_PARAMS_UCF
    counts = {d: sum(p.numel() for p in AVGZSLNet(dataset_config(d)).parameters()) for d in PRESETS}
    assert counts == dict.fromkeys(PRESETS, OFFICIAL_PARAMS_UCF)
    assert sum(p.numel() for p in AVGZSLNet(small_config(fx)).parameters()) == fx["param_count_small"]


def test_presets_registry_and_config():
    configs = {d: dataset_config(d) for d in PRESETS}
    assert all(c == AVGZSLNetConfig() for c in configs.values()), "the official runs share one config"
    assert (AVGZSLNetConfig().dropout_embedding, AVGZSLNetConfig().dropout_decoder) == (0.8, 0.5)
    assert set(AVGZSLNet.published) == set(PRESETS)
    assert AVGZSLNet.published["ucf"] == {"S": 74.79, "U": 24.15, "HM": 36.51, "ZSL": 31.51}
    assert get_method_module("avgzslnet").AVGZSLNet is AVGZSLNet and AVGZSLNet.name == "avgzslnet"
    fields = {f.name: f.default for f in dataclasses.fields(AVGZSLNetConfig)}
    assert all(fields[q] is False for q in REFERENCE_QUIRKS), "quirks are off by default"
    assert all(getattr(dataset_config("ucf", preset="reference"), q) for q in REFERENCE_QUIRKS)
    assert AVGZSLNetConfig.from_dict(dataset_config("vggsound", hidden_dim=8).to_dict()).hidden_dim == 8
    with pytest.raises(ValueError, match=r"model\.hiden_dim"):
        AVGZSLNetConfig.from_dict({"hiden_dim": 8})
    with pytest.raises(ValueError, match="dropout_decoder"):
        AVGZSLNetConfig(dropout_decoder=1.0)
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_config("ucf101")


def test_registry_module_api():
    cfg = method_config("avgzslnet", {"hidden_dim": 16}, dataset="vggsound", preset="reference",
                        dims={"audio_dim": 5, "video_dim": 7, "word_dim": 384, "audio_input_scale": 255.0})
    # The user's values > the reference quirks > the dataset preset > the data's sizes fill the rest.
    assert (cfg.hidden_dim, cfg.audio_dim, cfg.video_dim, cfg.word_dim) == (16, 5, 7, 384)
    assert all(getattr(cfg, q) for q in REFERENCE_QUIRKS)
    assert cfg == dataset_config("vggsound", preset="reference", hidden_dim=16, audio_dim=5, video_dim=7,
                                 word_dim=384)
    user = method_config("avgzslnet", {"audio_dim": 3}, dataset=None, preset="paper", dims={"audio_dim": 5})
    assert user.audio_dim == 3 and not any(getattr(user, q) for q in REFERENCE_QUIRKS)
    assert isinstance(build_method("avgzslnet", cfg), AVGZSLNet)
    assert config_from_dict("avgzslnet", cfg.to_dict()) == cfg
    defaults = method_train_defaults("avgzslnet", "ucf")
    assert defaults == TRAIN_DEFAULTS and (defaults["lr"], defaults["weight_decay"]) == (1e-3, 0.0)
    assert AVGZSLNet.published == PUBLISHED["avgzslnet"]
    with pytest.raises(ValueError, match="unknown preset"):
        method_config("avgzslnet", {}, dataset="ucf", preset="official", dims={})
    with pytest.raises(ValueError, match="holds the method"):
        get_method_module("avgzslnet").build("avca")


def test_trains_and_evaluates_through_the_shared_averaged_recipe():
    gen = PlantedFeatures(SyntheticSpec(n_seen=6, n_unseen=3, video_dim=48, signal=0.5, seed=0))
    train, val = gen.split("train", 12, range(6)), gen.split("val", 6, range(9))
    cfg = dataset_config("ucf", preset="reference", video_dim=48, word_dim=32, hidden_dim=24)
    torch.manual_seed(0)
    model = AVGZSLNet(cfg)
    train_cfg = TrainConfig(**{**TRAIN_DEFAULTS, "batch_size": 16, "batches_per_epoch": 3, "progress": False})
    result = run_stage(model, train, val, train_cfg, seed=0, epochs=2, device=torch.device("cpu"),
                       recipe=AveragedRecipe("cpu"))
    assert len(result.history) == 2
    assert all(f"loss_{t}" in result.history[0] for t in TERMS[:-1]), result.history[0]
    assert 0.0 <= result.best["HM"] <= 1.0


# ------------------------------------------------------------------------------- against the official
def test_seeded_construction_gives_the_official_initial_weights(fx):
    torch.manual_seed(fx["seed"])
    model = AVGZSLNet(small_config(fx))
    init = convert_official_state_dict(fx["state_init"])
    assert model.state_dict().keys() == init.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, init[key]), key


def test_training_step_reproduces_every_official_output_and_loss(fx):
    model = official_model(fx).train()
    out = forward(model, batch(fx))
    for key, expected in fx["forward"].items():
        if key != "x_t_p":  # the official forward hands the word vectors through
            torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    # BN statistics after the official call order (f_a, f_v, f_t on positives, negatives; decoder 5 times).
    expected = convert_official_state_dict(fx["buffers_after_step"])
    for key, value in buffers(model).items():
        torch.testing.assert_close(value, expected[key], **TOL, msg=key)
    losses = model.loss_terms(out, fx["forward"]["x_t_p"])
    for key in TERMS:
        torch.testing.assert_close(losses[key], fx["losses"][key], **TOL, msg=key)


def test_losses_gradients_and_the_optimiser_step_match_the_official(fx):
    model = official_model(fx).train()
    losses = model.losses(batch(fx))
    for key in TERMS:
        torch.testing.assert_close(losses[key], fx["losses"][key], **TOL, msg=key)
    losses["total"].backward()
    grads = convert_official_state_dict(fx["grads"])
    names = dict(model.named_parameters())
    assert set(grads) == set(names), "the official optimiser steps every parameter; all must get a gradient"
    for name, p in names.items():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name], **TOL, msg=name)
        if name not in pre_bn_biases(model):
            assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    optimizer = model.build_optimizer(lr=1e-3, weight_decay=0.0)
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert optimizer.param_groups[0][key] == fx["optimizer_hparams"][key], key
    optimizer.step()
    after = convert_official_state_dict(fx["state_after_step"])
    for key, value in model.state_dict().items():
        if key in pre_bn_biases(model):
            # Their gradients are rounding noise (~1e-8), which Adam's first step turns into +-lr: only the
            # size of the step is reproducible.
            assert (value - after[key]).abs().max() <= 2e-3 + 1e-6, key
        else:
            torch.testing.assert_close(value, after[key], **TOL, msg=key)


def test_dropout_masks_are_drawn_in_the_official_order(fx):
    rates = fx["dropout"]["rates"]
    model = official_model(fx, dropout_embedding=rates["embedding_dropout"],
                           dropout_decoder=rates["decoder_dropout"]).train()
    torch.manual_seed(fx["dropout"]["seed"])
    out = forward(model, batch(fx))
    for key, expected in fx["dropout"]["forward"].items():
        if key != "x_t_p":
            torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    losses = model.loss_terms(out, fx["inputs"]["word"])
    for key in TERMS:
        torch.testing.assert_close(losses[key], fx["dropout"]["losses"][key], **TOL, msg=key)
    expected = convert_official_state_dict(fx["dropout"]["buffers_after_step"])
    for key, value in buffers(model).items():
        torch.testing.assert_close(value, expected[key], **TOL, msg=key)


def test_evaluation_distances_match_the_official_both_entry(fx):
    model = official_model(fx).eval()
    x, ev = fx["inputs"], fx["eval"]
    distances = model.distances(x["eval_audio"], x["eval_video"], x["class_vectors"])
    torch.testing.assert_close(distances, ev["distances"], **TOL)
    torch.testing.assert_close(distances, ev["distances_audio"] + ev["distances_video"], **TOL)
    with torch.no_grad():
        torch.testing.assert_close(model.audio_net(x["eval_audio"]), ev["a_p"], **TOL)
        torch.testing.assert_close(model.video_net(x["eval_video"]), ev["v_p"], **TOL)
        torch.testing.assert_close(model.class_embeddings(x["class_vectors"]), ev["t_p"], **TOL)


# ------------------------------------------------------------------------------------------ the quirks
def test_sum_modality_distances(fx):
    x, ev = fx["inputs"], fx["eval"]
    average = official_model(fx, sum_modality_distances=False).eval()
    distances = average.distances(x["eval_audio"], x["eval_video"], x["class_vectors"])
    torch.testing.assert_close(distances, ev["distances"] / 2, **TOL)


def test_bn_per_call(fx):
    b = batch(fx)
    joint = official_model(fx, bn_per_call=False).train()
    out = forward(joint, b)
    # One BN batch per network: other train-mode outputs, one running-statistics update per step.
    assert (out["a_p"] - fx["forward"]["a_p"]).abs().max() > 1e-3
    assert (out["x_tt_p"] - fx["forward"]["x_tt_p"]).abs().max() > 1e-3
    def steps(model: AVGZSLNet) -> tuple[int, int]:
        """BN updates of f_a and of the decoder in the step."""
        return (int(model.audio_net.net[1].num_batches_tracked)
                - int(fx["state"]["triplet_net.embedding_net1.fc.1.num_batches_tracked"]),
                int(model.decoder.net[1].num_batches_tracked)
                - int(fx["state"]["decoder_net.embedding_net.fc.1.num_batches_tracked"]))

    assert steps(joint) == (1, 1)
    per_call = official_model(fx, bn_per_call=True).train()
    forward(per_call, b)
    assert steps(per_call) == (2, 5)
    # Evaluation does not depend on it (given the same weights and running statistics).
    x = fx["inputs"]
    joint = official_model(fx, bn_per_call=False).eval()
    distances = joint.distances(x["eval_audio"], x["eval_video"], x["class_vectors"])
    torch.testing.assert_close(distances, fx["eval"]["distances"], **TOL)


# ------------------------------------------------------------------------------------- official loading
def test_official_state_dict_conversion(fx):
    cfg = config_from_official_state_dict(fx["state"], dropout_embedding=0.0, dropout_decoder=0.0)
    quirks_off = dict.fromkeys(REFERENCE_QUIRKS, False)
    assert cfg == AVGZSLNetConfig(**{**dataclasses.asdict(small_config(fx)), **quirks_off})
    # A checkpoint dict as main.py saves it, with a DataParallel prefix.
    state = {f"module.{k}": v for k, v in fx["state"].items()}
    checkpoint = {"epoch": 3, "model": state, "metric": "score"}
    model = load_official_checkpoint(AVGZSLNet(cfg), checkpoint)
    torch.testing.assert_close(model.state_dict(), convert_official_state_dict(fx["state"]))
    with pytest.raises(ValueError, match="shape mismatches"):
        wider = dataclasses.replace(cfg, hidden_dim=cfg.hidden_dim + 1)
        load_official_checkpoint(AVGZSLNet(wider), fx["state"])
    with pytest.raises(ValueError, match="not an official AVGZSLNet state dict"):
        convert_official_state_dict({"attention_model.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not know"):
        convert_official_state_dict({**fx["state"], "attention_model.x": torch.zeros(1)})
