"""Evaluating released official TCAF runs: tiny official-layout run folders on a synthetic feature store,
checked against an evaluation assembled here by hand from the same weights."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_model_official import official_layout  # official key names and shapes

from data_splits.io import read_class_embeddings, read_classes, write_class_embeddings
from model.batching import WindowConfig
from model.metrics import bias_grid
from model.official import config_from_official_args, load_official_checkpoint
from model.packing import SplitData, build_split
from model.released import evaluate_official_run, locate_official_run, read_official_args
from model.store_reader import open_store
from model.synthetic import SyntheticSpec, write_synthetic_dataset
from model.tcaf import TCAF
from model.train import compute_embeddings, evaluate

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO = Path(__file__).resolve().parents[1]
SPEC = SyntheticSpec(n_seen=5, n_unseen=2, word_dim=300, audio_dim=8, video_dim=12, audio_len=(3, 6),
                     video_len=(4, 9), signal=2.0, seed=3)
# Official argument names (args.yaml of main.py) of a tiny run; word size 300 and d_out 64 are fixed there.
ARGS = {
    "dataset_name": "UCF", "zero_shot_split": "cls_split", "retrain_all": True, "seed": 7, "epochs": 3,
    "save_checkpoints": True, "distance_fn": "L2Loss", "z_score_inputs": False, "selavi": False,
    "input_size": None, "input_size_audio": 8, "input_size_video": 12,
    "batch_seqlen_test": "max", "batch_seqlen_test_maxlen": 300, "batch_seqlen_test_trim": "center",
    "embeddings_hidden_size": 16, "embedding_dropout": 0.3, "embeddings_batch_norm": True,
    "transformer_use_embedding_net": True, "transformer_dim": 300, "transformer_depth": 1, "transformer_heads": 2,
    "transformer_dim_head": 8, "transformer_mlp_dim": 16, "transformer_dropout": 0.3,
    "transformer_embedding_dim": 8, "transformer_embedding_dropout": 0.2,
    "transformer_embedding_fourier_scale": 10.0, "transformer_embedding_modality": True,
    "transformer_embedding_time_embed_type": "sinusoid", "transformer_embedding_time_len": 120,
    "transformer_use_class_token": True, "decoder_hidden_size": 16, "decoder_dropout": 0.1,
    "additional_dropout": 0.1, "cross_entropy_loss": True, "reg_loss": True, "rec_loss": True,
    "use_self_attention": False, "use_cross_attention": True, "new_model_sequence": True,
}  # fmt: skip
STAGE_A_ARGS = {**ARGS, "retrain_all": False, "epochs": 10}
NET = "Multimodal_Sequence_Transformer"
EPOCH_A = 3  # stored in *_score.pt: best epoch 2 (0-based) + 1


def save_ckpt(path: Path, epoch: int, sd: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "model": sd, "optimizer": {"state": {}, "param_groups": []}, "metric": "score"},
               path)
    return path


def write_args(run: Path, args: dict, fmt: str = "yaml") -> None:
    run.mkdir(parents=True, exist_ok=True)
    if fmt == "yaml":
        (run / "args.yaml").write_text(yaml.safe_dump(args))
    else:  # as main.py pickles its namespace, paths included
        ns = argparse.Namespace(**args, log_dir=pathlib.PosixPath("runs"), root_dir=pathlib.PosixPath("/data/x"))
        (run / "args.pkl").write_bytes(pickle.dumps(ns, protocol=0 if fmt == "pkl0" else 4))


def make_runs(root: Path, w: dict[str, dict], *, args_fmt: str = "yaml") -> tuple[Path, Path]:
    """Official stage-1 / stage-2 folders, with decoys: every other checkpoint holds different weights."""
    a, b = root / "stage_a", root / "stage_b"
    write_args(a, STAGE_A_ARGS)
    save_ckpt(a / f"{NET}_score.pt", EPOCH_A, w["A"])
    save_ckpt(a / f"{NET}_loss.pt", 5, w["loss"])
    save_ckpt(a / "checkpoints" / f"{NET}_score_ckpt_2.pt", 3, w["a_ckpt"])  # stage A's own epoch 2
    write_args(b, ARGS, args_fmt)
    save_ckpt(b / f"{NET}_score.pt", 2, w["b_score"])  # stage B's best val epoch: not what is tested
    for i, sd in ((0, w["b_ckpt1"]), (1, w["b_ckpt1"]), (2, w["B"]), (3, w["b_ckpt3"])):
        save_ckpt(b / "checkpoints" / f"{NET}_score_ckpt_{i}.pt", i + 1, sd)
    return a, b


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    ds = write_synthetic_dataset(root / "data", SPEC, per_class={"stage_1_train": 1})
    # Readable names in the reverse order of the class ids, so that the official ordering quirk (class k gets
    # the k-th vector of the sorted readable names) gives class k the vector of class 6 - k.
    emb = read_class_embeddings(ds["class_embeddings"])
    n = len(emb.names)
    write_class_embeddings(ds["class_embeddings"], emb.names, [f"phrase {n - 1 - i}" for i in range(n)],
                           emb.vectors, {"backend": "synthetic", "dim": 300})
    return ds


def official_splits(ds: dict) -> tuple[SplitData, SplitData]:
    """stage_1_val and stage_2_test with the class vectors in the official loader's order."""
    classes = read_classes(ds["splits_dir"] / "classes.tsv")
    emb = read_class_embeddings(ds["class_embeddings"])
    order = sorted(range(len(emb.names)), key=lambda i: emb.readable_names[i])
    vectors = {c.class_id: emb.vectors[order[c.class_id]] for c in classes}
    store = open_store(ds["store"])
    return tuple(build_split(store, ds["splits_dir"], s, vectors, classes) for s in ("stage_1_val", "stage_2_test"))


