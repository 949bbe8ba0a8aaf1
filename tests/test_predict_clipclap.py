"""Zero-shot prediction with a model trained on CLIP/CLAP features (ClipClap), small checkpoints in the published
formats: the prediction folder gets the model's two groups extracted with the training store's settings and
weights, the names are embedded with ClipClap's class-vector backend, and the ranking is the model's own scoring
of those features; the sharded path equals the single process; a store or class vectors that do not fit the model
are errors naming them; windows are skipped with the reason recorded.

The run is laid out as the workflow lays it out (results/features, results/class_embeddings/<ds>.clipclap.npz,
results/train/<ds>/<kind>/clipclap/stage2/final.pt); the checkpoint holds two seeds of an untrained ClipClap, since
what is checked is that prediction scores exactly as the model evaluates.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_extract_nets_clap import PROJ, tiny_state_dict
from test_extract_nets_clip import (
    EMBED_DIM,
    SYNTHETIC,
    tiny_openai_clip,
    write_openai_archive,
    write_synthetic_video,
)
from test_predict import _method_distances

from extractors import store as S
from extractors.extract import ExtractConfig, extract_shard
from model.predict import (
    PredictError,
    WorkflowSettings,
    check_prediction_store,
    extract_config_for,
    extract_features,
    predict,
    scores_from_distances,
    video_manifest,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning")

CLASSES = [("dog", "dog barking"), ("cello", "playing cello"), ("rain", "rain falling")]
TRAIN_CLASSES = ["dog", "cello"]  # the checkpoint's training classes: seen
NEW_NAME = "a kettle whistling"
NAMES = ["Dog", "playing cello", "rain", NEW_NAME]  # by class name, by readable phrase, an unseen class, a new name
SEEDS, BIAS = (1, 2), {1: 0.25, 2: -0.5}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "can", "be", "heard", "sound", "of", "the", "dog",
         "barking", "rain"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(results root, videos folder, class-vector config) of a small clip_clap run."""
    from data_splits.class_embeddings import build_class_embeddings
    from data_splits.io import ClassInfo, write_classes
    from model.environment import seed_everything
    from model.pipeline import CHECKPOINT_FORMAT, build_model, experiment_config, model_config_dict

    root = tmp_path_factory.mktemp("clipclap_run")
    weights = root / "weights"
    weights.mkdir()
    clip = write_openai_archive(tiny_openai_clip().state_dict(), weights / "ViT-B-32.pt")
    clap = weights / "HTSAT_BERT_zero_shot.pt"
    torch.save({"model": tiny_state_dict(vocab_size=len(WORDS))}, clap)
    vocab = weights / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")

    videos = root / "my_videos"
    videos.mkdir()
    for ext, vc, ac, fps, sr, sec in SYNTHETIC:
        write_synthetic_video(videos / f"v{fps}.{ext}", vc, ac, fps, sr, sec)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)

    # The training store: the same videos (video id = file name), CLIP/CLAP only, as extract_shard makes it.
    results = root / "results"
    cfg = ExtractConfig.from_dict({"dataset": "demo", "device": "cpu", "streams": ["clip", "clap"], "decoders": 0,
                                   "clip": {"weights": str(clip), "batch_size": 2},
                                   "clap": {"weights": str(clap), "batch_size": 2}})
    extract_shard(video_manifest(videos), results / "features/demo/features.zarr", cfg)

    classes_tsv = root / "classes.tsv"
    write_classes(classes_tsv, [ClassInfo(i, n, r) for i, (n, r) in enumerate(CLASSES)])
    embedding = {"backend": "clipclap", "clip_weights": str(clip), "clap_weights": str(clap),
                 "clap_vocab": str(vocab)}
    build_class_embeddings(classes_tsv, results / "class_embeddings/demo.clipclap.npz", embedding, dataset="demo")

    exp = experiment_config({"method": "clipclap", "dataset": "demo", "split_kind": "cls", "features": "clip_clap",
                             "model": {"audio_dim": PROJ, "video_dim": EMBED_DIM, "word_dim": EMBED_DIM + PROJ,
                                       "embed_dim": 16, "decoder_hidden_dim": 16, "out_dim": 8}})
    models = {}
    for seed in SEEDS:
        seed_everything(seed)
        models[str(seed)] = {"state_dict": build_model(exp).eval().state_dict(), "epoch": 0, "bias": BIAS[seed]}
    final = results / "train/demo/cls/clipclap/stage2/final.pt"
    final.parent.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "stage": "stage2", "method": "clipclap",
                "model_config": model_config_dict(exp.model), "experiment": exp.to_dict(),
                "train_class_ids": [0, 1], "train_class_names": TRAIN_CLASSES, "models": models}, final)
    return root, videos, embedding


