"""AVGZSLNet against the official code: tests/fixtures/methods/avgzslnet.pt holds what the official model
computed (benchmarks/official_fixtures/avgzslnet.py), at small sizes, from its own state dict and inputs."""

from __future__ import annotations

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

from model.methods.avgzslnet import (
    PRESETS,
    REFERENCE_QUIRKS,
    AVGZSLNet,
    AVGZSLNetConfig,
    convert_official_state_dict,
    dataset_config,
    load_official_checkpoint,
)
from model.methods.base import AveragedBatch

pytestmark = pytest.mark.usefixtures("single_torch_thread")

OFFICIAL_PARAMS_UCF = 4_596_672  # reference-avca-code.md; the fixture re-measures it
TERMS = ("rec", "cta", "ctv", "ta", "at", "tv", "vt", "total")


@pytest.fixture(scope="module")
def fx() -> dict:
    return load_fixture("avgzslnet")


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


def forward(model: AVGZSLNet, b: AveragedBatch) -> dict[str, torch.Tensor]:
    return model(b.audio, b.video, b.word, b.neg_audio, b.neg_video, b.neg_word)


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
    b = random_batch(B, C, audio_dim=5, video_dim=7, word_dim=9)
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
    assert AVGZSLNet.published["ucf"] == {"S": 74.79, "U": 24.15, "HM": 36.51, "ZSL": 31.51}
    check_config_and_presets("avgzslnet", AVGZSLNet, AVGZSLNetConfig, {"dropout_decoder": 1.0})


def test_registry_module_api():
    check_registry_module_api("avgzslnet", AVGZSLNet)


def test_trains_and_evaluates_through_the_shared_averaged_recipe():
    history = train_through_the_averaged_recipe("avgzslnet")
    assert all(f"loss_{t}" in history for t in TERMS[:-1]), history


# ------------------------------------------------------------------------------- against the official
def test_seeded_construction_gives_the_official_initial_weights(fx):
    check_seeded_construction(fx, lambda: AVGZSLNet(small_config(fx)), convert_official_state_dict)


def test_training_step_reproduces_every_official_output_and_loss(fx):
    model = official_model(fx).train()
    out = forward(model, fixture_batch(fx))
    for key, expected in fx["forward"].items():
        if key != "x_t_p":  # the official forward hands the word vectors through
            torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    # BN statistics after the official call order (f_a, f_v, f_t on positives, negatives; decoder 5 times).
    check_buffers(model, fx["buffers_after_step"], convert_official_state_dict)
    losses = model.loss_terms(out, fx["forward"]["x_t_p"])
    check_close(losses, fx["losses"], TERMS)


def test_losses_gradients_and_the_optimiser_step_match_the_official(fx):
    model = official_model(fx).train()
    losses = model.losses(fixture_batch(fx))
    check_close(losses, fx["losses"], TERMS)
    check_gradients_and_adam_step(model, losses["total"], fx, convert_official_state_dict, pre_bn_biases(model))


def test_dropout_masks_are_drawn_in_the_official_order(fx):
    rates = fx["dropout"]["rates"]
    model = official_model(fx, dropout_embedding=rates["embedding_dropout"],
                           dropout_decoder=rates["decoder_dropout"]).train()
    torch.manual_seed(fx["dropout"]["seed"])
    out = forward(model, fixture_batch(fx))
    for key, expected in fx["dropout"]["forward"].items():
        if key != "x_t_p":
            torch.testing.assert_close(out[key], expected, **TOL, msg=key)
    losses = model.loss_terms(out, fx["inputs"]["word"])
    check_close(losses, fx["dropout"]["losses"], TERMS)
    check_buffers(model, fx["dropout"]["buffers_after_step"], convert_official_state_dict)


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
    b = fixture_batch(fx)
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
    check_official_checkpoint_forms("avgzslnet", fx, small_config(fx), {"dropout_embedding": 0.0, "dropout_decoder": 0.0}, foreign_key="attention_model.0.weight",
                                    unknown_key="attention_model.x")
