"""The synthetic demo dataset: real decodable files, distinct readable classes, benchmark-style lists."""

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from data_splits.synthetic import (
    SPLIT_NAMES,
    FormatSpec,
    SyntheticConfig,
    class_catalogue,
    generate_demo,
)

TINY = {"n_classes": 4, "videos_per_class": 3, "duration_s": 1.0, "width": 64, "height": 48,
        "n_val_unseen": 1, "n_test_unseen": 1}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cfg = SyntheticConfig.from_dict(TINY)
    summary = generate_demo(cfg, root / "videos", root / "official")
    return root, cfg, summary


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_classes_are_distinct_and_readable():
    catalogue = class_catalogue()
    assert len({c.name for c in catalogue}) == len(catalogue)
    assert len({c.readable_name for c in catalogue}) == len(catalogue)
    first = catalogue[:12]
    # The shuffled order makes the first classes vary in every attribute, not only the last one.
    for attribute in ("colour", "shape", "motion", "pitch", "rhythm"):
        assert len({getattr(c, attribute) for c in first}) > 1, attribute
    assert all(" with " in c.readable_name and c.colour in c.readable_name for c in first)


def test_every_video_decodes_with_the_configured_format(demo):
    root, cfg, summary = demo
    by_container = {f.container: f for f in cfg.formats}
    for v in summary["videos"]:
        if v["defect"]:
            continue
        fmt = by_container[v["fmt"]]
        with av.open(str(root / "videos" / v["path"])) as c:
            vs, aus = c.streams.video[0], c.streams.audio
            # Compare codec ids: the encoder "libx264" writes what the decoder calls "h264".
            assert vs.codec_context.codec.id == av.codec.Codec(fmt.video_codec, "w").id
            assert aus[0].codec_context.codec.id == av.codec.Codec(fmt.audio_codec, "w").id
            assert vs.average_rate == Fraction(fmt.fps) or abs(float(vs.average_rate) - fmt.fps) < 0.5
            assert len(aus) == 1 and aus[0].rate == fmt.sample_rate
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == pytest.approx(cfg.duration_s * fmt.fps, abs=1)
        assert frames[0].shape == (cfg.height, cfg.width, 3)
        # Something moves or pulses: consecutive frames differ.
        assert np.abs(frames[0].astype(int) - frames[len(frames) // 2].astype(int)).mean() > 0.5


def test_containers_and_frame_rates_vary(demo):
    _, cfg, summary = demo
    used = {v["fmt"] for v in summary["videos"] if not v["defect"]}
    assert used == {f.container for f in cfg.formats[: cfg.videos_per_class]}
    assert len({f.fps for f in cfg.formats}) >= 2


def test_defects_are_listed_and_broken(demo):
    root, _, summary = demo
    defects = {v["defect"]: v for v in summary["videos"] if v["defect"]}
    assert set(defects) == {"no audio stream", "truncated file"}
    with av.open(str(root / "videos" / defects["no audio stream"]["path"])) as c:
        assert not c.streams.audio and c.streams.video
    with pytest.raises(av.error.FFmpegError):
        av.open(str(root / "videos" / defects["truncated file"]["path"])).close()
    train = {r["filename"] for r in _read_csv(root / "official/demo/class-split/cls_split/stage_1_train.csv")}
    assert {v["video_id"] for v in defects.values()} <= train


def test_lists_follow_the_benchmark_protocol(demo):
    root, cfg, summary = demo
    base = root / "official" / "demo" / "class-split"
    all_classes = (base / "all_class.txt").read_text().split()
    assert all_classes == sorted(c["name"] for c in summary["classes"])
    names = {r["original"]: r["manual"] for r in _read_csv(base / "demo_w2v_class_names.csv")}
    assert names == {c["name"]: c["readable_name"] for c in summary["classes"]}

    classes = {s: set((base / "cls_split" / f"{s}.txt").read_text().split()) for s in SPLIT_NAMES}
    videos = {s: _read_csv(base / "cls_split" / f"{s}.csv") for s in SPLIT_NAMES}
    assert classes["stage_1_val_seen"] == classes["stage_1_train"]
    assert classes["stage_2_train"] == classes["stage_2_test_seen"] == classes["stage_1_train"] | classes[
        "stage_1_val_unseen"
    ]
    assert not classes["stage_2_test_unseen"] & classes["stage_2_train"]
    assert not classes["stage_1_val_unseen"] & classes["stage_1_train"]
    assert len(classes["stage_2_test_unseen"]) == cfg.n_test_unseen
    assert len(classes["stage_1_val_unseen"]) == cfg.n_val_unseen
    ids = {s: {r["filename"] for r in rows} for s, rows in videos.items()}
    assert ids["stage_2_train"] == ids["stage_1_train"] | ids["stage_1_val_seen"] | ids["stage_1_val_unseen"]
    assert not ids["stage_2_test_seen"] & ids["stage_2_train"]
    for s, rows in videos.items():  # label_code = index in the sorted class list, label within the split
        assert all(int(r["label_code"]) == all_classes.index(r["label"]) for r in rows), s
        assert {r["label"] for r in rows} <= classes[s], s
    on_disk = {p.stem for p in (root / "videos").rglob("*.*")}
    assert set().union(*ids.values()) == on_disk


def test_generation_is_deterministic(tmp_path):
    cfg = SyntheticConfig.from_dict({**TINY, "n_classes": 3, "videos_per_class": 3, "defects": False,
                                     "formats": [{"container": "mkv", "video_codec": "mpeg4",
                                                  "audio_codec": "libmp3lame", "fps": 24,
                                                  "sample_rate": 48000, "audio_layout": "mono"}]})
    a = generate_demo(cfg, tmp_path / "a" / "videos", tmp_path / "a" / "official")
    b = generate_demo(cfg, tmp_path / "b" / "videos", tmp_path / "b" / "official")
    assert a == b
    first = Path(a["videos"][0]["path"])
    with av.open(str(tmp_path / "a" / "videos" / first)) as ca, av.open(str(tmp_path / "b" / "videos" / first)) as cb:
        fa = next(ca.decode(video=0)).to_ndarray(format="rgb24")
        fb = next(cb.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(fa, fb)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_classes": 2}, "at least one stage-1 seen"),
        ({"videos_per_class": 2}, "videos_per_class"),
        ({"colour": "red"}, "unknown key"),
        ({"n_classes": 10_000}, "n_classes"),
    ],
)
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig.from_dict({**TINY, **override})


def test_format_spec_rejects_unknown_keys():
    with pytest.raises(ValueError, match="demo.formats"):
        FormatSpec.from_dict({"container": "mp4", "codec": "h264"})


def _decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_h264_videos_decode_identically_across_generations(tmp_path):
    # libx264 with several threads makes different bitstreams for the same input; the demo's features
    # (and so its metrics) must not change between two generations with the same seed.
    cfg = SyntheticConfig.from_dict({**TINY, "n_classes": 3, "videos_per_class": 3, "defects": False,
                                     "width": 160, "height": 120, "duration_s": 2.0,
                                     "formats": [{"container": "mp4", "video_codec": "libx264",
                                                  "audio_codec": "aac", "fps": 30,
                                                  "sample_rate": 44100, "audio_layout": "stereo"}]})
    a = generate_demo(cfg, tmp_path / "a" / "videos", tmp_path / "a" / "official")
    generate_demo(cfg, tmp_path / "b" / "videos", tmp_path / "b" / "official")
    for video in a["videos"]:
        rel = Path(video["path"])
        np.testing.assert_array_equal(_decoded_frames(tmp_path / "a" / "videos" / rel),
                                      _decoded_frames(tmp_path / "b" / "videos" / rel))
