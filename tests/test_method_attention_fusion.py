"""The Attention Fusion baseline: shapes, masks, fusion and losses by hand, parameter count, TCAF's training
loop, learning planted structure and learning which modality to trust."""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from test_method_helpers import (
    CPU,
    TCAF_QUIRKS,
    check_eval_padding_invariance,
    check_learned_planted_structure,
    check_train_padding_invariance,
    descend_on_one_batch,
    make_batch,
    planted_splits,
    run_training_loop_end_to_end,
    seeded_net,
    train_on_planted,
)

from model.batching import eval_batches
from model.config import DATASET_PRESETS as TCAF_PRESETS
from model.config import TCAFConfig
from model.embeddings import normalise_audio, normalise_video
from model.methods import get_method_module
from model.methods.attention_fusion import (
    DATASET_PRESETS,
    UNUSED_TCAF_FIELDS,
    AttentionFusion,
    AttentionFusionConfig,
    dataset_config,
)
from model.synthetic import PlantedFeatures, SyntheticSpec

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = {"audio_dim": 6, "video_dim": 10, "word_dim": 7, "dim": 12, "encoder_hidden_dim": 9,
        "decoder_hidden_dim": 5, "out_dim": 16}
NO_DROPOUT = {"dropout_enc": 0.0, "dropout_proj_o": 0.0, "dropout_proj_w": 0.0}
# For the training-loop tests: the synthetic features of model/synthetic.py (128-d audio, 256-d video here).
SMALL = {"video_dim": 256, "word_dim": 32, "dim": 64, "encoder_hidden_dim": 64, "decoder_hidden_dim": 64,
         "out_dim": 16}


def make_net(seed=0, **overrides) -> AttentionFusion:
    return seeded_net(seed, lambda: AttentionFusion(AttentionFusionConfig.from_dict({**TINY, **overrides})))


# --- shapes, masks, the computation by hand ------------------------------------------------------------
@pytest.mark.parametrize(("fusion", "width"), [("per_dimension", 16), ("per_modality", 1)])
@pytest.mark.parametrize("training", [True, False])
def test_forward_shapes_weights_and_finite(fusion, width, training):
    net = make_net(fusion_weights=fusion).train(training)
    out = net(*make_batch())
    assert out["embedding"].shape == out["audio_embedding"].shape == out["video_embedding"].shape == (4, 16)
    assert out["pooled"].shape == (4, 24)
    assert out["reconstruction"].shape == (4, 7)
    assert out["fusion_weights"].shape == (4, 2, width)
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(out["fusion_weights"].sum(1), torch.ones(4, width))
    assert net.embed_classes(torch.randn(3, 7)).shape == (3, 16)
    assert "reconstruction" not in net(*make_batch(), reconstruct=False)


def test_forward_by_hand():
    """Encode every token, average the valid ones, unimodal heads, softmax over the modalities, weighted sum."""
    net = make_net().eval()
    a, am, v, vm = make_batch()
    with torch.no_grad():
        out = net(a, am, v, vm)
        cfg = net.cfg
        phi = []
        for x, m, enc in ((normalise_audio(a, am, cfg=cfg), am, net.audio_encoder),
                          (normalise_video(v, vm, cfg=cfg), vm, net.video_encoder)):
            phi.append(torch.stack([enc(x[b, m[b]]).mean(0) for b in range(4)]))
        theta_a, theta_v = net.audio_head(phi[0]), net.video_head(phi[1])
        logits = net.fusion(torch.cat([theta_a, theta_v], -1))  # (B, 2 * d_out): audio half, video half
        alpha_a = torch.sigmoid(logits[:, :16] - logits[:, 16:])  # softmax over two = sigmoid of the difference
        expected = alpha_a * theta_a + (1 - alpha_a) * theta_v
    torch.testing.assert_close(out["pooled"], torch.cat(phi, -1))
    torch.testing.assert_close(out["audio_embedding"], theta_a)
    torch.testing.assert_close(out["video_embedding"], theta_v)
    torch.testing.assert_close(out["embedding"], expected)
    torch.testing.assert_close(out["reconstruction"], net.output_decoder(expected))


@pytest.mark.parametrize("quirks", [False, True])
def test_eval_embedding_does_not_depend_on_padding(quirks):
    check_eval_padding_invariance(make_net(**dict.fromkeys(TCAF_QUIRKS, quirks)).eval())


