"""Training loop: config validation, exact resume, and learning on planted class structure."""

import copy

import pytest
import torch
from test_method_helpers import check_learned_planted_structure, planted_splits, train_on_planted

from model.batching import make_batch
from model.config import TCAFConfig
from model.environment import seed_everything
from model.sampling import ClassBalancedSampler
from model.tcaf import TCAF
from model.train import build_optimizer, extra_bn_pass, run_stage, train_one_epoch
from model.train_config import TrainConfig

CPU = torch.device("cpu")
# A small TCAF: same structure as the paper's, narrower and shallower so that CPU tests are fast.
SMALL = {"video_dim": 256, "word_dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "dim": 64, "pos_dim": 16,
         "mlp_dim": 64, "encoder_hidden_dim": 64, "decoder_hidden_dim": 64, "out_dim": 16}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture
def deterministic():
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="module")
def data():
    return planted_splits()


def test_train_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown key.*'lr_rate'"):
        TrainConfig.from_dict({"lr_rate": 1e-3})
    with pytest.raises(ValueError, match="seq_mode"):
        TrainConfig.from_dict({"seq_mode": "crop"})
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    cfg = TrainConfig.from_dict({"seeds": [3, 4], "lr": 1e-4})
    assert cfg.seed_list == [3, 4] and TrainConfig(seed=7).seed_list == [7]
    assert TrainConfig(seq_mode="fixed", audio_len_quirk=True).window().audio_len(60) == 37


def _run(train, val, cfg, epochs, ckpt, seed=5):
    seed_everything(seed, cfg.deterministic)
    net = TCAF(TCAFConfig(**SMALL))
    res = run_stage(net, train, val, cfg, seed=seed, epochs=epochs, device=CPU, checkpoint=ckpt)
    return net, res


def test_resume_continues_exactly(tmp_path, data, deterministic):
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=4, deterministic=True, progress=False)
    net_a, res_a = _run(train, val, cfg, 2, tmp_path / "a.pt")
    _run(train, val, cfg, 1, tmp_path / "b.pt")  # "crash" after one epoch
    torch.manual_seed(1234)  # disturb the global RNG: resume must restore it
    net_b, res_b = _run(train, val, cfg, 2, tmp_path / "b.pt")  # resumes at epoch 1
    assert [r["epoch"] for r in res_b.history] == [0, 1]
    for key in ("loss", "loss_ce", "val_HM", "val_bias"):
        assert [r[key] for r in res_a.history] == [r[key] for r in res_b.history]
    sa, sb = net_a.state_dict(), net_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert res_a.best_epoch == res_b.best_epoch
    # A checkpoint from another configuration is not resumed from.
    other = TrainConfig(lr=2e-3, batch_size=8, batches_per_epoch=4, deterministic=True, progress=False)
    _, res_c = _run(train, val, other, 1, tmp_path / "b.pt")
    assert res_c.history[0]["loss"] != res_a.history[0]["loss"]


def test_learns_planted_structure_seen_and_unseen(data):
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=32, batches_per_epoch=30, progress=False)
    _train_and_check_learning(train, val, cfg)


def _train_and_check_learning(train, val, cfg: TrainConfig) -> TCAF:
    """5 epochs from seed 0; the model must learn the planted structure of both seen and unseen classes."""
    net, before, res, _ = train_on_planted(lambda: TCAF(TCAFConfig(**SMALL)), train, val, cfg)
    check_learned_planted_structure(res, before)
    return net


def test_extra_bn_pass_only_changes_batchnorm_statistics(data):
    train = data[0]
    stats = []
    for extra in (False, True):
        cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=2, extra_bn_pass=extra, progress=False)
        seed_everything(0)
        net = TCAF(TCAFConfig(**SMALL))
        opt = build_optimizer(net, cfg)
        train_one_epoch(net, opt, ClassBalancedSampler(train, 8, 1, cfg.window(), seed=0), CPU, cfg)
        stats.append(net.state_dict())
    off, on = stats
    # As the official extra pass: A_enc, V_enc, O_proj and W_proj see one more batch; D_o and D_w do not.
    counts = {k: (int(off[k]), int(on[k])) for k in off if k.endswith("num_batches_tracked")}
    for k, (n_off, n_on) in counts.items():
        if k.startswith(("output_decoder", "word_decoder")):
            assert n_on == n_off, k
        else:
            assert n_on == n_off + 1, k
    weights = [k for k in off if k.endswith(".weight")]
    assert all(torch.equal(off[k], on[k]) for k in weights)  # one step: gradients came before the extra pass


