"""MFT on ClipClap's framework: shapes, what the fusion transformer and the two losses do, the ablation switches
of the paper's Tables 3 to 5, the registry, and learning planted structure through the shared protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import pipeline
from model.environment import seed_everything
from model.methods import build_method, config_from_dict, method_config, method_train_defaults, mft
from model.methods import clipclap as cc
from model.methods.base import AveragedBatch
from model.published import MFT_ABLATIONS, PUBLISHED
from model.synthetic import PlantedFeatures, SyntheticSpec
from model.train import run_stage

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

# audio 7, video 5, class vectors 9 = CLIP text 4 + CLAP text 5
SMALL = {"audio_dim": 7, "video_dim": 5, "word_dim": 9, "text_split": 4, "embed_dim": 16, "decoder_hidden_dim": 12,
         "out_dim": 6, "depth": 1, "heads": 2, "dim_head": 4, "mlp_dim": 8}


def small(**overrides) -> mft.MFT:
    torch.manual_seed(0)
    return mft.MFT(mft.MFTConfig(**{**SMALL, **overrides}))


def batch(seed: int = 0, B: int = 6, C: int = 3) -> AveragedBatch:
    g = torch.Generator().manual_seed(seed)
    classes = torch.randn(C, 9, generator=g)
    labels = torch.arange(B) % C
    a, v = torch.randn(B, 7, generator=g), torch.randn(B, 5, generator=g)
    return AveragedBatch(audio=a, video=v, labels=labels, word=classes[labels], neg_audio=a, neg_video=v,
                         neg_labels=labels, neg_word=classes[labels], class_ids=torch.arange(C), class_vectors=classes)


def eval_distances(model: mft.MFT, audio, video, classes) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.distances(audio, video, classes)


def test_shapes_and_loss_terms():
    model = small()
    b = batch()
    assert model.tokens(b.audio, b.video).shape == (6, 2, 16)
    out = model(b.audio, b.video, b.word)
    assert out["o"].shape == (6, 16) and out["theta_o"].shape == out["theta_w"].shape == (6, 6)
    losses = model.losses(b)
    assert set(losses) == {"ce", "reg", "rec", "kl", "cos", "total"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["kl"] >= 0 and 0 <= losses["cos"] <= 2
    torch.testing.assert_close(losses["total"], losses["rec"] + losses["reg"] + losses["ce"] + losses["kl"]
                               + losses["cos"])
    losses["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    d = eval_distances(model, torch.randn(4, 7), torch.randn(4, 5), torch.randn(3, 9))
    assert d.shape == (4, 3) and (d >= 0).all()
    with pytest.raises(ValueError, match="model.audio_dim"):
        model.distances(torch.randn(4, 8), torch.randn(4, 5), torch.randn(3, 9))


def test_loss_weights_scale_their_terms():
    b = batch()
    torch.manual_seed(1)
    ref = small().losses(b)
    torch.manual_seed(1)
    weighted = small(kl_weight=0.5, cos_weight=2.0).losses(b)
    for key in ("ce", "reg", "rec", "kl", "cos"):
        torch.testing.assert_close(weighted[key], ref[key])
    torch.testing.assert_close(weighted["total"], ref["rec"] + ref["reg"] + ref["ce"] + 0.5 * ref["kl"]
                               + 2.0 * ref["cos"])


@pytest.mark.parametrize("attention", [True, False])
def test_bfloat16_autocast_step(attention):
    """train.amp: bf16 runs the step under CPU autocast: finite losses near float32's, finite gradients."""
    b = batch()
    ref = small(attention=attention).eval().losses(b)
    model = small(attention=attention).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.losses(b)
    for key, value in losses.items():
        assert torch.isfinite(value), key
        torch.testing.assert_close(value.float(), ref[key], rtol=0.05, atol=0.05, msg=key)
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_kl_term_is_the_divergence_from_the_class_similarity_target():
    model = small(dropout_encoder=0.0, dropout_decoder=0.0, dropout_additional=0.0, dropout_attention=0.0)
    model.eval()  # deterministic: the same scores twice
    b = batch()
    with torch.no_grad():
        out = model(b.audio, b.video, b.word)
        losses = model.loss_terms(out, b.class_vectors, b.labels)
        scores = out["theta_o"] @ model.class_embeddings(b.class_vectors).t()
    t = F.normalize(b.class_vectors, dim=1)
    q = torch.softmax(t[b.labels] @ t.t() / 0.1, dim=1)
    expected = (q * (q.log() - torch.log_softmax(scores, dim=1))).sum(1).mean()
    torch.testing.assert_close(losses["kl"], expected)
    # The target peaks at each sample's own class and is not one-hot (the other classes get their similarity).
    assert (q.argmax(1) == b.labels).all() and (q.max(1).values < 1).all()
    torch.testing.assert_close(losses["cos"], (1 - F.cosine_similarity(out["theta_o"], out["theta_w"])).mean())


