"""Zero-shot prediction on new videos (model/predict.py, rules predict_*): the session's tiny demo run (trained by the
workflow, tests/conftest.py), then ``snakemake predict`` in a copy of it on a folder of three of its videos plus a
broken file, with class names of our choosing, through the sharded extraction (2 shards), for two methods (TCAF,
temporal; AVCA, averaged) with per-window scores.

The predictions must be the model's own evaluation: the same video's features extracted again give the training
store's features, and its distances and ranking (and each window's) equal scoring the training store's features of
that video with the training class vectors and the stage-1 bias. The single-process command line gives the same
predictions as the sharded workflow. Bad inputs and features that were not extracted like the training store fail
with errors that name the culprits; the HTML page is opened in a real headless Chromium and its screenshot must show
the thumbnails, the bars and the timelines.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DEMO
from conftest import workflow_logs as _logs

from model.predict import (
    SEEN_COLOUR,
    UNSEEN_COLOUR,
    PredictError,
    WindowSettings,
    WorkflowSettings,
    check_class_names,
    check_prediction_store,
    combine_seeds,
    demo_heldout_defaults,
    extract_features,
    main,
    predict,
    scores_from_distances,
    window_spans,
)

MODEL = Path("results/train/demo/cls/tcaf")
OUT = Path("results/predict/my_videos")
NEW_NAME = "purple triangle spinning slowly"
REPO = Path(__file__).resolve().parents[1]
# Windows of one C3D clip and one VGGish window: the tiny demo's 1.5 s videos (2 clips) get two windows each.
WINDOW_CLIPS, WINDOW_AUDIO = 1, 1

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(workflow, tiny_demo_run, tmp_path_factory, write_yaml):
    """A copy of the tiny demo run (TCAF and AVCA trained by the workflow), then `snakemake predict` on my_videos/
    with names.txt in it."""
    shared, configfiles = tiny_demo_run
    workdir = tmp_path_factory.mktemp("predict_run") / "run"
    shutil.copytree(shared, workdir, symlinks=True)

    # Three videos the model's training store also holds (one per container), and a file that is no video.
    videos = workdir / "my_videos"
    picks = sorted((workdir / "results/demo/videos").rglob("*_0[0-2].*"))[::4][:3]
    assert len(picks) == 3, picks
    videos.mkdir()
    for p in picks:
        shutil.copy(p, videos / p.name)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)

    # Every class of the dataset (alternately by its class name and by its readable phrase) and a new name.
    with open(workdir / "results/splits/demo/cls/classes.tsv", newline="") as f:
        classes = list(csv.DictReader(f, delimiter="\t"))
    names = [c["name"] if i % 2 else c["readable_name"] for i, c in enumerate(classes)] + [NEW_NAME]
    (workdir / "names.txt").write_text("# my classes\n" + "\n".join(names) + "\n\n")
    predict_cfg = write_yaml(workdir / "predict.yaml", {"predict": {
        "videos": "my_videos", "classes": "names.txt", "model": ["tcaf", "avca"], "windows": True,
        "window_s": WINDOW_CLIPS * 0.64, "hop_s": 0.64, "shards": 2}})
    # mtime only: the trained model stays as it is whatever else changed in the code since the first run
    res = workflow.run(workdir, "--cores", "2", "predict", "--rerun-triggers", "mtime",
                       configfiles=[*configfiles, predict_cfg], timeout=900)
    assert res.returncode == 0, res.stdout[-5000:] + _logs(workdir)
    # the sharded path: a manifest, two extraction jobs, one assembly, one ranking job per model
    jobs = workflow.planned_jobs(res.stdout)
    assert {k: jobs.get(k) for k in ("predict_manifest", "predict_extract_shard", "predict_assemble", "predict_rank",
                                     "predict")} == {"predict_manifest": 1, "predict_extract_shard": 2,
                                                     "predict_assemble": 1, "predict_rank": 2, "predict": 1}, jobs
    return workdir, configfiles, picks, classes, names


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rule_needs_the_keys_unless_the_demo_has_its_held_out_set(workflow, tmp_path, write_yaml):
    with pytest.raises(PredictError, match=r"predict\.videos, predict\.classes"):
        WorkflowSettings({}, "ucf", "cls", ["tcaf"]).target_inputs()
    assert WorkflowSettings({}, "ucf", "cls", ["tcaf"]).final_outputs() == []  # not in a benchmark's default target
    demo_makes_heldout = "results/demo/heldout/videos" in (REPO / "workflow/rules/demo.smk").read_text()
    # dry runs in a folder where nothing is made yet: every job of the targets is planned
    configfiles = [workflow.configs["config"], write_yaml(tmp_path / "tiny.yaml", TINY_DEMO)]
    res = workflow.run(tmp_path, "-n", "predict", configfiles=configfiles, timeout=120)
    default = workflow.run(tmp_path, "-n", configfiles=configfiles, timeout=120)
    assert default.returncode == 0, default.stdout[-2000:]
    if demo_makes_heldout:  # the demo predicts on its held-out videos, in the default target too
        assert res.returncode == 0, res.stdout[-2000:]
        assert "results/predict/heldout/tcaf/predictions.html" in default.stdout
        assert workflow.planned_jobs(default.stdout).get("predict_rank") == 1
    else:
        assert res.returncode != 0
        assert "predict.videos" in res.stdout and "predict.classes" in res.stdout, res.stdout[-2000:]
        assert not {"predict", "predict_rank"} & set(workflow.planned_jobs(default.stdout))


def test_workflow_settings_models_names_and_demo_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v").mkdir()
    (tmp_path / "n.txt").write_text("dog\n")
    base = {"videos": "v", "classes": "n.txt"}
    ws = WorkflowSettings({**base, "model": ["avca", "tcaf"]}, "demo", "cls", ["tcaf", "avca"], 3)
    assert ws.model_paths == {"avca": "results/train/demo/cls/avca", "tcaf": "results/train/demo/cls/tcaf"}
    assert ws.final_outputs() == [f"results/predict/v/{m}/predictions.{x}" for m in ("avca", "tcaf")
                                  for x in ("csv", "json", "html")]
    assert ws.n_shards == 3 and ws.training_store == "results/features/demo/features.zarr"
    other = WorkflowSettings({**base, "model": "elsewhere/results/train/ucf/cls/tcaf/stage2/final.pt", "name": "x",
                              "windows": True, "shards": 5}, "demo", "cls", ["tcaf"], 2)
    assert other.model_paths == {"tcaf": "elsewhere/results/train/ucf/cls/tcaf/stage2/final.pt"}
    assert other.training_store is None and other.n_shards == 5  # found from the model by the shard jobs
    assert other.outputs("tcaf")["windows"] == "results/predict/x/tcaf/windows.csv"
    with pytest.raises(PredictError, match="'avca' is not one of this run's models"):
        _ = WorkflowSettings({**base, "model": "avca"}, "demo", "cls", ["tcaf"]).model_paths
    with pytest.raises(PredictError, match="two models would write to results/predict/v/tcaf/"):
        _ = WorkflowSettings({**base, "model": ["tcaf", "a/tcaf"]}, "demo", "cls", ["tcaf"]).model_paths
    with pytest.raises(PredictError, match="'predict.videos': folder 'nope'"):
        WorkflowSettings({**base, "videos": "nope"}, "demo", "cls", ["tcaf"]).final_outputs()
    # the demo's held-out set fills the keys only when the demo rule makes it; a default need not exist yet
    heldout = {"results/demo/heldout/videos", "results/demo/heldout/classes.txt", "results/demo/videos"}
    assert demo_heldout_defaults({"results/demo/videos"}) == {}
    demo = WorkflowSettings({}, "demo", "cls", ["tcaf"], 2, defaults=demo_heldout_defaults(heldout))
    assert demo.enabled and demo.out_dir == "results/predict/heldout"
    assert demo.manifest_inputs() == {"videos": "results/demo/heldout/videos"}
    assert demo.rank_inputs("tcaf")["classes"] == "results/demo/heldout/classes.txt"
    # videos of one's own in the demo: named after their folder, with the held-out class list unless given
    own = WorkflowSettings({"videos": "v"}, "demo", "cls", ["tcaf"], 2, defaults=demo_heldout_defaults(heldout))
    assert own.out_dir == "results/predict/v" and own.classes == "results/demo/heldout/classes.txt"


def test_windows_follow_the_clip_grid():
    # 3 clips (1.92 s) = 2 VGGish windows, moved by one clip; audio aligned by round(s * 0.64 / 0.96)
    ws = WindowSettings()
    assert (ws.video_clips, ws.audio_windows, ws.hop_clips) == (3, 2, 1)
    assert [(w.v0, w.v1, w.a0, w.a1) for w in window_spans(5, 3, ws)] == [(0, 3, 0, 2), (1, 4, 1, 3), (2, 5, 1, 3)]
    assert window_spans(5, 3, ws)[1].times() == {"start_s": 0.64, "end_s": 2.56, "audio_start_s": 0.96,
                                                 "audio_end_s": 2.88}
    # a video shorter than a window: one window of all its rows
    assert [(w.v0, w.v1, w.a0, w.a1) for w in window_spans(2, 1, ws)] == [(0, 2, 0, 1)]
    # a hop that steps over the end still gives the end its window
    hop = WindowSettings(window_s=1.3, hop_s=1.9)  # 2 clips, 1 VGGish window, hop 3 clips
    assert [(w.v0, w.v1, w.a0, w.a1) for w in window_spans(7, 4, hop)] == [(0, 2, 0, 1), (3, 5, 2, 3), (5, 7, 3, 4)]
    with pytest.raises(PredictError, match="hop_s must be a positive number"):
        WindowSettings(hop_s=0)


def _method_distances(method: str, net, audio, video, vectors, seen, train_cfg) -> torch.Tensor:
    """The method's own evaluation distances (as model/train.py and model/methods/train.py evaluate)."""
    from model.metrics import class_distances
    from model.packing import split_from_sequences
    from model.train import compute_embeddings

    split = split_from_sequences("check", audio, video, np.zeros(len(audio), dtype=np.int64), vectors, ~seen,
                                 video_dtype=train_cfg.video_dtype)
    if method == "tcaf":
        emb, cls = compute_embeddings(net, split, torch.device("cpu"), train_cfg.window(), 16)
        return class_distances(emb, cls).double()
    from model.methods.train import AveragedRecipe

    return AveragedRecipe(torch.device("cpu")).distances(net, split, 16).double()