def _extra_pass_running_the_decoder(model, batch, class_vectors):
    """The extra pass as it was before it skipped D_o: D_o held in eval mode, run, its output unused."""
    model.output_decoder.eval()
    with torch.no_grad():
        b = batch.audio.shape[0]
        t_a = torch.arange(batch.audio.shape[1], dtype=torch.float32).expand(b, -1)
        t_v = torch.arange(batch.video.shape[1], dtype=torch.float32).expand(b, -1)
        model(batch.audio, batch.audio_mask, batch.video, batch.video_mask, t_a, t_v)
        model.embed_classes(class_vectors[batch.labels])
    model.output_decoder.train()


def test_extra_bn_pass_skips_the_reconstruction_decoder(data):
    train = data[0]
    cfg = TrainConfig(batch_size=8, batches_per_epoch=1, progress=False)
    idx, s_a, s_v, la, lv = next(ClassBalancedSampler(train, 8, 1, cfg.window(), seed=0).plan())
    batch = make_batch(train, idx, s_a, s_v, la, lv, CPU)
    seed_everything(0)
    net = TCAF(TCAFConfig(**SMALL)).train()
    old = copy.deepcopy(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    decoder_calls = []
    net.output_decoder.register_forward_hook(lambda *_: decoder_calls.append(1))

    torch.manual_seed(1)  # the same dropout masks in both passes
    extra_bn_pass(net, batch, train.class_vectors)
    torch.manual_seed(1)
    _extra_pass_running_the_decoder(old, batch, train.class_vectors)

    assert decoder_calls == [] and net.training and net.output_decoder.training
    after, expected = net.state_dict(), old.state_dict()
    bn = [k for k in after if ".running_" in k or k.endswith("num_batches_tracked")]
    assert all(torch.equal(after[k], expected[k]) for k in after), "BatchNorm statistics differ from before"
    assert all(torch.equal(after[k], before[k]) for k in after if k not in bn)  # no parameter moves
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith(("output_decoder", "word_decoder")))
    assert any(not torch.equal(after[k], before[k]) for k in bn if k.startswith("audio_encoder"))
    # W_proj's statistics, by hand: one train-mode BatchNorm step (momentum 0.1) on Linear(w) of the batch's classes.
    lin, bn_w = net.word_proj.net[0], "word_proj.net.1"
    h = train.class_vectors[batch.labels] @ lin.weight.T + lin.bias
    torch.testing.assert_close(after[f"{bn_w}.running_mean"], 0.9 * before[f"{bn_w}.running_mean"] + 0.1 * h.mean(0))
    torch.testing.assert_close(after[f"{bn_w}.running_var"], 0.9 * before[f"{bn_w}.running_var"] + 0.1 * h.var(0))


def test_an_epoch_with_the_extra_pass_runs_the_decoder_once_per_step(data):
    train = data[0]
    cfg = TrainConfig(lr=1e-3, batch_size=8, batches_per_epoch=3, extra_bn_pass=True, progress=False)
    seed_everything(0)
    net = TCAF(TCAFConfig(**SMALL))
    calls = []
    net.output_decoder.register_forward_hook(lambda *_: calls.append(1))
    train_one_epoch(net, build_optimizer(net, cfg), ClassBalancedSampler(train, 8, 3, cfg.window(), seed=0), CPU, cfg)
    assert len(calls) == 3  # the training forwards (l_rec), none in the extra passes


def test_amp_switch_is_validated_and_bf16_training_learns(data):
    assert TrainConfig.from_dict({"amp": "bf16"}).amp == "bf16" and TrainConfig().amp == "off"
    for bad in ("fp16", "on", True):
        with pytest.raises(ValueError, match="TrainConfig.amp"):
            TrainConfig.from_dict({"amp": bad})
    train, val = data
    cfg = TrainConfig(lr=1e-3, batch_size=32, batches_per_epoch=30, amp="bf16", progress=False)
    net = _train_and_check_learning(train, val, cfg)  # the same bar as the float32 learning test
    # Weights stay float32 (autocast only lowers the matmuls).
    assert all(p.dtype == torch.float32 for p in net.parameters())
