"""The averaged-feature data path and training recipe that every method of the AVCA-GZSL family shares:
averaging over time, positive/negative sampling as the official loaders, and run_stage with the recipe
(resume, model selection, learning on planted structure). A tiny triplet method defined here stands in
for the methods of model/methods/, which have their own tests."""

from __future__ import annotations

import copy
import math
import os
import shutil
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import methods, pipeline
from model.environment import seed_everything
from model.methods.base import AveragedBatch, AveragedMethod, average_features
from model.methods.data import NegativePairSampler, average_split, make_averaged_batch
from model.methods.train import AveragedRecipe
from model.synthetic import PlantedFeatures, SyntheticSpec, write_synthetic_dataset
from model.train import run_stage
from model.train_config import TrainConfig

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@dataclass
class TinyConfig:
    audio_dim: int = 128
    video_dim: int = 4096
    word_dim: int = 300
    dim: int = 16


class TinyTriplet(AveragedMethod):
    """Video and class vectors projected into one space, trained with a triplet loss against negatives."""

    name = "tiny"

    def __init__(self, audio_dim: int, video_dim: int, word_dim: int, dim: int = 16):
        super().__init__()
        self.av = nn.Sequential(nn.Linear(audio_dim + video_dim, 64), nn.ReLU(), nn.Linear(64, dim))
        self.w = nn.Linear(word_dim, dim)

    def embed(self, audio, video):
        return self.av(torch.cat([audio / 255.0, video], dim=1))

    def losses(self, batch: AveragedBatch) -> dict[str, torch.Tensor]:
        anchor = self.w(batch.word)
        triplet = F.triplet_margin_loss(anchor, self.embed(batch.audio, batch.video),
                                        self.embed(batch.neg_audio, batch.neg_video), margin=1.0)
        return {"total": triplet, "triplet": triplet}

    def distances(self, audio, video, class_vectors):
        return torch.cdist(self.embed(audio, video), self.w(class_vectors))


@pytest.fixture(scope="module")
def data():
    gen = PlantedFeatures(SyntheticSpec(n_seen=8, n_unseen=4, video_dim=256, signal=0.5, seed=0))
    return gen.split("train", 30, range(8)), gen.split("val", 10, range(12))


def test_average_features_is_the_mean_of_each_video_rows():
    values = torch.arange(12, dtype=torch.float32).view(6, 2)
    lengths = torch.tensor([1, 0, 3, 2])
    out = average_features(values, lengths)
    expected = torch.stack([values[0], torch.zeros(2), values[1:4].mean(0), values[4:6].mean(0)])
    torch.testing.assert_close(out, expected)
    with pytest.raises(AssertionError, match="cover the packed rows"):
        average_features(values, torch.tensor([1, 2]))


