"""ClipClap-GZSL against the official code.

tests/fixtures/methods/clipclap.pt holds what the official ClipClap_model, its train_step and its evaluation
computed on small random inputs (benchmarks/official_fixtures/clipclap.py says how it was made); the official
code is not needed here.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from test_method_helpers import CPU, TOL, load_fixture

from model import pipeline
from model.environment import seed_everything
from model.methods import build_method, config_from_dict, method_config, method_train_defaults
from model.methods import clipclap as cc
from model.methods.base import AveragedBatch
from model.metrics import gzsl_metrics
from model.published import PUBLISHED
from model.synthetic import PlantedFeatures, SyntheticSpec
from model.train import run_stage

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def official():
    return load_fixture("clipclap")


def small_config(fx: dict, **overrides) -> cc.ClipClapConfig:
    s = fx["small"]
    return cc.ClipClapConfig(**{"audio_dim": s["audio"], "video_dim": s["video"],
                                "word_dim": s["clip_text"] + s["clap_text"], "text_split": s["clip_text"],
                                "embed_dim": s["embed"], "decoder_hidden_dim": s["decoder_hidden"], "out_dim": s["out"],
                                **overrides})


NO_DROPOUT = {"dropout_encoder": 0.0, "dropout_decoder": 0.0, "dropout_additional": 0.0}


def batch_of(x: dict) -> AveragedBatch:
    """The recorded training batch (ClipClap reads no negatives: they are the positives here)."""
    word = x["class_vectors"][x["labels"]]
    return AveragedBatch(audio=x["audio"], video=x["video"], labels=x["labels"], word=word, neg_audio=x["audio"],
                         neg_video=x["video"], neg_labels=x["labels"], neg_word=word,
                         class_ids=torch.arange(len(x["class_vectors"])), class_vectors=x["class_vectors"])


def loaded(fx: dict, state_key: str = "state_init", **overrides) -> cc.ClipClap:
    model = cc.ClipClap(small_config(fx, **overrides))
    return cc.load_official_checkpoint(model, fx[state_key])


def official_step(model: cc.ClipClap, batch: AveragedBatch, lr: float) -> dict[str, torch.Tensor]:
    """What the official train_step does with one batch: losses, backward, the optimiser step, after_step."""
    model.train()
    losses = model.losses(batch)
    optimizer = model.build_optimizer(lr=lr, weight_decay=1e-5)
    optimizer.zero_grad()
    losses["total"].backward()
    optimizer.step()
    model.after_step(batch)
    return losses


def bias_names(model: torch.nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.endswith("bias") and ".net." in n}


# ------------------------------------------------------------------------------------------------ shapes


def test_shapes_and_loss_terms():
    cfg = cc.ClipClapConfig(audio_dim=7, video_dim=5, word_dim=9, text_split=4, embed_dim=16,
                            decoder_hidden_dim=12, out_dim=6)
    model = cc.ClipClap(cfg)
    g = torch.Generator().manual_seed(0)
    batch = AveragedBatch(audio=torch.randn(4, 7, generator=g), video=torch.randn(4, 5, generator=g),
                          labels=torch.tensor([0, 1, 2, 0]), word=torch.randn(4, 9, generator=g),
                          neg_audio=torch.randn(4, 7), neg_video=torch.randn(4, 5), neg_labels=torch.tensor([1, 0, 0, 1]),
                          neg_word=torch.randn(4, 9), class_ids=torch.arange(3), class_vectors=torch.randn(3, 9, generator=g))
    batch.word = batch.class_vectors[batch.labels]
    out = model(batch.audio, batch.video, batch.word)
    assert out["o"].shape == out["w"].shape == out["rho_o"].shape == out["rho_w"].shape == (4, 16)
    assert out["theta_o"].shape == out["theta_w"].shape == (4, 6)
    assert all((t >= 0).all() for t in out.values()), "every embedding net ends in a ReLU"
    losses = model.losses(batch)
    assert set(losses) == {"ce", "reg", "rec", "total"}
    torch.testing.assert_close(losses["total"], losses["ce"] + losses["reg"] + losses["rec"])
    model.eval()
    with torch.no_grad():
        d = model.distances(torch.randn(5, 7), torch.randn(5, 5), torch.randn(3, 9))
    assert d.shape == (5, 3) and (d >= 0).all()
    with pytest.raises(ValueError, match="model.audio_dim"):
        model.distances(torch.randn(5, 8), torch.randn(5, 5), torch.randn(3, 9))
    with pytest.raises(ValueError, match="model.word_dim"):
        model.distances(torch.randn(5, 7), torch.randn(5, 5), torch.randn(3, 10))


def test_loss_switches_remove_their_term():
    cfg = cc.ClipClapConfig(audio_dim=7, video_dim=5, word_dim=9, text_split=4, embed_dim=16,
                            decoder_hidden_dim=12, out_dim=6, cross_entropy_loss=False, rec_loss=False)
    model = cc.ClipClap(cfg)
    classes = torch.randn(3, 9)
    labels = torch.tensor([0, 1, 2, 0])
    batch = AveragedBatch(audio=torch.randn(4, 7), video=torch.randn(4, 5), labels=labels, word=classes[labels],
                          neg_audio=torch.randn(4, 7), neg_video=torch.randn(4, 5), neg_labels=labels,
                          neg_word=classes[labels], class_ids=torch.arange(3), class_vectors=classes)
    losses = model.losses(batch)
    assert losses["ce"] == 0 and losses["rec"] == 0 and losses["reg"] > 0
    torch.testing.assert_close(losses["total"], losses["reg"])
    losses["total"].backward()
    assert model.input_decoder.net[0].weight.grad is None, "without rec, D_o gets no gradient"


# ----------------------------------------------------------------------------------- faithfulness (fixture)


def test_parameter_counts_equal_the_official(official):
    for modality, count in official["param_counts"].items():
        model = cc.ClipClap(cc.dataset_config("ucf", modality=modality))
        assert sum(p.numel() for p in model.parameters()) == count, modality
    assert official["param_counts"]["both"] == 2_237_824


def test_seeded_init_is_the_official_init(official):
    torch.manual_seed(official["seed"])
    model = cc.ClipClap(small_config(official, **NO_DROPOUT))
    init = cc.convert_official_state_dict(official["state_init"])
    assert model.state_dict().keys() == init.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, init[key]), key


def test_official_forward_losses_gradients_and_adam_step(official):
    fx = official
    model = loaded(fx, **NO_DROPOUT).train()
    batch = batch_of(fx["inputs"])
    out = model(batch.audio, batch.video, batch.word)
    for key in ("w", "theta_o", "rho_o", "theta_w", "rho_w"):
        torch.testing.assert_close(out[key], fx["forward"][key], **TOL, msg=key)
    # on a copy: each train-mode pass moves the BN statistics, checked below
    torch.testing.assert_close(copy.deepcopy(model).class_embeddings(batch.class_vectors),
                               fx["losses"]["class_embeddings"], **TOL)
    losses = model.loss_terms(out, batch.class_vectors, batch.labels)
    for key in ("ce", "reg", "rec", "total"):
        torch.testing.assert_close(losses[key], fx["losses"][key], **TOL, msg=key)

    # Two forward passes ran (the pair, then the class vectors for the cross-entropy): the BN statistics too.
    after = cc.convert_official_state_dict(fx["state_after_step"])
    for key, value in model.state_dict().items():
        if "running" in key or "num_batches" in key:
            torch.testing.assert_close(value, after[key], **TOL, msg=key)

    losses["total"].backward()
    grads = cc.convert_official_state_dict(fx["grads"])
    params = dict(model.named_parameters())
    assert set(grads) == set(params), "the official optimiser steps every parameter"
    for name, p in params.items():
        torch.testing.assert_close(p.grad, grads[name], **TOL, msg=name)
    optimizer = model.build_optimizer(lr=fx["lr"], weight_decay=1e-5)
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert optimizer.param_groups[0][key] == fx["optimizer_hparams"][key], key
    optimizer.step()
    # Every Linear feeds a BatchNorm: its bias has a true gradient of 0 and rounding noise that Adam's first step
    # turns into +-lr; only the size of that step is reproducible.
    biases = bias_names(model)
    for key, value in model.state_dict().items():
        if key in biases:
            assert (value - after[key]).abs().max() <= 2 * fx["lr"] + 1e-6, key
        elif "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(value, after[key], **TOL, msg=key)


@pytest.mark.parametrize("quirk", [False, True])
def test_post_step_pass_moves_the_statistics_as_the_official_train_step(official, quirk):
    fx = official
    model = loaded(fx, **NO_DROPOUT, post_step_train_embeddings=quirk)
    official_step(model, batch_of(fx["inputs"]), fx["lr"])
    expected = cc.convert_official_state_dict(fx["state_after_train_step" if quirk else "state_after_step"])
    for key, value in model.state_dict().items():
        if "running" in key or "num_batches" in key:
            torch.testing.assert_close(value, expected[key], **TOL, msg=key)


def test_dropout_masks_are_drawn_in_the_official_order(official):
    fx, run = official, official["dropout_run"]
    model = loaded(fx, post_step_train_embeddings=True)  # the official dropouts: 0.1 everywhere
    assert (model.cfg.dropout_encoder, model.cfg.dropout_decoder, model.cfg.dropout_additional) == (0.1, 0.1, 0.1)
    batch = batch_of(fx["inputs"])
    torch.manual_seed(run["seed"])
    model.train()
    out = model(batch.audio, batch.video, batch.word)
    torch.testing.assert_close(out["theta_o"], run["theta_o"], **TOL)
    losses = model.loss_terms(out, batch.class_vectors, batch.labels)
    torch.testing.assert_close(losses["total"], run["total"], **TOL)
    torch.testing.assert_close(losses["ce"], run["ce"], **TOL)
    optimizer = model.build_optimizer(lr=fx["lr"], weight_decay=1e-5)
    losses["total"].backward()
    optimizer.step()
    model.after_step(batch)
    expected = cc.convert_official_state_dict(run["buffers_after_train_step"])
    for key, value in expected.items():
        if "running" in key:
            torch.testing.assert_close(model.state_dict()[key], value, **TOL, msg=key)


def test_official_evaluation_distances_and_metrics(official):
    fx, x = official, official["inputs"]
    model = loaded(fx, "state").eval()
    with torch.no_grad():
        d = model.distances(x["eval_audio"], x["eval_video"], x["all_class_vectors"])
    torch.testing.assert_close(d, fx["evaluation"]["distances"], **TOL)
    res = fx["evaluation"]["result"]
    n_seen = len(x["class_vectors"])
    unseen = torch.arange(len(x["all_class_vectors"])) >= n_seen
    ours = gzsl_metrics(d, x["eval_labels"], unseen, bias=res["beta"])
    assert (ours.S, ours.U, ours.HM, ours.ZSL) == pytest.approx((res["seen"], res["unseen"], res["hm"], res["zsl"]),
                                                                abs=1e-6)


def test_official_evaluation_of_a_trained_model(official):
    """After 60 official steps on planted classes: the same distances, and calibrated stacking over the official
    beta grid (0..5, step 1/15) picks the official beta and S/U/HM/ZSL, none of them trivial."""
    t = official["trained"]
    x = t["inputs"]
    model = cc.load_official_checkpoint(cc.ClipClap(small_config(official)), t["state"]).eval()
    with torch.no_grad():
        d = model.distances(x["eval_audio"], x["eval_video"], x["all_class_vectors"])
    torch.testing.assert_close(d, t["distances"], **TOL)
    res = t["result"]
    assert 0 < res["hm"] < 1 and res["beta"] > 0 and res["unseen"] > 0.5
    unseen = torch.arange(t["classes"]) >= t["seen"]
    ours = gzsl_metrics(d, x["eval_labels"], unseen, grid=torch.linspace(0, 5, 76))
    assert ours.bias == pytest.approx(res["beta"], abs=1e-6)
    assert (ours.S, ours.U, ours.HM, ours.ZSL) == pytest.approx((res["seen"], res["unseen"], res["hm"], res["zsl"]),
                                                                abs=1e-6)


def variant_config(fx: dict, key: str) -> cc.ClipClapConfig:
    modality, words, bn = key.split("/")
    s = fx["small"]
    return cc.ClipClapConfig(audio_dim=1024, video_dim=512, word_dim=1536, text_split=512, modality=modality,
                             word_embeddings="clap" if words == "wavcaps" else words, batch_norm=bn == "bn",
                             embed_dim=s["embed"], decoder_hidden_dim=s["decoder_hidden"], out_dim=s["out"],
                             post_step_train_embeddings=True, **NO_DROPOUT)


@pytest.mark.parametrize("key", ["audio/both/bn", "video/both/bn", "both/clip/bn", "both/wavcaps/bn",
                                 "both/both/nobn"])
def test_other_official_settings(official, key):
    """--modality audio / video, --word_embeddings clip / wavcaps, --embeddings_batch_norm False: the official
    state layout, forward, losses and (after one official step) evaluation distances, from the same seed."""
    fx, v = official, official["variants"][key]
    torch.manual_seed(fx["seed"])
    model = cc.ClipClap(variant_config(fx, key))
    assert list(cc.convert_official_state_dict(dict.fromkeys(v["state_keys"], torch.zeros(1)))) == list(
        model.state_dict())
    x = fx["full_inputs"]
    batch = batch_of(x)
    model.train()
    out = model(batch.audio, batch.video, batch.word)
    for k, value in v["forward"].items():
        torch.testing.assert_close(out[k], value, **TOL, msg=k)
    losses = model.loss_terms(out, batch.class_vectors, batch.labels)
    for k in ("ce", "reg", "rec", "total"):
        torch.testing.assert_close(losses[k], v[k], **TOL, msg=k)
    optimizer = model.build_optimizer(lr=fx["lr"], weight_decay=1e-5)
    losses["total"].backward()
    optimizer.step()
    model.after_step(batch)
    model.eval()
    with torch.no_grad():
        d = model.distances(x["eval_audio"], x["eval_video"], x["all_class_vectors"])
    # The Adam step of the biases before a BN is +-lr of rounding noise (see above): distances agree to ~lr.
    torch.testing.assert_close(d, v["distances"], rtol=0, atol=5e-3)


def test_official_checkpoint_forms_and_errors(official, tmp_path):
    fx = official
    cfg = cc.config_from_official_state_dict(fx["state"], **{k: getattr(small_config(fx), k) for k in (
        "audio_dim", "video_dim", "word_dim", "text_split")})
    assert cfg == small_config(fx)
    checkpoint = {"epoch": 3, "model": {f"module.{k}": v for k, v in fx["state"].items()}, "metric": "score"}
    path = tmp_path / "ClipClap_model_score.pt"
    torch.save(checkpoint, path)
    model = cc.load_official_checkpoint(cc.ClipClap(cfg), path)
    torch.testing.assert_close(model.state_dict(), cc.convert_official_state_dict(fx["state"]))
    with pytest.raises(ValueError, match="shape mismatches"):
        cc.load_official_checkpoint(cc.ClipClap(dataclasses.replace(cfg, out_dim=cfg.out_dim + 1)), fx["state"])
    with pytest.raises(ValueError, match="not an official ClipClap_model state dict"):
        cc.convert_official_state_dict({"A_enc.fc.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not know"):
        cc.convert_official_state_dict({**fx["state"], "pos_emb1D": torch.zeros(1)})
    with pytest.raises(ValueError, match="pass the run's audio_dim"):
        cc.config_from_official_state_dict(fx["state"])  # the defaults' 1536-d inputs
    with pytest.raises(FileNotFoundError):
        cc.load_official_checkpoint(cc.ClipClap(cfg), tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------- config and registry


def test_config_presets_and_registry():
    for ds in ("ucf", "vggsound", "activitynet"):
        assert cc.dataset_config(ds) == cc.ClipClapConfig()
        assert not cc.dataset_config(ds).post_step_train_embeddings
        assert cc.dataset_config(ds, preset="reference").post_step_train_embeddings
    assert cc.ClipClap.published == PUBLISHED["clipclap"] and set(cc.ClipClap.published) == set(cc.PRESETS)
    assert PUBLISHED["clipclap"]["ucf"]["HM"] == 55.97 and PUBLISHED["clipclap"]["activitynet"]["ZSL"] == 22.76
    ucf, vgg = method_train_defaults("clipclap", "ucf"), method_train_defaults("clipclap", "vggsound")
    assert (ucf["lr"], ucf["epochs"], ucf["batch_size"], ucf["batches_per_epoch"]) == (7e-5, 20, 64, 300)
    assert (vgg["lr"], vgg["epochs"], vgg["weight_decay"]) == (1e-4, 15, 1e-5)
    assert method_train_defaults("clipclap", "activitynet")["lr"] == 1e-4
    cfg = method_config("clipclap", {"out_dim": 16}, dataset="vggsound", preset="reference",
                        dims={"audio_dim": 5, "video_dim": 7, "word_dim": 20, "audio_input_scale": 1.0})
    assert (cfg.out_dim, cfg.audio_dim, cfg.video_dim, cfg.word_dim, cfg.post_step_train_embeddings) == (
        16, 5, 7, 20, True)
    assert isinstance(build_method("clipclap", cfg), cc.ClipClap)
    assert config_from_dict("clipclap", cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="modality"):
        cc.ClipClapConfig(modality="text")
    with pytest.raises(ValueError, match="word_embeddings"):
        cc.ClipClapConfig(word_embeddings="wavcaps")
    with pytest.raises(ValueError, match="text_split"):
        cc.ClipClapConfig(word_dim=300, text_split=512, modality="audio")
    cc.ClipClapConfig(word_dim=300)  # one text backend is fine when both modalities read the whole vector
    with pytest.raises(ValueError, match="unknown dataset"):
        cc.dataset_config("ucf101")
    with pytest.raises(ValueError, match="holds the method"):
        cc.build("avca")


# ---------------------------------------------------------------------------------------------- learning


def test_learns_planted_structure_through_the_shared_protocol():
    """Built through the pipeline's config path and trained by the shared loop and the averaged recipe:
    seen and unseen classes well above chance within seconds of CPU."""
    gen = PlantedFeatures(SyntheticSpec(n_seen=8, n_unseen=4, video_dim=256, signal=0.5, seed=0))
    train, val = gen.split("train", 30, range(8)), gen.split("val", 10, range(12))
    cfg = {"dataset": "demo", "method": "clipclap",
           "model": {"audio_dim": 128, "video_dim": 256, "embed_dim": 64, "decoder_hidden_dim": 64, "out_dim": 16},
           "train": {"lr": 1e-3, "batch_size": 32, "batches_per_epoch": 30, "epochs": 5, "progress": False,
                     "lr_scheduler": False}}
    exp = pipeline.experiment_config(cfg, word_dim=train.class_vectors.shape[1])
    seed_everything(0)
    net = pipeline.build_model(exp)
    assert isinstance(net, cc.ClipClap)
    res = run_stage(net, train, val, exp.train, seed=0, epochs=exp.train.epochs, device=CPU, eval_cfg=exp.evaluate,
                    recipe=pipeline.recipe_for(exp, CPU))
    best = res.best
    # 12 candidate classes in GZSL (chance ~0.08); 4 unseen candidates in ZSL (chance 0.25)
    assert best["S"] > 0.3 and best["U"] > 0.3 and best["HM"] > 0.3, best
    assert best["ZSL"] >= 0.45, best
