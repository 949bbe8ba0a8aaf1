"""Zero-shot prediction on new videos (model/predict.py, rule predict): one tiny demo run trained by the workflow,
then ``snakemake predict`` on a folder of three of its videos plus a broken file, with class names of our choosing.

The predictions must be the model's own evaluation: the same video's features extracted again give the training
store's features, and its distances and ranking equal scoring the training store's features of that video with
the training class vectors and the stage-1 bias. Bad inputs fail with errors that name the culprit; the HTML page
is opened in a real headless Chromium and its screenshot must show the thumbnails and the bars.
"""

from __future__ import annotations

import base64
import csv
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

from model.predict import (
    SEEN_COLOUR,
    UNSEEN_COLOUR,
    PredictError,
    check_class_names,
    combine_seeds,
    main,
    predict,
    scores_from_distances,
)

# The e2e test's TINY idea, smaller still: one method, two short epochs.
TINY = {
    "demo": {"n_classes": 4, "videos_per_class": 3, "duration_s": 1.5, "width": 64, "height": 48,
             "n_val_unseen": 1, "n_test_unseen": 1},
    "extract": {"shards": 2},
    "model": {"dim": 32, "pos_dim": 8, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32,
              "encoder_hidden_dim": 32, "decoder_hidden_dim": 32, "out_dim": 16},
    "train": {"epochs": 2, "batch_size": 8, "batches_per_epoch": 10, "eval_batch_size": 16, "lr": 0.002},
    "models": ["tcaf"],
}
MODEL = Path("results/train/demo/cls/tcaf")
NEW_NAME = "purple triangle spinning slowly"

pytestmark = pytest.mark.slow