def test_average_split_matches_the_packed_sequences(data):
    train, _ = data
    avg = average_split(train, CPU)
    for i in (0, 7, len(train) - 1):
        a0, n = int(train.audio.offsets[i]), int(train.audio.lengths[i])
        torch.testing.assert_close(avg.audio[i], train.audio.values[a0:a0 + n].float().mean(0))
        v0, m = int(train.video.offsets[i]), int(train.video.lengths[i])
        torch.testing.assert_close(avg.video[i], train.video.values[v0:v0 + m].float().mean(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(avg.labels, train.labels) and avg.class_ids == train.class_ids


def test_negatives_are_other_present_classes_and_positives_are_balanced(data):
    avg = average_split(data[0], CPU)
    sampler = NegativePairSampler(avg, batch_size=64, n_batches=50, seed=3)
    idx, neg = (torch.cat(t) for t in zip(*sampler.plan(), strict=True))
    assert not torch.any(avg.labels[idx] == avg.labels[neg])
    for drawn in (avg.labels[idx], avg.labels[neg]):
        counts = torch.bincount(drawn, minlength=avg.n_classes).float()
        # 3200 draws over 8 classes: 400 each on average; a 4-sigma band
        assert counts.min() > 400 - 4 * 20 and counts.max() < 400 + 4 * 20, counts
    # same seed, same plan; a restored generator state continues the same sequence
    again = NegativePairSampler(avg, 64, 50, seed=3)
    first = next(again.plan())
    assert torch.equal(first[0], idx[:64]) and torch.equal(first[1], neg[:64])
    state = sampler.state_dict()
    a = next(sampler.plan())
    sampler.load_state_dict(state)
    b = next(sampler.plan())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_split_with_one_class_has_no_negatives(data):
    gen = PlantedFeatures(SyntheticSpec(n_seen=2, n_unseen=1, video_dim=16, seed=0))
    with pytest.raises(ValueError, match="at least two classes"):
        NegativePairSampler(average_split(gen.split("train", 3, [0]), CPU), 4, 1, seed=0)


def test_batches_carry_the_class_vectors_of_positives_and_negatives(data):
    avg = average_split(data[0], CPU)
    idx, neg = next(NegativePairSampler(avg, 16, 1, seed=0).plan())
    batch = make_averaged_batch(avg, idx, neg)
    assert batch.audio.shape == (16, 128) and batch.video.shape == (16, 256)
    assert torch.equal(batch.word, avg.class_vectors[avg.labels[idx]])
    assert torch.equal(batch.neg_word, avg.class_vectors[avg.labels[neg]])
    assert batch.class_vectors.shape[0] == len(batch.class_ids) == avg.n_classes


def _run(train, val, cfg, epochs, ckpt=None, seed=0):
    seed_everything(seed, cfg.deterministic)
    net = TinyTriplet(128, 256, train.class_vectors.shape[1])
    res = run_stage(net, train, val, cfg, seed=seed, epochs=epochs, device=CPU, checkpoint=ckpt,
                    recipe=AveragedRecipe(CPU))
    return net, res


def test_run_stage_with_the_averaged_recipe_learns_planted_structure(data):
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=32, batches_per_epoch=30, progress=False)
    _, res = _run(train, val, cfg, 5)
    best = res.best
    # 12 candidate classes in GZSL (chance ~0.08), 4 unseen in ZSL (chance 0.25)
    assert best["S"] > 0.4 and best["U"] > 0.3 and best["HM"] > 0.35, best
    assert best["ZSL"] > 0.5, best
    assert res.history[-1]["loss"] < 0.7 * res.history[0]["loss"]
    assert "loss_triplet" in res.history[0]  # the method's own terms reach the history


def test_averaged_training_resumes_exactly(tmp_path, data):
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=4, deterministic=True, progress=False)
    net_a, res_a = _run(train, val, cfg, 2, tmp_path / "a.pt")
    _run(train, val, cfg, 1, tmp_path / "b.pt")  # "crash" after one epoch
    torch.manual_seed(99)
    net_b, res_b = _run(train, val, cfg, 2, tmp_path / "b.pt")
    assert [r["loss"] for r in res_a.history] == [r["loss"] for r in res_b.history]
    assert all(torch.equal(v, net_b.state_dict()[k]) for k, v in net_a.state_dict().items())
    torch.use_deterministic_algorithms(False)


# The module API the registry expects of a method module (model/methods/__init__.py), for TinyTriplet.
def make_config(name, model, *, dataset, preset, dims):
    known = TinyConfig.__dataclass_fields__
    return TinyConfig(**{**{k: v for k, v in dims.items() if k in known}, **model})


def build(name, config):
    return TinyTriplet(config.audio_dim, config.video_dim, config.word_dim, config.dim)


def train_defaults(name, dataset):
    return {"lr": 1e-3, "batch_size": 16, "batches_per_epoch": 8, "epochs": 3}


def config_from_dict(name, d):
    return TinyConfig(**d)