def test_attention_mixes_the_modalities():
    """With attention, the video token's output depends on the audio (cross-modal interaction); without, the
    fusion is ClipClap's encoder on [v; a] and no transformer exists."""
    model = small(dropout_encoder=0.0, dropout_attention=0.0).eval()
    b = batch()
    with torch.no_grad():
        video_token = model.tokens(b.audio, b.video)[:, 0]
        other = model.tokens(b.audio + 1.0, b.video)[:, 0]
    assert (video_token - other).abs().max() > 1e-4
    assert any(n.startswith("transformer.") for n, _ in model.named_parameters())
    assert model.input_encoder is None

    plain = small(attention=False)
    names = {n for n, _ in plain.named_parameters()}
    assert not any(n.startswith(("transformer.", "modality_")) for n in names)
    reference = cc.ClipClap(cc.ClipClapConfig(**{k: v for k, v in SMALL.items() if k in cc.ClipClapConfig.__annotations__}))
    assert names == {n for n, _ in reference.named_parameters()}
    plain.load_state_dict(reference.state_dict())
    plain.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain.encode(b.audio, b.video), reference.encode(b.audio, b.video))


@pytest.mark.parametrize("switch,term", [("cos_loss", "cos"), ("kl_loss", "kl")])
def test_loss_switches_remove_their_term(switch, term):
    b = batch()
    torch.manual_seed(3)
    on = small().losses(b)
    torch.manual_seed(3)
    off = small(**{switch: False}).losses(b)
    assert off[term] == 0 and on[term] > 0
    torch.testing.assert_close(off["total"], on["total"] - on[term])


def test_kl_alone_still_scores_the_classes():
    """Without the cross-entropy the KL term still needs (and gets) the class scores."""
    losses = small(cross_entropy_loss=False).losses(batch())
    assert losses["ce"] == 0 and losses["kl"] > 0


@pytest.mark.parametrize("modality,ignored,text_kept", [("audio", "video", slice(4, None)),
                                                       ("video", "audio", slice(None, 4))])
def test_single_modality_reads_one_input_and_its_text_part(modality, ignored, text_kept):
    model = small(modality=modality)
    assert list(model.modality_encoders) == [modality]
    b = batch()
    d = eval_distances(model, b.audio, b.video, b.class_vectors)
    changed = {"audio": b.audio, "video": b.video, ignored: torch.randn_like(getattr(b, ignored))}
    torch.testing.assert_close(eval_distances(model, changed["audio"], changed["video"], b.class_vectors), d)
    # The class vector's other text part is not read; its own part is.
    other = b.class_vectors.clone()
    keep = torch.zeros(9, dtype=torch.bool)
    keep[text_kept] = True
    other[:, ~keep] = torch.randn(3, int((~keep).sum()))
    torch.testing.assert_close(eval_distances(model, b.audio, b.video, other), d)
    mine = b.class_vectors.clone()
    mine[:, keep] += 1.0
    assert not torch.allclose(eval_distances(model, b.audio, b.video, mine), d)


