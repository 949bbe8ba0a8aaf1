"""AVCA against the official implementation.

tests/fixtures/methods/avca.pt was recorded from the official AVCA at small sizes by
benchmarks/official_fixtures/avca.py (its docstring says how and from which commit): the official state dict,
inputs, forward outputs, loss terms, gradients, optimiser step, BN statistics and evaluation distances.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_method_helpers import TOL, fixture_batch, load_fixture

from model.methods import get_method_module
from model.methods.avca import (
    AVCA,
    PRESETS,
    REFERENCE_QUIRKS,
    TORCH_BN_MOMENTUM,
    AVCAConfig,
    convert_official_state_dict,
    dataset_config,
)
from model.methods.base import AveragedBatch

pytestmark = pytest.mark.usefixtures("single_torch_thread")

OFFICIAL_PARAM_COUNT = 3_331_508  # official AVCA, UCF cls config (reference-avca-code.md)


@pytest.fixture(scope="module")
def fx() -> dict:
    return load_fixture("avca")


def small_config(fx: dict, *, dropout: bool = False, **overrides) -> AVCAConfig:
    """The fixture's sizes, the UCF preset with every quirk on, dropout 0 unless ``dropout``."""
    s = fx["small"]
    values = {"audio_dim": s["audio"], "video_dim": s["video"], "word_dim": s["word"], "dim": s["dim"],
              "encoder_hidden_dim": s["encoder_hidden"], "decoder_hidden_dim": s["decoder_hidden"],
              "out_dim": s["out"], "depth": s["depth"], "heads": s["heads"], "dim_head": s["dim_head"],
              "mlp_dim": s["mlp"]}
    if not dropout:
        values.update(dropout_embedding=0.0, dropout_decoder=0.0, dropout_additional=0.0)
    return dataset_config("ucf", preset="reference", **{**values, **overrides})


def official_model(fx: dict, **kw) -> AVCA:
    return AVCA(small_config(fx, **kw)).load_official_state_dict(fx["state_init"]).train()


def official_buffers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = convert_official_state_dict(state)
    return {k: v for k, v in converted.items() if "running_" in k or "num_batches" in k}


def step(model: AVCA, batch: AveragedBatch, fx: dict) -> dict[str, torch.Tensor]:
    """One training step as the official train_step: losses, backward, Adam, the post-step pass."""
    hp = fx["optimizer_hparams"]
    opt = model.build_optimizer(lr=hp["lr"], weight_decay=hp["weight_decay"])
    losses = model.losses(batch)
    opt.zero_grad()
    losses["total"].backward()
    opt.step()
    model.after_step(batch)
    return losses


# ------------------------------------------------------------------------------------------ structure