def test_the_two_stage_protocol_trains_and_evaluates_a_registered_averaged_method(tmp_path, monkeypatch):
    monkeypatch.setitem(methods.METHOD_MODULES, "tiny", __name__)
    ds = write_synthetic_dataset(tmp_path / "data", SyntheticSpec(n_seen=7, n_unseen=2, video_dim=128, signal=0.5))
    args = (ds["store"], ds["splits_dir"], ds["class_embeddings"])
    cfg = {"dataset": "demo", "split_kind": "cls", "method": "tiny", "model": {"dim": 8},
           "train": {"seeds": [1, 2], "progress": False}}
    exp = pipeline.experiment_config(cfg, word_dim=16)
    assert exp.train.batch_size == 16 and exp.train.epochs == 3  # the method's own training defaults
    assert exp.model == TinyConfig(audio_dim=128, video_dim=4096, word_dim=16, dim=8)
    s1 = pipeline.train_stage1(*args, cfg, tmp_path / "s1")
    assert s1["experiment"]["method"] == "tiny" and len(s1["per_seed"]) == 2
    pipeline.train_stage2(*args, cfg, tmp_path / "s1" / "stage1.json", tmp_path / "s2")
    models, blob = pipeline.load_checkpoint(tmp_path / "s2" / "final.pt")
    assert blob["method"] == "tiny" and all(isinstance(m, TinyTriplet) for m in models.values())
    m = pipeline.evaluate(*args, cfg, tmp_path / "s1" / "stage1.json", tmp_path / "s2" / "final.pt", tmp_path / "ev")
    assert m["method"] == "tiny" and m["n_seeds"] == 2
    for r in m["per_seed"]:  # each seed's HM is the harmonic mean of its S and U
        assert abs(r["HM"] - (2 * r["S"] * r["U"] / (r["S"] + r["U"]) if r["S"] + r["U"] else 0)) < 1e-4
    with open(tmp_path / "s1" / "history.csv") as fh:
        assert "loss_triplet" in fh.readline()
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        pipeline.experiment_config({**cfg, "method": "nope"})


def test_bf16_autocast_is_opt_in_and_still_learns(data):
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=32, batches_per_epoch=30, progress=False, amp="bf16")
    _, res = _run(train, val, cfg, 5)
    assert res.best["HM"] > 0.3 and res.best["ZSL"] > 0.5, res.best
    exact = TrainConfig(lr=1e-3, batch_size=32, batches_per_epoch=30, progress=False)
    _, res_exact = _run(train, val, exact, 1)
    assert res.history[0]["loss"] != res_exact.history[0]["loss"]  # autocast really ran


