"""CJME against the official code: tests/fixtures/methods/cjme.pt holds what the official model computed
(benchmarks/official_fixtures/cjme.py), at small sizes, from its own state dict and inputs."""

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
from model.methods.base import AveragedBatch
from model.methods.cjme import (
    CJME,
    PRESETS,
    REFERENCE_QUIRKS,
    TRAIN_DEFAULTS,
    CJMEConfig,
    attention_supervision,
    config_from_official_state_dict,
    convert_official_state_dict,
    dataset_config,
    load_official_checkpoint,
)
from model.methods.train import AveragedRecipe
from model.published import PUBLISHED
from model.synthetic import PlantedFeatures, SyntheticSpec
from model.train import run_stage
from model.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "methods" / "cjme.pt"
OFFICIAL_PARAMS_UCF = 4_585_557  # reference-avca-code.md; the fixture re-measures it
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def fx() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def small_config(fx: dict, **overrides) -> CJMEConfig:
    s = fx["small"]
    fields = {"audio_dim": s["audio"], "video_dim": s["video"], "word_dim": s["word"],
              "hidden_dim": s["hidden"], "word_hidden_dim": s["word_hidden"], "out_dim": s["out"],
              "dropout": 0.0}
    fields.update(dict.fromkeys(REFERENCE_QUIRKS, True))
    return CJMEConfig(**{**fields, **overrides})


def official_model(fx: dict, **overrides) -> CJME:
    """The re-implementation with the official weights of the fixture, reference quirks on."""
    return load_official_checkpoint(CJME(small_config(fx, **overrides)), fx["state"])


def batch(fx: dict) -> AveragedBatch:
    x = fx["inputs"]
    return AveragedBatch(audio=x["audio"], video=x["video"], labels=x["labels"], word=x["word"],
                         neg_audio=x["neg_audio"], neg_video=x["neg_video"], neg_labels=x["neg_labels"],
                         neg_word=x["neg_word"], class_ids=torch.arange(len(x["class_vectors"])),
                         class_vectors=x["class_vectors"])


def buffers(model: CJME) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def pre_bn_biases(model: CJME) -> set[str]:
    """Linear biases directly followed by BatchNorm: BN removes them, so their true gradient is 0."""
    if not model.cfg.batch_norm:
        return set()
    return {f"{name}.net.0.bias" for name in ("audio_net", "video_net", "word_net")}


# ------------------------------------------------------------------------------------------ structure
def test_shapes_and_terms():
    cfg = CJMEConfig(audio_dim=5, video_dim=7, word_dim=9, hidden_dim=11, word_hidden_dim=6, out_dim=4)
    model = CJME(cfg).train()
    B, C = 6, 3
    b = AveragedBatch(audio=torch.rand(B, 5) * 255, video=torch.rand(B, 7),
                      labels=torch.zeros(B, dtype=torch.long), word=torch.randn(B, 9),
                      neg_audio=torch.rand(B, 5) * 255, neg_video=torch.rand(B, 7),
                      neg_labels=torch.ones(B, dtype=torch.long), neg_word=torch.randn(B, 9),
                      class_ids=torch.arange(C), class_vectors=torch.randn(C, 9))
    out = model(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)
    for key in ("a_p", "v_p", "t_p", "a_q", "v_q", "t_q"):
        assert out[key].shape == (B, 4) and (out[key] >= 0).all(), key  # post-ReLU embeddings
    assert out["attention"].shape == out["hard_attention"].shape == (B, 1)
    losses = model.losses(b)
    assert set(losses) == {"triplet", "modality", "attention", "total"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["total"], losses["triplet"] + losses["modality"] + losses["attention"])
    model.eval()
    assert model.distances(b.audio, b.video, b.class_vectors).shape == (B, C)
    with pytest.raises(AssertionError, match=r"class vectors must be \(C, 9\)"):
        model.distances(b.audio, b.video, torch.randn(C, 8))


