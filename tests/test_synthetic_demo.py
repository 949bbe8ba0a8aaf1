"""The synthetic demo dataset: real decodable files, distinct readable classes, benchmark-style lists."""

import csv
import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from data_splits.synthetic import (
    ATTRIBUTES,
    SOUNDS,
    SPLIT_NAMES,
    FormatSpec,
    SyntheticConfig,
    all_classes,
    balanced_block,
    class_catalogue,
    design_classes,
    generate_demo,
)

TINY = {"n_classes": 4, "videos_per_class": 3, "duration_s": 1.0, "width": 64, "height": 48,
        "n_val_unseen": 1, "n_test_unseen": 1}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cfg = SyntheticConfig.from_dict(TINY)
    summary = generate_demo(cfg, root / "videos", root / "official", root / "heldout")
    return root, cfg, summary


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _words(cls) -> list[str]:
    """The words of each attribute value as they appear in a readable name."""
    return [cls.colour, cls.shape, cls.motion, SOUNDS[cls.sound][0]]


def test_classes_are_distinct_and_readable():
    catalogue = class_catalogue()
    assert len(catalogue) == len(all_classes()) == 3 ** len(ATTRIBUTES)
    assert len({c.name for c in catalogue}) == len({c.readable_name for c in catalogue}) == len(catalogue)
    for c in catalogue:  # every attribute value is spelt out in the name the text model embeds
        assert all(w in c.readable_name for w in _words(c)), c.readable_name
        assert c.readable_name.startswith(f"{c.colour} {c.shape} {c.motion} with ")
    with pytest.raises(ValueError, match="colour 'purple'"):
        type(catalogue[0])("purple", "ball", "bouncing", "hum")


def test_balanced_block_pairs_every_two_values_once():
    block = balanced_block()
    assert len(set(block)) == 9
    attrs = list(ATTRIBUTES)
    for i, a in enumerate(attrs):
        for b in attrs[i + 1:]:
            pairs = [(getattr(c, a), getattr(c, b)) for c in block]
            assert len(set(pairs)) == len(pairs) == len(ATTRIBUTES[a]) * len(ATTRIBUTES[b]), (a, b)
    # So every other combination is one attribute away from exactly one block class (a perfect code).
    for c in all_classes():
        if c not in block:
            assert sorted(c.agreement(o) for o in block)[-2:] == [2, 3], c


def _values(classes) -> set[tuple[str, str]]:
    return {(a, getattr(c, a)) for c in classes for a in ATTRIBUTES}


@pytest.mark.parametrize("sizes", [(12, 3, 3, 2), (4, 1, 1, 2), (3, 1, 1, 0), (9, 2, 3, 2), (20, 4, 4, 2),
                                   (40, 5, 10, 5)])
def test_every_unseen_value_is_carried_by_a_trained_class(sizes):
    n_classes, n_val, n_test, n_new = sizes
    d = design_classes(n_classes, n_val, n_test, n_new)
    seen, val, test = d.of_role("seen"), d.of_role("val_unseen"), d.of_role("test_unseen")
    assert (len(seen), len(val), len(test), len(d.new_classes)) == (n_classes - n_val - n_test, n_val, n_test, n_new)
    assert len(set(d.classes) | set(d.new_classes)) == n_classes + n_new
    trained = seen + val
    # Zero-shot transfer needs it: a test-unseen (or never-split) class is a new combination of values that the
    # classes trained on in stage 2 show.
    assert _values(test) | _values(d.new_classes) <= _values(trained)
    assert not set(test + d.new_classes) & set(trained)
    # No attribute is constant over the trained classes (two classes of the block share one, three need not):
    # each attribute's values can be told apart in training.
    varying = sum(len({getattr(c, a) for c in trained}) > 1 for a in ATTRIBUTES)
    assert varying == (len(ATTRIBUTES) if len(trained) >= 3 else len(ATTRIBUTES) - 1)


