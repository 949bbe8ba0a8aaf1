"""The two-stage protocol end to end on a tiny synthetic dataset in the real on-disk formats."""

import csv
import json

import pytest

from model import pipeline
from model.synthetic import SyntheticSpec, write_synthetic_dataset

SMALL = {"depth": 1, "heads": 2, "dim_head": 16, "dim": 64, "pos_dim": 16, "mlp_dim": 64,
         "encoder_hidden_dim": 64, "decoder_hidden_dim": 64, "out_dim": 16}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_experiment_config_presets_and_data_sizes(tmp_path):
    cfg = pipeline.experiment_config({"dataset": "activitynet", "preset": "reference", "train": {"lr": 1e-3}},
                                     word_dim=384)
    assert cfg.train.seq_mode == "fixed" and cfg.train.lr == 1e-3  # dataset preset under user values
    assert cfg.model.dropout_transformer == 0.4 and cfg.model.word_dim == 384
    assert cfg.train.class_vector_permutation and cfg.train.audio_len_quirk and cfg.model.integer_time_stamps_at_eval
    paper = pipeline.experiment_config({"dataset": "vggsound", "train": {"audio_len_quirk": True}})
    assert not paper.train.lr_scheduler and paper.model.depth == 8
    assert paper.train.audio_len_quirk and not paper.train.class_vector_permutation  # explicit value wins
    with pytest.raises(ValueError, match="word_dim"):
        pipeline.experiment_config({"model": {"word_dim": 300}}, word_dim=384)
    with pytest.raises(ValueError, match="unknown key"):
        pipeline.experiment_config({"train": {"epoch": 3}})


def test_two_stage_protocol_end_to_end(tmp_path):
    ds = write_synthetic_dataset(tmp_path / "data", SyntheticSpec(n_seen=7, n_unseen=2, video_dim=128, signal=0.5))
    args = (ds["store"], ds["splits_dir"], ds["class_embeddings"])
    cfg = {"dataset": "demo", "split_kind": "cls", "model": SMALL,
           "train": {"lr": 1e-3, "epochs": 3, "batch_size": 16, "batches_per_epoch": 8, "seeds": [1, 2],
                     "progress": False}}
    s1 = pipeline.train_stage1(*args, cfg, tmp_path / "s1")
    assert {p["seed"] for p in s1["per_seed"]} == {1, 2}
    for p in s1["per_seed"]:
        assert 0 <= p["best_epoch"] < 3 and p["stage2_epochs"] == p["best_epoch"] + 1
        assert 0 <= p["bias"] <= 3 and abs(p["bias"] / 0.2 - round(p["bias"] / 0.2)) < 1e-9  # on the grid
    assert s1["random_weight_features"] is True
    assert s1["splits"]["stage_1_val"]["dropped"] == 2
    with open(tmp_path / "s1" / "history.csv") as f:
        hist = list(csv.DictReader(f))
    assert len(hist) == 6 and {r["seed"] for r in hist} == {"1", "2"}
    # The best val HM in the history is the one stage 1 selected.
    for p in s1["per_seed"]:
        rows = [r for r in hist if int(r["seed"]) == p["seed"]]
        assert max(float(r["val_HM"]) for r in rows) == pytest.approx(p["val"]["HM"], abs=1e-5)

    s2 = pipeline.train_stage2(*args, cfg, tmp_path / "s1" / "stage1.json", tmp_path / "s2")
    with open(tmp_path / "s2" / "history.csv") as f:
        hist2 = list(csv.DictReader(f))
    for p in s1["per_seed"]:
        assert sum(int(r["seed"]) == p["seed"] for r in hist2) == p["stage2_epochs"]
    assert [p["epochs"] for p in s2["per_seed"]] == [p["stage2_epochs"] for p in s1["per_seed"]]

    m = pipeline.evaluate(*args, cfg, tmp_path / "s1" / "stage1.json", tmp_path / "s2" / "final.pt", tmp_path / "ev")
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["HM"] == pytest.approx(m["HM"])
    assert saved["random_weight_features"] is True and saved["n_seeds"] == 2
    for k in ("S", "U", "HM", "ZSL"):
        vals = [p[k] for p in saved["per_seed"]]
        assert saved[k] == pytest.approx(sum(vals) / 2) and 0 <= saved[k] <= 100
    # each seed is tested with its own stage-1 bias
    assert [p["bias"] for p in saved["per_seed"]] == pytest.approx([p["bias"] for p in s1["per_seed"]])
    assert saved["test"]["unseen_classes"] == 2 and saved["test"]["classes"] == 9
    assert "RANDOM-WEIGHT" in (tmp_path / "ev" / "metrics.md").read_text()

    models, blob = pipeline.load_checkpoint(tmp_path / "s2" / "final.pt")
    assert set(models) == {1, 2} and blob["stage"] == "stage2"
    # how the models were computed is on record, from the checkpoints to the metrics
    record = {"device": s1["device"], "amp": "off", "allow_tf32": False, "compile": False, "deterministic": False,
              "sdpa": "default"}
    assert s1["runtime"] == s2["runtime"] == blob["runtime"] == saved["training_runtime"] == record
    assert saved["runtime"] == {"device": saved["device"], "deterministic": False, "allow_tf32": False}


def test_tsne_plot(tmp_path):
    from model.tsne import plot_tsne

    ds = write_synthetic_dataset(tmp_path / "data", SyntheticSpec(n_seen=7, n_unseen=2, video_dim=128, signal=0.5))
    args = (ds["store"], ds["splits_dir"], ds["class_embeddings"])
    cfg = {"model": SMALL, "train": {"epochs": 1, "batch_size": 16, "batches_per_epoch": 2, "progress": False}}
    pipeline.train_stage1(*args, cfg, tmp_path / "s1")
    pipeline.train_stage2(*args, cfg, tmp_path / "s1" / "stage1.json", tmp_path / "s2")
    info = plot_tsne(*args, cfg, tmp_path / "s2" / "final.pt", tmp_path / "tsne.png", n_seen=3, n_unseen=2)
    assert info["unseen"] == [False, False, False, True, True]
    assert info["samples"] == 3 * 3 + 2 * 6
    assert (tmp_path / "tsne.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not in the stage_2_test split"):
        plot_tsne(*args, cfg, tmp_path / "s2" / "final.pt", tmp_path / "x.png", classes=["NoSuchClass"])


def test_resume_dir_changes_with_inputs_and_params_only(tmp_path):
    import os

    from model.pipeline import resume_dir

    data = tmp_path / "features.tsv"
    data.write_text("x")
    first = resume_dir(tmp_path / "stage1", [data], {"train": {"lr": 1e-4}})
    assert first == resume_dir(tmp_path / "stage1", [data], {"train": {"lr": 1e-4}})
    assert first.parent == tmp_path / "stage1" / "resume"
    assert first != resume_dir(tmp_path / "stage1", [data], {"train": {"lr": 2e-4}})
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # re-extracted features
    assert first != resume_dir(tmp_path / "stage1", [data], {"train": {"lr": 1e-4}})