def test_parameter_counts_equal_the_official(fx):
    assert fx["param_count_ucf"] == OFFICIAL_PARAMS_UCF
    counts = {d: sum(p.numel() for p in CJME(dataset_config(d)).parameters()) for d in PRESETS}
    assert counts == dict.fromkeys(PRESETS, OFFICIAL_PARAMS_UCF)  # only dropout differs between datasets
    assert sum(p.numel() for p in CJME(small_config(fx)).parameters()) == fx["param_count_small"]


def test_presets_registry_and_config():
    dropouts = {d: dataset_config(d).dropout for d in PRESETS}
    assert dropouts == {"ucf": 0.2, "vggsound": 0.0, "activitynet": 0.2}
    assert set(CJME.published) == set(PRESETS)
    assert CJME.published["ucf"] == {"S": 33.89, "U": 24.82, "HM": 28.65, "ZSL": 29.01}
    assert get_method_module("cjme").CJME is CJME and CJME.name == "cjme"
    fields = {f.name: f.default for f in dataclasses.fields(CJMEConfig)}
    assert all(fields[q] is False for q in REFERENCE_QUIRKS), "quirks are off by default"
    assert all(getattr(dataset_config("ucf", preset="reference"), q) for q in REFERENCE_QUIRKS)
    assert CJMEConfig.from_dict(dataset_config("vggsound", hidden_dim=8).to_dict()).hidden_dim == 8
    with pytest.raises(ValueError, match=r"model\.hiden_dim"):
        CJMEConfig.from_dict({"hiden_dim": 8})
    with pytest.raises(ValueError, match="dropout"):
        CJMEConfig(dropout=1.0)
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_config("ucf101")


def test_registry_module_api():
    cfg = method_config("cjme", {"hidden_dim": 16}, dataset="vggsound", preset="reference",
                        dims={"audio_dim": 5, "video_dim": 7, "word_dim": 384, "audio_input_scale": 255.0})
    # The user's values > the reference quirks > the dataset preset > the data's sizes fill the rest.
    assert (cfg.hidden_dim, cfg.audio_dim, cfg.video_dim, cfg.word_dim) == (16, 5, 7, 384)
    assert all(getattr(cfg, q) for q in REFERENCE_QUIRKS)
    assert cfg == dataset_config("vggsound", preset="reference", hidden_dim=16, audio_dim=5, video_dim=7,
                                 word_dim=384)
    user = method_config("cjme", {"audio_dim": 3}, dataset=None, preset="paper", dims={"audio_dim": 5})
    assert user.audio_dim == 3 and not any(getattr(user, q) for q in REFERENCE_QUIRKS)
    assert isinstance(build_method("cjme", cfg), CJME)
    assert config_from_dict("cjme", cfg.to_dict()) == cfg
    defaults = method_train_defaults("cjme", "ucf")
    assert defaults == TRAIN_DEFAULTS and (defaults["lr"], defaults["weight_decay"]) == (1e-3, 0.0)
    assert CJME.published == PUBLISHED["cjme"]
    with pytest.raises(ValueError, match="unknown preset"):
        method_config("cjme", {}, dataset="ucf", preset="official", dims={})
    with pytest.raises(ValueError, match="holds the method"):
        get_method_module("cjme").build("avca")


def test_trains_and_evaluates_through_the_shared_averaged_recipe():
    gen = PlantedFeatures(SyntheticSpec(n_seen=6, n_unseen=3, video_dim=48, signal=0.5, seed=0))
    train, val = gen.split("train", 12, range(6)), gen.split("val", 6, range(9))
    cfg = dataset_config("ucf", preset="reference", video_dim=48, word_dim=32, hidden_dim=24)
    torch.manual_seed(0)
    model = CJME(cfg)
    train_cfg = TrainConfig(**{**TRAIN_DEFAULTS, "batch_size": 16, "batches_per_epoch": 3, "progress": False})
    result = run_stage(model, train, val, train_cfg, seed=0, epochs=2, device=torch.device("cpu"),
                       recipe=AveragedRecipe("cpu"))
    assert len(result.history) == 2
    terms = ("triplet", "modality", "attention")
    assert all(f"loss_{t}" in result.history[0] for t in terms), result.history[0]
    assert 0.0 <= result.best["HM"] <= 1.0