def _expected(workdir: Path, method: str, names: list[str], classes: list[dict[str, str]]):
    """(net, bias, seen, class vectors of every name, train config) from the run's own files."""
    from data_splits.class_embeddings import EmbeddingConfig, embed_class_names
    from data_splits.io import read_class_embeddings, read_classes
    from model.packing import load_class_vectors
    from model.pipeline import load_checkpoint
    from model.train_config import TrainConfig

    folder = workdir / f"results/train/demo/cls/{method}"
    models, blob = load_checkpoint(folder / "stage2/final.pt")
    (seed, net), = models.items()
    bias = json.loads((folder / "stage1/stage1.json").read_text())["per_seed"][0]["bias"]
    vectors = load_class_vectors(workdir / "results/class_embeddings/demo.npz",
                                 read_classes(workdir / "results/splits/demo/cls/classes.tsv"))
    # the dataset's classes: the vectors the model was trained with; the new name: the run's text backend
    meta = read_class_embeddings(workdir / "results/class_embeddings/demo.npz").meta
    new = embed_class_names([NEW_NAME], EmbeddingConfig(backend=meta["backend"], path=meta.get("model_path")))
    cls_vectors = np.concatenate([np.stack([vectors[int(c["class_id"])] for c in classes]), new]).astype(np.float32)
    train_names = set(blob["train_class_names"])
    seen = np.array([c["name"] in train_names for c in classes] + [False])
    return seed, net, bias, seen, cls_vectors, TrainConfig.from_dict(blob["experiment"]["train"])