def _logs(workdir: Path) -> str:
    return "".join(f"\n==> {p} <==\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))


@pytest.fixture(scope="module")
def run(workflow, tmp_path_factory, write_yaml):
    """The tiny run trained by the workflow, then `snakemake predict` on my_videos/ with names.txt."""
    workdir = tmp_path_factory.mktemp("predict_run")
    configfiles = [workflow.configs["config"], write_yaml(workdir / "tiny.yaml", TINY)]
    res = workflow.run(workdir, "--cores", "2", str(MODEL / "stage2/final.pt"), configfiles=configfiles, timeout=600)
    assert res.returncode == 0, res.stdout[-5000:] + _logs(workdir)

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
    predict_cfg = write_yaml(workdir / "predict.yaml", {"predict": {"videos": "my_videos", "classes": "names.txt"}})
    res = workflow.run(workdir, "--cores", "2", "predict", configfiles=[*configfiles, predict_cfg], timeout=300)
    assert res.returncode == 0, res.stdout[-5000:] + _logs(workdir)
    return workdir, configfiles, picks, classes, names


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rule_needs_the_keys_and_is_not_a_default_target(workflow, run):
    workdir, configfiles, *_ = run
    res = workflow.run(workdir, "-n", "predict", configfiles=configfiles, timeout=120)
    assert res.returncode != 0
    assert "predict.videos" in res.stdout and "predict.classes" in res.stdout, res.stdout[-2000:]
    # the default target never asks for predictions
    res = workflow.run(workdir, "-n", configfiles=configfiles, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "predict" not in workflow.planned_jobs(res.stdout)


def test_predictions_equal_the_models_own_scoring(run):
    from data_splits.io import read_classes
    from extractors.store import FeatureStore
    from model.metrics import class_distances
    from model.packing import load_class_vectors, split_from_sequences
    from model.pipeline import load_checkpoint
    from model.train import compute_embeddings

    workdir, _, picks, classes, names = run
    out = workdir / "results/predict/my_videos"
    rows = _csv(out / "predictions.csv")
    result = json.loads((out / "predictions.json").read_text())
    assert [v["video_id"] for v in result["videos"]] == sorted([p.name for p in picks] + ["broken.mp4"])

    # The broken file: a row with its status and reason, no classes.
    broken = [r for r in rows if r["video_id"] == "broken.mp4"]
    assert len(broken) == 1 and broken[0]["status"] == "unreadable" and broken[0]["reason"] and broken[0]["rank"] == ""

    models, blob = load_checkpoint(workdir / MODEL / "stage2/final.pt")
    (seed, net), = models.items()
    bias = json.loads((workdir / MODEL / "stage1/stage1.json").read_text())["per_seed"][0]["bias"]
    assert result["bias"] == {str(seed): bias} and result["calibrate"] is True
    train_names = set(blob["train_class_names"])
    expect_seen = {n: c["name"] in train_names for n, c in zip(names, classes, strict=False)} | {NEW_NAME: False}
    assert {c["name"]: c["seen"] for c in result["classes"]} == expect_seen
    assert any(expect_seen.values()) and not all(expect_seen.values())

    # The same videos' features in the training store, scored with the training class vectors and the bias.
    train_store = FeatureStore(workdir / "results/features/demo/features.zarr")
    new_store = FeatureStore(out / "features.zarr")
    vectors = load_class_vectors(workdir / "results/class_embeddings/demo.npz",
                                 read_classes(workdir / "results/splits/demo/cls/classes.tsv"))
    cls_vectors = np.stack([vectors[int(c["class_id"])] for c in classes])
    seen = np.array([expect_seen[n] for n in names[:len(classes)]])
    audio, video = [], []
    for p in picks:
        a, v = train_store.get("audio", p.stem), train_store.get("video", p.stem)
        a2, v2 = new_store.get("audio", p.name), new_store.get("video", p.name)
        # extracted twice, the same features (same random networks, same decoding)
        assert a2.dtype == a.dtype and a2.shape == a.shape and np.abs(a2.astype(int) - a.astype(int)).max() <= 1
        assert v2.shape == v.shape and np.allclose(v2, v, rtol=1e-4, atol=1e-5)
        audio.append(a)
        video.append(v)
    exp_train = blob["experiment"]["train"]
    from model.train_config import TrainConfig

    train_cfg = TrainConfig.from_dict(exp_train)
    split = split_from_sequences("check", audio, video, np.zeros(len(picks), dtype=np.int64), cls_vectors, ~seen,
                                 video_dtype=train_cfg.video_dtype)
    emb, cls = compute_embeddings(net, split, torch.device("cpu"), train_cfg.window(), 16)
    expected = class_distances(emb, cls).double() + bias * torch.as_tensor(seen, dtype=torch.float64)

    by_video = {v["video_id"]: v for v in result["videos"]}
    for i, p in enumerate(picks):
        v = by_video[p.name]
        assert v["status"] == "ok"
        got = np.array([v["distances"][n] for n in names[:len(classes)]])
        np.testing.assert_allclose(got, expected[i].numpy(), rtol=1e-4, atol=1e-5)
        # the ranking over the dataset's classes is the model's own
        ranked = [r["class"] for r in v["top_k"] if r["class"] != NEW_NAME]
        assert ranked == [names[j] for j in np.argsort(expected[i].numpy(), kind="stable")]
        # scores: softmax over the negative distances of all the given classes, CSV = JSON
        d = torch.tensor([v["distances"][n] for n in names], dtype=torch.float64)
        np.testing.assert_allclose([v["scores"][n] for n in names], scores_from_distances(d).numpy(), rtol=1e-12)
        csv_rows = [r for r in rows if r["video_id"] == p.name]
        assert [int(r["rank"]) for r in csv_rows] == list(range(1, 6))  # top 5 of the 5 names
        assert [r["class"] for r in csv_rows] == [r["class"] for r in v["top_k"]]
        assert [float(r["score"]) for r in csv_rows] == [r["score"] for r in v["top_k"]]
        assert [r["seen"] for r in csv_rows] == ["seen" if expect_seen[r["class"]] else "unseen" for r in csv_rows]
        scores = [float(r["score"]) for r in csv_rows]
        assert scores == sorted(scores, reverse=True)


def test_no_calibration_and_the_cli(run, tmp_path, capsys, monkeypatch):
    workdir, _, picks, _, names = run
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(picks[0], one / picks[0].name)
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    monkeypatch.chdir(workdir)  # a model folder given as the workflow gives it, relative to the run
    assert main(["--videos", str(one), "--classes", str(tmp_path / "names.txt"), "--model", str(MODEL),
                 "--out", str(tmp_path / "out"), "--no-calibration", "--top-k", "2"]) == 0
    assert picks[0].name in capsys.readouterr().out
    plain = json.loads((tmp_path / "out/predictions.json").read_text())
    calibrated = json.loads((workdir / "results/predict/my_videos/predictions.json").read_text())
    bias = next(iter(calibrated["bias"].values()))
    seen = {c["name"]: c["seen"] for c in calibrated["classes"]}
    (v,) = plain["videos"]
    assert plain["calibrate"] is False and len(v["top_k"]) == 2
    cal = next(x for x in calibrated["videos"] if x["video_id"] == picks[0].name)
    for n in names:
        assert v["distances"][n] == pytest.approx(cal["distances"][n] - (bias if seen[n] else 0.0), abs=1e-6)


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
    page = workdir / "results/predict/my_videos/predictions.html"
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
    # The thumbnails: each one's own saturated colours (the demo's coloured shapes) are on the page.
    for data in thumbs:
        thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
        vivid = thumb[(thumb.max(axis=2) - thumb.min(axis=2)) > 100]
        assert len(vivid) > 20, "a thumbnail without its coloured shape"
        assert near(np.median(vivid, axis=0), tol=40) > len(vivid) // 4