# ------------------------------------------------------------------------------- against the official
def test_seeded_construction_gives_the_official_initial_weights(fx):
    torch.manual_seed(fx["seed"])
    model = CJME(small_config(fx))
    init = convert_official_state_dict(fx["state_init"])
    assert model.state_dict().keys() == init.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, init[key]), key


def test_training_step_reproduces_every_official_output_and_loss(fx):
    model = official_model(fx).train()
    b = batch(fx)
    out = model(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)
    for key, expected in fx["forward"].items():
        torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    # BN statistics after the official forward order (f_a, f_v, f_t on positives, then negatives).
    with torch.no_grad():
        class_emb = model.class_embeddings(b.class_vectors)  # train mode: BN over the C classes
    torch.testing.assert_close(class_emb, fx["class_embeddings"], **TOL)
    expected = convert_official_state_dict(fx["buffers_after_step"])
    for key, value in buffers(model).items():
        torch.testing.assert_close(value, expected[key], **TOL, msg=key)
    official = fx["losses"]
    losses = model.loss_terms(out, class_emb)
    for key in ("triplet", "modality", "attention", "total"):
        torch.testing.assert_close(losses[key], official[key], **TOL, msg=key)
    # The intermediates of the official loss: entropies, supervision, per-sample triplets.
    target, h_a, h_v = attention_supervision(out["a_p"], out["v_p"], class_emb, margin=0.1)
    torch.testing.assert_close(h_a, official["entropy_audio"], **TOL)
    torch.testing.assert_close(h_v, official["entropy_video"], **TOL)
    assert torch.equal(target, official["supervision"]) and set(target.tolist()) == {0.0, 0.5, 1.0}
    l_ta = torch.nn.functional.triplet_margin_loss(out["t_p"], out["a_p"], out["a_q"], reduction="none")
    torch.testing.assert_close(l_ta, official["l_ta"], **TOL)
    torch.testing.assert_close(official["triplet_matrix"].mean(), official["triplet"], **TOL)


def test_losses_gradients_and_the_optimiser_step_match_the_official(fx):
    model = official_model(fx).train()
    losses = model.losses(batch(fx))
    torch.testing.assert_close(losses["total"], fx["losses"]["total"], **TOL)
    # After the forward and the train-mode class pass, which moves f_t's statistics too.
    expected = convert_official_state_dict(fx["buffers_after_step"])
    for key, value in buffers(model).items():
        torch.testing.assert_close(value, expected[key], **TOL, msg=key)
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
    model = official_model(fx, dropout=fx["dropout"]["rate"]).train()
    torch.manual_seed(fx["dropout"]["seed"])
    b = batch(fx)
    out = model(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)
    with torch.no_grad():
        class_emb = model.class_embeddings(b.class_vectors)
    for key, expected in fx["dropout"]["forward"].items():
        torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    torch.testing.assert_close(class_emb, fx["dropout"]["class_embeddings"], **TOL)
    losses = model.loss_terms(out, class_emb)
    for key in ("triplet", "modality", "attention", "total"):
        torch.testing.assert_close(losses[key], fx["dropout"]["losses"][key], **TOL, msg=key)
    expected = convert_official_state_dict(fx["dropout"]["buffers_after_step"])
    for key, value in buffers(model).items():
        torch.testing.assert_close(value, expected[key], **TOL, msg=key)