@pytest.mark.parametrize("method", ["tcaf", "avca"])
def test_predictions_equal_the_models_own_scoring(run, method):
    from extractors.store import FeatureStore

    workdir, _, picks, classes, names = run
    out = workdir / OUT / method
    rows = _csv(out / "predictions.csv")
    result = json.loads((out / "predictions.json").read_text())
    assert result["method"] == method and result["extraction"]["shards"] == 2
    assert [v["video_id"] for v in result["videos"]] == sorted([p.name for p in picks] + ["broken.mp4"])

    # The broken file: a row with its status and reason, no classes.
    broken = [r for r in rows if r["video_id"] == "broken.mp4"]
    assert len(broken) == 1 and broken[0]["status"] == "unreadable" and broken[0]["reason"] and broken[0]["rank"] == ""

    seed, net, bias, seen, vectors, train_cfg = _expected(workdir, method, names, classes)
    assert result["bias"] == {str(seed): bias} and result["calibrate"] is True
    assert [c["name"] for c in result["classes"]] == names
    assert [c["seen"] for c in result["classes"]] == seen.tolist()
    assert seen.any() and not seen.all()

    # The same videos' features in the training store, scored with the training class vectors and the bias.
    train_store = FeatureStore(workdir / "results/features/demo/features.zarr")
    new_store = FeatureStore(workdir / OUT / "features.zarr")
    assert result["features_store"] == str(OUT / "features.zarr")
    audio, video = [], []
    for p in picks:
        a, v = train_store.get("audio", p.stem), train_store.get("video", p.stem)
        a2, v2 = new_store.get("audio", p.name), new_store.get("video", p.name)
        # extracted twice, in other shards, the same features (same random networks, same decoding)
        assert a2.dtype == a.dtype and a2.shape == a.shape and np.abs(a2.astype(int) - a.astype(int)).max() <= 1
        assert v2.shape == v.shape and np.allclose(v2, v, rtol=1e-4, atol=1e-5)
        audio.append(a)
        video.append(v)
    expected = _method_distances(method, net, audio, video, vectors, seen, train_cfg) + bias * torch.as_tensor(
        seen, dtype=torch.float64)

    by_video = {v["video_id"]: v for v in result["videos"]}
    for i, p in enumerate(picks):
        v = by_video[p.name]
        assert v["status"] == "ok"
        got = np.array([v["distances"][n] for n in names])
        np.testing.assert_allclose(got, expected[i].numpy(), rtol=1e-4, atol=1e-4)
        # the ranking is the model's own (ties aside: the new name's vector comes from a second embedding call)
        assert [r["class"] for r in v["top_k"]] == [names[j] for j in np.argsort(expected[i].numpy(), kind="stable")]
        # scores: softmax over the negative distances of all the given classes, CSV = JSON
        d = torch.tensor([v["distances"][n] for n in names], dtype=torch.float64)
        np.testing.assert_allclose([v["scores"][n] for n in names], scores_from_distances(d).numpy(), rtol=1e-12)
        csv_rows = [r for r in rows if r["video_id"] == p.name]
        assert [int(r["rank"]) for r in csv_rows] == list(range(1, 6))  # top 5 of the 5 names
        assert [r["class"] for r in csv_rows] == [r["class"] for r in v["top_k"]]
        assert [float(r["score"]) for r in csv_rows] == [r["score"] for r in v["top_k"]]
        assert [r["seen"] for r in csv_rows] == ["seen" if seen[names.index(r["class"])] else "unseen"
                                                 for r in csv_rows]
        scores = [float(r["score"]) for r in csv_rows]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("method", ["tcaf", "avca"])
