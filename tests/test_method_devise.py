"""DeViSE / ALE / SJE (model/methods/devise.py) against the official AVCA-GZSL code.

tests/fixtures/methods/devise.pt holds what the official DeviseModel, ClsContrastiveLoss, training step and
evaluation computed on small inputs (benchmarks/official_fixtures/devise.py, commit 2711aeb5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_method_helpers import TOL, flipped_batch, load_fixture

from model.methods import devise as D
from model.methods import get_method_module
from model.methods.base import AveragedBatch

pytestmark = pytest.mark.usefixtures("single_torch_thread")



@pytest.fixture(scope="module")
def official():
    return load_fixture("devise")


def small_config(official, name, **overrides):
    meta = official["meta"]
    return D.dataset_config(name, "ucf", preset="reference", audio_dim=meta["audio_dim"],
                            video_dim=meta["video_dim"], word_dim=meta["word_dim"], **{"dropout": 0.0, **overrides})


def loaded(official, name, **overrides):
    return D.load_official_checkpoint(D.build(name, small_config(official, name, **overrides)), official["state_dict"])


# ------------------------------------------------------------------------------------------ shapes, registry


@pytest.mark.parametrize("name", D.LOSSES)
def test_shapes_and_loss_terms(name):
    cfg = D.DeViSEConfig(loss=name, audio_dim=3, video_dim=5, word_dim=7)
    net = D.build(name, cfg)
    assert type(net).name == name and isinstance(net, D.METHODS[name])
    g = torch.Generator().manual_seed(0)
    audio, video = torch.rand(4, 3, generator=g) * 255, torch.rand(4, 5, generator=g)
    classes = torch.randn(6, 7, generator=g)
    assert net(audio, video).shape == (4, 7)
    assert net.scores(audio, video, classes).shape == (4, 6)
    assert net.distances(audio, video, classes).shape == (4, 6)
    labels = torch.tensor([0, 5, 2, 2])
    batch = AveragedBatch(audio=audio, video=video, labels=labels, word=classes[labels], neg_audio=audio,
                          neg_video=video, neg_labels=labels, neg_word=classes[labels],
                          class_ids=torch.arange(6) * 3, class_vectors=classes)
    losses = net.losses(batch)
    assert set(losses) == {"rank", "total"} and losses["total"].ndim == 0
    with pytest.raises(ValueError, match="audio must be"):
        net(video, video)
    with pytest.raises(ValueError, match="columns of class_vectors"):
        net.losses(AveragedBatch(**{**vars(batch), "labels": labels * 3}))


def test_registry_builds_each_method_from_its_name():
    for name in D.LOSSES:
        module = get_method_module(name)
        cfg = module.make_config(name, {}, dataset="vggsound", preset="paper", dims={"word_dim": 384})
        assert cfg.loss == name and cfg.word_dim == 384 and cfg.dropout == 0.0
        assert type(module.build(name, cfg)) is D.METHODS[name]
        assert module.config_from_dict(name, cfg.to_dict()) == cfg
        assert module.train_defaults(name, "ucf") == D.TRAIN_DEFAULTS
        assert set(D.METHODS[name].published) == {"ucf", "vggsound", "activitynet"}
        for row in D.METHODS[name].published.values():  # transcription check: HM of the S and U
            assert abs(2 * row["S"] * row["U"] / (row["S"] + row["U"]) - row["HM"]) < 0.02
    with pytest.raises(ValueError, match="remove model.loss"):
        D.make_config("ale", {"loss": "sje"}, dataset=None, preset="paper", dims={})
    with pytest.raises(ValueError, match="build it with"):
        D.DeViSE(D.DeViSEConfig(loss="sje"))


def test_make_config_precedence():
    ref = D.make_config("sje", {"dropout": 0.3}, dataset="ucf", preset="reference",
                        dims={"audio_dim": 64, "video_dim": 32, "audio_input_scale": 255.0})
    assert (ref.dropout, ref.audio_dim, ref.video_dim) == (0.3, 64, 32)  # the user's value over the preset
    assert ref.dropout_class_vectors and ref.l2_evaluation
    paper = D.make_config("sje", {"l2_evaluation": True, "video_dim": 16}, dataset="activitynet", preset="paper",
                          dims={"video_dim": 32})
    assert paper.dropout == 0.2 and paper.l2_evaluation and not paper.dropout_class_vectors
    assert paper.video_dim == 16  # the user's size over the data's
    assert D.make_config("ale", {}, dataset="demo", preset="paper", dims={}) == D.DeViSEConfig(loss="ale")
    with pytest.raises(ValueError, match="unknown key model.bogus"):
        D.make_config("ale", {"bogus": 1}, dataset=None, preset="paper", dims={})


def test_parameter_counts_equal_the_official(official):
    expected = official["param_counts"]["ucf_cls"]
    assert expected == 1_267_200
    for name in D.LOSSES:
        for dataset in D.PRESETS:
            net = D.build(name, D.dataset_config(name, dataset, preset="reference"))
            assert sum(p.numel() for p in net.parameters()) == expected


# ---------------------------------------------------------------------------------- the official values


def test_seeded_init_is_the_official_init(official):
    torch.manual_seed(official["meta"]["init_seed"])
    net = D.build("devise", small_config(official, "devise"))
    init = D.convert_official_state_dict(official["init_state_dict"])
    assert torch.equal(net.projection.weight, init["projection.weight"])


@pytest.mark.parametrize("name", D.LOSSES)
def test_official_forward_loss_gradient_and_adam_step(official, name):
    net = loaded(official, name).train()
    batch = flipped_batch(official["train"])
    scores = net.scores(batch.audio, batch.video, batch.class_vectors)
    torch.testing.assert_close(scores, official["logits"], **TOL)
    torch.testing.assert_close(net(batch.audio, batch.video), official["projected"], **TOL)
    optimizer = net.build_optimizer(official["meta"]["lr"], 0.0)
    losses = net.losses(batch)
    ref = official["losses"][name]
    torch.testing.assert_close(losses["rank"], ref["loss"], **TOL)
    torch.testing.assert_close(losses["total"], ref["loss"], **TOL)
    optimizer.zero_grad()
    losses["total"].backward()
    torch.testing.assert_close(net.projection.weight.grad, ref["grad"]["bilinear.weight"], **TOL)
    optimizer.step()
    after = D.convert_official_state_dict(ref["after_step"])
    torch.testing.assert_close(net.projection.weight.detach(), after["projection.weight"], **TOL)


def test_official_evaluation_distances(official):
    ev = official["eval"]
    for name in D.LOSSES:
        net = loaded(official, name).eval()
        with torch.no_grad():
            d = net.distances(ev["audio"], ev["video"], official["train"]["class_vectors"])
        torch.testing.assert_close(d, ev["distances"], **TOL)


def test_optimiser_steps_what_the_official_one_steps(official):
    net = loaded(official, "ale").train()
    optimizer = net.build_optimizer(1e-3, 0.0)
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in stepped}
    official_names = set(D.convert_official_state_dict(dict.fromkeys(official["optimizer_params"],
                                                                     torch.zeros(1))))
    assert names == official_names == {"projection.weight"}
    net.losses(flipped_batch(official["train"]))["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# ----------------------------------------------------------------------------------- reference quirks


def test_dropout_class_vectors_uses_the_official_masks(official):
    drop = official["dropout"]
    if str(torch.__version__) != official["meta"]["torch"]:  # the CPU dropout RNG stream may change
        pytest.skip("the recorded dropout masks are those of torch " + official["meta"]["torch"])
    batch = flipped_batch(official["train"])
    on = loaded(official, "devise", dropout=drop["p"], dropout_class_vectors=True).train()
    torch.manual_seed(drop["seed"])
    scores_on = on.scores(batch.audio, batch.video, batch.class_vectors)
    torch.testing.assert_close(scores_on, drop["logits"], **TOL)
    for name in D.LOSSES:
        net = loaded(official, name, dropout=drop["p"], dropout_class_vectors=True).train()
        torch.manual_seed(drop["seed"])
        torch.testing.assert_close(net.losses(batch)["total"], drop["losses"][name], **TOL)
    # Switched off: the same input mask (drawn first), and the raw class matrix instead of the dropped one.
    off = loaded(official, "devise", dropout=drop["p"], dropout_class_vectors=False).train()
    torch.manual_seed(drop["seed"])
    projected = off(batch.audio, batch.video)
    torch.testing.assert_close(projected @ drop["class_vectors"].t(), drop["logits"], **TOL)
    torch.manual_seed(drop["seed"])
    scores_off = off.scores(batch.audio, batch.video, batch.class_vectors)
    torch.testing.assert_close(scores_off, projected @ batch.class_vectors.t(), **TOL)
    assert not torch.allclose(scores_off, scores_on)
    # Evaluation mode: no dropout anywhere, the switch changes nothing.
    on.eval(), off.eval()
    torch.testing.assert_close(on.scores(batch.audio, batch.video, batch.class_vectors),
                               off.scores(batch.audio, batch.video, batch.class_vectors), rtol=0, atol=0)


def test_l2_evaluation_switch(official):
    ev, classes = official["eval"], official["train"]["class_vectors"]
    l2 = loaded(official, "devise", l2_evaluation=True).eval()
    dot = loaded(official, "devise", l2_evaluation=False).eval()
    with torch.no_grad():
        d_l2 = l2.distances(ev["audio"], ev["video"], classes)
        d_dot = dot.distances(ev["audio"], ev["video"], classes)
        scores = dot.scores(ev["audio"], ev["video"], classes)
    torch.testing.assert_close(d_dot, -scores, rtol=0, atol=0)
    torch.testing.assert_close(d_l2, ev["distances"], **TOL)
    # ||Wx - t||^2 = ||Wx||^2 - 2 s + ||t||^2: with unit class vectors each sample ranks the classes the same
    # way (ZSL is unchanged), but the distances, and so what calibrated stacking's bias does, differ.
    torch.testing.assert_close(d_l2.pow(2), (l2(ev["audio"], ev["video"]).pow(2).sum(1, keepdim=True)
                                             + 2 * d_dot + classes.pow(2).sum(1)).detach(), **TOL)
    assert not torch.allclose(d_l2, d_dot)


# ------------------------------------------------------------------------------------------ the reductions


def official_ale_formula(scores, labels, margin=0.1):
    """ALE's reduction as the official code writes it: float32 cumsum table, beta_k / (k + 1e-8)."""
    betas = torch.zeros(701)
    betas[1:] = torch.cumsum(1 / (torch.arange(700).float() + 1), 0)
    pos = scores.gather(1, labels[:, None])
    cost = (margin + scores - pos).clamp(min=0).masked_fill(F.one_hot(labels, scores.shape[1]).bool(), 0)
    k = (cost > 0).sum(1, keepdim=True)
    weights = betas.expand(len(scores), -1).gather(1, k) / (k + 1e-8)
    return (cost * weights).sum() / len(scores), k.flatten()


