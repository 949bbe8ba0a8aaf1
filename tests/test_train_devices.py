"""Device independence of training: CPU-drawn epoch plans, resume across devices, strict determinism, the
deterministic attention path, float32 BatchNorm statistics under bf16, pinned host copies, TF32 and compile.

There is no GPU here: a device change is simulated with meta tensors (data "on another device"), checkpoints
whose storages are tagged ``cuda:0``, and a mocked torch.cuda.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
import torch
from test_method_helpers import planted_splits

from model import attention as attention_mod
from model import batching
from model.batching import WindowConfig, gather_window, make_batch, transfer_mode
from model.config import TCAFConfig
from model.environment import (
    configure_determinism,
    configure_precision,
    rng_state,
    seed_everything,
    set_rng_state,
)
from model.layers import MaskedBatchNorm1d
from model.packing import Packed, SplitData
from model.sampling import ClassBalancedSampler
from model.tcaf import TCAF
from model.train import TemporalRecipe, build_optimizer, check_compile_support, run_stage, runtime_record
from model.train_config import TrainConfig

CPU = torch.device("cpu")
SMALL = {"video_dim": 256, "word_dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "dim": 64, "pos_dim": 16,
         "mlp_dim": 64, "encoder_hidden_dim": 64, "decoder_hidden_dim": 64, "out_dim": 16}

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def data():
    return planted_splits()


@pytest.fixture
def restore_flags():
    """Determinism and TF32 are process-wide: put them back after a test."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[2], saved[3]
    torch.backends.cudnn.deterministic = saved[4]
    if saved[5] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[5]


def on_meta(split: SplitData) -> SplitData:
    """The split with its packed data on another device (meta: shapes, no values), host copies kept."""
    def move(p: Packed) -> Packed:
        return Packed(p.values.to("meta"), p.offsets.to("meta"), p.lengths.to("meta"), p.lengths_cpu)

    return dataclasses.replace(split, audio=move(split.audio), video=move(split.video), labels=split.labels.to("meta"))


# ------------------------------------------------------------------------------------- the epoch plan


@pytest.mark.parametrize("win", [WindowConfig(mode="max"), WindowConfig(mode="fixed", train_video_len=6)])
def test_same_seed_same_plan_whatever_the_data_device(data, win):
    train = data[0]
    elsewhere = on_meta(train)
    assert elsewhere.data_device.type == "meta"
    here = ClassBalancedSampler(train, 16, 5, win, seed=3)
    there = ClassBalancedSampler(elsewhere, 16, 5, win, seed=3)
    for _ in range(2):  # two epochs: the generator advances identically too
        a, b = here.draw(), there.draw()
        for x, y in zip(a[:3], b[:3], strict=True):
            assert x.device == y.device == CPU and torch.equal(x, y)
        assert a[3:] == b[3:]
    if win.mode == "fixed":
        assert (a[2] > 0).any()  # crops were drawn, not all zero
    # plan() hands the batches over on the data device, the same ones draw() made
    batches = list(ClassBalancedSampler(elsewhere, 16, 5, win, seed=3).plan())
    assert len(batches) == 5 and all(b[0].device.type == "meta" and b[2].device.type == "meta" for b in batches)
    first = ClassBalancedSampler(train, 16, 5, win, seed=3)
    idx, s_a, s_v, la, lv = first.draw()
    again = list(ClassBalancedSampler(train, 16, 5, win, seed=3).plan())
    for b in range(5):
        assert torch.equal(again[b][0], idx[b]) and torch.equal(again[b][1], s_a[b])
        assert torch.equal(again[b][2], s_v[b]) and again[b][3:] == (la[b], lv[b])


def test_sampler_state_is_a_cpu_state_and_a_gpu_state_is_refused(data):
    sampler = ClassBalancedSampler(on_meta(data[0]), 8, 2, WindowConfig(), seed=0)
    state = sampler.state_dict()["generator"]
    assert state.device == CPU and state.dtype == torch.uint8
    philox = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator's state looks like
    with pytest.raises(ValueError, match="not a CPU generator state.*removing its resume checkpoint"):
        sampler.load_state_dict({"generator": philox})