def test_each_window_is_the_models_scoring_of_its_features(run, method):
    from extractors.store import FeatureStore

    workdir, _, picks, classes, names = run
    out = workdir / OUT / method
    result = json.loads((out / "predictions.json").read_text())
    assert (result["windows"]["video_clips"], result["windows"]["audio_windows"]) == (WINDOW_CLIPS, WINDOW_AUDIO)
    _, net, bias, seen, vectors, train_cfg = _expected(workdir, method, names, classes)
    train_store = FeatureStore(workdir / "results/features/demo/features.zarr")
    by_video = {v["video_id"]: v for v in result["videos"]}
    assert by_video["broken.mp4"]["windows"] is None
    csv_rows = _csv(out / "windows.csv")
    for p in picks:
        a, v = train_store.get("audio", p.stem), train_store.get("video", p.stem)
        # windows one clip apart; their VGGish rows starting at round(start * 0.64 / 0.96), kept inside the video
        n_v, n_a = len(v), len(a)
        la = min(WINDOW_AUDIO, n_a)
        spans = [(s, min(s + WINDOW_CLIPS, n_v), max(0, min(n_a - la, round(s * 2 / 3))))
                 for s in range(max(n_v - WINDOW_CLIPS, 0) + 1)]
        d = _method_distances(method, net, [a[s_a:s_a + la] for _, _, s_a in spans],
                              [v[s:e] for s, e, _ in spans], vectors, seen, train_cfg)
        d = d + bias * torch.as_tensor(seen, dtype=torch.float64)
        wins = by_video[p.name]["windows"]
        assert len(wins) == len(spans) >= 2
        rows = [r for r in csv_rows if r["video_id"] == p.name]
        assert [int(r["window"]) for r in rows] == list(range(len(spans)))
        for w, r, (s, e, s_a), dist in zip(wins, rows, spans, d, strict=True):
            assert (w["start_s"], w["end_s"]) == pytest.approx((s * 0.64, e * 0.64))
            assert (w["audio_start_s"], w["audio_end_s"]) == pytest.approx((s_a * 0.96, (s_a + la) * 0.96))
            best = int(np.argmin(dist.numpy()))
            assert w["class"] == names[best] and w["seen"] == bool(seen[best])
            assert w["distance"] == pytest.approx(float(dist[best]), rel=1e-4, abs=1e-4)
            assert w["score"] == pytest.approx(float(scores_from_distances(dist)[best]), rel=1e-3, abs=1e-4)
            assert (r["class"], float(r["score"]), float(r["start_s"]), float(r["end_s"])) == (
                w["class"], w["score"], w["start_s"], w["end_s"])


