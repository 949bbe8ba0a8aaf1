"""Builders and checks that the method tests share (no tests here).

* The temporal models (TCAF, Perceiver, Attention Fusion; TCAF's forward interface): a small padded batch,
  the padding and no-NaN checks, plain gradient descent on one batch, and learning the planted class
  structure of model/synthetic.py with TCAF's training loop.
* The averaged methods checked against their official fixtures (tests/fixtures/methods/<name>.pt, written by
  benchmarks/official_fixtures/<name>.py): loading, the fixture's batch, and the checks that read the same for
  every method (seeded initialisation, gradients and the Adam step, the registry's module API).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.environment import seed_everything
from model.methods import (
    build_method,
    config_from_dict,
    get_method_module,
    method_config,
    method_train_defaults,
)
from model.methods.base import AveragedBatch
from model.methods.train import AveragedRecipe
from model.published import PUBLISHED
from model.sampling import ClassBalancedSampler
from model.synthetic import PlantedFeatures, SyntheticSpec
from model.train import build_optimizer, evaluate, run_stage, train_one_epoch
from model.train_config import TrainConfig

CPU = torch.device("cpu")
FIXTURES = Path(__file__).parent / "fixtures" / "methods"
TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32, same operations in the same order

# ------------------------------------------------------------------------------------------ temporal models

# The reference quirks of TCAF's config that change its forward pass, which its baselines inherit.
TCAF_QUIRKS = ("normalise_video_over_time", "integer_time_stamps_at_eval", "encoder_bn_over_padding")


def seeded_net(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` from ``seed``, with non-trivial BN running statistics, so that eval mode normalises for real."""
    torch.manual_seed(seed)
    net = build()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


