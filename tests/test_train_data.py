"""Preloading, class-vector alignment, class-balanced sampling and sequence windows (model/store_reader.py,
packing.py, batching.py, sampling.py)."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from data_splits.io import ClassInfo, read_classes, write_class_embeddings
from model.batching import WindowConfig, crop_starts, eval_batches, gather_window, make_batch
from model.packing import build_split, load_class_vectors, split_from_sequences
from model.sampling import ClassBalancedSampler
from model.store_reader import open_store
from model.synthetic import SyntheticSpec, write_synthetic_dataset

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "avgzsl-official"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    spec = SyntheticSpec(n_seen=5, n_unseen=2, video_dim=64, seed=3)
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds"), spec, n_val_unseen=1)


def _vectors(ds):
    classes = read_classes(ds["splits_dir"] / "classes.tsv")
    return classes, load_class_vectors(ds["class_embeddings"], classes)


def test_build_split_matches_store_and_drops_missing(dataset):
    store = open_store(dataset["store"])
    classes, vecs = _vectors(dataset)
    split = build_split(store, dataset["splits_dir"], "stage_1_val", vecs, classes, video_dtype="float32")
    # 4 seen classes x 3 + 1 unseen class x 6 videos; one missing video per split file is dropped.
    assert len(split) == 4 * 3 + 6
    assert [v for v, _ in split.dropped] == ["stage_1_val_seen_missing_0", "stage_1_val_unseen_missing_0"]
    assert split.class_ids == [0, 1, 2, 3, 4] and split.unseen.tolist() == [False] * 4 + [True]
    assert split.audio.values.dtype == torch.uint8 and split.video.values.dtype == torch.float32
    for i in (0, 7, len(split) - 1):  # packed rows are exactly the store rows of that video
        j = store.index[split.video_ids[i]]
        for mod in ("audio", "video"):
            values, offsets = getattr(store, mod)
            packed = getattr(split, mod)
            got = packed.values[packed.offsets[i] : packed.offsets[i] + packed.lengths[i]].numpy()
            np.testing.assert_array_equal(got, values[offsets[j] : offsets[j + 1]])
        cid = int(split.video_ids[i].split("_")[-2])  # ids are <split>_<class>_<k>
        assert split.class_ids[split.labels[i]] == cid
        np.testing.assert_array_equal(split.class_vectors[split.labels[i]].numpy(), vecs[cid])


def test_float16_video_is_close(dataset):
    store = open_store(dataset["store"])
    classes, vecs = _vectors(dataset)
    s16 = build_split(store, dataset["splits_dir"], "stage_1_train", vecs, classes, video_dtype="float16")
    s32 = build_split(store, dataset["splits_dir"], "stage_1_train", vecs, classes, video_dtype="float32")
    assert s16.video.values.dtype == torch.float16
    rel = (s16.video.values.float() - s32.video.values).abs() / s32.video.values.abs().clamp(min=1e-3)
    assert float(rel.max()) <= 2**-11


def test_class_vectors_aligned_by_name(tmp_path):
    classes = [ClassInfo(0, "Archery", "Archery"), ClassInfo(1, "Basketball", "Basketball Dunk"),
               ClassInfo(2, "Zumba", "Zumba")]
    vec = np.eye(3, 4, dtype=np.float32)
    # file rows in another order than the class ids: alignment must go by name
    write_class_embeddings(tmp_path / "e.npz", ["Zumba", "Archery", "Basketball"],
                           ["Zumba", "Archery", "Basketball Dunk"], vec, {})
    got = load_class_vectors(tmp_path / "e.npz", classes)
    np.testing.assert_array_equal(got[0], vec[1])
    np.testing.assert_array_equal(got[1], vec[2])
    np.testing.assert_array_equal(got[2], vec[0])
    with pytest.raises(ValueError, match="Yoga"):
        load_class_vectors(tmp_path / "e.npz", [*classes, ClassInfo(3, "Yoga", "Yoga")])


def test_reference_permutation_on_a_small_example(tmp_path):
    # Class ids follow the sorted class names; the quirk sorts the *readable* names instead.
    classes = [ClassInfo(0, "CleanAndJerk", "Weight Lifting"), ClassInfo(1, "Diving", "Diving"),
               ClassInfo(2, "Drumming", "Drumming")]
    vec = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_class_embeddings(tmp_path / "e.npz", [c.name for c in classes], [c.readable_name for c in classes], vec, {})
    got = load_class_vectors(tmp_path / "e.npz", classes, permutation_quirk=True)
    # sorted readable names: Diving, Drumming, Weight Lifting -> id 0 gets Diving's vector, etc.
    np.testing.assert_array_equal(got[0], vec[1])
    np.testing.assert_array_equal(got[1], vec[2])
    np.testing.assert_array_equal(got[2], vec[0])


@pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI
def test_reference_permutation_matches_spec_on_ucf(tmp_path):
    split_dir = OFFICIAL / "UCF" / "class-split"
    names = sorted(line.strip() for line in (split_dir / "all_class.txt").read_text().splitlines() if line.strip())
    with (split_dir / "ucf_w2v_class_names.csv").open() as f:
        manual = {r["original"]: r["manual"] for r in csv.DictReader(f)}
    classes = [ClassInfo(i, n, manual[n]) for i, n in enumerate(names)]
    vec = np.random.default_rng(0).standard_normal((len(names), 8)).astype(np.float32)
    write_class_embeddings(tmp_path / "ucf.npz", names, [c.readable_name for c in classes], vec, {})
    fixed = load_class_vectors(tmp_path / "ucf.npz", classes)
    quirk = load_class_vectors(tmp_path / "ucf.npz", classes, permutation_quirk=True)
    moved = [c.name for c in classes if not np.array_equal(quirk[c.class_id], fixed[c.class_id])]
    assert len(moved) == 79  # spec 2.5: 79 of 101 UCF class ids get another class's vector
    by_name = {c.name: c.class_id for c in classes}
    np.testing.assert_array_equal(quirk[by_name["CuttingInKitchen"]], vec[names.index("Diving")])
    np.testing.assert_array_equal(quirk[by_name["PlayingFlute"]], vec[names.index("PlayingGuitar")])
    test_unseen = [line.strip() for line in (split_dir / "cls_split" / "stage_2_test_unseen.txt").read_text().splitlines()
                   if line.strip()]
    assert sum(n in moved for n in test_unseen) == 4  # spec: 4 of 6 test-unseen classes


def _toy_split(lengths_a, lengths_v, labels, n_classes=None):
    """Videos whose feature values encode their row index, to check windows exactly."""
    audio = [np.full((la, 128), 0, np.uint8) + (np.arange(la, dtype=np.uint8)[:, None] % 250) for la in lengths_a]
    video = [np.arange(lv, dtype=np.float32)[:, None].repeat(8, 1) + 1000 * i for i, lv in enumerate(lengths_v)]
    n_classes = n_classes or max(labels) + 1
    return split_from_sequences("toy", audio, video, labels, np.eye(n_classes, 4, dtype=np.float32),
                                np.zeros(n_classes, bool), video_dtype="float32")


def test_sampler_is_class_balanced_and_uniform_within_class():
    # Very unbalanced classes: 1, 5 and 50 samples.
    labels = [0] + [1] * 5 + [2] * 50
    split = _toy_split([3] * 56, [4] * 56, labels)
    sampler = ClassBalancedSampler(split, batch_size=64, n_batches=300, win=WindowConfig(), seed=0)
    idx = torch.cat([b[0] for b in sampler.plan()])
    cls_counts = torch.bincount(split.labels[idx], minlength=3).double()
    n = len(idx)  # 19200 draws; binomial std ~ 65, so 5 % is > 9 sigma
    assert torch.allclose(cls_counts / n, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    within = torch.bincount(idx, minlength=56).double()[6:]  # class 2: each of 50 samples ~ n/150 draws
    assert float(within.min()) > 0.6 * n / 150 and float(within.max()) < 1.4 * n / 150


def test_sampler_state_round_trip():
    split = _toy_split([3] * 10, [4] * 10, [0, 1] * 5)
    a = ClassBalancedSampler(split, 8, 5, WindowConfig(), seed=1)
    next(iter(a.plan()))
    state = a.state_dict()
    first = [b[0] for b in a.plan()]
    b = ClassBalancedSampler(split, 8, 5, WindowConfig(), seed=999)
    b.load_state_dict(state)
    assert all(torch.equal(x, y[0]) for x, y in zip(first, b.plan(), strict=True))


def test_max_mode_pads_to_batch_max_and_never_trims():
    split = _toy_split([2, 5, 3], [4, 9, 1], [0, 1, 0])
    sampler = ClassBalancedSampler(split, batch_size=16, n_batches=4, win=WindowConfig(mode="max"), seed=0)
    for idx, s_a, s_v, la, lv in sampler.plan():
        assert la == int(split.audio.lengths[idx].max()) and lv == int(split.video.lengths[idx].max())
        batch = make_batch(split, idx, s_a, s_v, la, lv, torch.device("cpu"))
        assert batch.video_mask.sum(1).tolist() == split.video.lengths[idx].tolist()
        assert batch.audio_mask.sum(1).tolist() == split.audio.lengths[idx].tolist()
        assert float(batch.video[~batch.video_mask].abs().sum()) == 0.0


@pytest.mark.parametrize("quirk, la_train, la_eval", [(False, 40, 200), (True, 37, 184)])
def test_fixed_window_lengths(quirk, la_train, la_eval):
    win = WindowConfig(mode="fixed", audio_len_quirk=quirk)
    assert (win.audio_len(60), win.audio_len(300)) == (la_train, la_eval)


def test_random_trim_aligns_audio_with_video():
    lengths_v = [100, 70, 40, 400]
    lengths_a = [67, 47, 27, 267]  # ~ duration-matched: len_v * 0.64 / 0.96
    split = _toy_split(lengths_a, lengths_v, [0, 1, 0, 1])
    win = WindowConfig(mode="fixed")
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(4).repeat(200)
    s_v, s_a, lv, la = crop_starts(split, idx, win, True, g)
    assert (lv, la) == (60, 40)
    diff_v = split.video.lengths[idx] - lv
    assert bool((s_v >= 0).all()) and bool((s_v <= diff_v.clamp(min=0)).all())
    assert set(s_v[idx == 1].tolist()) == set(range(11))  # uniform over 0..diff incl. the last offset
    assert bool((s_v[idx == 2] == 0).all())  # shorter than the window: never cropped
    # Audio starts where the video crop starts in time (within half an audio hop), unless clamped.
    diff_a = split.audio.lengths[idx] - la
    free = (s_v > 0) & (torch.round(s_v * 0.64 / 0.96) <= diff_a)
    assert bool(((s_a[free] * 0.96 - s_v[free] * 0.64).abs() <= 0.48 + 1e-6).all())
    assert bool((s_a[~free & (diff_a > 0) & (s_v > 0)] == diff_a[~free & (diff_a > 0) & (s_v > 0)]).all())
    assert bool((s_a[s_v == 0] == 0).all())
    # The gathered windows hold exactly rows s..s+L-1 of each video.
    v, vm = gather_window(split.video, idx, s_v, lv)
    a, am = gather_window(split.audio, idx, s_a, la)
    for k in range(0, len(idx), 97):
        i, n_v, n_a = int(idx[k]), int(vm[k].sum()), int(am[k].sum())
        assert n_v == min(lv, lengths_v[i]) and n_a == min(la, lengths_a[i] - int(s_a[k]))
        np.testing.assert_array_equal(v[k, :n_v, 0].numpy(), 1000 * i + np.arange(int(s_v[k]), int(s_v[k]) + n_v))
        np.testing.assert_array_equal(a[k, :n_a, 0].numpy(), (np.arange(int(s_a[k]), int(s_a[k]) + n_a) % 250))


def test_trim_offset_quirk_never_picks_last_offset():
    split = _toy_split([40, 40], [61, 61], [0, 1])
    idx = torch.zeros(500, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    s_quirk = crop_starts(split, idx, WindowConfig(mode="fixed", trim_offset_quirk=True), True, g)[0]
    s_fixed = crop_starts(split, idx, WindowConfig(mode="fixed"), True, g)[0]
    assert set(s_quirk.tolist()) == {0} and set(s_fixed.tolist()) == {0, 1}


def test_eval_windows_are_centred_and_cover_the_split_once():
    lengths_v = [500, 300, 120, 301, 10]
    lengths_a = [333, 200, 80, 200, 7]
    split = _toy_split(lengths_a, lengths_v, [0, 1, 0, 1, 0])
    win = WindowConfig(mode="fixed")
    seen = []
    for idx, batch in eval_batches(split, batch_size=2, win=win, device=torch.device("cpu")):
        seen += idx.tolist()
        assert batch.video.shape[1] <= 300 and batch.audio.shape[1] <= 200
        for row, i in enumerate(idx.tolist()):
            n_v = int(batch.video_mask[row].sum())
            start = max(0, (lengths_v[i] - 300) // 2)
            assert n_v == min(300, lengths_v[i])
            assert batch.video[row, 0, 0] == 1000 * i + start
    assert sorted(seen) == list(range(5))


def test_lazy_store_reads_match_eager_reads(dataset, monkeypatch):
    import model.store_reader as data_mod

    classes, vecs = _vectors(dataset)
    # Tiny blocks so that the split's rows are gathered across many block reads.
    monkeypatch.setattr(data_mod, "_BLOCK_BYTES", 1)
    lazy = build_split(open_store(dataset["store"]), dataset["splits_dir"], "stage_2_test", vecs, classes)
    eager = build_split(open_store(dataset["store"], lazy=False), dataset["splits_dir"], "stage_2_test", vecs, classes)
    for mod in ("audio", "video"):
        a, b = getattr(lazy, mod), getattr(eager, mod)
        assert torch.equal(a.values, b.values) and torch.equal(a.offsets, b.offsets) and torch.equal(a.lengths, b.lengths)
        assert a.values.dtype == (torch.uint8 if mod == "audio" else torch.float16)


class _ChunkedArray:
    """Minimal lazy-array stand-in with small chunks that records the row ranges read."""

    def __init__(self, a: np.ndarray, chunk: int):
        self.a, self.shape, self.dtype, self.chunks, self.reads = a, a.shape, a.dtype, (chunk, a.shape[1]), []

    def __getitem__(self, sl):
        self.reads.append((sl.start, sl.stop))
        return self.a[sl]


def test_block_reader_selects_rows_in_any_order(monkeypatch):
    import model.store_reader as data_mod

    monkeypatch.setattr(data_mod, "_BLOCK_BYTES", 2 * 3 * 4 * 4)  # 2 chunks of 3 rows x 4 float32 per read
    a = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    rows = np.array([30, 31, 2, 3, 4, 17, 39, 0])
    lazy = _ChunkedArray(a, chunk=3)
    out, peak = data_mod._select_rows(lazy, rows, np.dtype(np.float16))
    np.testing.assert_array_equal(out, a[rows].astype(np.float16))
    assert peak == float(a[rows].max()) and out.dtype == np.float16
    # chunk-aligned reads of at most 2 chunks; blocks without a wanted row are never read
    assert lazy.reads == [(0, 6), (15, 21), (30, 36), (39, 40)]