def test_ablation_variants_match_the_published_tables():
    assert set(mft.MFT_ABLATION_SWITCHES) == set(MFT_ABLATIONS)
    for variant in mft.MFT_ABLATION_SWITCHES:
        cfg = mft.ablation_config(variant, "ucf")
        assert isinstance(mft.MFT(cfg), mft.MFT)
        assert set(MFT_ABLATIONS[variant]) == {"vggsound", "ucf", "activitynet"}
    assert not mft.ablation_config("no_attention").attention
    assert mft.ablation_config("visual_only").modality == "video"
    assert MFT_ABLATIONS["no_attention"]["ucf"]["HM"] == 55.20
    with pytest.raises(ValueError, match="unknown MFT ablation"):
        mft.ablation_config("no_transformer")


def test_config_presets_and_registry():
    assert mft.MFT.published == PUBLISHED["mft"]
    assert PUBLISHED["mft"]["ucf"] == {"S": 72.52, "U": 47.12, "HM": 57.12, "ZSL": 48.56}
    assert (PUBLISHED["mft"]["vggsound"]["HM"], PUBLISHED["mft"]["activitynet"]["ZSL"]) == (18.80, 27.88)
    assert method_train_defaults("mft", "vggsound") == method_train_defaults("clipclap", "vggsound")
    assert mft.dataset_config("ucf", preset="reference").post_step_train_embeddings
    cfg = method_config("mft", {"depth": 1, "cos_loss": False}, dataset="activitynet", preset="paper",
                        dims={"audio_dim": 5, "video_dim": 7, "word_dim": 20, "audio_input_scale": 1.0})
    assert (cfg.depth, cfg.cos_loss, cfg.audio_dim, cfg.video_dim, cfg.word_dim) == (1, False, 5, 7, 20)
    assert isinstance(build_method("mft", cfg), mft.MFT)
    assert config_from_dict("mft", cfg.to_dict()) == cfg  # how a trained run's checkpoint rebuilds it
    for bad, match in (({"heads": 0}, "heads"), ({"kl_temperature": 0.0}, "kl_temperature"),
                       ({"cos_weight": -1.0}, "cos_weight"), ({"dropout_attention": 1.0}, "dropout_attention")):
        with pytest.raises(ValueError, match=match):
            mft.MFTConfig(**bad)
    with pytest.raises(ValueError, match="holds the method"):
        mft.build("clipclap")


@pytest.mark.parametrize("model_overrides", [{}, {"attention": False}], ids=["mft", "no_attention"])
def test_learns_planted_structure_through_the_shared_protocol(model_overrides):
    """Built through the pipeline's config path, trained by the shared loop and the averaged recipe: seen and
    unseen classes well above chance within seconds of CPU."""
    gen = PlantedFeatures(SyntheticSpec(n_seen=8, n_unseen=4, video_dim=256, signal=0.5, seed=0))
    train, val = gen.split("train", 30, range(8)), gen.split("val", 10, range(12))
    model = {"audio_dim": 128, "video_dim": 256, "embed_dim": 64, "decoder_hidden_dim": 64, "out_dim": 16,
             "depth": 1, "heads": 2, "dim_head": 16, "mlp_dim": 64, **model_overrides}
    cfg = {"dataset": "demo", "method": "mft", "model": model,
           "train": {"lr": 1e-3, "batch_size": 32, "batches_per_epoch": 30, "epochs": 5, "progress": False,
                     "lr_scheduler": False}}
    exp = pipeline.experiment_config(cfg, word_dim=train.class_vectors.shape[1])
    seed_everything(0)
    net = pipeline.build_model(exp)
    assert isinstance(net, mft.MFT) and net.cfg.attention == model_overrides.get("attention", True)
    res = run_stage(net, train, val, exp.train, seed=0, epochs=exp.train.epochs, device=CPU, eval_cfg=exp.evaluate,
                    recipe=pipeline.recipe_for(exp, CPU))
    best = res.best
    # 12 candidate classes in GZSL (chance ~0.08); 4 unseen candidates in ZSL (chance 0.25)
    assert best["S"] > 0.3 and best["U"] > 0.3 and best["HM"] > 0.3, best
    assert best["ZSL"] >= 0.45, best