def make_batch(seed=1, B=4, Ta=5, Tv=7, *, lengths_a=(5, 3, 1, 4), lengths_v=(7, 2, 5, 6)):
    """audio (B, Ta, 6) VGGish-like codes, its mask, video (B, Tv, 10), its mask: sample i has lengths_a[i]
    audio and lengths_v[i] video tokens."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randint(0, 256, (B, Ta, 6), generator=g).float()
    video = torch.rand(B, Tv, 10, generator=g)
    am = torch.arange(Ta)[None] < torch.tensor(lengths_a)[:, None]
    vm = torch.arange(Tv)[None] < torch.tensor(lengths_v)[:, None]
    return audio, am, video, vm


def pad_to(x, mask, T, fill):
    """Pad (B, T0, D) / (B, T0) to T with a garbage value that the model must ignore."""
    extra = T - x.shape[1]
    return (torch.cat([x, torch.full((x.shape[0], extra, x.shape[2]), fill)], 1),
            torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=torch.bool)], 1))


def padded_batch(fill_audio: float = 0.0, fill_video: float = 0.0, **batch: Any) -> tuple[tuple, tuple]:
    """``make_batch(**batch)`` and the same batch padded to 9 audio and 13 video tokens."""
    a, am, v, vm = make_batch(**batch)
    return (a, am, v, vm), (*pad_to(a, am, 9, fill_audio), *pad_to(v, vm, 13, fill_video))


def check_eval_padding_invariance(net: nn.Module) -> None:
    """In eval mode, neither padding (whatever its values) nor batching changes the embedding; sample 2 has no
    video at all. "pooled" is checked too: the ReLU at the end of O_proj could hide differences."""
    (a, am, v, vm), padded = padded_batch(123.0, 7.0, lengths_v=(7, 2, 0, 6))
    for key in ("pooled", "embedding"):
        with torch.no_grad():
            ref = net(a, am, v, vm)[key]
            padded_out = net(*padded)[key]
            single = torch.cat([net(a[i : i + 1, : int(am[i].sum())], None, v[i : i + 1, : int(vm[i].sum())], None)[key]
                                for i in range(4)])
        torch.testing.assert_close(padded_out, ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(single, ref, rtol=0, atol=1e-5)


def check_train_padding_invariance(net: nn.Module, key: str) -> None:
    batch, padded = padded_batch()
    torch.testing.assert_close(net(*padded)[key], net(*batch)[key], rtol=0, atol=1e-5)


def check_finite_without_valid_tokens(net: nn.Module) -> None:
    """Samples with audio only, video only and nothing at all: finite outputs, and in train mode finite
    gradients."""
    a, am, v, vm = make_batch()
    vm[0] = False  # audio only
    am[1] = False  # video only
    am[2] = vm[2] = False  # nothing at all
    out = net(a, am, v, vm)
    assert all(torch.isfinite(t).all() for t in out.values())
    if net.training:
        net.losses(out, torch.tensor([0, 1, 2, 0]), torch.randn(3, 7))["total"].backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def check_bfloat16_autocast(net: nn.Module) -> None:
    """Under CPU bf16 autocast the forward and the losses are finite and the embedding close to float32's."""
    a, am, v, vm = make_batch(lengths_v=(7, 2, 0, 6))
    with torch.no_grad():
        ref = net(a, am, v, vm)["pooled"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(a, am, v, vm)
            losses = net.losses(out, torch.tensor([0, 1, 2, 0]), torch.randn(3, 7))
    assert all(torch.isfinite(t).all() for t in (*out.values(), *losses.values()))
    torch.testing.assert_close(out["pooled"].float(), ref, rtol=0.05, atol=0.05)


def descend_on_one_batch(net: nn.Module, steps: int = 15) -> list[set[str]]:
    """Plain gradient descent on ``make_batch()``: every parameter that a loss term touches must receive a
    finite gradient, and the loss must fall. Returns the loss terms of each step."""
    a, am, v, vm = make_batch()
    class_vectors, labels = F.normalize(torch.randn(3, 7), dim=-1), torch.tensor([0, 1, 2, 0])
    losses, terms = [], []
    for _ in range(steps):
        loss = net.losses(net(a, am, v, vm), labels, class_vectors)
        terms.append(set(loss))
        net.zero_grad()
        loss["total"].backward()
        losses.append(loss["total"].item())
        with torch.no_grad():
            for name, p in net.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
                p -= 0.05 * p.grad
    assert losses[-1] < 0.8 * losses[0]
    return terms


def planted_splits():
    """(train, val) of model/synthetic.py's planted class structure: 8 seen classes x 30 videos for training,
    the 8 seen and 4 unseen classes x 10 videos for validation (128-d audio, 256-d video)."""
    gen = PlantedFeatures(SyntheticSpec(n_seen=8, n_unseen=4, video_dim=256, signal=0.5, seed=0))
    return gen.split("train", 30, range(8)), gen.split("val", 10, range(12))


def train_on_planted(build: Callable[[], nn.Module], train, val, cfg: TrainConfig | None = None):
    """5 epochs of TCAF's training loop from seed 0: (the net, its evaluation before, the stage's result, the
    training config)."""
    cfg = cfg or TrainConfig(lr=1e-3, batch_size=32, batches_per_epoch=30, progress=False)
    seed_everything(0)
    net = build()
    before = evaluate(net, val, CPU, cfg.window())
    return net, before, run_stage(net, train, val, cfg, seed=0, epochs=5, device=CPU), cfg


def check_learned_planted_structure(res, before) -> None:
    """The bar of TCAF's own learning test, for seen and unseen classes."""
    best = res.best
    # 12 candidate classes in GZSL (chance 1/12 ~ 0.08); 4 unseen candidates in ZSL (chance 0.25).
    assert best["S"] > 0.4 and best["U"] > 0.4 and best["HM"] > 0.4, best
    assert best["ZSL"] > 0.6, best
    assert best["HM"] > before.HM + 0.2
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < 0.6 * losses[0]


def run_training_loop_end_to_end(build: Callable[[], nn.Module], rebuild: Callable[[Any], nn.Module], data,
                                 checkpoint: Path):
    """Two epochs of TCAF's loop with the reference preset's training switches (the extra train-mode pass and
    bf16 autocast); the stage-2 model rebuilt from the state dict and evaluated with a fixed bias, as the
    pipeline does, and one more epoch on its own. Returns (net, result)."""
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=3, extra_bn_pass=True, amp="bf16", progress=False)
    seed_everything(0)
    net = build()
    res = run_stage(net, train, val, cfg, seed=0, epochs=2, device=CPU, checkpoint=checkpoint)
    assert [r["epoch"] for r in res.history] == [0, 1] and 0 <= res.best_epoch <= 1
    assert all(torch.isfinite(torch.tensor([r["loss"], r["val_HM"]])).all() for r in res.history)
    assert set(res.best) == {"S", "U", "HM", "ZSL", "bias"}
    again = rebuild(net.cfg)
    again.load_state_dict(res.last_state)
    fixed = evaluate(again, val, CPU, cfg.window(), bias=res.best["bias"])
    assert fixed.bias == res.best["bias"] and 0.0 <= fixed.HM <= 1.0
    opt = build_optimizer(again, cfg)
    losses = train_one_epoch(again, opt, ClassBalancedSampler(train, 8, 2, cfg.window(), seed=1), CPU, cfg)
    assert set(losses) == {"total", "ce", "reg", "rec"}
    return net, res