# ------------------------------------------------------------------------------- resume across devices


def _run(train, val, cfg, epochs, ckpt, seed=5):
    seed_everything(seed, cfg.deterministic)
    net = TCAF(TCAFConfig(**SMALL))
    return net, run_stage(net, train, val, cfg, seed=seed, epochs=epochs, device=CPU, checkpoint=ckpt)


def _tag_storages(location: str):
    """A serialization package that writes every storage as living on ``location``."""
    def tagger(obj):
        return location if getattr(obj, "device", None) is not None and obj.device.type == "cpu" else None

    def deserializer(obj, loc):
        return None

    return (1, tagger, deserializer)


def test_checkpoint_written_on_a_gpu_resumes_on_the_cpu_exactly(tmp_path, data, monkeypatch, restore_flags, caplog):
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=3, deterministic=True, progress=False)
    net_a, res_a = _run(train, val, cfg, 2, tmp_path / "a.pt")
    # One epoch, checkpointed as a GPU job would write it: every tensor (model, Adam state, the sampler's
    # generator state, RNG states) stored as a cuda:0 storage, two GPUs' RNG states, the device recorded.
    registry = list(torch.serialization._package_registry)
    monkeypatch.setattr(torch.serialization, "_package_registry", [_tag_storages("cuda:0"), *registry])
    with monkeypatch.context() as m:
        m.setattr("model.train.rng_state", lambda: {**rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2})
        m.setattr("model.train.runtime_record", lambda c, d: {**runtime_record(c, d), "device": "cuda:0"})
        _run(train, val, cfg, 1, tmp_path / "b.pt")
    monkeypatch.setattr(torch.serialization, "_package_registry", registry)
    with pytest.raises(RuntimeError, match="CUDA"):  # the tags are real: a plain load wants a GPU
        torch.load(tmp_path / "b.pt", weights_only=False)
    torch.manual_seed(99)  # disturb the global RNG: resume restores it
    with caplog.at_level(logging.WARNING, logger="model.train"):
        net_b, res_b = _run(train, val, cfg, 2, tmp_path / "b.pt")
    assert "was written on cuda:0 and resumes on cpu" in caplog.text
    assert [r["epoch"] for r in res_b.history] == [0, 1]
    for key in ("loss", "loss_ce", "val_HM", "val_bias"):
        assert [r[key] for r in res_a.history] == [r[key] for r in res_b.history]
    sa, sb = net_a.state_dict(), net_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    state = torch.load(tmp_path / "b.pt", map_location="cpu", weights_only=False)
    assert state["runtime"]["device"] == "cpu" and state["fingerprint"]["sampler"] == "cpu-plan/1"


def test_rng_states_restore_on_whatever_gpus_there_are(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: calls.append((i, s.device.type)))
    state = {**rng_state()}
    state.pop("cuda", None)
    set_rng_state(state)  # written on a CPU machine: the GPU keeps its seeded generator
    assert calls == []
    set_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2})  # written on a 2-GPU node
    assert calls == [(0, "cpu")]
    s = rng_state()
    x = torch.rand(4)
    set_rng_state(s)
    assert torch.equal(torch.rand(4), x)


# ------------------------------------------------------------------------------------------ determinism