def test_evaluation_distances_match_the_official_both_entry(fx):
    model = official_model(fx).eval()
    x, ev = fx["inputs"], fx["eval"]
    distances = model.distances(x["eval_audio"], x["eval_video"], x["class_vectors"])
    torch.testing.assert_close(distances, ev["distances"], **TOL)
    with torch.no_grad():
        att = model.attention_weights(x["eval_audio"], x["eval_video"])
        torch.testing.assert_close(att, ev["attention"], **TOL)
        torch.testing.assert_close(model.class_embeddings(x["class_vectors"]), ev["t_p"], **TOL)
    assert 0 < ev["hard_attention"].sum() < len(att), "the fixture must use both modalities"
    # Hard attention: each row is exactly the official audio-only or video-only distance row.
    video_rows = ev["hard_attention"].squeeze(1).bool()
    torch.testing.assert_close(distances[video_rows], ev["distances_video"][video_rows], **TOL)
    torch.testing.assert_close(distances[~video_rows], ev["distances_audio"][~video_rows], **TOL)


# ------------------------------------------------------------------------------------------ the quirks
def test_pairwise_broadcast_loss(fx):
    official, b = fx["losses"], batch(fx)
    att = fx["forward"]["attention"].squeeze(1)
    per_sample = ((1 - att) * official["l_ta"] + att * official["l_tv"]).mean()
    broadcast = official["triplet_matrix"].mean()
    assert (per_sample - broadcast).abs() > 1e-3, "the fixture must tell the two apart"
    on = official_model(fx, pairwise_broadcast_loss=True).train().losses(b)["triplet"]
    off = official_model(fx, pairwise_broadcast_loss=False).train().losses(b)["triplet"]
    torch.testing.assert_close(on, broadcast, **TOL)
    torch.testing.assert_close(off, per_sample, **TOL)


def test_hard_attention_at_eval(fx):
    x, ev = fx["inputs"], fx["eval"]
    soft = official_model(fx, hard_attention_at_eval=False).eval()
    distances = soft.distances(x["eval_audio"], x["eval_video"], x["class_vectors"])
    att = ev["attention"]
    soft = (1 - att) * ev["distances_audio"] + att * ev["distances_video"]
    torch.testing.assert_close(distances, soft, **TOL)
    assert (distances - ev["distances"]).abs().max() > 1e-2


def test_bn_per_call(fx):
    b = batch(fx)
    joint = official_model(fx, bn_per_call=False).train()
    out = joint(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)
    # One BN batch of positives and negatives: other train-mode embeddings, one running-statistics update.
    assert (out["a_p"] - fx["forward"]["a_p"]).abs().max() > 1e-3
    before = int(fx["state"]["triplet_net.embedding_net1.fc.1.num_batches_tracked"])
    assert int(joint.audio_net.net[1].num_batches_tracked) - before == 1
    per_call = official_model(fx, bn_per_call=True).train()
    per_call(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)
    assert int(per_call.audio_net.net[1].num_batches_tracked) - before == 2
    # Evaluation does not depend on it.
    x = fx["inputs"]
    joint = official_model(fx, bn_per_call=False).eval()
    distances = joint.distances(x["eval_audio"], x["eval_video"], x["class_vectors"])
    torch.testing.assert_close(distances, fx["eval"]["distances"], **TOL)


# ------------------------------------------------------------------------------------- official loading
def test_official_state_dict_conversion(fx):
    cfg = config_from_official_state_dict(fx["state"], dropout=0.0)
    quirks_off = dict.fromkeys(REFERENCE_QUIRKS, False)
    assert cfg == CJMEConfig(**{**dataclasses.asdict(small_config(fx)), **quirks_off})
    # A checkpoint dict as main.py saves it, with a DataParallel prefix.
    state = {f"module.{k}": v for k, v in fx["state"].items()}
    checkpoint = {"epoch": 3, "model": state, "metric": "score"}
    model = load_official_checkpoint(CJME(cfg), checkpoint)
    torch.testing.assert_close(model.state_dict(), convert_official_state_dict(fx["state"]))
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official_checkpoint(CJME(dataclasses.replace(cfg, hidden_dim=cfg.hidden_dim + 1)), fx["state"])
    with pytest.raises(ValueError, match="not an official CJME state dict"):
        convert_official_state_dict({"A_enc.fc.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not know"):
        convert_official_state_dict({**fx["state"], "decoder_net.x": torch.zeros(1)})