def test_ale_rank_weight_equals_the_official_epsilon_formula():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(400, 30, generator=g) * 0.2
    labels = torch.randint(30, (400,), generator=g)
    scores[:5, :] = -1.0
    scores[torch.arange(5), labels[:5]] = 1.0  # five rows without a violation (k = 0)
    expected, k = official_ale_formula(scores, labels)
    assert (k == 0).sum() >= 5 and k.max() > 10  # the whole range of k occurs
    got = D.ranking_loss(scores, labels, reduction="ale", margin=0.1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(D.ranking_loss(scores[:5], labels[:5], reduction="ale", margin=0.1))


def test_reductions_by_hand():
    scores = torch.tensor([[1.0, 0.95, 0.5, 0.98], [0.0, 0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 2])
    # row 0: violations 0.05 (class 1) and 0.08 (class 3); row 1: none
    devise = D.ranking_loss(scores, labels, reduction="devise", margin=0.1)
    sje = D.ranking_loss(scores, labels, reduction="sje", margin=0.1)
    ale = D.ranking_loss(scores, labels, reduction="ale", margin=0.1)
    torch.testing.assert_close(devise, torch.tensor((0.05 + 0.08) / 2))
    torch.testing.assert_close(sje, torch.tensor(0.08 / 2))
    torch.testing.assert_close(ale, torch.tensor((1 + 1 / 2) / 2 * (0.05 + 0.08) / 2))
    assert torch.equal(D.harmonic_numbers(3), torch.tensor([0.0, 1.0, 1.5, 11 / 6]))


# ---------------------------------------------------------------------------------- official checkpoints


def test_official_checkpoint_forms_and_errors(official, tmp_path):
    sd = official["state_dict"]
    net = D.build("sje", small_config(official, "sje"))
    path = tmp_path / "DeviseModel_score.pt"
    torch.save({"epoch": 3, "model": {"module." + k: v for k, v in sd.items()}, "metric": "score"}, path)
    D.load_official_checkpoint(net, path)
    assert torch.equal(net.projection.weight, sd["bilinear.weight"])
    with pytest.raises(ValueError, match=r"set model.word_dim, model.video_dim and model.audio_dim"):
        D.load_official_checkpoint(D.build("sje", D.DeViSEConfig(loss="sje")), sd)
    with pytest.raises(ValueError, match="not an official DeviseModel"):
        D.convert_official_state_dict({"ALE_vector": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        D.convert_official_state_dict(tmp_path / "missing.pt")


def test_config_from_official_args():
    args = {"ale": True, "devise": False, "sje": False, "input_size": None, "input_size_audio": 128,
            "input_size_video": 4096, "norm_inputs": True, "dropout_baselines": 0.0}
    cfg = D.config_from_official_args(args)
    assert cfg == D.dataset_config("ale", "vggsound", preset="reference")
    with pytest.raises(ValueError, match="exactly one of the flags"):
        D.config_from_official_args({**args, "sje": True})
