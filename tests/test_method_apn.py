"""APN (model/methods/apn.py) against the official AVCA-GZSL code.

tests/fixtures/methods/apn.pt holds what the official APN, APN_Loss, training step and evaluation computed on
small inputs (benchmarks/official_fixtures/apn.py, commit 2711aeb5)."""

from __future__ import annotations

import math

import pytest
import torch
from test_method_helpers import TOL, flipped_batch, load_fixture

from model.methods import apn as M
from model.methods import get_method_module
from model.methods.base import AveragedBatch

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TERMS = ("ce_final", "mse_final", "ce_layer4", "mse_layer4")


@pytest.fixture(scope="module")
def official():
    return load_fixture("apn")


def small_config(official, **overrides):
    meta = official["meta"]
    return M.dataset_config("ucf", preset="reference", audio_dim=meta["audio_dim"], video_dim=meta["video_dim"],
                            word_dim=meta["word_dim"], **overrides)


def loaded(official, **overrides):
    return M.load_official_checkpoint(M.build("apn", small_config(official, **overrides)), official["state_dict"])


# ------------------------------------------------------------------------------------------ shapes, registry


def test_shapes_and_loss_terms():
    net = M.build("apn", M.APNConfig(audio_dim=3, video_dim=5, word_dim=7))
    g = torch.Generator().manual_seed(0)
    audio, video = torch.rand(4, 3, generator=g) * 255, torch.rand(4, 5, generator=g)
    classes = torch.randn(6, 7, generator=g)
    out = net(audio, video)
    assert out["final"].shape == out["layer4"].shape == (4, 7)
    assert net.distances(audio, video, classes).shape == (4, 6)
    labels = torch.tensor([0, 5, 2, 2])
    batch = AveragedBatch(audio=audio, video=video, labels=labels, word=classes[labels], neg_audio=audio,
                          neg_video=video, neg_labels=labels, neg_word=classes[labels],
                          class_ids=torch.arange(6), class_vectors=classes)
    losses = net.losses(batch)
    assert set(losses) == {*TERMS, "total"} and all(v.ndim == 0 for v in losses.values())
    torch.testing.assert_close(losses["total"], sum(losses[t] for t in TERMS))
    with pytest.raises(ValueError, match="class vectors must be"):
        net.distances(audio, video, classes[:, :5])


def test_registry_and_config():
    module = get_method_module("apn")
    cfg = module.make_config("apn", {"double_softmax": False}, dataset="activitynet", preset="reference",
                             dims={"audio_dim": 64, "word_dim": 384, "audio_input_scale": 1.0})
    assert (cfg.audio_dim, cfg.word_dim, cfg.double_softmax, cfg.l2_evaluation) == (64, 384, False, True)
    assert type(module.build("apn", cfg)) is M.APN
    assert module.config_from_dict("apn", cfg.to_dict()) == cfg
    assert module.train_defaults("apn", "vggsound") == M.TRAIN_DEFAULTS
    assert M.make_config("apn", {}, dataset="demo", preset="paper", dims={}) == M.APNConfig()
    for row in M.APN.published.values():  # transcription check: HM of the S and U
        assert abs(2 * row["S"] * row["U"] / (row["S"] + row["U"]) - row["HM"]) < 0.02
    with pytest.raises(ValueError, match="unknown method"):
        M.build("ale")
    with pytest.raises(ValueError, match="unknown key model.dropout"):
        M.make_config("apn", {"dropout": 0.2}, dataset=None, preset="paper", dims={})


def test_parameter_counts_equal_the_official(official):
    expected = official["param_counts"]["ucf_cls"]
    assert expected == 2_534_400
    for dataset in M.PRESETS:
        net = M.build("apn", M.dataset_config(dataset, preset="reference"))
        assert sum(p.numel() for p in net.parameters()) == expected


# ---------------------------------------------------------------------------------- the official values


def test_seeded_init_is_the_official_init(official):
    torch.manual_seed(official["meta"]["init_seed"])
    net = M.build("apn", small_config(official))
    init = M.convert_official_state_dict(official["init_state_dict"])
    for key, value in init.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert all(0 < float(v.min()) and float(v.max()) < M.INIT_SCALE for v in init.values())


def test_official_forward_loss_gradients_and_adam_step(official):
    net = loaded(official).train()
    batch = flipped_batch(official["train"])
    out = net(batch.audio, batch.video)
    torch.testing.assert_close(out["final"], official["pre_attri"]["final"], **TOL)
    torch.testing.assert_close(out["layer4"], official["pre_attri"]["layer4"], **TOL)
    torch.testing.assert_close(net.class_scores(out["final"], batch.class_vectors), official["output_final"], **TOL)
    torch.testing.assert_close(net.class_scores(out["layer4"], batch.class_vectors), official["pre_class"]["layer4"],
                               **TOL)
    optimizer = net.build_optimizer(official["meta"]["lr"], 0.0)
    losses = net.losses(batch)
    for term in (*TERMS, "total"):
        torch.testing.assert_close(losses[term], official["losses"][term], **TOL)
    optimizer.zero_grad()
    losses["total"].backward()
    grads = M.convert_official_state_dict(official["grad"])
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], **TOL)
    optimizer.step()
    after = M.convert_official_state_dict(official["after_step"])
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), after[name], **TOL)