def test_shapes_and_finite_losses():
    torch.manual_seed(0)
    cfg = AVCAConfig(audio_dim=5, video_dim=7, word_dim=11, dim=9, encoder_hidden_dim=6, decoder_hidden_dim=4,
                     out_dim=3, heads=2, dim_head=4, mlp_dim=5)
    model = AVCA(cfg).train()
    B, C = 4, 6
    words = torch.randn(C, 11)
    batch = AveragedBatch(audio=torch.rand(B, 5) * 255, video=torch.rand(B, 7), labels=torch.arange(B),
                          word=words[:B], neg_audio=torch.rand(B, 5) * 255, neg_video=torch.rand(B, 7),
                          neg_labels=torch.arange(1, B + 1), neg_word=words[1:B + 1],
                          class_ids=torch.arange(C), class_vectors=words)
    out = model.training_outputs(batch)
    for key, width in {"phi_a": 9, "phi_v_neg": 9, "phi_attn": None, "theta_w": 3, "theta_a_neg": 3,
                       "theta_v": 3, "rho_w": 11, "rho_a": 11, "rho_v_neg": 11, "phi_a_rec": 9}.items():
        expected = (B, 2, 9) if width is None else (B, width)
        assert out[key].shape == expected, f"{key}: {tuple(out[key].shape)} != {expected}"
        assert (out[key] >= 0).all() or width is None, f"{key} must be post-ReLU"
    losses = model.losses(batch)
    assert set(losses) == {"l_rec", "l_ct", "l_w", "l_t", "l_r", "total"}
    assert all(v.shape == () and torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        d = model.distances(torch.rand(7, 5) * 255, torch.rand(7, 7), words)
    assert d.shape == (7, C) and (d >= 0).all()
    with pytest.raises(AssertionError, match=r"video must be \(B, 7\)"):
        model.distances(torch.rand(7, 5), torch.rand(7, 8), words)


@pytest.mark.parametrize("dataset", sorted(PRESETS))
def test_parameter_count_equals_official(dataset, fx):
    assert fx["param_count_ucf"] == OFFICIAL_PARAM_COUNT
    model = AVCA(dataset_config(dataset))  # same architecture on every dataset, only dropouts differ
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAM_COUNT


def test_small_parameter_count_and_state_dict_keys(fx):
    model = AVCA(small_config(fx))
    assert sum(p.numel() for p in model.parameters()) == fx["param_count_small"]
    converted = convert_official_state_dict(fx["state_init"])
    assert set(converted) == set(model.state_dict())
    # A checkpoint dict as the official save_best_model writes it is accepted too.
    ckpt = {"epoch": 1, "model": fx["state_init"], "optimizer": {}, "metric": "score"}
    assert set(convert_official_state_dict(ckpt)) == set(converted)
    with pytest.raises(ValueError, match="keys this model does not know"):
        convert_official_state_dict({**fx["state_init"], "A_enc.fc.9.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not match this config"):
        AVCA(small_config(fx, out_dim=9)).load_official_state_dict(fx["state_init"])


def test_seeded_init_is_the_official_init(fx):
    torch.manual_seed(fx["seed"])
    ours = AVCA(small_config(fx)).state_dict()
    official = convert_official_state_dict(fx["state_init"])
    # pos_emb1D: the fixture replaces the official randn(2, 300) by randn(2, dim) (see its docstring).
    for key in sorted(set(ours) - {"pos_embedding"}):
        assert torch.equal(ours[key], official[key]), key


def test_published_numbers():
    assert set(AVCA.published) == set(PRESETS)
    assert AVCA.published["ucf"] == {"S": 63.15, "U": 30.72, "HM": 41.34, "ZSL": 37.72}
    assert get_method_module("avca").AVCA is AVCA and AVCA.name == "avca"


# --------------------------------------------------------------------------------- against the official


def test_forward_outputs_match_official(fx):
    out = official_model(fx).training_outputs(fixture_batch(fx))
    assert set(fx["forward"]) <= set(out), set(fx["forward"]) - set(out)
    for key, expected in fx["forward"].items():
        torch.testing.assert_close(out[key], expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")


def test_every_loss_term_matches_official(fx):
    losses = official_model(fx).losses(fixture_batch(fx))
    for key in ("l_rec", "l_ct", "l_w", "l_t", "l_r", "total"):
        torch.testing.assert_close(losses[key], fx["losses"][key], **TOL, msg=lambda m, k=key: f"{k}: {m}")


def test_bn_running_stats_after_the_forward_match_official(fx):
    model = official_model(fx)
    model.losses(fixture_batch(fx))
    # The optimiser step leaves buffers alone: the recorded state holds the statistics after the forward.
    for key, expected in official_buffers(fx["state_after_step"]).items():
        torch.testing.assert_close(model.state_dict()[key], expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")


def test_gradients_match_official_and_reach_every_stepped_parameter(fx):
    model = official_model(fx)
    model.losses(fixture_batch(fx))["total"].backward()
    grads = convert_official_state_dict(fx["grads"])
    pos_grad = grads.pop("pos_embedding")  # the official pos_emb1D gets a gradient but is never stepped
    named = dict(model.named_parameters())
    stepped = {id(p) for g in model.build_optimizer(1e-3, 1e-5).param_groups for p in g["params"]}
    assert {k for k, p in named.items() if id(p) in stepped} == set(grads)
    for key, expected in grads.items():
        assert named[key].grad is not None, f"no gradient reaches {key}"
        torch.testing.assert_close(named[key].grad, expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")
    assert model.pos_embedding.grad is None

    # With the quirk off the position embeddings train, with the gradient the official code computes.
    model = official_model(fx, frozen_pos_embedding=False)
    model.losses(fixture_batch(fx))["total"].backward()
    torch.testing.assert_close(model.pos_embedding.grad, pos_grad, **TOL)


def test_optimizer_is_optimizer_gen_and_one_step_matches_official(fx):
    model = official_model(fx)
    hp = fx["optimizer_hparams"]
    assert (hp["lr"], hp["weight_decay"], hp["betas"], hp["eps"]) == (1e-3, 1e-5, (0.9, 0.999), 1e-8)
    opt = model.build_optimizer(lr=hp["lr"], weight_decay=hp["weight_decay"])
    names = {id(p): n for n, p in model.named_parameters()}
    official_order = list(convert_official_state_dict(
        {**{n: torch.zeros(0) for n in fx["optimizer_params"]}, "pos_emb1D": torch.zeros(0)}))
    official_order.remove("pos_embedding")
    assert [names[id(p)] for g in opt.param_groups for p in g["params"]] == official_order
    losses = model.losses(fixture_batch(fx))
    opt.zero_grad()
    losses["total"].backward()
    opt.step()
    state = model.state_dict()
    for key, expected in convert_official_state_dict(fx["state_after_step"]).items():
        torch.testing.assert_close(state[key], expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")


def test_post_step_pass_and_evaluation_match_official(fx):
    model = official_model(fx)
    step(model, fixture_batch(fx), fx)
    state = model.state_dict()
    for key, expected in official_buffers(fx["buffers_after_post_step"]).items():
        torch.testing.assert_close(state[key], expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")

    x, ev = fx["inputs"], fx["eval"]
    model.eval()
    with torch.no_grad():
        theta_a, theta_v, theta_w = model.embeddings(x["eval_audio"], x["eval_video"], x["class_vectors"])
        distances = model.distances(x["eval_audio"], x["eval_video"], x["class_vectors"])
    got = {"theta_a": theta_a, "theta_v": theta_v, "theta_w": theta_w, "distances": distances}
    for name, value in got.items():
        torch.testing.assert_close(value, ev[name], **TOL, msg=lambda m, k=name: f"{k}: {m}")
    assert torch.equal(distances.argmin(1), ev["distances"].argmin(1))


def test_dropout_masks_are_drawn_in_the_official_order(fx):
    rec = fx["dropout"]
    model = official_model(fx, dropout=True)
    assert (model.cfg.dropout_embedding, model.cfg.dropout_decoder, model.cfg.dropout_additional) == (
        rec["rates"]["dropout_encoder"], rec["rates"]["dropout_decoder"], rec["rates"]["additional_dropout"])
    batch = fixture_batch(fx)
    torch.manual_seed(rec["seed"])
    hp = fx["optimizer_hparams"]
    opt = model.build_optimizer(lr=hp["lr"], weight_decay=hp["weight_decay"])
    out = model.training_outputs(batch)
    losses = model.losses_from(out)
    opt.zero_grad()
    losses["total"].backward()
    opt.step()
    model.after_step(batch)
    torch.testing.assert_close(out["theta_v"], rec["theta_v"], **TOL)
    for key in ("l_rec", "l_ct", "l_w", "l_t", "l_r", "total"):
        torch.testing.assert_close(losses[key], rec["losses"][key], **TOL, msg=lambda m, k=key: f"{k}: {m}")
    state = model.state_dict()
    for key, expected in official_buffers(rec["buffers_after_post_step"]).items():
        torch.testing.assert_close(state[key], expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")


# ----------------------------------------------------------------------------------------- the quirks


def test_quirk_presets():
    fields = {f.name: f for f in dataclasses.fields(AVCAConfig)}
    for key in REFERENCE_QUIRKS:
        assert key in fields and fields[key].default is False, f"{key}: a bool config field, off by default"
    assert all(getattr(dataset_config("ucf", preset="reference"), k) for k in REFERENCE_QUIRKS)
    assert not any(getattr(dataset_config("ucf", preset="paper"), k) for k in REFERENCE_QUIRKS)
    one_on = dataset_config("vggsound", preset="paper", post_step_train_embeddings=True)
    assert one_on.post_step_train_embeddings and not one_on.frozen_pos_embedding
    assert dataset_config("activitynet").dropout_additional == 0.1
    with pytest.raises(ValueError, match="unknown key"):
        dataset_config("ucf", momentun=0.1)
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_config("audioset")


def test_quirk_frozen_pos_embedding(fx):
    batch = fixture_batch(fx)
    for frozen in (True, False):
        model = official_model(fx, frozen_pos_embedding=frozen)
        before = model.pos_embedding.detach().clone()
        in_optimizer = any(p is model.pos_embedding for g in model.build_optimizer(1e-3, 0).param_groups
                           for p in g["params"])
        step(model, batch, fx)
        assert in_optimizer is not frozen and model.pos_embedding.requires_grad is not frozen
        assert torch.equal(model.pos_embedding, before) is frozen


def test_quirk_momentum_second_bn_only(fx):
    two_layer = ("audio_encoder", "video_encoder", "audio_proj", "video_proj")
    one_layer = ("word_proj", "decoder", "audio_rec", "video_rec")
    for quirk in (True, False):
        model = AVCA(small_config(fx, momentum_second_bn_only=quirk))
        other = TORCH_BN_MOMENTUM if quirk else 0.99
        for name in two_layer:
            net = getattr(model, name)
            assert (net.bn1.momentum, net.bn2.momentum) == (other, 0.99), name
        for name in one_layer:
            assert getattr(model, name).bn1.momentum == other and getattr(model, name).bn2 is None, name


def test_quirk_unused_projection_bn_updates(fx):
    batch = fixture_batch(fx)
    runs = {}
    for quirk in (True, False):
        model = official_model(fx, unused_projection_bn_updates=quirk)
        runs[quirk] = (model.losses(batch), model.state_dict())
    (loss_on, state_on), (loss_off, state_off) = runs[True], runs[False]
    for key in loss_on:  # the outputs are unused: the losses do not change...
        assert torch.equal(loss_on[key], loss_off[key]), key
    for key in state_on:  # ...only the A_proj / V_proj BN statistics, one more batch each
        changed = not torch.equal(state_on[key], state_off[key])
        is_stat = "running_" in key or "num_batches" in key
        proj_stat = key.startswith(("audio_proj.", "video_proj.")) and is_stat
        assert changed is proj_stat, key
    assert int(state_on["audio_proj.bn1.num_batches_tracked"]) == 3
    assert int(state_off["audio_proj.bn1.num_batches_tracked"]) == 2


def test_quirk_post_step_train_embeddings(fx):
    batch = fixture_batch(fx)
    def moved(model: AVCA) -> set[str]:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.after_step(batch)
        return {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}

    on = official_model(fx, post_step_train_embeddings=True)
    assert moved(on) == {"audio_encoder", "video_encoder", "word_proj", "video_proj", "audio_proj"}
    assert moved(on.eval()) == set()  # in eval mode the pass changes nothing
    assert moved(official_model(fx, post_step_train_embeddings=False)) == set()


def test_loss_switches(fx):
    batch = fixture_batch(fx)
    full = official_model(fx).losses(batch)
    part = official_model(fx, additional_triplets_loss=False, reg_loss=False).losses(batch)
    assert part["l_t"] == 0 and part["l_r"] == 0
    torch.testing.assert_close(part["total"], full["l_rec"] + full["l_ct"] + full["l_w"])
    weighted = official_model(fx, first_additional_triplet=0.0).losses(batch)
    assert 0 < weighted["l_t"] < full["l_t"]


def test_registry_module_api():
    from model.methods import build_method, config_from_dict, method_config, method_train_defaults

    dims = {"audio_dim": 128, "video_dim": 4096, "word_dim": 384, "audio_input_scale": 255.0}
    cfg = method_config("avca", {"dropout_decoder": 0.25}, dataset="activitynet", preset="reference",
                        dims=dims)
    assert cfg.word_dim == 384 and cfg.dropout_decoder == 0.25 and cfg.dropout_additional == 0.1
    assert all(getattr(cfg, q) for q in REFERENCE_QUIRKS)
    # The user's values win over the data's sizes and the quirk preset; a dataset without a preset: defaults.
    cfg = method_config("avca", {"word_dim": 300, "frozen_pos_embedding": False}, dataset="synthetic",
                        preset="reference", dims=dims)
    assert cfg.word_dim == 300 and not cfg.frozen_pos_embedding and cfg.momentum_second_bn_only
    assert cfg.dropout_additional == AVCAConfig().dropout_additional
    assert config_from_dict("avca", cfg.to_dict()) == cfg
    assert isinstance(build_method("avca", cfg), AVCA)
    train = method_train_defaults("avca", "vggsound")
    assert (train["lr"], train["weight_decay"], train["batch_size"], train["batches_per_epoch"]) == (
        1e-3, 1e-5, 256, 500)
    from model.train_config import TrainConfig

    TrainConfig.from_dict(train)  # every key is a TrainConfig key
    with pytest.raises(ValueError, match="unknown key"):
        method_config("avca", {"hidden": 3}, dataset="ucf", preset="paper", dims={})
    with pytest.raises(ValueError, match="unknown preset"):
        method_config("avca", {}, dataset="ucf", preset="official", dims={})