def test_the_single_process_command_line_equals_the_sharded_workflow(run, tmp_path, capsys, monkeypatch):
    workdir, _, picks, _, names = run
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    monkeypatch.chdir(workdir)  # a model folder given as the workflow gives it, relative to the run
    assert main(["--videos", "my_videos", "--classes", str(tmp_path / "names.txt"), "--model", str(MODEL),
                 "--out", str(tmp_path / "out"), "--no-calibration", "--top-k", "2", "--windows",
                 "--window-s", str(WINDOW_CLIPS * 0.64), "--hop-s", "0.64"]) == 0
    assert picks[0].name in capsys.readouterr().out
    plain = json.loads((tmp_path / "out/predictions.json").read_text())
    sharded = json.loads((workdir / OUT / "tcaf/predictions.json").read_text())
    assert plain["calibrate"] is False and plain["extraction"]["shards"] == 1
    bias = next(iter(sharded["bias"].values()))
    seen = {c["name"]: c["seen"] for c in sharded["classes"]}
    assert [v["video_id"] for v in plain["videos"]] == [v["video_id"] for v in sharded["videos"]]
    for v, cal in zip(plain["videos"], sharded["videos"], strict=True):
        assert v["status"] == cal["status"]
        if v["status"] != "ok":
            continue
        assert len(v["top_k"]) == 2
        for n in names:
            assert v["distances"][n] == pytest.approx(cal["distances"][n] - (bias if seen[n] else 0.0), abs=1e-4)
        assert [(w["start_s"], w["end_s"]) for w in v["windows"]] == [(w["start_s"], w["end_s"]) for w in cal["windows"]]
    assert len(_csv(tmp_path / "out/windows.csv")) == sum(len(v["windows"] or []) for v in plain["videos"])