def test_train_mode_does_not_depend_on_padding():
    check_train_padding_invariance(make_net(**NO_DROPOUT).train(), "embedding")


def test_a_modality_without_tokens_gets_no_weight():
    net = make_net().eval()
    a, am, v, vm = make_batch()
    vm[0] = False  # audio only
    am[1] = False  # video only
    am[2] = vm[2] = False  # nothing at all: finite, equal weights
    with torch.no_grad():
        out = net(a, am, v, vm)
        garbage = net(a, am, v + 9.0, vm)  # the values of a modality without valid tokens do not matter
    w = out["fusion_weights"]
    assert torch.all(w[0, 1] == 0) and torch.all(w[1, 0] == 0)
    torch.testing.assert_close(w[2], torch.full_like(w[2], 0.5))
    torch.testing.assert_close(out["embedding"][0], out["audio_embedding"][0], rtol=0, atol=0)
    torch.testing.assert_close(out["embedding"][1], out["video_embedding"][1], rtol=0, atol=0)
    torch.testing.assert_close(garbage["embedding"][0], out["embedding"][0], rtol=0, atol=0)
    assert all(torch.isfinite(t).all() for t in out.values())
    net.train()
    net.losses(net(a, am, v, vm), torch.tensor([0, 1, 2, 0]), torch.randn(3, 7))["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("unimodal", [True, False])
@pytest.mark.parametrize(("ce", "reg", "rec"), [(True, True, True), (True, False, False), (False, True, True)])
def test_losses_by_hand(unimodal, ce, reg, rec):
    net = make_net(unimodal_losses=unimodal, loss_ce=ce, loss_reg=reg, loss_rec=rec).eval()  # eval: deterministic
    a, am, v, vm = make_batch()
    class_vectors = F.normalize(torch.randn(3, 7), dim=-1)
    labels = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        out = net(a, am, v, vm)
        got = net.losses(out, labels, class_vectors)
        w = class_vectors[labels]
        theta_w, class_theta_w = net.word_proj(w), net.word_proj(class_vectors)
        keys = ("embedding", "audio_embedding", "video_embedding") if unimodal else ("embedding",)
        exp_ce = sum(F.cross_entropy(out[k] @ class_theta_w.T, labels) for k in keys) if ce else 0.0
        exp_reg = sum(((out[k] - theta_w) ** 2).mean() for k in keys) if reg else 0.0
        exp_rec = (((net.output_decoder(out["embedding"]) - w) ** 2).mean()
                   + ((net.word_decoder(theta_w) - w) ** 2).mean()) if rec else 0.0
    for key, exp in (("ce", exp_ce), ("reg", exp_reg), ("rec", exp_rec)):
        assert got[key].item() == pytest.approx(float(exp), rel=1e-5, abs=1e-7), key
    assert got["total"].item() == pytest.approx(float(exp_ce + exp_reg + exp_rec), rel=1e-5)
    if ce:
        assert {"ce_fused", "ce_audio", "ce_video"} & set(got) == (
            {"ce_fused", "ce_audio", "ce_video"} if unimodal else {"ce_fused"})
    with pytest.raises(ValueError, match="labels"):
        net.losses(out, labels[:2], class_vectors)


def test_every_parameter_gets_a_gradient_and_steps_reduce_the_loss():
    descend_on_one_batch(make_net(**NO_DROPOUT).train())


# --- parameters, config ------------------------------------------------------------------------------
def hand_count(*, audio_dim, video_dim, word_dim, dim, encoder_hidden_dim, decoder_hidden_dim, out_dim,
               fusion_weights="per_dimension", **_):
    """Trainable parameters from the layer sizes (Linear: in*out + out; BN: 2 per channel)."""
    def mlp(i, h, o):  # Linear -> BN -> ReLU -> Dropout -> Linear -> BN -> ReLU -> Dropout
        return i * h + h + 2 * h + h * o + o + 2 * o

    def single(i, o):  # Linear -> BN -> ReLU -> Dropout
        return i * o + o + 2 * o

    fusion_out = 2 * out_dim if fusion_weights == "per_dimension" else 2
    return (mlp(audio_dim, encoder_hidden_dim, dim) + mlp(video_dim, encoder_hidden_dim, dim)  # A_enc, V_enc
            + single(word_dim, out_dim) + single(out_dim, word_dim)  # W_proj, D_w
            + 2 * mlp(dim, decoder_hidden_dim, out_dim)  # O_proj^a, O_proj^v
            + 2 * out_dim * fusion_out + fusion_out  # G
            + mlp(out_dim, decoder_hidden_dim, word_dim))  # D_o


@pytest.mark.parametrize(("fusion", "count"), [("per_dimension", 3_095_760), ("per_modality", 3_079_506)])
@pytest.mark.parametrize("dataset", ["ucf", "vggsound", "activitynet"])
def test_parameter_count_matches_the_layer_sizes(dataset, fusion, count):
    cfg = dataset_config(dataset, fusion_weights=fusion)
    net = AttentionFusion(cfg)
    n = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert n == hand_count(**dataclasses.asdict(cfg)) == count  # docs/methods/attention_fusion.md
    tiny = make_net()
    assert sum(p.numel() for p in tiny.parameters()) == hand_count(**TINY)


def test_config_validation_presets_and_registry():
    for bad, match in (({"fusion_weights": "scalar"}, "fusion_weights"), ({"modalities": "audio", "attention": "full"},
                       "modalities"), ({"use_embedding_net": False}, "use_embedding_net"), ({"fusion": 1}, "fusion")):
        with pytest.raises(ValueError, match=match):
            AttentionFusionConfig.from_dict(bad)
    # TCAF's presets, less the fields of parts this model does not have.
    for name, preset in DATASET_PRESETS.items():
        assert preset == {k: v for k, v in TCAF_PRESETS[name].items() if k not in UNUSED_TCAF_FIELDS}
        assert set(preset) == {"dropout_enc", "dropout_proj_o", "dropout_proj_w"}
    assert dataset_config("vggsound").dropout_proj_o == 0.2
    assert set(UNUSED_TCAF_FIELDS) < {f.name for f in dataclasses.fields(TCAFConfig)}
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_config("kinetics")
    # A TCAF model section of the workflow's configs (and TCAF's full presets) load unchanged.
    for name in ("ucf", "vggsound", "activitynet", "config"):
        section = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())["model"]
        cfg = AttentionFusionConfig.from_dict({**TCAF_PRESETS.get(name, {}), **section})
        assert AttentionFusionConfig.from_dict(cfg.to_dict()) == cfg
    module = get_method_module("attention_fusion")
    assert module.MODEL is AttentionFusion and module.CONFIG is AttentionFusionConfig
    assert module.PUBLISHED["ucf"]["HM"] == 24.97
    with pytest.raises(TypeError, match="AttentionFusionConfig"):
        AttentionFusion(TCAFConfig())


