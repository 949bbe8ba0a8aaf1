"""Decoder processes: manifest order, statuses and bytes independent of the number of decoders; failures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from test_extract_io_extract import FakeAudio, FakeVideo
from test_extract_io_fixtures import write_media

from extractors import store as S
from extractors.c3d import FramePreprocessor, VideoExtractorConfig
from extractors.decode import DecodeConfig
from extractors.extract import ExtractConfig, extract_shard
from extractors.manifest import ManifestRow
from extractors.pool import (
    DecoderPool,
    VideoAudio,
    VideoCrops,
    VideoDone,
    decode_throughput,
    resolve_decoders,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    garbage = d / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 2048)
    # Lengths differ so that decoders finish out of manifest order.
    return [
        ("long", write_media(d / "long.mp4", fps=30, n_frames=150, size=(96, 72))),
        ("short", write_media(d / "short.mkv", fps=25, n_frames=30)),
        ("garbage", garbage),
        ("missing", None),
        ("noaudio", write_media(d / "noaudio.mp4", audio_s=0)),
        ("mid", write_media(d / "mid.mp4", fps=24, n_frames=60, size=(80, 60))),
    ]


def rows_of(media):
    return [ManifestRow(vid, str(p) if p else "", None, None, "c", "ok" if p else "missing",
                        "" if p else "no raw file found") for vid, p in media]


def collect(rows, decoders, video_cfg, clip_batch=2):
    with DecoderPool(rows, DecodeConfig(clip_batch=clip_batch), video_cfg, decoders, slots=2) as pool:
        return list(pool)


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_same_messages_in_manifest_order_whatever_the_decoders(media, preset):
    video_cfg = VideoExtractorConfig(preset=preset, dataset="ucf")
    rows = rows_of(media)
    runs = {n: collect(rows, n, video_cfg) for n in (0, 3)}
    ref = runs[0]
    order = [m.i for m in ref]
    assert order == sorted(order)  # manifest order
    done = {rows[m.i].video_id: (m.status, m.reason) for m in ref if isinstance(m, VideoDone)}
    assert {k: v[0] for k, v in done.items()} == {"long": "ok", "short": "ok", "garbage": "unreadable",
                                                   "missing": "missing", "noaudio": "no_audio", "mid": "ok"}
    assert done["missing"][1] == "no raw file found" and done["garbage"][1]
    crops = [m.crops for m in ref if isinstance(m, VideoCrops)]
    assert all(c.dtype == (torch.uint8 if preset == "reference" else torch.float32) for c in crops)
    assert sum(len(c) for c in crops) == 125 + 30 + 63  # 25 fps grids of 5 s, 1.2 s and 2.5 s
    for n, got in runs.items():
        assert [type(m) for m in got] == [type(m) for m in ref], n
        for a, b in zip(got, ref, strict=True):
            assert a.i == b.i
            if isinstance(a, VideoCrops):
                assert torch.equal(a.crops, b.crops), n  # bitwise
            elif isinstance(a, VideoAudio):
                np.testing.assert_array_equal(a.wave, b.wave)
            else:
                assert (a.status, a.reason) == (b.status, b.reason)
                assert (a.record.table_fields() if a.record else None) == (b.record.table_fields() if b.record
                                                                           else None)


def test_extracted_store_is_identical_with_one_or_several_decoders(media, tmp_path):
    def run(decoders):
        cfg = ExtractConfig(decode=DecodeConfig(clip_batch=2), audio_batch_videos=2, decoders=decoders)
        summary = extract_shard(rows_of(media), tmp_path / f"{decoders}.zarr", cfg, FakeAudio(),
                                FakeVideo(batch_size=3))
        assert summary["decoders"] == decoders
        return S.FeatureStore(tmp_path / f"{decoders}.zarr")

    stores = [run(n) for n in (0, 2)]
    for fs in stores[1:]:
        assert fs.video_ids == stores[0].video_ids
        for m in S.MODALITIES:
            for x, y in zip(fs.read(m), stores[0].read(m), strict=True):
                np.testing.assert_array_equal(x, y)
        assert [r["status"] for r in fs.table] == [r["status"] for r in stores[0].table]
    assert stores[1].attrs["decoders"] == 2 and stores[1].attrs["device"] == "cpu"
    assert stores[0].get("video", "long").shape[0] == 8  # ceil(125 / 16) clips


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_crops_then_normalise_equal_the_whole_preprocessing(preset):
    pre = FramePreprocessor(VideoExtractorConfig(preset=preset, dataset="vggsound"), "cpu")
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 90, 130, 3), dtype=np.uint8))
    crops = np.concatenate([pre.crop_frames(frames[:2].numpy()), pre.crop_frames(frames[2:].numpy())])
    assert crops.dtype == pre.crop_dtype and crops.shape == (5, 112, 112, 3)
    assert torch.equal(pre.normalise_crops(torch.from_numpy(crops)), pre.preprocess(frames))


def test_a_decoder_that_dies_ends_the_run(tmp_path):
    path = write_media(tmp_path / "v.mp4", fps=25, n_frames=100)
    rows = [ManifestRow("v", str(path), None, None, "c", "ok")]
    with DecoderPool(rows, DecodeConfig(clip_batch=1), VideoExtractorConfig(), decoders=1, slots=1) as pool:
        pool.wait_ready()
        time.sleep(1.0)  # the decoder fills its only slot and waits for it: 7 clips cannot all be handed over
        pool._procs[0].kill()
        with pytest.raises(RuntimeError, match="decoder process decoder-0 died"):
            list(pool)


def test_decode_throughput_counts_what_extraction_receives(media):
    paths = [p for _, p in media if p is not None]
    one = decode_throughput(paths, decoders=1, decode=DecodeConfig(clip_batch=2))
    zero = decode_throughput(paths, decoders=0, decode=DecodeConfig(clip_batch=2))
    for r in (one, zero):
        assert r["frames"] == 125 + 30 + 63 and r["clips"] == 8 + 2 + 4 and r["videos"] == 5
        assert r["statuses"] == {"ok": 3, "unreadable": 1, "no_audio": 1}
        assert r["seconds"] > 0 and r["frames_per_s"] == pytest.approx(r["frames"] / r["seconds"])
    assert one["decoders"] == 1 and one["crop_dtype"] == "float32"


def test_decoder_count():
    assert resolve_decoders("auto", 8, "cuda") == 7 and resolve_decoders("auto", 1, "cuda") == 1
    assert resolve_decoders("auto", 8, "cpu") == 0 and resolve_decoders(3, 8, "cpu") == 3
    assert resolve_decoders(0, 8, "cuda") == 0
    for bad in (-1, "many", 2.5, True):
        with pytest.raises(ValueError, match="extract.decoders"):
            resolve_decoders(bad, 4, "cpu")
    with pytest.raises(ValueError, match="extract.decoders"):
        ExtractConfig.from_dict({"decoders": "all"})