def test_features_not_extracted_like_the_training_store_are_errors_naming_both(run, tmp_path):
    import zarr

    from extractors.manifest import read_manifest
    from extractors.store import FeatureStore

    workdir, _, _, _, names = run
    # a store of the new videos whose decoding and extractor differ from the training store's
    pred = tmp_path / "features.zarr"
    shutil.copytree(workdir / OUT / "features.zarr", pred)
    shutil.copy(workdir / OUT / "features.tsv", tmp_path / "features.tsv")
    group = zarr.open_group(str(pred), mode="r+", zarr_format=3)
    decode = dict(group.attrs["decode"])
    group.attrs["decode"] = {**decode, "max_hold_s": decode["max_hold_s"] + 1.0}
    train = workdir / "results/features/demo/features.zarr"
    with pytest.raises(PredictError) as err:
        predict(workdir / "my_videos", names, workdir / MODEL, tmp_path / "out", features=pred)
    msg = str(err.value)
    assert str(pred) in msg and str(train) in msg
    assert f"decode.max_hold_s: training store {decode['max_hold_s']!r}, prediction store " \
           f"{decode['max_hold_s'] + 1.0!r}" in msg
    assert not (tmp_path / "out" / "predictions.csv").exists()
    # only the device differs: a warning, listed in the predictions
    group.attrs["decode"] = {**decode, "clip_batch": decode["clip_batch"] + 1}
    train_attrs = FeatureStore(train).attrs
    warnings = check_prediction_store(pred, FeatureStore(pred).attrs, train, train_attrs)
    assert any(w.startswith("decode.clip_batch") for w in warnings)

    # a training store whose record the extractors built here do not reproduce: the shard job stops first
    store = tmp_path / "train.zarr"
    shutil.copytree(train, store)
    shutil.copy(workdir / "results/features/demo/features.tsv", tmp_path / "train.tsv")
    group = zarr.open_group(str(store), mode="r+", zarr_format=3)
    video = dict(group.attrs["video"])
    group.attrs["video"] = {**video, "extractor": "another-c3d"}
    rows = read_manifest(workdir / OUT / "manifest.tsv")
    with pytest.raises(PredictError) as err:
        extract_features(rows, tmp_path / "shard.zarr", store)
    msg = str(err.value)
    assert str(store) in msg and f"video.extractor: training store 'another-c3d', here {video['extractor']!r}" in msg
    assert not (tmp_path / "shard.zarr").exists()


def test_bad_class_lists_are_errors_naming_the_class(run, tmp_path, capsys):
    workdir, *_ = run
    with pytest.raises(PredictError, match="empty"):
        check_class_names([])
    with pytest.raises(PredictError, match="'dog' is duplicated"):
        check_class_names(["dog", "cat", " dog "])
    with pytest.raises(PredictError, match="'Dog' is duplicated.*'dog'"):
        check_class_names(["dog", "Dog"])
    with pytest.raises(PredictError, match="empty after stripping"):
        check_class_names(["dog", "   "])
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    assert main(["--videos", str(workdir / "my_videos"), "--classes", str(tmp_path / "empty.txt"),
                 "--model", str(workdir / MODEL), "--out", str(tmp_path / "out")]) == 2
    assert "class list is empty" in capsys.readouterr().err
    with pytest.raises(PredictError, match="'cat' is duplicated"):
        predict(workdir / "my_videos", ["cat", "cat"], workdir / MODEL, tmp_path / "out")