# --- TCAF's training loop ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return planted_splits()


def test_tcaf_training_loop_runs_it_end_to_end(data, tmp_path):
    run_training_loop_end_to_end(lambda: AttentionFusion(AttentionFusionConfig.from_dict(SMALL)), AttentionFusion,
                                 data, tmp_path / "ckpt.pt")


def _train(train, val, **overrides):
    return train_on_planted(lambda: AttentionFusion(AttentionFusionConfig.from_dict({**SMALL, **overrides})),
                            train, val)


def test_learns_planted_structure_seen_and_unseen(data):
    """5 epochs from seed 0 with TCAF's loop and losses, the bar of TCAF's own learning test."""
    _, before, res, _ = _train(*data)
    check_learned_planted_structure(res, before)


def test_attention_learns_to_trust_the_informative_modality():
    """Video without class information: the learnt weights move towards audio, and the classes are learnt."""
    gen = PlantedFeatures(SyntheticSpec(n_seen=8, n_unseen=4, video_dim=256, signal=0.5, seed=0))
    gen.video_map[:] = 0.0  # video is noise only
    train, val = gen.split("train", 30, range(8)), gen.split("val", 10, range(12))
    net, _, res, cfg = _train(train, val)
    net.eval()
    with torch.no_grad():
        w = torch.cat([net(b.audio, b.audio_mask, b.video, b.video_mask)["fusion_weights"]
                       for _, b in eval_batches(val, 64, cfg.window(), CPU)])
    audio_weight = w[:, 0].mean().item()
    assert audio_weight > 0.6, audio_weight  # 0.5 at initialisation (about)
    assert res.best["HM"] > 0.4 and res.best["ZSL"] > 0.6, res.best