# ------------------------------------------------------------------------- averaged methods and their fixtures


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def fixture_batch(fx: dict) -> AveragedBatch:
    """The recorded training batch: positives, negatives and the split's class vectors."""
    x = fx["inputs"]
    return AveragedBatch(audio=x["audio"], video=x["video"], labels=x["labels"], word=x["word"],
                         neg_audio=x["neg_audio"], neg_video=x["neg_video"], neg_labels=x["neg_labels"],
                         neg_word=x["neg_word"], class_ids=torch.arange(len(x["class_vectors"])),
                         class_vectors=x["class_vectors"])


def flipped_batch(t: dict) -> AveragedBatch:
    """A batch of the recorded training inputs; the negatives are the positives in reverse order."""
    word = t["class_vectors"][t["labels"]]
    return AveragedBatch(audio=t["audio"], video=t["video"], labels=t["labels"], word=word,
                         neg_audio=t["audio"].flip(0), neg_video=t["video"].flip(0), neg_labels=t["labels"].flip(0),
                         neg_word=word.flip(0), class_ids=t["class_ids"], class_vectors=t["class_vectors"])


def random_batch(B: int, C: int, *, audio_dim: int, video_dim: int, word_dim: int) -> AveragedBatch:
    """Random inputs on the scales of the cls features: every positive of class 0, every negative of class 1."""
    return AveragedBatch(audio=torch.rand(B, audio_dim) * 255, video=torch.rand(B, video_dim),
                         labels=torch.zeros(B, dtype=torch.long), word=torch.randn(B, word_dim),
                         neg_audio=torch.rand(B, audio_dim) * 255, neg_video=torch.rand(B, video_dim),
                         neg_labels=torch.ones(B, dtype=torch.long), neg_word=torch.randn(B, word_dim),
                         class_ids=torch.arange(C), class_vectors=torch.randn(C, word_dim))


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def check_close(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], keys) -> None:
    for key in keys:
        torch.testing.assert_close(got[key], expected[key], **TOL, msg=key)


def check_buffers(model: nn.Module, official: Mapping, convert: Callable[[Mapping], Mapping]) -> None:
    """The model's BatchNorm statistics are those of the official state dict ``official``."""
    expected = convert(official)
    for key, value in buffers(model).items():
        torch.testing.assert_close(value, expected[key], **TOL, msg=key)


def check_seeded_construction(fx: dict, build: Callable[[], nn.Module],
                              convert: Callable[[Mapping], Mapping]) -> None:
    """Built from the fixture's seed, the model starts from the official initial weights, bit for bit."""
    torch.manual_seed(fx["seed"])
    model = build()
    init = convert(fx["state_init"])
    assert model.state_dict().keys() == init.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, init[key]), key


def check_gradients_and_adam_step(model: nn.Module, total: torch.Tensor, fx: dict,
                                  convert: Callable[[Mapping], Mapping], pre_bn_biases: set[str]) -> None:
    """The backward of ``total`` gives the official gradient of every parameter, and one step of the method's
    optimiser (the official Adam of main.py over every parameter) the official weights. The biases of the
    Linears right before a BatchNorm (``pre_bn_biases``) have a true gradient of 0: theirs is rounding noise
    (~1e-8), which Adam's first step turns into +-lr, so only the size of their step is reproducible."""
    total.backward()
    grads = convert(fx["grads"])
    names = dict(model.named_parameters())
    assert set(grads) == set(names), "the official optimiser steps every parameter; all must get a gradient"
    for name, p in names.items():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name], **TOL, msg=name)
        if name not in pre_bn_biases:
            assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    optimizer = model.build_optimizer(lr=1e-3, weight_decay=0.0)
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert optimizer.param_groups[0][key] == fx["optimizer_hparams"][key], key
    optimizer.step()
    after = convert(fx["state_after_step"])
    for key, value in model.state_dict().items():
        if key in pre_bn_biases:
            assert (value - after[key]).abs().max() <= 2e-3 + 1e-6, key
        else:
            torch.testing.assert_close(value, after[key], **TOL, msg=key)


def check_official_checkpoint_forms(name: str, fx: dict, small: Any, dropouts: Mapping[str, float], *,
                                    foreign_key: str, unknown_key: str) -> None:
    """The config read from the fixture's official state dict is ``small`` (the fixture's sizes) with the
    quirks off; a checkpoint dict as main.py saves it, with a DataParallel prefix, loads; a wrong size, another
    model's state dict (``foreign_key``) and an unknown key (``unknown_key``) raise."""
    module = get_method_module(name)
    cfg = module.config_from_official_state_dict(fx["state"], **dropouts)
    assert cfg == type(small)(**{**dataclasses.asdict(small), **dict.fromkeys(module.REFERENCE_QUIRKS, False)})
    state = {f"module.{k}": v for k, v in fx["state"].items()}
    checkpoint = {"epoch": 3, "model": state, "metric": "score"}
    model = module.load_official_checkpoint(module.build(name, cfg), checkpoint)
    torch.testing.assert_close(model.state_dict(), module.convert_official_state_dict(fx["state"]))
    with pytest.raises(ValueError, match="shape mismatches"):
        wider = dataclasses.replace(cfg, hidden_dim=cfg.hidden_dim + 1)
        module.load_official_checkpoint(module.build(name, wider), fx["state"])
    with pytest.raises(ValueError, match=f"not an official {type(model).__name__} state dict"):
        module.convert_official_state_dict({foreign_key: torch.zeros(1)})
    with pytest.raises(ValueError, match="does not know"):
        module.convert_official_state_dict({**fx["state"], unknown_key: torch.zeros(1)})


