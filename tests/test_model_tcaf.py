"""The full TCAF model: shapes, padding invariance, no NaN, variants, time stamps, losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_method_helpers import (
    TCAF_QUIRKS,
    check_bfloat16_autocast,
    check_eval_padding_invariance,
    check_finite_without_valid_tokens,
    check_train_padding_invariance,
    descend_on_one_batch,
    make_batch,
    padded_batch,
    seeded_net,
)

from model import losses as L
from model.config import TCAFConfig
from model.tcaf import TCAF

pytestmark = pytest.mark.usefixtures("single_torch_thread")


SMALL = {
    "audio_dim": 6,
    "video_dim": 10,
    "word_dim": 7,
    "dim": 12,
    "pos_dim": 4,
    "encoder_hidden_dim": 9,
    "decoder_hidden_dim": 5,
    "out_dim": 16,
    "depth": 2,
    "heads": 2,
    "dim_head": 3,
    "mlp_dim": 8,
}
NO_DROPOUT = {
    "dropout_enc": 0.0,
    "dropout_pos": 0.0,
    "dropout_transformer": 0.0,
    "dropout_proj_o": 0.0,
    "dropout_proj_w": 0.0,
}


def make_net(seed=0, **overrides) -> TCAF:
    return seeded_net(seed, lambda: TCAF(TCAFConfig.from_dict({**SMALL, **overrides})))


@pytest.mark.parametrize("attention", ["cross", "self", "full"])
@pytest.mark.parametrize("use_class_token", [True, False])
def test_forward_shapes_and_finite(attention, use_class_token):
    net = make_net(attention=attention, use_class_token=use_class_token)
    out = net(*make_batch())
    assert out["embedding"].shape == (4, 16)
    assert out["pooled"].shape == (4, 12)
    assert out["reconstruction"].shape == (4, 7)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert net.embed_classes(torch.randn(5, 7)).shape == (5, 16)


@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("use_class_token", [True, False])
def test_eval_embedding_does_not_depend_on_padding(quirks, use_class_token):
    # Sample 2 has no video at all: without a class token its audio tokens have no key in "cross".
    net = make_net(use_class_token=use_class_token, **dict.fromkeys(TCAF_QUIRKS, quirks))
    check_eval_padding_invariance(net.eval())


def test_train_mode_does_not_depend_on_padding_by_default_but_does_with_quirk():
    check_train_padding_invariance(make_net(**NO_DROPOUT).train(), "pooled")
    quirk = make_net(encoder_bn_over_padding=True, **NO_DROPOUT).train()
    batch, padded = padded_batch()
    diff = (quirk(*padded)["pooled"] - quirk(*batch)["pooled"]).abs().max()
    assert diff > 1e-3  # the official encoder BN statistics include padding tokens


@pytest.mark.parametrize("use_class_token", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_no_nan_with_fully_padded_modality_or_sample(use_class_token, training):
    check_finite_without_valid_tokens(make_net(use_class_token=use_class_token).train(training))


def test_all_padded_modality_equals_unused_tokens_in_eval():
    # With the class token, a sample whose video is all padding is embedded from audio only; the
    # values in the padded video must not matter.
    net = make_net().eval()
    a, am, v, vm = make_batch()
    vm[:] = False
    with torch.no_grad():
        e1 = net(a, am, v, vm)["pooled"]
        e2 = net(a, am, v * 0 + 5.0, vm)["pooled"]
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)


def test_no_class_token_averages_valid_outputs():
    net = make_net(use_class_token=False).eval()
    a, am, v, vm = make_batch()
    captured = {}

    def keep_output(module, inputs, output):
        captured["x"] = output

    net.transformer.register_forward_hook(keep_output)
    with torch.no_grad():
        out = net(a, am, v, vm)
    valid = torch.cat([am, vm], 1)
    mean = torch.stack([captured["x"][b][valid[b]].mean(0) for b in range(4)])
    torch.testing.assert_close(out["pooled"], mean)
    assert net.cls_token is None


@pytest.mark.parametrize(("modalities", "absent"), [("audio", "video"), ("visual", "audio")])
def test_unimodal_models_ignore_the_other_modality(modalities, absent):
    net = make_net(modalities=modalities, attention="full").eval()
    a, am, v, vm = make_batch()
    with torch.no_grad():
        full = net(a, am, v, vm)["pooled"]
        none = net(None, None, v, vm)["pooled"] if absent == "audio" else net(a, am, None, None)["pooled"]
    torch.testing.assert_close(full, none, rtol=0, atol=0)
    assert getattr(net, f"{absent}_encoder") is None
    with pytest.raises(ValueError, match="required"):
        net(None, None, None, None)


def test_default_times_are_real_times_and_integer_quirk_applies_in_eval_only():
    a, am, v, vm = make_batch()
    ta = torch.arange(5.0).expand(4, 5)
    tv = torch.arange(7.0).expand(4, 7)
    net = make_net().eval()
    with torch.no_grad():
        default = net(a, am, v, vm)["pooled"]
        # Times as the official collator makes them: numpy float64 index * rate, then float32.
        real = net(a, am, v, vm, audio_times=(ta.double() * 0.96).float(),
                   video_times=(tv.double() * 0.64).float())["pooled"]
        integer = net(a, am, v, vm, audio_times=ta, video_times=tv)["pooled"]
    torch.testing.assert_close(default, real, rtol=0, atol=0)
    assert (default - integer).abs().max() > 1e-4

    quirk = make_net(integer_time_stamps_at_eval=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(quirk(a, am, v, vm)["pooled"], integer, rtol=0, atol=1e-6)
    quirk_train = make_net(integer_time_stamps_at_eval=True, **NO_DROPOUT).train()
    plain_train = make_net(**NO_DROPOUT).train()
    torch.testing.assert_close(quirk_train(a, am, v, vm)["pooled"], plain_train(a, am, v, vm)["pooled"])


def test_reconstruct_switch_skips_the_decoder_and_its_batchnorm_update():
    net = make_net().train()
    bn = net.output_decoder.net[1]
    before = bn.num_batches_tracked.clone()
    out = net(*make_batch(), reconstruct=False)
    assert "reconstruction" not in out and torch.equal(bn.num_batches_tracked, before)
    with pytest.raises(ValueError, match="reconstruct"):
        net.losses(out, torch.tensor([0, 1, 2, 0]), torch.randn(3, 7))
    assert "reconstruction" in make_net(loss_rec=False)(*make_batch(), reconstruct=True)


def test_uint8_audio_equals_float_audio_and_input_scale():
    net = make_net().eval()
    a, am, v, vm = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(net(a.to(torch.uint8), am, v, vm)["pooled"], net(a, am, v, vm)["pooled"])
        prescaled = make_net(audio_input_scale=1.0).eval()
        torch.testing.assert_close(prescaled(a / 255.0, am, v, vm)["pooled"], net(a, am, v, vm)["pooled"])


def test_bad_shapes_raise_clear_errors():
    net = make_net()
    a, am, v, vm = make_batch()
    with pytest.raises(ValueError, match="audio_dim"):
        net(a[..., :4], am, v, vm)
    with pytest.raises(ValueError, match="video_mask"):
        net(a, am, v, vm[:, :3])
    with pytest.raises(ValueError, match="word_dim"):
        net.embed_classes(torch.randn(3, 300))


# --- losses ----------------------------------------------------------------------------------------
def test_loss_functions_against_hand_computation():
    theta_o = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    class_theta_w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 2])
    # logits row 0 = [1, 0, 1] (label 0); row 1 = [0, 2, 2] (label 2)
    ce = ((math.log(2 * math.e + 1) - 1) + (math.log(1 + 2 * math.e**2) - 2)) / 2
    assert L.ce_loss(theta_o, class_theta_w, labels).item() == pytest.approx(ce, rel=1e-6)

    theta_w = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # squared differences: 1, 0, 1, 1 -> mean over B * D = 4 elements
    assert L.reg_loss(theta_o, theta_w).item() == pytest.approx(3 / 4)

    w = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 2.0]])
    rho_o = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # squared errors 0,1,0,0,0,4 -> 5/6
    rho_w = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])  # squared errors 1,1,0,0,0,0 -> 2/6
    assert L.rec_loss(rho_o, rho_w, w).item() == pytest.approx(5 / 6 + 2 / 6)

    total = L.total_loss(ce=torch.tensor(1.5), reg=None, rec=torch.tensor(0.25), like=theta_o)
    assert total["total"].item() == pytest.approx(1.75) and total["reg"].item() == 0.0


@pytest.mark.parametrize(
    ("ce", "reg", "rec"), [(True, True, True), (False, True, False), (True, True, False)]
)
def test_model_losses_wire_the_heads_like_the_official_code(ce, reg, rec):
    net = make_net(loss_ce=ce, loss_reg=reg, loss_rec=rec).eval()  # eval: deterministic BN/dropout
    a, am, v, vm = make_batch()
    class_vectors = F.normalize(torch.randn(3, 7), dim=-1)
    labels = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        out = net(a, am, v, vm)
        got = net.losses(out, labels, class_vectors)
        theta_o, w = out["embedding"], class_vectors[labels]
        theta_w = net.word_proj(w)
        exp_ce = F.cross_entropy(theta_o @ net.word_proj(class_vectors).T, labels) if ce else 0.0
        exp_reg = ((theta_o - theta_w) ** 2).mean() if reg else 0.0
        exp_rec = (
            ((net.output_decoder(theta_o) - w) ** 2).mean() + ((net.word_decoder(theta_w) - w) ** 2).mean()
            if rec
            else 0.0
        )
    for key, exp in (("ce", exp_ce), ("reg", exp_reg), ("rec", exp_rec)):
        assert got[key].item() == pytest.approx(float(exp), rel=1e-5, abs=1e-7), key
    assert got["total"].item() == pytest.approx(float(exp_ce + exp_reg + exp_rec), rel=1e-5)
    assert ("reconstruction" in out) == rec


def test_gradient_steps_reduce_the_loss_on_a_fixed_batch():
    descend_on_one_batch(make_net(**NO_DROPOUT).train())


def test_bfloat16_autocast_forward_and_losses_are_finite_and_close():
    check_bfloat16_autocast(make_net(**NO_DROPOUT).eval())
