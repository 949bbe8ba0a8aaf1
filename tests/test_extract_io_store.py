"""Feature stores: exact round trip, atomic completion, streaming assembly of shards."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from extractors import store as S

ATTRS = {"dataset": "demo", "audio": {"extractor": "vggish", "dtype": "uint8"},
         "video": {"extractor": "c3d", "dtype": "float16"}}


def fake_videos(rng, ids, fail=()):
    audio, video, rows = [], [], []
    for vid in ids:
        ok = vid not in fail
        na, nv = (int(rng.integers(0, 12)), int(rng.integers(1, 20))) if ok else (0, 0)
        audio.append(rng.integers(0, 256, (na, 128), dtype=np.uint8))
        video.append(rng.random((nv, 4096), dtype=np.float32).astype(np.float16))
        rows.append({"status": "ok" if ok else "broken_stream", "reason": "" if ok else "decoder\terror\nat 3 s",
                     "duration_s": 3.5, "class_name": f"class {vid[-1]}"})
    return audio, video, rows


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(7)]
    audio, video, rows = fake_videos(rng, ids, fail={"v3"})
    path = S.write_store(tmp_path / "s.zarr", ids, audio, video, ATTRS, rows)
    fs = S.FeatureStore(path)
    assert fs.video_ids == ids and len(fs) == 7
    assert fs.attrs["complete"] is True and fs.attrs["schema"] == S.SCHEMA and fs.attrs["n_videos"] == 7
    assert fs.attrs["versions"]["zarr"] == zarr.__version__
    for m, arrays in (("audio", audio), ("video", video)):
        values, offsets = fs.read(m)
        assert values.dtype == arrays[0].dtype and offsets.dtype == np.int64
        np.testing.assert_array_equal(values, np.concatenate(arrays))
        for i, a in enumerate(arrays):
            np.testing.assert_array_equal(fs.get(m, i), a)
    np.testing.assert_array_equal(fs.get("video", "v5"), video[5])
    row = fs.table[3]
    assert row["status"] == "broken_stream" and row["reason"] == "decoder error at 3 s"
    assert (row["n_audio"], row["n_video"]) == (0, 0) and fs.get("audio", 3).shape == (0, 128)
    assert [r["n_video"] for r in fs.table] == [len(v) for v in video]
    assert S.sidecar_path(path).read_text().splitlines()[0].split("\t") == list(S.TABLE_COLUMNS)
    assert not list(tmp_path.glob("*.tmp-*")), "temporary store renamed away"


def test_many_rows_span_several_chunks(tmp_path):
    rng = np.random.default_rng(1)
    video = [rng.random((n, 4096), dtype=np.float32) for n in (100, 3, 0, 150)]  # > 2 chunks of 64 rows
    audio = [np.zeros((0, 128), np.uint8)] * 4
    path = S.write_store(tmp_path / "s.zarr", list("abcd"), audio, video,
                         {**ATTRS, "video": {"dtype": "float32"}})
    values, offsets = S.FeatureStore(path).read("video")
    assert offsets.tolist() == [0, 100, 103, 103, 253]
    np.testing.assert_array_equal(values, np.concatenate(video))


def test_incomplete_store_is_rejected(tmp_path):
    path = tmp_path / "s.zarr"
    w = S.StoreWriter(path, ATTRS)
    w.append("a", None, None, {})
    # the writer dies here: only the .tmp-<pid> directory exists
    with pytest.raises(FileNotFoundError, match="does not exist"):
        S.FeatureStore(path)
    with pytest.raises(S.IncompleteStoreError, match="rerun-incomplete"):
        S.FeatureStore(w.tmp)
    # a store whose 'complete' attribute is missing (e.g. copied mid-write) is refused, naming the path
    rng = np.random.default_rng(2)
    S.write_store(path, ["a"], *fake_videos(rng, ["a"])[:2], ATTRS)
    g = zarr.open_group(str(path), mode="r+")
    del g.attrs["complete"]
    with pytest.raises(S.IncompleteStoreError, match=str(path)):
        S.FeatureStore(path)


def test_writer_rejects_duplicates_and_wrong_shapes(tmp_path):
    w = S.StoreWriter(tmp_path / "s.zarr", ATTRS)
    w.append("a", None, None)
    with pytest.raises(ValueError, match="twice"):
        w.append("a", None, None)
    with pytest.raises(ValueError, match=r"\[rows, 4096\]"):
        w.append("b", None, np.zeros((2, 10), np.float16))
    w.abort()
    assert not w.tmp.exists()


def test_assemble_streams_shards_exactly_once_in_order(tmp_path):
    rng = np.random.default_rng(3)
    all_ids, all_audio, all_video, shards = [], [], [], []
    for k, ids in enumerate([["a", "b", "c"], ["d"], [], ["e", "f"]]):
        audio, video, rows = fake_videos(rng, ids, fail={"d"})
        shards.append(S.write_store(tmp_path / f"{k}.zarr", ids, audio, video, ATTRS, rows))
        all_ids += ids
        all_audio += audio
        all_video += video
    out = S.assemble(shards, tmp_path / "features.zarr", expected_ids=sorted(all_ids), block_rows=5)
    fs = S.FeatureStore(out)
    assert fs.video_ids == all_ids and fs.attrs["shards"] == 4
    for m, arrays in (("audio", all_audio), ("video", all_video)):
        values, offsets = fs.read(m)
        np.testing.assert_array_equal(values, np.concatenate(arrays))
        assert np.diff(offsets).tolist() == [len(a) for a in arrays]
    assert [r["status"] for r in fs.table] == ["ok", "ok", "ok", "broken_stream", "ok", "ok"]

    with pytest.raises(ValueError, match="missing"):
        S.assemble(shards, tmp_path / "x.zarr", expected_ids=all_ids + ["zzz"])
    dup = S.write_store(tmp_path / "dup.zarr", ["b"], *fake_videos(rng, ["b"])[:2], ATTRS)
    with pytest.raises(ValueError, match="two shards"):
        S.assemble([*shards, dup], tmp_path / "y.zarr")
    other = S.write_store(tmp_path / "o.zarr", ["z"], *fake_videos(rng, ["z"])[:2], {**ATTRS, "dataset": "ucf"})
    with pytest.raises(ValueError, match="different settings"):
        S.assemble([shards[0], other], tmp_path / "z.zarr")
    assert not (tmp_path / "y.zarr").exists()


def _shard_attrs(device: str, memory_format: str, allow_tf32: bool, decoders: int, **video) -> dict:
    return {"dataset": "demo", "device": device, "decoders": decoders,
            "audio": {"extractor": "vggish", "dtype": "uint8", "memory_format": memory_format,
                      "weights": {"sha256": "aa" * 32}},
            "video": {"extractor": "c3d", "dtype": "float16", "memory_format": memory_format,
                      "allow_tf32": allow_tf32, "preset": "paper", "weights": {"sha256": "bb" * 32},
                      "config": {"allow_tf32": allow_tf32, "preset": "paper", **video}}}


def test_assemble_accepts_device_differences_and_refuses_real_ones(tmp_path):
    rng = np.random.default_rng(5)

    def shard(name, ids, attrs):
        return S.write_store(tmp_path / f"{name}.zarr", ids, *fake_videos(rng, ids)[:2], attrs)

    gpu = shard("gpu", ["a", "b"], _shard_attrs("cuda:0", "contiguous", True, 7))
    cpu = shard("cpu", ["c"], _shard_attrs("cpu", "channels_last_3d", False, 1))
    fs = S.FeatureStore(S.assemble([gpu, cpu], tmp_path / "all.zarr", expected_ids=["a", "b", "c"]))
    assert fs.video_ids == ["a", "b", "c"] and fs.attrs["devices"] == ["cpu", "cuda:0"]
    settings = fs.attrs["shard_settings"]
    assert settings["video.memory_format"] == ["contiguous", "channels_last_3d"]
    assert settings["video.allow_tf32"] == [True, False] and settings["shards"] == [str(gpu), str(cpu)]
    assert settings["device"] == ["cuda:0", "cpu"] and settings["decoders"] == [7, 1] and "decoders" not in fs.attrs

    real = {"weights": ("video.weights.sha256", {"weights": {"sha256": "cc" * 32}}),
            "preset": ("video.preset", {"preset": "reference"}),
            "dtype": ("video.dtype", {"dtype": "float32"})}
    for name, (key, change) in real.items():
        attrs = _shard_attrs("cpu", "channels_last_3d", False, 1)
        attrs["video"] = {**attrs["video"], **change}
        other = shard(f"other_{name}", ["d"], attrs)
        with pytest.raises(ValueError, match="different settings") as err:
            S.assemble([gpu, other], tmp_path / f"bad_{name}.zarr")
        assert key in str(err.value) and str(gpu) in str(err.value) and str(other) in str(err.value)
        assert not (tmp_path / f"bad_{name}.zarr").exists()
