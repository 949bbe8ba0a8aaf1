"""CLIP/CLAP features through the pipeline: extraction into their own store groups, statuses, assembly, the
feature choice of a method when reading the store, the comparison table's features column, and (slow) a
Snakemake run that extracts CLIP/CLAP features with small checkpoints and trains MFT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_extract_io_extract import FakeAudio, FakeVideo
from test_extract_io_fixtures import write_media
from test_extract_nets_clap import PROJ, tiny_state_dict
from test_extract_nets_clip import (
    EMBED_DIM,
    SYNTHETIC,
    tiny_openai_clip,
    write_openai_archive,
    write_synthetic_video,
)

from extractors import store as S
from extractors.clap import SAMPLE_RATE as CLAP_RATE
from extractors.clap import WINDOW_SECONDS, build_clap_extractor
from extractors.clip import build_image_extractor
from extractors.decode import DecodeConfig, decode_audio, iter_frames, iter_native_frames
from extractors.extract import ExtractConfig, extract_shard
from extractors.manifest import ManifestRow

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Small checkpoints in the published formats (OpenAI's TorchScript archive, WavCaps' {"model": ...})."""
    root = tmp_path_factory.mktemp("ckpt")
    clip = write_openai_archive(tiny_openai_clip().state_dict(), root / "ViT-B-32.pt")
    clap = root / "HTSAT_BERT_zero_shot.pt"
    torch.save({"model": tiny_state_dict()}, clap)
    return clip, clap


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    videos = [(f"{ext}{fps}", write_synthetic_video(d / f"v{fps}.{ext}", vc, ac, fps, sr, sec))
              for ext, vc, ac, fps, sr, sec in SYNTHETIC]
    garbage = d / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 2048)
    return [*videos, ("noaudio", write_media(d / "noaudio.mp4", audio_s=0)), ("garbage", garbage),
            ("missing", None), ("one_frame", write_media(d / "one.mp4", fps=25, n_frames=1, audio_s=1.0))]


def rows_of(media):
    return [ManifestRow(vid, str(p) if p else "", None, None, "c", "ok" if p else "missing",
                        reason="" if p else "file not found") for vid, p in media]


def cfg_for(checkpoints, streams, **clip):
    return ExtractConfig.from_dict({
        "dataset": "vggsound", "device": "cpu", "streams": streams, "decoders": 0,
        "clip": {"weights": str(checkpoints[0]), "batch_size": 2, **clip},
        "clap": {"weights": str(checkpoints[1]), "batch_size": 2}, "audio_batch_videos": 2,
    })