def test_default_design_makes_unseen_classes_new_combinations_of_seen_values():
    cfg = SyntheticConfig()
    d = design_classes(cfg.n_classes, cfg.n_val_unseen, cfg.n_test_unseen, cfg.heldout_new_classes)
    seen, val, test = d.of_role("seen"), d.of_role("val_unseen"), d.of_role("test_unseen")
    assert set(seen + val) == set(balanced_block())  # stage-2 training: no attribute confounded with another
    assert _values(seen) == _values(all_classes())  # stage 1 already shows every value ...
    assert _values(val) <= _values(seen)  # ... so its validation-unseen classes are new combinations too
    for i, a in enumerate(test):  # test-unseen classes differ in every attribute: any one tells them apart
        assert all(a.agreement(b) == 0 for b in test[i + 1:]), (a, test)
    # each shares at most three attributes with any trained class (one attribute is always new)
    assert max(t.agreement(c) for t in test for c in seen + val) == 3


def test_design_failures_name_the_keys():
    with pytest.raises(ValueError, match=r"demo.n_test_unseen \(1\) or demo.heldout_new_classes \(40\)"):
        design_classes(4, 1, 1, 40)
    with pytest.raises(ValueError, match="heldout_new_classes"):
        SyntheticConfig.from_dict({**TINY, "heldout_new_classes": 40})
    with pytest.raises(ValueError, match="heldout_per_class"):
        SyntheticConfig.from_dict({**TINY, "heldout_per_class": -1})


def test_name_embeddings_reflect_the_shared_attributes():
    """MiniLM (the demo's text model) puts names that share more attributes closer: zero-shot transfer reads the
    attributes off the name vectors."""
    from data_splits.class_embeddings import embed_class_names

    classes = class_catalogue()
    vectors = embed_class_names([c.readable_name for c in classes], {"backend": "sentence_transformers"})
    sims = vectors @ vectors.T
    by_shared: dict[int, list[float]] = {}
    for i, a in enumerate(classes):
        for j in range(i + 1, len(classes)):
            by_shared.setdefault(a.agreement(classes[j]), []).append(float(sims[i, j]))
    means = [np.mean(by_shared[k]) for k in sorted(by_shared)]
    assert sorted(by_shared) == [0, 1, 2, 3]
    assert all(lo + 0.05 < hi for lo, hi in itertools.pairwise(means)), means
    # and each attribute on its own: sharing it raises the similarity of otherwise comparable pairs
    for a in ATTRIBUTES:
        same = [sims[i, j] for i, x in enumerate(classes) for j, y in enumerate(classes)
                if i < j and x.agreement(y) == 1 and getattr(x, a) == getattr(y, a)]
        other = [sims[i, j] for i, x in enumerate(classes) for j, y in enumerate(classes)
                 if i < j and x.agreement(y) == 0]
        assert np.mean(same) > np.mean(other) + 0.05, a


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


def test_heldout_set_for_prediction(demo):
    root, cfg, summary = demo
    heldout = root / "heldout"
    labels = _read_tsv(heldout / "labels.tsv")
    files = sorted(p.name for p in (heldout / "videos").iterdir())
    assert files == sorted(r["file"] for r in labels)
    kinds = [r["kind"] for r in labels]
    assert kinds.count("broken") == 1
    roles = {c["name"]: c["role"] for c in summary["classes"]}
    test_unseen = sorted(n for n, r in roles.items() if r == "test_unseen")
    assert sorted(r["class_name"] for r in labels if r["kind"] == "test_unseen") == sorted(
        test_unseen * cfg.heldout_per_class)
    new = [r for r in labels if r["kind"] == "new"]
    assert len(new) == cfg.heldout_new_classes and not {r["class_name"] for r in new} & set(roles)
    # New videos, in no list: prediction sees them for the first time.
    listed = set((root / "official/demo/class-split/all_class.txt").read_text().split())
    assert {r["class_name"] for r in new}.isdisjoint(listed)
    ids = {r["filename"] for s in SPLIT_NAMES
           for r in _read_csv(root / "official/demo/class-split/cls_split" / f"{s}.csv")}
    assert not {Path(f).stem for f in files} & ids
    for r in labels:
        path = heldout / "videos" / r["file"]
        if r["kind"] == "broken":
            with pytest.raises(av.error.FFmpegError):
                av.open(str(path)).close()
            continue
        with av.open(str(path)) as c:
            assert c.streams.audio and len([f for f in c.decode(video=0)]) > 0
    # The class list: every trained and test-unseen class's readable name, and the names of no split.
    names = [line for line in (heldout / "classes.txt").read_text().splitlines() if line and not line.startswith("#")]
    readable = {c["name"]: c["readable_name"] for c in summary["classes"]}
    assert set(names) == set(readable.values()) | {r["readable_name"] for r in new}
    assert len(names) == len(set(names)) == cfg.n_classes + cfg.heldout_new_classes
    assert summary["heldout"]["videos"] == labels