def test_official_evaluation_distances(official):
    ev = official["eval"]
    net = loaded(official).eval()
    with torch.no_grad():
        d = net.distances(ev["audio"], ev["video"], official["train"]["class_vectors"])
    torch.testing.assert_close(d, ev["distances"], **TOL)


def test_optimiser_steps_what_the_official_one_steps(official):
    net = loaded(official).train()
    optimizer = net.build_optimizer(1e-3, 0.0)
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in stepped}
    official_names = set(M.convert_official_state_dict(
        {k: torch.zeros(1, 1, 1, 1) for k in official["optimizer_params"]}))
    assert names == official_names == {"ale_vectors", "prototype_vectors"}
    net.losses(flipped_batch(official["train"]))["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_the_layer4_head_never_reaches_the_final_head_or_the_evaluation(official):
    net = loaded(official).train()
    batch = flipped_batch(official["train"])
    losses = net.losses(batch)
    (losses["ce_layer4"] + losses["mse_layer4"]).backward()
    assert net.ale_vectors.grad is None or not net.ale_vectors.grad.any()
    ev, classes = official["eval"], batch.class_vectors
    with torch.no_grad():
        before = net.eval().distances(ev["audio"], ev["video"], classes)
        net.prototype_vectors.normal_()
        assert torch.equal(net.distances(ev["audio"], ev["video"], classes), before)


# ----------------------------------------------------------------------------------- reference quirks


def test_double_softmax_switch(official):
    batch = flipped_batch(official["train"])
    on, off = loaded(official, double_softmax=True), loaded(official, double_softmax=False)
    logits = on(batch.audio, batch.video)["final"] @ batch.class_vectors.t()
    torch.testing.assert_close(on.class_scores(on(batch.audio, batch.video)["final"], batch.class_vectors),
                               logits.softmax(1), rtol=0, atol=0)
    torch.testing.assert_close(off.class_scores(off(batch.audio, batch.video)["final"], batch.class_vectors),
                               logits, rtol=0, atol=0)
    l_on, l_off = on.losses(batch), off.losses(batch)
    torch.testing.assert_close(l_off["ce_final"], torch.nn.functional.cross_entropy(logits, batch.labels))
    assert not torch.allclose(l_on["ce_final"], l_off["ce_final"])
    for term in ("mse_final", "mse_layer4"):  # the MSE terms do not depend on it
        torch.testing.assert_close(l_on[term], l_off[term], rtol=0, atol=0)
    # At the official init the compatibilities are ~1e-4: p is nearly uniform and CE(softmax(p)) ~ log C
    # whatever the labels (the gradient of the CE terms is then ~1/C of the single-softmax one).
    torch.manual_seed(0)
    fresh = M.build("apn", small_config(official, double_softmax=True))
    n_classes = batch.class_vectors.shape[0]
    torch.testing.assert_close(fresh.losses(batch)["ce_final"], torch.tensor(math.log(n_classes)),
                               rtol=0, atol=1e-4)


def test_l2_evaluation_switch(official):
    ev, classes = official["eval"], official["train"]["class_vectors"]
    l2, dot = loaded(official, l2_evaluation=True).eval(), loaded(official, l2_evaluation=False).eval()
    with torch.no_grad():
        d_l2 = l2.distances(ev["audio"], ev["video"], classes)
        d_dot = dot.distances(ev["audio"], ev["video"], classes)
        predicted = dot(ev["audio"], ev["video"])["final"]
    torch.testing.assert_close(d_l2, ev["distances"], **TOL)
    torch.testing.assert_close(d_dot, -(predicted @ classes.t()), rtol=0, atol=0)
    assert not torch.allclose(d_l2, d_dot)


# ---------------------------------------------------------------------------------- official checkpoints


def test_official_checkpoint_forms_and_errors(official, tmp_path):
    sd = official["state_dict"]
    path = tmp_path / "APN_score.pt"
    torch.save({"epoch": 1, "model": {"module." + k: v for k, v in sd.items()}, "metric": "score"}, path)
    net = M.load_official_checkpoint(M.build("apn", small_config(official)), path)
    assert torch.equal(net.ale_vectors, sd["ALE_vector"][:, :, 0, 0])
    assert torch.equal(net.prototype_vectors, sd["prototype_vectors.layer4"][:, :, 0, 0])
    with pytest.raises(ValueError, match="set model.word_dim, model.video_dim and model.audio_dim"):
        M.load_official_checkpoint(M.build("apn"), sd)
    with pytest.raises(ValueError, match="missing"):
        M.convert_official_state_dict({"ALE_vector": sd["ALE_vector"]})
    with pytest.raises(ValueError, match=r"\[W, D, 1, 1\]"):
        M.convert_official_state_dict({k: v[:, :, 0, 0] for k, v in sd.items()})


def test_config_from_official_args():
    args = {"apn": True, "input_size": None, "input_size_audio": 128, "input_size_video": 4096, "norm_inputs": True}
    assert M.config_from_official_args(args) == M.dataset_config("ucf", preset="reference")
    with pytest.raises(ValueError, match="--apn"):
        M.config_from_official_args({**args, "apn": False})
