"""The Perceiver baseline: shapes, masks, parameter count, TCAF's training loop, learning planted structure."""

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from test_method_helpers import (
    TCAF_QUIRKS,
    check_bfloat16_autocast,
    check_eval_padding_invariance,
    check_finite_without_valid_tokens,
    check_learned_planted_structure,
    check_train_padding_invariance,
    descend_on_one_batch,
    make_batch,
    planted_splits,
    run_training_loop_end_to_end,
    seeded_net,
    train_on_planted,
)

from model.config import DATASET_PRESETS as TCAF_PRESETS
from model.config import TCAFConfig
from model.methods import get_method_module
from model.methods.perceiver import DATASET_PRESETS, Perceiver, PerceiverConfig, dataset_config
from model.tcaf import TCAF

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = {"audio_dim": 6, "video_dim": 10, "word_dim": 7, "dim": 12, "pos_dim": 4, "encoder_hidden_dim": 9,
        "decoder_hidden_dim": 5, "out_dim": 16, "depth": 4, "heads": 2, "dim_head": 3, "mlp_dim": 8,
        "num_latents": 5}
NO_DROPOUT = {"dropout_enc": 0.0, "dropout_pos": 0.0, "dropout_transformer": 0.0, "dropout_proj_o": 0.0,
              "dropout_proj_w": 0.0}
# For the training-loop tests: the synthetic features of model/synthetic.py (128-d audio, 256-d video here).
SMALL = {"video_dim": 256, "word_dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "dim": 64, "pos_dim": 16,
         "mlp_dim": 64, "encoder_hidden_dim": 64, "decoder_hidden_dim": 64, "out_dim": 16, "num_latents": 8}


def make_net(seed=0, **overrides) -> Perceiver:
    return seeded_net(seed, lambda: Perceiver(PerceiverConfig.from_dict({**TINY, **overrides})))


# --- shapes, masks --------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["mean", "first"])
@pytest.mark.parametrize("training", [True, False])
def test_forward_shapes_and_finite(pooling, training):
    net = make_net(latent_pooling=pooling).train(training)
    out = net(*make_batch())
    assert out["embedding"].shape == (4, 16)
    assert out["pooled"].shape == (4, 12)
    assert out["latents"].shape == (4, 5, 12)
    assert out["reconstruction"].shape == (4, 7)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert net.embed_classes(torch.randn(3, 7)).shape == (3, 16)
    expected = out["latents"].mean(1) if pooling == "mean" else out["latents"][:, 0]
    torch.testing.assert_close(out["pooled"], expected)


def test_layers_alternate_cross_and_latent_self_attention():
    assert make_net().layer_kinds == ("cross", "self", "cross", "self")
    assert make_net(depth=5, self_per_cross=2).layer_kinds == ("cross", "self", "self", "cross", "self")
    assert make_net(depth=3, self_per_cross=0).layer_kinds == ("cross", "cross", "cross")
    assert dataset_config("vggsound").layer_kinds() == ("cross", "self") * 4
    net = make_net()
    assert len(net.transformer.layers) == net.cfg.depth and net.cls_token is None


@pytest.mark.parametrize("quirks", [False, True])
def test_eval_embedding_does_not_depend_on_padding(quirks):
    check_eval_padding_invariance(make_net(**dict.fromkeys(TCAF_QUIRKS, quirks)).eval())


def test_train_mode_does_not_depend_on_padding():
    check_train_padding_invariance(make_net(**NO_DROPOUT).train(), "pooled")


def test_latents_read_every_valid_token_and_no_padded_one():
    net = make_net().eval()
    a, am, v, vm = make_batch()
    with torch.no_grad():
        ref = net(a, am, v, vm)["pooled"]
        for i, (x, m) in enumerate(((a, am), (v, vm))):
            changed = x.clone()
            changed[~m] += 50.0  # padded tokens: nothing may change
            args = [a, am, v, vm]
            args[2 * i] = changed
            torch.testing.assert_close(net(*args)["pooled"], ref, rtol=0, atol=0)
            changed = x.clone()
            changed[1, 0] += 50.0  # a valid token of sample 1: only sample 1 changes
            args[2 * i] = changed
            diff = (net(*args)["pooled"] - ref).abs().amax(-1)
            assert diff[1] > 1e-4 and torch.all(diff[[0, 2, 3]] == 0), diff


def test_no_nan_with_a_fully_padded_modality_or_sample():
    # In a sample without any token the latents mix no token values in the cross-attention.
    check_finite_without_valid_tokens(make_net().train())


def test_unimodal_perceiver_ignores_the_other_modality():
    net = make_net(modalities="visual").eval()
    a, am, v, vm = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(net(a, am, v, vm)["pooled"], net(None, None, v, vm)["pooled"], rtol=0, atol=0)
    assert net.audio_encoder is None