def test_weights_that_differ_from_the_training_store_are_an_error_naming_both(run, tmp_path):
    import zarr

    workdir, *_ = run
    store = tmp_path / "features.zarr"
    shutil.copytree(workdir / "results/features/demo/features.zarr", store)
    shutil.copy(workdir / "results/features/demo/features.tsv", tmp_path / "features.tsv")
    weights = tmp_path / "c3d.pickle"
    weights.write_bytes(b"not the weights the store was made with")
    recorded = "ab" * 32
    group = zarr.open_group(str(store), mode="r+", zarr_format=3)
    video = dict(group.attrs["video"])
    video["weights"] = {"source": str(weights), "sha256": recorded, "random": False, "seed": None}
    video["config"] = {**video["config"], "weights": str(weights)}
    group.attrs["video"] = video
    with pytest.raises(PredictError) as err:
        predict(workdir / "my_videos", ["cat", "dog"], workdir / MODEL, tmp_path / "out", features_store=store)
    msg = str(err.value)
    from extractors.weights import sha256_path

    assert str(weights) in msg and str(store) in msg and recorded in msg and sha256_path(weights) in msg
    assert not (tmp_path / "out" / "predictions.csv").exists()
    # a weight file that is not there at all
    weights.unlink()
    with pytest.raises(PredictError, match=f"{re.escape(str(weights))} not found.*--video-weights"):
        predict(workdir / "my_videos", ["cat", "dog"], workdir / MODEL, tmp_path / "out", features_store=store)


def test_seeds_are_averaged_after_their_own_bias():
    d = {1: torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), 2: torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64)}
    seen = np.array([True, False, True])
    out = combine_seeds(d, {1: 0.5, 2: 1.5}, seen, calibrate=True)
    assert out.tolist() == [[3.0, 2.0, 3.0]]
    assert combine_seeds(d, {1: 0.5, 2: 1.5}, seen, calibrate=False).tolist() == [[2.0, 2.0, 2.0]]


# ------------------------------------------------------------------------------------------- the HTML page


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    why = "chromium is not installed"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        res = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=600,
                             check=False)
        if shutil.which("chromium"):
            return shutil.which("chromium")
        why += f" and `apt-get install -y chromium` failed: {res.stderr.strip()[-300:]}"
    else:
        why += " and cannot be installed here (not root or no apt-get)"
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        pytest.fail(f"{why}; CI=true, so this is a failure, not a skip")
    pytest.skip(why)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def test_html_page_in_headless_chromium(run, tmp_path):
    from PIL import Image

    workdir, _, picks, *_ = run
    page = workdir / OUT / "tcaf/predictions.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    thumbs = [t.split('"')[0] for t in text.split('src="data:image/jpeg;base64,')[1:]]
    assert len(thumbs) == len(picks)  # one per decodable video; the broken one shows its status instead
    assert "broken.mp4" in text and "unreadable" in text

    shot = tmp_path / "shot.png"
    res = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (900, 1200)
    assert img.std() > 20, "blank screenshot"

    def near(colour: np.ndarray, tol: int = 30) -> int:
        return int((np.abs(img - colour).max(axis=2) <= tol).sum())

    # The bars: both colours (seen and unseen classes are among every video's top 5), a bar's worth each.
    assert near(_rgb(SEEN_COLOUR)) > 200 and near(_rgb(UNSEEN_COLOUR)) > 200
    # The timelines: one per scored video, each cell in its top class's colour, a strip's worth of each colour.
    assert text.count('class="strip"') == len(picks)
    cells = re.findall(r'class="cell" style="[^"]*background:(#[0-9a-f]{6})" title="([^"]*)"', text)
    result = json.loads((workdir / OUT / "tcaf/predictions.json").read_text())
    windows = [w for v in result["videos"] for w in v["windows"] or []]
    assert [html.unescape(t).split(": ", 1)[1].rsplit(" (", 1)[0] for _, t in cells] == [w["class"] for w in windows]
    for colour in {c for c, _ in cells}:
        assert near(_rgb(colour), tol=12) > 100, f"timeline colour {colour} not on the page"
    # The thumbnails: each one's own saturated colours (the demo's coloured shapes) are on the page.
    for data in thumbs:
        thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
        vivid = thumb[(thumb.max(axis=2) - thumb.min(axis=2)) > 100]
        assert len(vivid) > 20, "a thumbnail without its coloured shape"
        assert near(np.median(vivid, axis=0), tol=40) > len(vivid) // 4