def test_deterministic_is_strict_and_sets_the_cublas_workspace(monkeypatch, restore_flags):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_determinism(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    configure_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the other documented value is kept
    configure_determinism(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(ValueError, match=r"CUBLAS_WORKSPACE_CONFIG=':0:0'.*non-deterministic"):
        configure_determinism(True)


def test_late_cublas_setting_is_reported_once(monkeypatch, restore_flags, caplog):
    """Set after CUDA started: a warning; already set (the pipeline sets it first, then seeds): none."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with caplog.at_level(logging.WARNING, logger="model.environment"):
        configure_determinism(True)
        assert "CUDA was initialised before CUBLAS_WORKSPACE_CONFIG was set" in caplog.text
        caplog.clear()
        seed_everything(3, deterministic=True)
    assert caplog.text == ""


def test_pipeline_sets_determinism_before_resolving_the_device(monkeypatch, restore_flags, tmp_path):
    """cuBLAS reads its workspace once: load_experiment must set it before anything can touch CUDA."""
    from model import pipeline

    order = []
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(pipeline, "configure_determinism",
                        lambda d: order.append(("determinism", d, os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG",
                                                                                        ":4096:8"))))

    def resolve(spec, key):
        order.append(("device", os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        raise RuntimeError("stop here")

    monkeypatch.setattr(pipeline, "resolve_device", resolve)
    monkeypatch.setattr(pipeline, "open_store", lambda p: type("S", (), {"audio": None, "video": None, "attrs": {}})())
    monkeypatch.setattr(pipeline, "read_class_embeddings", lambda p: type("E", (), {"vectors": torch.zeros(3, 8)})())
    monkeypatch.setattr(pipeline, "experiment_config",
                        lambda cfg, store, word_dim: pipeline.ExperimentConfig(
                            model=None, train=TrainConfig(deterministic=True), evaluate=None))
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.load_experiment("s", "d", "e", {}, ())
    assert order == [("determinism", True, ":4096:8"), ("device", ":4096:8")]


def test_math_attention_only_on_cuda_under_determinism(restore_flags):
    cuda = torch.device("cuda")
    torch.use_deterministic_algorithms(False)
    assert not attention_mod.needs_math_attention(cuda)
    torch.use_deterministic_algorithms(True)
    assert attention_mod.needs_math_attention(cuda)
    assert not attention_mod.needs_math_attention(CPU)  # every CPU backend is deterministic already
    with torch.no_grad():  # the fused kernels' forward is deterministic: evaluation keeps them
        assert not attention_mod.needs_math_attention(cuda)


def test_math_attention_path_matches_the_default(monkeypatch):
    torch.manual_seed(0)
    mha = attention_mod.MultiHeadAttention(dim=32, heads=2, dim_head=8, dropout=0.0)
    x = torch.randn(3, 7, 32)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[0, 5:] = False
    seg = attention_mod.segment_ids(n_cls=1, n_audio=3, n_video=3)
    allowed = attention_mod.build_attention_mask(valid, seg, variant="cross")
    bias = attention_mod.attention_bias(allowed, dtype=torch.float32)
    has_key = allowed.any(-1, keepdim=True)

    def run():
        mha.zero_grad()
        out = mha(x, bias=bias, has_key=has_key)
        out.square().sum().backward()
        return out.detach(), mha.qkv.weight.grad.clone()

    ref_out, ref_grad = run()
    entered = []
    real = attention_mod.sdpa_kernel

    def recording(backend):
        entered.append(backend)
        return real(backend)

    monkeypatch.setattr(attention_mod, "needs_math_attention", lambda device: True)
    monkeypatch.setattr(attention_mod, "sdpa_kernel", recording)
    out, grad = run()
    assert entered == [torch.nn.attention.SDPBackend.MATH]
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ masked BN under bf16


def test_masked_batchnorm_statistics_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    bn = MaskedBatchNorm1d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ref = MaskedBatchNorm1d(6)
    ref.load_state_dict(bn.state_dict())
    x = (torch.randn(700, 6) * 3 + 10).to(torch.bfloat16)  # 600 valid rows: beyond bf16's exact integers
    mask = torch.zeros(700, dtype=torch.bool)
    mask[:600] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn(x, mask)
    y_ref = ref(x.float(), mask)  # the float32 computation on the same (bf16) values
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0, atol=0)


# ------------------------------------------------------------------------------------ host -> device


def test_pinned_staging_only_for_host_to_gpu_copies():
    cuda = torch.device("cuda", 1)
    assert transfer_mode(CPU, cuda) == (True, True)
    assert transfer_mode(CPU, CPU) == (False, False)
    assert transfer_mode(cuda, cuda) == (False, False)  # data already on the GPU: no host memory involved


def test_pinned_gather_gives_the_same_batch(data, monkeypatch):
    """The pinned path (index_select into a preallocated buffer) gathers what the plain path gathers; page
    locking itself needs a GPU, so here the buffers are ordinary memory and pin requests are recorded."""
    train = data[0]
    idx = torch.tensor([3, 0, 17, 5])
    start = torch.tensor([0, 2, 1, 0])
    plain = gather_window(train.video, idx, start, 9)
    pinned_requests = []
    real_empty = torch.empty

    def empty(*args, pin_memory=False, **kwargs):
        pinned_requests.append(pin_memory)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned_requests.append("mask") or self)
    pinned = gather_window(train.video, idx, start, 9, pin=True)
    assert pinned_requests == [True, "mask"]
    assert torch.equal(plain[0], pinned[0]) and torch.equal(plain[1], pinned[1])
    # CPU to CPU stays unpinned and blocking
    monkeypatch.setattr(batching, "gather_window", lambda *a, pin, **k: (_ for _ in ()).throw(AssertionError)
                        if pin else gather_window(*a, **k))
    batch = make_batch(train, idx, start, start, 4, 9, CPU)
    assert batch.video.dtype == torch.float32 and not batch.video.is_pinned()


# ----------------------------------------------------------------------------------------- TF32, compile


def test_tf32_switch_and_record(restore_flags):
    configure_precision(True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    configure_precision(False)  # off means off for convolutions too, where torch's default is on
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    cfg = TrainConfig(allow_tf32=True, compile=True, amp="bf16")
    on_gpu = runtime_record(cfg, torch.device("cuda", 0))
    assert on_gpu == {"device": "cuda:0", "amp": "bf16", "allow_tf32": True, "compile": True,
                      "deterministic": False, "sdpa": "default"}
    assert runtime_record(cfg, CPU)["allow_tf32"] is False  # no TF32 on a CPU, whatever the switch
    assert runtime_record(TrainConfig(deterministic=True), torch.device("cuda"))["sdpa"] == "math"


def test_compile_without_a_compiler_is_a_clear_error_before_training(monkeypatch, data):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(RuntimeError, match=r"train\.compile: torch\.compile on the CPU needs a C\+\+ compiler"):
        check_compile_support(CPU)
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=1, compile=True, progress=False)
    net = TCAF(TCAFConfig(**SMALL))
    with pytest.raises(RuntimeError, match="set train.compile: false"):
        run_stage(net, train, val, cfg, seed=0, epochs=1, device=CPU)


def _compiler_works() -> bool:
    import shutil

    return shutil.which("g++") is not None or shutil.which("clang++") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _compiler_works(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_training_follows_eager(data):
    """Two epochs of steps with train.compile give the eager losses within float tolerance (same dropout
    masks). Fixed windows keep one batch shape, so inductor compiles the step once."""
    train = data[0]
    losses = {}
    for compiled in (False, True):
        cfg = TrainConfig(lr=1e-3, batch_size=16, batches_per_epoch=3, compile=compiled, progress=False,
                          seq_mode="fixed", train_max_len=6)
        seed_everything(0)
        net = TCAF(TCAFConfig(**SMALL))
        recipe = TemporalRecipe()
        opt = build_optimizer(net, cfg)
        sampler = ClassBalancedSampler(train, 16, 3, cfg.window(), seed=0)
        losses[compiled] = [recipe.train_one_epoch(net, opt, sampler, CPU, cfg, desc="t") for _ in range(2)]
        if compiled:
            runner = recipe.runner(net, cfg, CPU)
            assert runner is not net and recipe.runner(net, cfg, CPU) is runner  # compiled once per model
    for eager, comp in zip(losses[False], losses[True], strict=True):
        for k in eager:
            assert comp[k] == pytest.approx(eager[k], rel=1e-4, abs=1e-5), k
    assert losses[False][0] != losses[False][1]  # the steps did train


def test_compiled_run_checkpoints_the_eager_state_dict(data, tmp_path, monkeypatch):
    """The compiled wrapper's keys carry a prefix; checkpoints keep the model's own keys. Dynamo's eager
    backend stands in for inductor (the same wrapper, no C++ build)."""
    train, val = data
    built = []

    def compile_eager(model, device):
        built.append(torch.compile(model, backend="eager"))
        return built[-1]

    monkeypatch.setattr("model.train.compile_model", compile_eager)
    cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=2, compile=True, progress=False)
    seed_everything(0)
    net = TCAF(TCAFConfig(**SMALL))
    res = run_stage(net, train, val, cfg, seed=0, epochs=1, device=CPU, checkpoint=tmp_path / "c.pt")
    assert len(built) == 1 and any(k.startswith("_orig_mod.") for k in built[0].state_dict())
    state = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=False)
    assert list(state["model"]) == list(net.state_dict()) == list(res.best_state)
    assert state["runtime"]["compile"] is True


# ------------------------------------------------------------------------ on a GPU, where there is one

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _gpu_splits(data_device: str):
    from model.synthetic import PlantedFeatures, SyntheticSpec

    gen = PlantedFeatures(SyntheticSpec(n_seen=8, n_unseen=4, video_dim=256, signal=0.5, seed=0))
    return (gen.split("train", 30, range(8), device="cuda", data_device=data_device),
            gen.split("val", 10, range(12), device="cuda", data_device=data_device))


def _gpu_run(cfg: TrainConfig, data_device: str = "device", epochs: int = 2):
    train, val = _gpu_splits(data_device)
    seed_everything(5, cfg.deterministic)
    net = TCAF(TCAFConfig(**SMALL)).cuda()
    res = run_stage(net, train, val, cfg, seed=5, epochs=epochs, device=torch.device("cuda"))
    return res, {k: v.detach().cpu() for k, v in net.state_dict().items()}


@needs_cuda
def test_gpu_plan_and_batches_equal_the_cpu_ones(data):
    train_cpu = data[0]
    on_gpu, on_host = _gpu_splits("device")[0], _gpu_splits("cpu")[0]
    assert on_gpu.data_device.type == "cuda" and on_host.data_device.type == "cpu"
    cuda = torch.device("cuda")
    for win in (WindowConfig(mode="max"), WindowConfig(mode="fixed", train_video_len=6)):
        plans = [list(ClassBalancedSampler(s, 16, 3, win, seed=1).plan()) for s in (train_cpu, on_gpu, on_host)]
        for a, b, c in zip(*plans, strict=True):
            assert torch.equal(a[0], b[0].cpu()) and torch.equal(a[0], c[0]) and a[3:] == b[3:] == c[3:]
            # host data bound for the GPU goes through pinned memory; the batches are the same
            x, y = make_batch(on_host, c[0], c[1], c[2], c[3], c[4], cuda), make_batch(on_gpu, *b, cuda)
            assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True))


@needs_cuda
def test_deterministic_gpu_training_repeats_bit_for_bit(restore_flags):
    cfg = TrainConfig(lr=1e-3, batch_size=16, batches_per_epoch=4, deterministic=True, progress=False)
    (r1, s1), (r2, s2) = _gpu_run(cfg), _gpu_run(cfg)
    keys = ("loss", "loss_ce", "loss_reg", "loss_rec", "val_HM", "val_bias")
    assert [[r[k] for k in keys] for r in r1.history] == [[r[k] for k in keys] for r in r2.history]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


@needs_cuda
def test_tf32_training_follows_float32(restore_flags):
    """TF32 rounds matmul inputs to 10 mantissa bits: the losses of a few steps stay close to float32's."""
    exact, _ = _gpu_run(TrainConfig(lr=1e-3, batch_size=16, batches_per_epoch=4, deterministic=True, progress=False),
                        epochs=1)
    tf32, _ = _gpu_run(TrainConfig(lr=1e-3, batch_size=16, batches_per_epoch=4, deterministic=True, progress=False,
                                   allow_tf32=True), epochs=1)
    for k in ("loss", "loss_ce", "loss_reg", "loss_rec"):
        assert tf32.history[0][k] == pytest.approx(exact.history[0][k], rel=2e-2), k