def check_config_and_presets(name: str, model_class: type, config_class: type, bad: Mapping[str, Any]) -> None:
    """Published numbers for every preset; quirks off by default and all on under the reference preset; a
    config round-trips through its dict; an unknown key, a ``bad`` value and an unknown dataset raise."""
    module = get_method_module(name)
    assert set(model_class.published) == set(module.PRESETS)
    assert getattr(module, model_class.__name__) is model_class and model_class.name == name
    fields = {f.name: f.default for f in dataclasses.fields(config_class)}
    assert all(fields[q] is False for q in module.REFERENCE_QUIRKS), "quirks are off by default"
    assert all(getattr(module.dataset_config("ucf", preset="reference"), q) for q in module.REFERENCE_QUIRKS)
    assert config_class.from_dict(module.dataset_config("vggsound", hidden_dim=8).to_dict()).hidden_dim == 8
    with pytest.raises(ValueError, match=r"model\.hiden_dim"):
        config_class.from_dict({"hiden_dim": 8})
    with pytest.raises(ValueError, match=next(iter(bad))):
        config_class(**bad)
    with pytest.raises(ValueError, match="unknown dataset"):
        module.dataset_config("ucf101")


def check_registry_module_api(name: str, model_class: type) -> None:
    """The registry builds the method's config (the user's values > the reference quirks > the dataset preset
    > the data's sizes), its network, its training defaults and its config from a checkpoint dict."""
    module = get_method_module(name)
    quirks = module.REFERENCE_QUIRKS
    cfg = method_config(name, {"hidden_dim": 16}, dataset="vggsound", preset="reference",
                        dims={"audio_dim": 5, "video_dim": 7, "word_dim": 384, "audio_input_scale": 255.0})
    assert (cfg.hidden_dim, cfg.audio_dim, cfg.video_dim, cfg.word_dim) == (16, 5, 7, 384)
    assert all(getattr(cfg, q) for q in quirks)
    assert cfg == module.dataset_config("vggsound", preset="reference", hidden_dim=16, audio_dim=5, video_dim=7,
                                        word_dim=384)
    user = method_config(name, {"audio_dim": 3}, dataset=None, preset="paper", dims={"audio_dim": 5})
    assert user.audio_dim == 3 and not any(getattr(user, q) for q in quirks)
    assert isinstance(build_method(name, cfg), model_class)
    assert config_from_dict(name, cfg.to_dict()) == cfg
    defaults = method_train_defaults(name, "ucf")
    assert defaults == module.TRAIN_DEFAULTS and (defaults["lr"], defaults["weight_decay"]) == (1e-3, 0.0)
    assert model_class.published == PUBLISHED[name]
    with pytest.raises(ValueError, match="unknown preset"):
        method_config(name, {}, dataset="ucf", preset="official", dims={})
    with pytest.raises(ValueError, match="holds the method"):
        module.build("avca")


def train_through_the_averaged_recipe(name: str, **overrides: Any) -> dict:
    """Two short epochs of the shared averaged recipe on planted features from seed 0 (``overrides``: TrainConfig
    fields); the first epoch's history row."""
    gen = PlantedFeatures(SyntheticSpec(n_seen=6, n_unseen=3, video_dim=48, signal=0.5, seed=0))
    train, val = gen.split("train", 12, range(6)), gen.split("val", 6, range(9))
    module = get_method_module(name)
    cfg = module.dataset_config("ucf", preset="reference", video_dim=48, word_dim=32, hidden_dim=24)
    torch.manual_seed(0)
    model = module.build(name, cfg)
    train_cfg = TrainConfig(**{**module.TRAIN_DEFAULTS, "batch_size": 16, "batches_per_epoch": 3, "progress": False,
                               **overrides})
    result = run_stage(model, train, val, train_cfg, seed=0, epochs=2, device=CPU, recipe=AveragedRecipe("cpu"))
    assert len(result.history) == 2
    assert 0.0 <= result.best["HM"] <= 1.0
    return result.history[0]