def official_weights(seed: int, splits: tuple[SplitData, SplitData]) -> dict[str, torch.Tensor]:
    """Random official-layout weights whose last BatchNorms of O_proj and W_proj are fitted to the data.

    With purely random running statistics theta_o barely varies between videos (every video lands on the
    same class); fitted ones spread the embeddings, so that different weights give different metrics.
    """
    sd = official_layout(ARGS, torch.Generator().manual_seed(seed))
    net = load_official_checkpoint(TCAF(config_from_official_args(ARGS)), sd).eval()
    seen: list[torch.Tensor] = []
    hook = net.output_proj.net[5].register_forward_hook(lambda _m, inp, _out: seen.append(inp[0]))
    for split in splits:
        compute_embeddings(net, split, torch.device("cpu"), WindowConfig(mode="max"), 64)
    hook.remove()
    x_o = torch.cat(seen)
    with torch.no_grad():
        x_w = net.word_proj.net[0](splits[1].class_vectors)
    for name, x in (("O_proj.fc.5", x_o), ("W_proj.fc.1", x_w)):
        sd[f"{name}.running_mean"], sd[f"{name}.running_var"] = x.mean(0), x.var(0) + 1e-3
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.ones(x.shape[1]), torch.full((x.shape[1],), 0.5)
    return sd


@pytest.fixture(scope="module")
def w(data) -> dict[str, dict]:
    """Model A, model B and the decoys, each with its own weights."""
    splits = official_splits(data)
    names = ["A", "B", "loss", "a_ckpt", "b_ckpt1", "b_ckpt3", "b_score"]
    return {name: official_weights(seed, splits) for seed, name in enumerate(names)}


def by_hand(ds: dict, sd_a: dict, sd_b: dict) -> tuple:
    """The official protocol written out: model A grid-searches the bias on val, model B is tested with it."""
    val, test = official_splits(ds)
    cfg = config_from_official_args(ARGS)
    cpu, win = torch.device("cpu"), WindowConfig(mode="max")
    net_a = load_official_checkpoint(TCAF(cfg), sd_a)
    net_b = load_official_checkpoint(TCAF(cfg), sd_b)
    r_val = evaluate(net_a, val, cpu, win, grid=bias_grid(0.0, 3.0, 0.2))
    r_test = evaluate(net_b, test, cpu, win, bias=r_val.bias + 1e-10 / 3)
    return r_val, r_test


def metric_values(r) -> list[float]:
    return [100 * r.S, 100 * r.U, 100 * r.HM, 100 * r.ZSL]


def reported(m: dict) -> list[float]:
    return [m[k] for k in ("S", "U", "HM", "ZSL")]