def _expected_distances(root: Path, embedding: dict, video_ids: list[str]) -> torch.Tensor:
    """Seed mean of the checkpoint's own evaluation distances on the training store's rows of these videos, with
    the training class vectors for the dataset's classes and the backend's vector for the new name, plus each
    seed's bias on the seen classes."""
    from data_splits.class_embeddings import embed_class_names
    from data_splits.io import read_class_embeddings
    from model.pipeline import load_checkpoint
    from model.train_config import TrainConfig

    models, blob = load_checkpoint(root / "results/train/demo/cls/clipclap/stage2/final.pt")
    train = S.FeatureStore(root / "results/features/demo/features.zarr")
    audio = [train.get("clap", v) for v in video_ids]
    video = [train.get("clip", v) for v in video_ids]
    emb = read_class_embeddings(root / "results/class_embeddings/demo.clipclap.npz")
    new = embed_class_names([NEW_NAME], embedding, "demo")
    vectors = np.concatenate([emb.vectors, new]).astype(np.float32)  # NAMES are the classes in order, then new
    seen = np.array([n in TRAIN_CLASSES for n, _ in CLASSES] + [False])
    cfg = TrainConfig.from_dict(blob["experiment"]["train"])
    mask = torch.as_tensor(seen, dtype=torch.float64)
    parts = [_method_distances("clipclap", models[s], audio, video, vectors, seen, cfg) + BIAS[s] * mask
             for s in SEEDS]
    return torch.stack(parts).mean(0)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def single(run, tmp_path_factory):
    """predict() in one process (extraction here), windows requested."""
    root, videos, _ = run
    out = tmp_path_factory.mktemp("single")
    result = predict(videos, NAMES, root / "results/train/demo/cls/clipclap", out, device="cpu", top_k=3,
                     windows=True)
    return out, result


def test_predictions_are_the_models_own_scoring_of_clip_clap_features(run, single):
    root, _, embedding = run
    out, result = single
    assert result["features"] == "clip_clap" and result["feature_groups"] == {"audio": "clap", "video": "clip"}
    assert [c["seen"] for c in result["classes"]] == [True, True, False, False]
    assert result["class_embeddings"]["backend"] == "clipclap"
    # the dataset's classes re-embedded with the recorded files and templates give the training vectors
    assert result["class_embeddings"]["max_abs_difference_to_training_vectors"] < 1e-6
    assert result["random_weight_features"] is False

    # Only the model's two groups were extracted, each row as the training store has it.
    store = S.FeatureStore(out / "features.zarr")
    train = S.FeatureStore(root / "results/features/demo/features.zarr")
    assert store.streams == ("clip", "clap")
    assert check_prediction_store(out / "features.zarr", store.attrs, root / "results/features/demo/features.zarr",
                                  train.attrs, ("clap", "clip")) == []
    ok = sorted(v for v in train.video_ids if next(r for r in train.table if r["video_id"] == v)["status"] == "ok")
    # the 0.6 s file is too_short for the manifest's audio minimum (one VGGish example), here as at training time
    assert ok == ["v24.mkv", "v30.mp4"]
    for vid in ok:
        for key in ("clip", "clap"):
            np.testing.assert_allclose(store.get(key, vid), train.get(key, vid), atol=1e-6)

    expected = _expected_distances(root, embedding, ok)
    by_video = {v["video_id"]: v for v in result["videos"]}
    assert by_video["broken.mp4"]["status"] == "unreadable" and by_video["broken.mp4"]["top_k"] == []
    for i, vid in enumerate(ok):
        v = by_video[vid]
        got = np.array([v["distances"][n] for n in NAMES])
        np.testing.assert_allclose(got, expected[i].numpy(), rtol=1e-5, atol=1e-5)
        assert [r["class"] for r in v["top_k"]] == [NAMES[j] for j in np.argsort(got, kind="stable")[:3]]
        np.testing.assert_allclose([v["scores"][n] for n in NAMES],
                                   scores_from_distances(torch.tensor(got)).numpy(), rtol=1e-12)
    rows = _csv(out / "predictions.csv")
    assert [r["class"] for r in rows if r["video_id"] == ok[0]] == [r["class"] for r in by_video[ok[0]]["top_k"]]
    html = (out / "predictions.html").read_text()
    assert "clip_clap features" in html and "no time windows" in html


def test_windows_are_skipped_with_the_reason(single):
    out, result = single
    assert "no time windows" in result["windows"]["skipped"] and "one CLIP frame" in result["windows"]["skipped"]
    assert all(v["windows"] is None for v in result["videos"])
    header, *rows = (out / "windows.csv").read_text().splitlines()
    assert header.startswith("video_id,window,") and rows == []