def test_heldout_settings_leave_the_training_videos_unchanged(tmp_path):
    base = {**TINY, "n_classes": 3, "videos_per_class": 3, "defects": False, "formats": [
        {"container": "mkv", "video_codec": "mpeg4", "audio_codec": "libmp3lame", "fps": 24, "sample_rate": 48000,
         "audio_layout": "mono"}]}
    a = generate_demo(SyntheticConfig.from_dict(base), tmp_path / "a/videos", tmp_path / "a/official",
                      tmp_path / "a/heldout")
    b = generate_demo(SyntheticConfig.from_dict({**base, "heldout_per_class": 2, "heldout_new_classes": 0}),
                      tmp_path / "b/videos", tmp_path / "b/official", tmp_path / "b/heldout")
    assert a["videos"] == b["videos"] and a["classes"] == b["classes"]
    for v in a["videos"]:
        np.testing.assert_array_equal(_decoded_frames(tmp_path / "a/videos" / v["path"]),
                                      _decoded_frames(tmp_path / "b/videos" / v["path"]))
    assert [r["kind"] for r in b["heldout"]["videos"]] == ["test_unseen", "test_unseen", "broken"]


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_generation_is_deterministic(tmp_path):
    cfg = SyntheticConfig.from_dict({**TINY, "n_classes": 3, "videos_per_class": 3, "defects": False,
                                     "formats": [{"container": "mkv", "video_codec": "mpeg4",
                                                  "audio_codec": "libmp3lame", "fps": 24,
                                                  "sample_rate": 48000, "audio_layout": "mono"}]})
    a = generate_demo(cfg, tmp_path / "a" / "videos", tmp_path / "a" / "official", tmp_path / "a" / "heldout")
    b = generate_demo(cfg, tmp_path / "b" / "videos", tmp_path / "b" / "official", tmp_path / "b" / "heldout")
    assert a == b
    first = Path(a["videos"][0]["path"])
    with av.open(str(tmp_path / "a" / "videos" / first)) as ca, av.open(str(tmp_path / "b" / "videos" / first)) as cb:
        fa = next(ca.decode(video=0)).to_ndarray(format="rgb24")
        fb = next(cb.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(fa, fb)
    for name in ("classes.txt", "labels.tsv"):
        assert (tmp_path / "a/heldout" / name).read_bytes() == (tmp_path / "b/heldout" / name).read_bytes()
    for r in a["heldout"]["videos"]:
        pa, pb = tmp_path / "a/heldout/videos" / r["file"], tmp_path / "b/heldout/videos" / r["file"]
        if r["kind"] == "broken":  # (Matroska writes a random segment id: same cut, not the same bytes)
            assert pa.stat().st_size == pb.stat().st_size
        else:
            np.testing.assert_array_equal(_decoded_frames(pa), _decoded_frames(pb))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_classes": 3, "n_val_unseen": 2}, "at least one stage-1 seen"),
        ({"n_classes": 2}, "n_classes"),
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