def test_released_run_matches_protocol_by_hand_and_uses_the_right_files(data, w, tmp_path):
    a, b = make_runs(tmp_path, w)
    m = evaluate_official_run(data["store"], data["splits_dir"], data["class_embeddings"], a, b, tmp_path / "out",
                              cfg={"train": {"progress": False, "device": "cpu"}})
    r_val, r_test = by_hand(data, w["A"], w["B"])
    assert reported(m) == pytest.approx(metric_values(r_test), abs=1e-9)
    assert [m["val"][k] for k in ("S", "U", "HM", "ZSL")] == pytest.approx(metric_values(r_val), abs=1e-9)
    assert m["val"]["bias"] == pytest.approx(r_val.bias, abs=1e-12)
    assert m["bias"] == m["per_seed"][0]["bias"] == r_val.bias + 1e-10 / 3
    assert 0 < m["HM"] < 100 and m["val"]["HM"] > 0 and r_val.bias > 0  # a non-degenerate check

    # (b) which files: model A is stage A's *_score.pt, model B stage B's checkpoint of epoch_A - 1
    assert m["stage_a"] == str(a / f"{NET}_score.pt")
    assert m["stage_b"] == m["checkpoint"] == str(b / "checkpoints" / f"{NET}_score_ckpt_2.pt")
    assert m["official_args"] == str(b / "args.yaml") and m["checkpoint_source"] == "released"
    # ... and the decoys would have given other numbers
    for decoy in ("loss", "a_ckpt", "b_score"):
        assert [m["val"][k] for k in ("S", "U", "HM", "ZSL")] != pytest.approx(
            metric_values(by_hand(data, w[decoy], w["B"])[0]), abs=1e-6), decoy
    for decoy in ("b_ckpt1", "b_ckpt3", "b_score"):
        assert reported(m) != pytest.approx(metric_values(by_hand(data, w["A"], w[decoy])[1]), abs=1e-6), decoy

    # the schema of model.pipeline.evaluate, one "seed" (the official run's)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["n_seeds"] == 1 and saved["per_seed"][0]["seed"] == 7 and saved["per_seed"][0]["best_epoch"] == 2
    assert saved["preset"] == "reference" and saved["dataset"] == "ucf" and saved["split_kind"] == "cls"
    assert saved["std"] == {"S": 0.0, "U": 0.0, "HM": 0.0, "ZSL": 0.0}
    assert saved["test"]["classes"] == 7 and saved["val"]["split"]["unseen_classes"] == 2
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert md.startswith("# TCAF test results") and "Released checkpoints of the official TCAF code" in md
    assert f"| 1 | {m['S']:.2f} |" in md

    # The quirks matter: without the reference preset (no vector permutation, ...) the numbers change.
    paper = evaluate_official_run(data["store"], data["splits_dir"], data["class_embeddings"], a, b,
                                  tmp_path / "paper", cfg={"preset": "paper", "train": {"device": "cpu"}})
    assert paper["preset"] == "paper" and reported(paper) != pytest.approx(reported(m), abs=1e-6)


@pytest.mark.parametrize("fmt", ["pkl", "pkl0"])
def test_args_pickle_only_is_read_safely(data, w, tmp_path, fmt):
    a, b = make_runs(tmp_path, w, args_fmt=fmt)
    args, path = read_official_args(b)
    assert path == b / "args.pkl" and args["root_dir"] == "/data/x" and args["retrain_all"] is True
    assert {k: args[k] for k in ARGS} == ARGS
    m = evaluate_official_run(data["store"], data["splits_dir"], data["class_embeddings"], a, b, tmp_path / "out",
                              cfg={"train": {"device": "cpu"}})
    assert reported(m) == pytest.approx(metric_values(by_hand(data, w["A"], w["B"])[1]), abs=1e-9)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_args_pickle_is_refused(w, tmp_path):
    a, b = make_runs(tmp_path, w, args_fmt="pkl")
    marker = tmp_path / "pwned"
    ns = argparse.Namespace(**ARGS, hook=_Exploit(marker))
    (b / "args.pkl").write_bytes(pickle.dumps(ns))
    with pytest.raises(ValueError, match=r"args\.pkl: refusing.*(posix|os|nt)\.system"):
        locate_official_run(a, b)
    assert not marker.exists()