def test_the_methods_adam_is_the_multi_tensor_one_and_steps_bit_identically():
    from model.methods import get_method_module

    for name in ("avca", "cjme", "avgzslnet", "devise", "apn", "fvaegan"):
        module = get_method_module(name)
        cfg = (module.dataset_config(name, "ucf", preset="reference") if name == "devise"
               else module.dataset_config("ucf", preset="reference"))
        torch.manual_seed(0)
        net = module.build(name, cfg)
        opt = net.build_optimizer(1e-3, 1e-5)
        assert isinstance(opt, torch.optim.Adam) and all(g["foreach"] for g in opt.param_groups), name
    # the same update as torch's per-parameter loop, to the last bit, over a few steps with weight decay
    torch.manual_seed(0)
    params = [torch.randn(64, 33), torch.randn(33), torch.randn(7, 64)]
    grads = [[torch.randn_like(p) * 10.0 ** -k for p in params] for k in range(4)]
    results = []
    for foreach in (False, True):
        ps = [p.clone().requires_grad_() for p in params]
        opt = torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-5, foreach=foreach)
        for step in grads:
            for p, g in zip(ps, step, strict=True):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in ps] + [opt.state[p][k] for p in ps for k in ("exp_avg", "exp_avg_sq")])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_methods_without_negative_features_train_the_same_without_gathering_them(data):
    from model.methods import get_method_module

    avg = average_split(data[0], CPU)
    idx, neg = next(NegativePairSampler(avg, 16, 1, seed=0).plan())
    lean = make_averaged_batch(avg, idx, neg, negative_features=False)
    assert lean.neg_audio.shape == (0, 128) and lean.neg_video.shape == (0, 256)
    assert torch.equal(lean.neg_word, avg.class_vectors[avg.labels[neg]]) and torch.equal(lean.video, avg.video[idx])
    module = get_method_module("devise")
    cfg = module.dataset_config("devise", "ucf", preset="reference", video_dim=256, word_dim=avg.class_vectors.shape[1])
    torch.manual_seed(0)
    base = module.build("devise", cfg)
    assert not base.uses_negative_features
    runs = []
    for gather in (False, True):
        net = copy.deepcopy(base)
        net.uses_negative_features = gather  # True: the full batch, as for a method that reads negatives
        recipe, tc = AveragedRecipe(CPU), TrainConfig(batch_size=16, batches_per_epoch=4, progress=False)
        opt = recipe.build_optimizer(net, tc)
        torch.manual_seed(5)  # the dropout stream
        losses = recipe.train_one_epoch(net, opt, recipe.sampler(avg, tc, 1), CPU, tc)
        runs.append((losses, net.projection.weight.detach()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def _cpp_compiler() -> str | None:
    return next((c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)), None)


@pytest.mark.slow
@pytest.mark.skipif(_cpp_compiler() is None, reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.parametrize("name", ["devise", "apn"])
def test_the_compiled_step_trains_as_the_eager_one(name, data):
    """train.compile: the same losses as eager for a few steps (dropout masks from the same random stream),
    the parameters equal up to float rounding; the compiled step is made once per model."""
    from model.methods import get_method_module

    avg = average_split(data[0], CPU)
    module = get_method_module(name)
    dims = {"video_dim": 256, "word_dim": avg.class_vectors.shape[1]}
    cfg = (module.dataset_config(name, "ucf", preset="reference", **dims) if name == "devise"
           else module.dataset_config("ucf", preset="reference", **dims))
    torch.manual_seed(0)
    base = module.build(name, cfg)
    runs = []
    for compiled in (False, True):
        net, recipe = copy.deepcopy(base), AveragedRecipe(CPU)
        tc = TrainConfig(batch_size=16, batches_per_epoch=2, progress=False, compile=compiled)
        opt, sampler = recipe.build_optimizer(net, tc), recipe.sampler(avg, tc, 1)
        torch.manual_seed(5)
        history = [recipe.train_one_epoch(net, opt, sampler, CPU, tc) for _ in range(3)]
        runs.append((history, [p.detach() for p in net.parameters()]))
        fn = recipe.losses_fn(net, tc)
        assert (fn is recipe.losses_fn(net, tc) and fn != net.losses) if compiled else fn == net.losses
    (eager, eager_params), (comp, comp_params) = runs
    for e, c in zip(eager, comp, strict=True):
        assert e.keys() == c.keys() and all(math.isclose(e[k], c[k], rel_tol=1e-5, abs_tol=1e-6) for k in e), (e, c)
    for a, b in zip(eager_params, comp_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compile_keeps_an_uncompilable_step_eager_and_names_the_switch_when_it_fails(monkeypatch):
    from model.methods.fvaegan import FVAEGAN, FVAEGANConfig

    tc = TrainConfig(progress=False, compile=True)
    net = FVAEGAN(FVAEGANConfig(audio_dim=5, video_dim=11, word_dim=12))
    assert AveragedRecipe(CPU).losses_fn(net, tc) == net.losses  # it steps its critics inside losses

    def failing(fn, **kwargs):
        def run(*args):
            raise OSError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", failing)
    tiny = TinyTriplet(4, 6, 3)
    monkeypatch.setenv("PATH", "")  # no C++ compiler: an error before any step
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler.*train.compile: false"):
        AveragedRecipe(CPU).losses_fn(tiny, tc)
    monkeypatch.undo()
    monkeypatch.setattr(torch, "compile", failing)
    with pytest.raises(RuntimeError, match="train.compile: false"):  # inductor failing at the first call
        AveragedRecipe(CPU).losses_fn(tiny, tc)(None)
