"""Shard driver: per-video statuses, cross-video clip batching, store contents, real networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_extract_io_fixtures import frame_index, write_media, write_truncated

from extractors import store as S
from extractors.c3d import VideoExtractorConfig
from extractors.decode import DecodeConfig
from extractors.extract import ExtractConfig, extract_shard
from extractors.manifest import ManifestRow, build_manifest


class FakeVideo:
    """C3D stand-in: 'features' carry the index of each clip's first frame and its number of real frames.

    The decoders crop with a real config (the reference preset's uint8 PIL resize: a frame of one colour stays that
    colour), so the stand-in only replaces the normalisation and the network.
    """

    def __init__(self, batch_size=4, fail_on_call=None):
        self.cfg = VideoExtractorConfig(preset="reference", invert_colours=False, batch_size=batch_size)
        self.device = torch.device("cpu")
        self.attrs = {"extractor": "fake-c3d", "dtype": "float32", "weights": {"random": True}}
        self.calls: list[int] = []
        self.fail_on_call = fail_on_call

    def normalise_crops(self, crops):  # [T,112,112,3] -> [T,3,1,1]: the centre pixel, +1 so padding stays 0
        h, w = crops.shape[1:3]
        return crops[:, h // 2, w // 2, :].float().add(1).reshape(-1, 3, 1, 1)

    def make_clips(self, pre):
        rest = (-len(pre)) % 16
        pre = torch.cat([pre, pre.new_zeros((rest, *pre.shape[1:]))])
        return pre.reshape(-1, 16, 3, 1, 1).transpose(1, 2)

    def embed_preprocessed(self, clips):
        self.calls.append(len(clips))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated network failure")
        out = np.zeros((len(clips), 4096), np.float32)
        first = clips[:, :, 0, 0, 0].numpy() - 1  # [n, 3] RGB of each clip's first frame
        out[:, 0] = [frame_index(np.broadcast_to(c.astype(np.uint8), (4, 4, 3))) for c in first]
        out[:, 1] = (clips[:, 0, :, 0, 0] != 0).sum(1).numpy()
        return out


class FakeAudio:
    def __init__(self):
        self.attrs = {"extractor": "fake-vggish", "dtype": "uint8", "weights": {"random": True}}
        self.calls: list[int] = []

    def embed_batch(self, waves):
        self.calls.append(len(waves))
        return [np.full((((len(w) - 400) // 160 + 1) // 96, 128), 7, np.uint8) for w in waves]


@pytest.fixture(scope="module")
def shard_media(tmp_path_factory):
    d = tmp_path_factory.mktemp("shard")
    mkv = write_media(d / "long.mkv", fps=25, n_frames=100)
    garbage = d / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 2048)
    return [
        ("a30", write_media(d / "a30.mp4", fps=30, n_frames=90)),  # 75 frames at 25 fps -> 5 clips
        ("b24", write_media(d / "b24.mkv", fps=24, n_frames=48)),  # 50 frames -> 4 clips
        ("noaudio", write_media(d / "noaudio.mp4", audio_s=0)),
        ("cut", write_truncated(mkv, d / "cut.mkv", 0.5)),
        ("missing", None),
        ("garbage", garbage),
        ("shortaudio", write_media(d / "shortaudio.mp4", fps=25, n_frames=50, audio_s=0.5)),
        ("c25", write_media(d / "c25.mp4", fps=25, n_frames=40)),  # 40 frames -> 3 clips, last has 8
    ]


def ok_rows(media):
    # Rows as if the probe had passed every existing file, so failures surface during extraction.
    return [ManifestRow(vid, str(p) if p else "", None, None, f"class {vid}", "ok" if p else "missing",
                        "" if p else "no raw file found") for vid, p in media]


def test_bad_videos_get_statuses_and_good_ones_features(shard_media, tmp_path):
    video, audio = FakeVideo(batch_size=4), FakeAudio()
    cfg = ExtractConfig(decode=DecodeConfig(clip_batch=2, truncation_tolerance_s=0.3), audio_batch_videos=3)
    summary = extract_shard(ok_rows(shard_media), tmp_path / "s.zarr", cfg, audio, video)
    fs = S.FeatureStore(tmp_path / "s.zarr")
    assert fs.video_ids == [vid for vid, _ in shard_media]
    got = {r["video_id"]: (r["status"], r["n_video"], r["n_audio"]) for r in fs.table}
    cut = got.pop("cut")  # truncated: what decodes is kept, and the reason says so
    assert cut[0] == "ok" and cut[1] > 0 and cut[2] > 0
    cut_row = fs.table[fs.index_of("cut")]
    assert "truncated" in cut_row["reason"] and cut_row["decoded_s"] < 2.5 and 4.0 <= cut_row["declared_s"] < 4.1
    assert got == {"a30": ("ok", 5, 3), "b24": ("ok", 4, 2), "noaudio": ("no_audio", 0, 0),
                   "missing": ("missing", 0, 0), "garbage": ("unreadable", 0, 0),
                   "shortaudio": ("too_short", 0, 0), "c25": ("ok", 3, 1)}
    assert all(r["reason"] for r in fs.table if r["status"] != "ok")
    assert summary["statuses"] == {"ok": 4, "no_audio": 1, "missing": 1, "unreadable": 1, "too_short": 1}
    # clips of consecutive videos share forward passes, in batches of 4
    assert set(video.calls[:-1]) == {4} and summary["clips"] == 12 + cut[1]
    a30_row = fs.table[fs.index_of("a30")]
    assert a30_row["path"] == str(dict(shard_media)["a30"]) and a30_row["frames_decoded"] == 90
    assert a30_row["frames_used"] == 75 and a30_row["video_stream"] == 0 and a30_row["audio_stream"] == 1
    a30 = fs.get("video", "a30")
    assert a30[:, 0].tolist() == [k * 30 // 25 for k in (0, 16, 32, 48, 64)]  # first frame of each clip
    assert a30[:, 1].tolist() == [16, 16, 16, 16, 11]  # the last clip is padded after 11 real frames
    assert fs.get("video", "c25")[:, 1].tolist() == [16, 16, 8]
    assert fs.attrs["video"]["extractor"] == "fake-c3d" and fs.attrs["dataset"] == "demo"
    assert fs.attrs["video"]["extractor"] == "fake-c3d" and fs.attrs["decode"]["clip_batch"] == 2


def test_segments_are_extracted_from_their_interval(shard_media, tmp_path):
    path = dict(shard_media)["a30"]
    rows = [ManifestRow("a30_0", str(path), 1.0, 2.0, "c", "ok"), ManifestRow("a30_1", str(path), 0.0, 0.5, "c", "ok")]
    extract_shard(rows, tmp_path / "seg.zarr", ExtractConfig(), FakeAudio(), FakeVideo(batch_size=4))
    fs = S.FeatureStore(tmp_path / "seg.zarr")
    seg = fs.get("video", "a30_0")
    assert seg[:, 0].tolist() == [30, 30 + 16 * 30 // 25] and seg[:, 1].tolist() == [16, 9]  # 25 frames
    assert fs.table[0]["n_audio"] == 1  # 1.0 s of audio -> one 0.96 s example
    assert fs.table[1]["status"] == "too_short"  # 0.5 s: no VGGish example


def test_network_failure_aborts_without_a_store(shard_media, tmp_path):
    with pytest.raises(RuntimeError, match="simulated"):
        extract_shard(ok_rows(shard_media), tmp_path / "s.zarr", ExtractConfig(), FakeAudio(),
                      FakeVideo(batch_size=2, fail_on_call=2))
    assert not (tmp_path / "s.zarr").exists() and not list(tmp_path.glob("s.zarr.tmp-*"))


def test_extract_config_from_dict():
    cfg = ExtractConfig.from_dict({"dataset": "ucf", "device": "cpu", "shards": 4,
                                   "video": {"preset": "reference", "batch_size": 8},
                                   "audio": {"postprocess": "raw"}, "decode": {"clip_batch": 2}})
    assert cfg.video.dataset == "ucf" and cfg.video.inverts and cfg.decode.clip_batch == 2
    with pytest.raises(ValueError, match="prefech"):
        ExtractConfig.from_dict({"prefech": 2})
    with pytest.raises(ValueError, match="extract.video"):
        ExtractConfig.from_dict({"video": {"bacth_size": 2}})
    with pytest.raises(ValueError, match="decode.fsp"):
        ExtractConfig.from_dict({"decode": {"fsp": 30}})
    with pytest.raises(ValueError, match="decode.fps"):  # fixed by the networks: 25 fps, 16 kHz, 16-frame clips
        ExtractConfig.from_dict({"decode": {"fps": 30}})


@pytest.mark.slow  # builds the real C3D (78 M parameters) and VGGish with random weights
def test_real_random_weight_networks_end_to_end(tmp_path):
    path = write_media(tmp_path / "v.mp4", fps=25, n_frames=20, size=(64, 48), audio_s=2.0)
    rows = build_manifest([("v", path, None, None, "cls"), ("gone", None, None, None, "cls")])
    cfg = ExtractConfig.from_dict({"device": "cpu", "video": {"batch_size": 2}})
    extract_shard(rows, tmp_path / "f.zarr", cfg)
    fs = S.FeatureStore(tmp_path / "f.zarr")
    v, a = fs.get("video", "v"), fs.get("audio", "v")
    assert v.shape == (2, 4096) and v.dtype == np.float32 and (v >= 0).all()  # fc7 after ReLU
    assert a.shape == (2, 128) and a.dtype == np.uint8
    assert fs.attrs["video"]["weights"]["random"] and fs.attrs["audio"]["weights"]["random"]
    assert [r["status"] for r in fs.table] == ["ok", "missing"]