def test_errors_name_the_folder_and_the_fix(data, w, tmp_path):
    a, b = make_runs(tmp_path, w)
    score = a / f"{NET}_score.pt"

    # stage A: none, or two
    score.rename(tmp_path / "aside.pt")
    with pytest.raises(ValueError, match=r"exactly one '\*_score\.pt'.*found 0"):
        locate_official_run(a, b)
    save_ckpt(score, EPOCH_A, w["A"])
    save_ckpt(a / "checkpoints" / f"{NET}_score.pt", EPOCH_A, w["A"])
    with pytest.raises(ValueError, match=r"found 2: \['Multimodal_Sequence_Transformer_score\.pt', 'checkpoints"):
        locate_official_run(a, b)
    (a / "checkpoints" / f"{NET}_score.pt").unlink()
    assert locate_official_run(a / "checkpoints" / ".." / score.name, b).stage_a.name == score.name  # a file

    # stage B: no checkpoint of epoch_A - 1
    save_ckpt(score, 6, w["A"])
    with pytest.raises(FileNotFoundError, match=r"_ckpt_5\.pt.*Multimodal_Sequence_Transformer_score_ckpt_3\.pt"):
        locate_official_run(a, b)
    save_ckpt(score, EPOCH_A, w["A"])
    # a checkpoint whose stored epoch contradicts its name
    save_ckpt(b / "checkpoints" / f"{NET}_score_ckpt_2.pt", 7, w["B"])
    with pytest.raises(ValueError, match="does not match its name"):
        locate_official_run(a, b)
    save_ckpt(b / "checkpoints" / f"{NET}_score_ckpt_2.pt", 3, w["B"])

    # stage B must be the retrain_all run; stage A must not be
    write_args(b, {**ARGS, "retrain_all": False})
    with pytest.raises(ValueError, match="is this the stage-2 run"):
        locate_official_run(a, b)
    write_args(b, ARGS)
    with pytest.raises(ValueError, match="swapped"):
        locate_official_run(b, b)

    def run(b_args=None, emb=data["class_embeddings"], cfg=None):
        if b_args is not None:
            write_args(b, b_args)
        return evaluate_official_run(data["store"], data["splits_dir"], emb, a, b, tmp_path / "out", cfg=cfg)

    # sizes the data does not have
    with pytest.raises(ValueError, match=r"audio/video features of size 8/12.*takes 8/13"):
        run({**ARGS, "input_size_video": 13})
    with pytest.raises(ValueError, match=r"audio/video features of size 8/12.*takes 10/10"):
        run({**ARGS, "input_size": 10})
    e = read_class_embeddings(data["class_embeddings"])
    small = write_class_embeddings(tmp_path / "emb32.npz", e.names, e.readable_names, e.vectors[:, :32], {}).with_suffix(
        ".npz")
    with pytest.raises(ValueError, match="32-d class vectors.*300-d"):
        run(ARGS, emb=small)
    # architecture in args.yaml that the checkpoints do not have
    with pytest.raises(ValueError, match=r"_ckpt_2\.pt \(model B\)|_score\.pt \(model A\)"):
        run({**ARGS, "transformer_depth": 2})
    # checkpoints of another dataset or split kind, and settings the official evaluation changes numbers with
    with pytest.raises(ValueError, match="dataset_name='UCF'.*'vggsound'"):
        run(ARGS, cfg={"dataset": "vggsound"})
    with pytest.raises(ValueError, match="zero_shot_split='cls_split'"):
        run(ARGS, cfg={"split_kind": "main"})
    with pytest.raises(ValueError, match="z_score_inputs"):
        run({**ARGS, "z_score_inputs": True})
    with pytest.raises(ValueError, match="batch_seqlen_test_trim"):
        run({**ARGS, "batch_seqlen_test": "fixed", "batch_seqlen_test_trim": "random"})


def test_workflow_script_adapter(data, w, tmp_path, monkeypatch):
    a, b = make_runs(tmp_path, w)
    out = tmp_path / "results" / "released"
    smk = SimpleNamespace(
        log=[str(tmp_path / "job.log")],
        threads=1,
        input=SimpleNamespace(features=str(data["store"].with_suffix(".tsv")),
                              classes=str(data["splits_dir"] / "classes.tsv"),
                              class_embeddings=str(data["class_embeddings"])),
        params=SimpleNamespace(released={"stage_a": str(a), "stage_b": str(b)},
                               experiment={"dataset": "ucf", "split_kind": "cls", "preset": "paper",
                                           "model": {"depth": 1, "word_dim": 384}, "train": {"device": "cpu"},
                                           "evaluate": {"bias_grid": [0.0, 3.0, 0.2]}}),
        output=SimpleNamespace(metrics=str(out / "metrics.json"), table=str(out / "metrics.md")),
    )
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the script redirects it to the job log
    runpy.run_path(str(REPO / "workflow" / "scripts" / "evaluate_released.py"), init_globals={"snakemake": smk})
    m = json.loads((out / "metrics.json").read_text())
    assert m["preset"] == "reference"  # the released models are evaluated as the official code does
    assert reported(m) == pytest.approx(metric_values(by_hand(data, w["A"], w["B"])[1]), abs=1e-9)
    assert (out / "metrics.md").is_file() and (tmp_path / "job.log").is_file()