def test_clip_and_clap_rows_per_video(checkpoints, media, tmp_path):
    cfg = cfg_for(checkpoints, ["audio", "video", "clip", "clap"])
    out = tmp_path / "s.zarr"
    summary = extract_shard(rows_of(media), out, cfg, audio_extractor=FakeAudio(), video_extractor=FakeVideo())
    store = S.FeatureStore(out)
    assert store.streams == ("audio", "video", "clip", "clap")
    by_id = {r["video_id"]: r for r in store.table}
    assert summary["statuses"]["ok"] == 3
    clip = build_image_extractor(cfg.clip, "cpu")
    clap = build_clap_extractor(cfg.clap, "cpu")
    for vid, path in media[:2]:
        r = by_id[vid]
        assert r["status"] == "ok" and r["n_clip"] == 1 and r["n_clap"] == 1, r
        assert store.get("clip", vid).shape == (1, EMBED_DIM) and store.get("clap", vid).shape == (1, PROJ)
        # The stored rows are the extractors' own on the video's native frames (the middle one) and 32 kHz audio.
        np.testing.assert_allclose(store.get("clip", vid), clip.embed_video(np.stack(list(iter_native_frames(path)))),
                                   atol=1e-6)
        wave = decode_audio(path, DecodeConfig(), min_samples=1, rate=CLAP_RATE)
        assert abs(len(wave) - SYNTHETIC[[m[0] for m in media].index(vid)][-1] * CLAP_RATE) < 0.05 * CLAP_RATE
        np.testing.assert_allclose(store.get("clap", vid), clap.embed(wave), atol=1e-6)
        assert r["n_video"] > 0  # the C3D stream beside them is unchanged
    # Bad input: the same statuses and no rows in any stream.
    # (0.6 s of audio is too short for VGGish: with the audio stream selected the video has no rows at all.)
    for vid, status in (("webm25", "too_short"), ("noaudio", "no_audio"), ("garbage", "unreadable"),
                        ("missing", "missing")):
        r = by_id[vid]
        assert r["status"] == status and r["n_clip"] == r["n_clap"] == r["n_audio"] == r["n_video"] == 0, r
    # VGGSound's rule takes frame n // 2 - 1: a one-frame video has none (ok, no CLIP row), its audio one row.
    assert by_id["one_frame"]["n_clip"] == 0 and by_id["one_frame"]["n_clap"] == 1
    for m in S.STREAMS:
        off = store.offsets(m)
        assert len(off) == len(media) + 1 and off[-1] == store.values(m).shape[0]
        assert list(np.diff(off)) == [by_id[v][f"n_{m}"] for v in store.video_ids]
    assert store.attrs["clip"]["extractor"] == "clip_vit_b32" and store.attrs["clap"]["sample_rate"] == CLAP_RATE
    assert store.attrs["clip"]["weights"]["random"] is False and store.attrs["clip"]["frame_rule"] == "n//2-1"


def test_clip_clap_only_store_and_all_frames(checkpoints, media, tmp_path):
    cfg = cfg_for(checkpoints, ["clip", "clap"], frames="all")
    cfg.clap.windows = "all"
    out = tmp_path / "cc.zarr"
    extract_shard(rows_of(media[:3]), out, cfg)
    store = S.FeatureStore(out)
    assert store.streams == ("clip", "clap")
    assert [r["status"] for r in store.table] == ["ok"] * 3  # CLAP alone takes any audio (zero-padded to 10 s)
    with pytest.raises(ValueError, match="holds no audio features.*extract.streams"):
        store.values("audio")
    for vid, path in media[:3]:
        n = len(list(iter_frames(path)))
        assert store.get("clip", vid).shape == (n, EMBED_DIM)
        wave = decode_audio(path, DecodeConfig(), min_samples=1, rate=CLAP_RATE)
        assert store.get("clap", vid).shape == (math.ceil(len(wave) / (CLAP_RATE * WINDOW_SECONDS)), PROJ)
    # The table's frame columns come from the CLIP pass when no C3D pass ran.
    assert all(r["frames_used"] for r in store.table)


def test_process_decoders_give_the_same_store(checkpoints, media, tmp_path):
    stores = []
    for decoders in (0, 2):
        cfg = cfg_for(checkpoints, ["clip", "clap"])
        cfg.decoders = decoders
        extract_shard(rows_of(media), tmp_path / f"d{decoders}.zarr", cfg)
        stores.append(S.FeatureStore(tmp_path / f"d{decoders}.zarr"))
    for m in ("clip", "clap"):
        np.testing.assert_array_equal(stores[0].read(m)[0], stores[1].read(m)[0])
        np.testing.assert_array_equal(stores[0].offsets(m), stores[1].offsets(m))


