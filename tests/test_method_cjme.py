"""CJME against the official code: tests/fixtures/methods/cjme.pt holds what the official model computed
(benchmarks/official_fixtures/cjme.py), at small sizes, from its own state dict and inputs."""

from __future__ import annotations

import math

import pytest
import torch
from test_method_helpers import (
    TOL,
    check_buffers,
    check_close,
    check_config_and_presets,
    check_gradients_and_adam_step,
    check_official_checkpoint_forms,
    check_registry_module_api,
    check_seeded_construction,
    fixture_batch,
    load_fixture,
    random_batch,
    train_through_the_averaged_recipe,
)

from model.methods.cjme import (
    CJME,
    PRESETS,
    REFERENCE_QUIRKS,
    CJMEConfig,
    attention_supervision,
    convert_official_state_dict,
    dataset_config,
    load_official_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

OFFICIAL_PARAMS_UCF = 4_585_557  # reference-avca-code.md; the fixture re-measures it


@pytest.fixture(scope="module")
def fx() -> dict:
    return load_fixture("cjme")


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
    b = random_batch(B, C, audio_dim=5, video_dim=7, word_dim=9)
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
    assert CJME.published["ucf"] == {"S": 33.89, "U": 24.82, "HM": 28.65, "ZSL": 29.01}
    check_config_and_presets("cjme", CJME, CJMEConfig, {"dropout": 1.0})


def test_registry_module_api():
    check_registry_module_api("cjme", CJME)


def test_trains_and_evaluates_through_the_shared_averaged_recipe():
    history = train_through_the_averaged_recipe("cjme")
    assert all(f"loss_{t}" in history for t in ("triplet", "modality", "attention")), history


def test_trains_under_bf16_autocast_with_float32_attention_supervision():
    history = train_through_the_averaged_recipe("cjme", amp="bf16")
    assert all(math.isfinite(history[f"loss_{t}"]) for t in ("triplet", "modality", "attention")), history
    # Under autocast the entropies and the target are float32 and equal to those of the same embeddings
    # computed outside it (bf16 scores would fail Categorical's simplex check).
    g = torch.Generator().manual_seed(0)
    a, v, classes = (torch.randn(n, 16, generator=g) * 4 for n in (64, 64, 30))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = attention_supervision(a, v, classes, margin=0.1)
    outside = attention_supervision(a, v, classes, margin=0.1)
    assert all(t.dtype == torch.float32 and torch.equal(t, u) for t, u in zip(inside, outside, strict=True))


# ------------------------------------------------------------------------------- against the official
def test_seeded_construction_gives_the_official_initial_weights(fx):
    check_seeded_construction(fx, lambda: CJME(small_config(fx)), convert_official_state_dict)


def test_training_step_reproduces_every_official_output_and_loss(fx):
    model = official_model(fx).train()
    b = fixture_batch(fx)
    out = model(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)
    for key, expected in fx["forward"].items():
        torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    # BN statistics after the official forward order (f_a, f_v, f_t on positives, then negatives).
    with torch.no_grad():
        class_emb = model.class_embeddings(b.class_vectors)  # train mode: BN over the C classes
    torch.testing.assert_close(class_emb, fx["class_embeddings"], **TOL)
    check_buffers(model, fx["buffers_after_step"], convert_official_state_dict)
    official = fx["losses"]
    losses = model.loss_terms(out, class_emb)
    check_close(losses, official, ("triplet", "modality", "attention", "total"))
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
    losses = model.losses(fixture_batch(fx))
    torch.testing.assert_close(losses["total"], fx["losses"]["total"], **TOL)
    # After the forward and the train-mode class pass, which moves f_t's statistics too.
    check_buffers(model, fx["buffers_after_step"], convert_official_state_dict)
    check_gradients_and_adam_step(model, losses["total"], fx, convert_official_state_dict, pre_bn_biases(model))


def test_dropout_masks_are_drawn_in_the_official_order(fx):
    model = official_model(fx, dropout=fx["dropout"]["rate"]).train()
    torch.manual_seed(fx["dropout"]["seed"])
    b = fixture_batch(fx)
    out = model(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)
    with torch.no_grad():
        class_emb = model.class_embeddings(b.class_vectors)
    for key, expected in fx["dropout"]["forward"].items():
        torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    torch.testing.assert_close(class_emb, fx["dropout"]["class_embeddings"], **TOL)
    losses = model.loss_terms(out, class_emb)
    check_close(losses, fx["dropout"]["losses"], ("triplet", "modality", "attention", "total"))
    check_buffers(model, fx["dropout"]["buffers_after_step"], convert_official_state_dict)


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
    official, b = fx["losses"], fixture_batch(fx)
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
    b = fixture_batch(fx)
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
    check_official_checkpoint_forms("cjme", fx, small_config(fx), {"dropout": 0.0}, foreign_key="A_enc.fc.0.weight",
                                    unknown_key="decoder_net.x")