# --- parameters, config ------------------------------------------------------------------------------
def hand_count(*, audio_dim, video_dim, word_dim, dim, pos_dim, encoder_hidden_dim, decoder_hidden_dim, out_dim,
               depth, heads, dim_head, mlp_dim, num_latents, **_):
    """Trainable parameters from the layer sizes (Linear: in*out + out; BN and LN: 2 per channel)."""
    def mlp(i, h, o):  # Linear -> BN -> ReLU -> Dropout -> Linear -> BN -> ReLU -> Dropout
        return i * h + h + 2 * h + h * o + o + 2 * o

    def single(i, o):  # Linear -> BN -> ReLU -> Dropout
        return i * o + o + 2 * o

    inner = heads * dim_head
    block = dim * 3 * inner + inner * dim + dim + dim * mlp_dim + mlp_dim + mlp_dim * dim + dim + 2 * dim
    position = (2 * pos_dim + pos_dim * pos_dim + pos_dim + pos_dim  # modality table, Fourier Linear, pad
                + 2 * ((dim + pos_dim) * dim + dim))  # g_a, g_v
    return (mlp(audio_dim, encoder_hidden_dim, dim) + mlp(video_dim, encoder_hidden_dim, dim)  # A_enc, V_enc
            + single(word_dim, out_dim) + single(out_dim, word_dim)  # W_proj, D_w
            + position + depth * block + num_latents * dim
            + mlp(dim, decoder_hidden_dim, out_dim) + mlp(out_dim, decoder_hidden_dim, word_dim))  # O_proj, D_o


def n_params(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("dataset", ["ucf", "vggsound"])
def test_parameter_count_matches_the_layer_sizes(dataset):
    cfg = dataset_config(dataset)
    torch.manual_seed(0)
    net, tcaf = Perceiver(cfg), TCAF(TCAFConfig.from_dict(TCAF_PRESETS[dataset]))
    expected = hand_count(**dataclasses.asdict(cfg))
    assert n_params(net) == expected
    assert expected == {"ucf": 7_288_872, "vggsound": 8_673_928}[dataset]  # docs/methods/perceiver.md
    # TCAF's capacity: the same L layers, the 64 x 300 latent array in place of the 300-d class token.
    assert n_params(net) == n_params(tcaf) - 300 + 64 * 300
    assert n_params(make_net()) == hand_count(**TINY)


def test_config_validation_presets_and_registry():
    for bad, match in (({"attention": "cross"}, "attention"), ({"use_class_token": True}, "use_class_token"),
                       ({"latent_pooling": "max"}, "latent_pooling"), ({"num_latents": 0}, "num_latents"),
                       ({"self_per_cross": -1}, "self_per_cross"), ({"latents": 64}, "latents")):
        with pytest.raises(ValueError, match=match):
            PerceiverConfig.from_dict(bad)
    assert DATASET_PRESETS == TCAF_PRESETS  # the paper: TCAF's hyper-parameters
    cfg = dataset_config("activitynet", num_latents=32)
    assert cfg.num_latents == 32 and cfg.dropout_transformer == 0.4 and cfg.depth == 6
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_config("kinetics")
    # A TCAF model section of the workflow's configs loads unchanged, and round-trips.
    for name in ("ucf", "vggsound", "activitynet", "config"):
        section = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())["model"]
        cfg = PerceiverConfig.from_dict(section)
        assert PerceiverConfig.from_dict(cfg.to_dict()) == cfg
    module = get_method_module("perceiver")
    assert module.MODEL is Perceiver and module.CONFIG is PerceiverConfig and module.PUBLISHED["ucf"]["HM"] == 34.11
    with pytest.raises(TypeError, match="PerceiverConfig"):
        Perceiver(TCAFConfig())


def test_every_parameter_gets_a_gradient_and_steps_reduce_the_loss():
    terms = descend_on_one_batch(make_net(**NO_DROPOUT).train())
    assert all(t == {"total", "ce", "reg", "rec"} for t in terms)


def test_bfloat16_autocast_is_finite_and_close():
    check_bfloat16_autocast(make_net(**NO_DROPOUT).eval())


# --- TCAF's training loop ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return planted_splits()


def test_tcaf_training_loop_runs_it_end_to_end(data, tmp_path):
    net, res = run_training_loop_end_to_end(
        lambda: Perceiver(PerceiverConfig.from_dict({**SMALL, "integer_time_stamps_at_eval": True})), Perceiver, data,
        tmp_path / "ckpt.pt")
    assert set(res.last_state) == set(net.state_dict()) and "latents" in res.last_state


def test_learns_planted_structure_seen_and_unseen(data):
    """5 epochs from seed 0 with TCAF's loop and losses, the bar of TCAF's own learning test."""
    _, before, res, _ = train_on_planted(lambda: Perceiver(PerceiverConfig.from_dict(SMALL)), *data)
    check_learned_planted_structure(res, before)