def test_assembly_gathers_and_checks_the_new_groups(checkpoints, media, tmp_path):
    rows = rows_of(media)
    cfg = cfg_for(checkpoints, ["clip", "clap"])
    extract_shard(rows[0::2], tmp_path / "a.zarr", cfg)
    extract_shard(rows[1::2], tmp_path / "b.zarr", cfg)
    out = S.assemble([tmp_path / "a.zarr", tmp_path / "b.zarr"], tmp_path / "all.zarr",
                     expected_ids=[r.video_id for r in rows])
    whole = S.FeatureStore(out)
    assert whole.streams == ("clip", "clap")
    for part in ("a", "b"):
        shard = S.FeatureStore(tmp_path / f"{part}.zarr")
        for vid in shard.video_ids:
            for m in ("clip", "clap"):
                np.testing.assert_array_equal(whole.get(m, vid), shard.get(m, vid))
    # Another CLIP seed is another extractor: the shards must not be mixed.
    other = cfg_for(checkpoints, ["clip", "clap"])
    other.clap.windows = "all"
    extract_shard(rows[1::2], tmp_path / "c.zarr", other)
    with pytest.raises(ValueError, match="clap.*windows"):
        S.assemble([tmp_path / "a.zarr", tmp_path / "c.zarr"], tmp_path / "bad.zarr")


def test_unknown_stream_is_named():
    with pytest.raises(ValueError, match="extract.streams"):
        ExtractConfig.from_dict({"streams": ["audio", "clipp"]})


def test_method_reads_its_feature_pair(checkpoints, media, tmp_path):
    from model.pipeline import experiment_config, experiment_features
    from model.store_reader import open_store

    rows = rows_of(media[:2])
    cfg = cfg_for(checkpoints, ["audio", "video", "clip", "clap"])
    extract_shard(rows, tmp_path / "s.zarr", cfg, audio_extractor=FakeAudio(), video_extractor=FakeVideo())
    both = open_store(tmp_path / "s.zarr", features="clip_clap")
    assert both.groups == ("clap", "clip") and both.audio[0].shape[1] == PROJ and both.video[0].shape[1] == EMBED_DIM
    assert not both.random_weights  # the CLIP/CLAP checkpoints are files; the fake VGGish/C3D are not read
    assert open_store(tmp_path / "s.zarr").audio[0].shape[1] == 128  # the default pair is VGGish/C3D
    assert experiment_features({"method": "mft"}) == "clip_clap" and experiment_features({"method": "avca"}) == \
        "vggish_c3d"
    exp = experiment_config({"method": "mft", "dataset": "vggsound"}, store=both, word_dim=48)
    assert (exp.model.audio_dim, exp.model.video_dim, exp.features) == (PROJ, EMBED_DIM, "clip_clap")
    assert exp.to_dict()["features"] == "clip_clap"
    extract_shard(rows, tmp_path / "v.zarr", cfg_for(checkpoints, ["audio", "video"]), audio_extractor=FakeAudio(),
                  video_extractor=FakeVideo())
    with pytest.raises(ValueError, match=r"not \['clap', 'clip'\].*extract.streams"):
        open_store(tmp_path / "v.zarr", features="clip_clap")


def test_comparison_table_has_the_feature_set(tmp_path):
    from model.compare import comparison_markdown, comparison_rows, write_comparison_tsv

    files = []
    for method, features in (("avca", None), ("mft", "clip_clap")):
        m = {"method": method, "dataset": "ucf", "split_kind": "cls", "preset": "paper", "n_seeds": 1,
             "S": 1.0, "U": 2.0, "HM": 1.5, "ZSL": 2.5, "std": {k: 0.0 for k in ("S", "U", "HM", "ZSL")}}
        if features:
            m["features"] = features
        files.append(tmp_path / f"{method}.json")
        files[-1].write_text(json.dumps(m))
    rows = comparison_rows(files)
    assert [r["feature_set"] for r in rows] == ["vggish_c3d", "clip_clap"]
    assert rows[1]["published_HM"] is not None  # MFT's published UCF numbers beside it
    write_comparison_tsv(rows, tmp_path / "t.tsv")
    header, _, mft = (tmp_path / "t.tsv").read_text().splitlines()
    assert "feature_set" in header.split("\t") and "clip_clap" in mft.split("\t")
    md = comparison_markdown(rows)
    assert "| method | features |" in md and "| MFT | CLAP + CLIP |" in md