def test_sharded_extraction_equals_the_single_process(run, single, tmp_path):
    from extractors.manifest import read_manifest

    root, videos, _ = run
    _, result = single
    manifest = tmp_path / "manifest.tsv"
    video_manifest(videos, manifest)
    rows = read_manifest(manifest)
    train = root / "results/features/demo/features.zarr"
    shards = []
    for i in range(2):
        shards.append(tmp_path / f"{i + 1}-of-2.zarr")
        summary = extract_features(rows[i::2], shards[-1], train, "cpu", streams=["clap", "clip"])
        assert summary["extractor_warnings"] == []
    assembled = S.assemble(shards, tmp_path / "features.zarr", expected_ids=[r.video_id for r in rows])
    sharded = predict(videos, NAMES, root / "results/train/demo/cls/clipclap", tmp_path / "out", device="cpu",
                      top_k=3, features=assembled)
    assert sharded["extraction"]["shards"] == 2
    for a, b in zip(result["videos"], sharded["videos"], strict=True):
        assert (a["video_id"], a["status"]) == (b["video_id"], b["status"])
        assert [r["class"] for r in a["top_k"]] == [r["class"] for r in b["top_k"]]
        if a["distances"] is not None:  # other batch neighbours in the networks: equal up to float rounding
            np.testing.assert_allclose([b["distances"][n] for n in NAMES], [a["distances"][n] for n in NAMES],
                                       rtol=1e-5, atol=1e-5)


def test_a_store_without_the_models_groups_or_made_otherwise_is_refused(run, tmp_path):
    import zarr

    root, videos, _ = run
    model = root / "results/train/demo/cls/clipclap"
    train = root / "results/features/demo/features.zarr"
    rows = [r for r in video_manifest(videos) if r.status == "ok"][:1]
    clip_only = tmp_path / "clip_only.zarr"
    extract_features(rows, clip_only, train, "cpu", streams=["clip"])
    with pytest.raises(PredictError, match=r"(?s)clip_only\.zarr.*clap: the prediction store records no clap"):
        predict(videos, NAMES, model, tmp_path / "a", device="cpu", features=clip_only)
    # the same groups, the CLAP ones made with another window rule
    full = tmp_path / "full.zarr"
    extract_features(rows, full, train, "cpu")
    group = zarr.open_group(str(full), mode="r+", zarr_format=3)
    group.attrs["clap"] = {**group.attrs["clap"], "windows": "all"}
    with pytest.raises(PredictError, match=r"clap\.windows: training store 'center', prediction store 'all'"):
        predict(videos, NAMES, model, tmp_path / "b", device="cpu", features=full)
    # a training store without the groups the models read
    with pytest.raises(PredictError, match=r"holds no \['audio'\] features"):
        extract_features(rows, tmp_path / "c.zarr", train, "cpu", streams=["audio", "clip"])


def test_class_vectors_must_be_clipclaps_and_weights_the_recorded_ones(run, tmp_path):
    from data_splits.io import write_class_embeddings
    from extractors.store import FeatureStore

    root, videos, _ = run
    model = root / "results/train/demo/cls/clipclap"
    other = tmp_path / "demo.npz"
    write_class_embeddings(other, [n for n, _ in CLASSES], [r for _, r in CLASSES],
                           np.eye(len(CLASSES), EMBED_DIM + PROJ, dtype=np.float32),
                           {"backend": "official", "dataset": "demo"})
    with pytest.raises(PredictError, match=r"ClipClap's class vectors.*'official'.*clipclap\.npz"):
        predict(videos, NAMES, model, tmp_path / "out", device="cpu", class_embeddings=other)
    # a CLIP file that is not the one the training store records: the error names both and the option
    attrs = json.loads(json.dumps(FeatureStore(root / "results/features/demo/features.zarr").attrs))
    fake = tmp_path / "ViT-B-32.pt"
    fake.write_bytes(b"other weights")
    attrs["clip"]["weights"]["source"] = str(tmp_path / "moved.pt")
    with pytest.raises(PredictError, match=r"clip extractor weights .*moved\.pt not found.*--clip-weights"):
        extract_config_for(root / "store.zarr", attrs, "cpu", ["clip"])
    with pytest.raises(PredictError, match=r"clip extractor weights: .*ViT-B-32\.pt has sha256 .* but the training"):
        extract_config_for(root / "store.zarr", attrs, "cpu", ["clip"], clip_weights=fake)


def test_workflow_extracts_the_groups_of_the_models_it_ranks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v").mkdir()
    (tmp_path / "n.txt").write_text("dog\n")
    base = {"videos": "v", "classes": "n.txt"}
    features = {"tcaf": "vggish_c3d", "clipclap": "clip_clap"}
    embeddings = {"tcaf": "results/class_embeddings/demo.npz", "clipclap": "results/class_embeddings/demo.clipclap.npz"}

    def settings(model):
        return WorkflowSettings({**base, "model": model}, "demo", "cls", ["tcaf", "clipclap"], features=features,
                                class_embeddings=embeddings)

    assert settings(["clipclap"]).streams == ["clap", "clip"]
    assert sorted(settings(["tcaf", "clipclap"]).streams) == ["audio", "clap", "clip", "video"]
    assert settings(["clipclap"]).rank_inputs("clipclap")["class_embeddings"] == embeddings["clipclap"]
    assert settings(["clipclap"]).class_embeddings_of("clipclap") == embeddings["clipclap"]
    # another run's model: its checkpoint tells its features, so every group of the training store is extracted
    elsewhere = settings(["clipclap", "elsewhere/results/train/ucf/cls/mft"])
    assert elsewhere.streams is None and elsewhere.class_embeddings_of("mft") is None