# ------------------------------------------------------------------------------------------------- workflow
# The demo, smaller, with CLIP/CLAP extracted from small checkpoints (files in the published formats, through the
# weights rule) and MFT trained on them with ClipClap's class vectors beside the configured backend's.
TINY = {
    "demo": {"n_classes": 4, "videos_per_class": 3, "duration_s": 1.5, "width": 64, "height": 48,
             "n_val_unseen": 1, "n_test_unseen": 1},
    "extract": {"shards": 2, "streams": ["clip", "clap"]},
    "models": ["mft"],
    "methods": {"mft": {"model": {"embed_dim": 32, "decoder_hidden_dim": 32, "out_dim": 16, "depth": 1, "heads": 2,
                                  "dim_head": 8, "mlp_dim": 32},
                        "train": {"epochs": 2, "batch_size": 8, "batches_per_epoch": 5}}},
    "train": {"epochs": 2, "batch_size": 8, "batches_per_epoch": 5, "eval_batch_size": 16},
}
# The comparison and what it needs (prediction on new videos is not part of this run).
TARGETS = ("results/report/demo/cls/results.tsv", "results/report/demo/cls/results.md")


@pytest.mark.slow
def test_workflow_extracts_clip_clap_and_trains_mft(workflow, checkpoints, tmp_path):
    import yaml

    clip = checkpoints[0]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "can", "be", "heard", "sound", "of", "the"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    wavcaps = tmp_path / "HTSAT_BERT_zero_shot.pt"
    torch.save({"model": tiny_state_dict(vocab_size=len(words))}, wavcaps)
    cfg = json.loads(json.dumps(TINY))
    cfg["extract"]["clip"] = {"weights": str(clip)}
    cfg["extract"]["clap"] = {"weights": str(wavcaps)}
    cfg["class_embeddings"] = {"backend": "sentence_transformers", "clip_weights": str(clip),
                               "clap_weights": str(wavcaps), "clap_vocab": str(vocab)}
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "run"
    work.mkdir()
    configfiles = [workflow.configs["config"], tiny]
    res = workflow.run(work, "--cores", "2", *TARGETS, configfiles=configfiles, timeout=900)
    logs = "".join(f"\n==> {p} <==\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log")))
    assert res.returncode == 0, res.stdout[-5000:] + logs
    store = S.FeatureStore(work / "results/features/demo/features.zarr")
    assert store.streams == ("clip", "clap") and store.attrs["shards"] == 2
    ok = [r for r in store.table if r["status"] == "ok"]
    assert ok and all(r["n_clip"] == 1 and r["n_clap"] == 1 for r in ok)
    assert all(r["n_clip"] == r["n_clap"] == 0 for r in store.table if r["status"] != "ok")
    assert store.values("clip").shape == (len(ok), EMBED_DIM) and store.values("clap").shape == (len(ok), PROJ)
    assert (work / "results/weights/demo/clip_vit_b32.json").is_file()
    vectors = np.load(work / "results/class_embeddings/demo.clipclap.npz")
    metrics = json.loads((work / "results/evaluate/demo/cls/mft/metrics.json").read_text())
    assert metrics["features"] == "clip_clap" and metrics["feature_extractors"]["audio"]["extractor"] == \
        "wavcaps_htsat_bert"
    assert 0 <= metrics["HM"] <= 100
    table = (work / TARGETS[0]).read_text().splitlines()
    row = dict(zip(table[0].split("\t"), table[1].split("\t"), strict=True))
    assert row["method"] == "mft" and row["feature_set"] == "clip_clap"
    assert "| MFT | CLAP + CLIP |" in (work / TARGETS[1]).read_text()
    # ClipClap's class vectors: [CLIP text | CLAP text], each half a unit vector.
    v = vectors[next(k for k in vectors.files if vectors[k].ndim == 2)]
    assert v.shape[1] == EMBED_DIM + PROJ
    np.testing.assert_allclose(np.linalg.norm(v[:, :EMBED_DIM], axis=1), 1, atol=1e-5)
