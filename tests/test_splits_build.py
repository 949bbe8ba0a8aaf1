"""Split building reproduces the official lists, counts and class ids exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from data_splits.build import all_split_videos, build_splits
from data_splits.common import SPLIT_NAMES
from data_splits.io import read_classes, read_seen_unseen, read_split
from data_splits.official import OfficialListsError, dataset_spec

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "avgzsl-official"
needs_official = pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI

# reference-feature-extraction spec 3.6: (videos, classes) per split; stage_2_test_unseen per kind.
COUNTS = {
    "ucf": {
        "stage_1_train": (3174, 30), "stage_1_val_seen": (353, 30), "stage_1_val_unseen": (1467, 12),
        "stage_2_train": (4994, 42), "stage_2_test_seen": (555, 42),
        "cls": (845, 6), "main": (1267, 9), "distinct_main": 6816, "all_classes": 101,
    },
    "vggsound": {
        "stage_1_train": (70351, 138), "stage_1_val_seen": (7817, 138), "stage_1_val_unseen": (3102, 69),
        "stage_2_train": (81270, 207), "stage_2_test_seen": (9032, 207),
        "cls": (3200, 64), "main": (3450, 69), "distinct_main": 93752, "all_classes": 309,
    },
    "activitynet": {
        "stage_1_train": (9204, 99), "stage_1_val_seen": (1023, 99), "stage_1_val_unseen": (4307, 51),
        "stage_2_train": (14534, 150), "stage_2_test_seen": (1615, 150),
        "cls": (4052, 48), "main": (4199, 50), "distinct_main": 20348, "all_classes": 200,
    },
}
KINDS = {"cls": "cls_split", "main": "main_split"}


def official_csv(dataset: str, kind: str, split: str) -> list[dict[str, str]] | None:
    path = OFFICIAL / dataset_spec(dataset).folder / "class-split" / KINDS[kind] / f"{split}.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def official_txt(dataset: str, kind: str, split: str) -> list[str]:
    path = OFFICIAL / dataset_spec(dataset).folder / "class-split" / KINDS[kind] / f"{split}.txt"
    return [x.strip() for x in path.read_text().splitlines() if x.strip()]


def mapping_lists(dataset: str, kind: str) -> dict[str, dict[str, list[str]]]:
    """{split: {class: [videos]}} from the mapping JSON (main where the cls one was never released)."""
    folder = OFFICIAL / dataset_spec(dataset).folder / "mapping"
    path = folder / f"{kind}_audio.json" if (folder / f"{kind}_audio.json").is_file() else folder / "main_audio.json"
    out: dict[str, dict[str, list[str]]] = {}
    for key, names in json.loads(path.read_text()).items():
        split, cls = key.split("/")[-2], key.split("/")[-1][: -len(".h5")]
        out.setdefault(split, {})[cls] = names
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build all six (dataset, kind) split directories once for the module."""
    root = tmp_path_factory.mktemp("splits")
    return {
        (ds, kind): build_splits(ds, OFFICIAL, root / ds / kind, kind)
        for ds in COUNTS
        for kind in KINDS
    }


@needs_official
@pytest.mark.parametrize("kind", ["cls", "main"])
@pytest.mark.parametrize("dataset", list(COUNTS))
def test_counts_match_spec(built, dataset, kind):
    result = built[(dataset, kind)]
    expected = COUNTS[dataset]
    for split in SPLIT_NAMES:
        rows = read_split(result.out_dir / f"{split}.csv")
        want = expected[kind] if split == "stage_2_test_unseen" else expected[split]
        assert (len(rows), len({r.class_id for r in rows})) == want, split
    assert len(read_classes(result.out_dir / "classes.tsv")) == expected["all_classes"]
    if kind == "main":
        assert len(all_split_videos(result)) == expected["distinct_main"]


@needs_official
@pytest.mark.parametrize("kind", ["cls", "main"])
@pytest.mark.parametrize("dataset", list(COUNTS))
def test_lists_identical_to_official_csvs_and_mappings(built, dataset, kind):
    result = built[(dataset, kind)]
    mapping = mapping_lists(dataset, kind)
    for split in SPLIT_NAMES:
        rows = read_split(result.out_dir / f"{split}.csv")
        allowed = {c.lower() for c in official_txt(dataset, kind, split)}
        csv_rows = official_csv(dataset, kind, split)
        if csv_rows is not None:  # same videos, same order, same ids as the CSV after the .txt filter
            kept = [r for r in csv_rows if r["label"].lower() in allowed]
            assert [(r.video_id, r.class_id) for r in rows] == [(r["filename"], int(r["label_code"])) for r in kept]
        # every (class, videos) list of the mapping, in mapping order, for the classes the .txt keeps
        by_class: dict[str, list[str]] = {}
        for r in rows:
            by_class.setdefault(r.class_name.lower(), []).append(r.video_id)
        want = {c.lower(): v for c, v in mapping[split].items() if c.lower() in allowed}
        assert set(by_class) == set(want)
        for cls, videos in want.items():
            assert sorted(by_class[cls]) == sorted(videos), (split, cls)
            if csv_rows is None:  # rebuilt from the mapping: mapping order kept
                assert by_class[cls] == videos


@needs_official
def test_class_ids_follow_benchmark_definition(built):
    ucf = {c.name: c.class_id for c in read_classes(built[("ucf", "cls")].out_dir / "classes.tsv")}
    folders = sorted((OFFICIAL / "UCF/class-split/all_class.txt").read_text().split())
    assert ucf == {n: i for i, n in enumerate(folders)}
    # The lists say HandStandPushups; the class (folder) name is HandstandPushups.
    rows = read_split(built[("ucf", "cls")].out_dir / "stage_1_train.csv")
    assert {r.class_name for r in rows if r.video_id.startswith("v_HandStandPushups")} == {"HandstandPushups"}
    anet = {c.name: c.class_id for c in read_classes(built[("activitynet", "cls")].out_dir / "classes.tsv")}
    assert anet["BMX"] < anet["Bakingcookies"]  # code-point order, not case-folded
    vgg = read_classes(built[("vggsound", "main")].out_dir / "classes.tsv")
    assert [c.name for c in vgg] == sorted(c.name for c in vgg)
    readable = {c.name: c.readable_name for c in read_classes(built[("ucf", "cls")].out_dir / "classes.tsv")}
    assert readable["CleanAndJerk"] == "Weight Lifting"


@needs_official
@pytest.mark.parametrize("dataset", list(COUNTS))
def test_seen_unseen_relations(built, dataset):
    cls = read_seen_unseen(built[(dataset, "cls")].out_dir / "seen_unseen.json")
    main = read_seen_unseen(built[(dataset, "main")].out_dir / "seen_unseen.json")
    s1, s2 = cls["stage_1"], cls["stage_2"]
    assert sorted(set(s1["seen"]) | set(s1["unseen"])) == s2["seen"]
    assert not set(s2["seen"]) & set(s2["unseen"])
    assert set(s2["unseen"]) < set(main["stage_2"]["unseen"])  # cls drops some test-unseen classes
    assert cls["stage_1"] == main["stage_1"]
    # stage_2_train videos = union of the three stage-1 splits
    out = built[(dataset, "main")].out_dir
    union = {r.video_id for s in SPLIT_NAMES[:3] for r in read_split(out / f"{s}.csv")}
    assert {r.video_id for r in read_split(out / "stage_2_train.csv")} == union


def write_demo_layout(root: Path, label_code_offset: int = 0) -> Path:
    """Hand-written lists in the documented demo layout (docs/splits.md section 1)."""
    cs = root / "demo" / "class-split"
    (cs / "cls_split").mkdir(parents=True)
    classes = ["Zebra", "apple", "Mango", "Kiwi"]  # ids by sorted(): Kiwi 0, Mango 1, Zebra 2, apple 3
    (cs / "all_class.txt").write_text("\n".join(classes) + "\n")
    (cs / "demo_w2v_class_names.csv").write_text(
        "original,manual\nZebra,zebra crossing\napple,red apple\nMango,ripe mango\nKiwi,kiwi fruit\n"
    )
    ids = {n: i for i, n in enumerate(sorted(classes))}
    videos = {
        "stage_1_train": [("z0", "Zebra"), ("m0", "Mango")],
        "stage_1_val_seen": [("z1", "Zebra"), ("m1", "Mango")],
        "stage_1_val_unseen": [("k0", "Kiwi")],
        "stage_2_test_seen": [("z2", "Zebra"), ("m2", "Mango"), ("k1", "Kiwi")],
        "stage_2_test_unseen": [("a0", "apple"), ("a1", "apple")],
    }
    videos["stage_2_train"] = videos["stage_1_train"] + videos["stage_1_val_seen"] + videos["stage_1_val_unseen"]
    for split, rows in videos.items():
        (cs / "cls_split" / f"{split}.txt").write_text("".join(f"{c}\n" for c in sorted({c for _, c in rows})))
        lines = ["filename,label,label_code"] + [f"{v},{c},{ids[c] + label_code_offset}" for v, c in rows]
        (cs / "cls_split" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_demo_layout_builds(tmp_path):
    official = write_demo_layout(tmp_path / "official")
    result = build_splits("demo", official, tmp_path / "out", "cls")
    classes = read_classes(tmp_path / "out" / "classes.tsv")
    assert [(c.class_id, c.name, c.readable_name) for c in classes] == [
        (0, "Kiwi", "kiwi fruit"), (1, "Mango", "ripe mango"), (2, "Zebra", "zebra crossing"), (3, "apple", "red apple"),
    ]
    assert read_split(tmp_path / "out" / "stage_2_test_unseen.csv") == [("a0", "apple", 3), ("a1", "apple", 3)]
    assert read_seen_unseen(tmp_path / "out" / "seen_unseen.json") == {
        "stage_1": {"seen": [1, 2], "unseen": [0]},
        "stage_2": {"seen": [0, 1, 2], "unseen": [3]},
    }
    assert len(result.splits["stage_2_train"]) == 5
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["splits"]["stage_2_test_seen"]["videos"] == 3


def test_inconsistent_label_code_is_an_error_naming_the_file(tmp_path):
    official = write_demo_layout(tmp_path / "official", label_code_offset=1)
    with pytest.raises(OfficialListsError, match=r"stage_1_train\.csv.*label_code"):
        build_splits("demo", official, tmp_path / "out", "cls")


def test_missing_csv_without_mapping_is_an_error(tmp_path):
    official = write_demo_layout(tmp_path / "official")
    (official / "demo/class-split/cls_split/stage_2_train.csv").unlink()
    with pytest.raises(OfficialListsError, match=r"stage_2_train\.csv is missing"):
        build_splits("demo", official, tmp_path / "out", "cls")


def test_missing_split_kind_is_a_clear_error(tmp_path):
    official = write_demo_layout(tmp_path / "official")
    with pytest.raises(OfficialListsError, match="main_split does not exist"):
        build_splits("demo", official, tmp_path / "out", "main")


def test_generated_demo_dataset_builds(tmp_path):
    """The demo generator's output is accepted as-is (the layout docs/splits.md describes)."""
    from data_splits.matching import expected_videos
    from data_splits.synthetic import SyntheticConfig, generate_demo

    cfg = SyntheticConfig(n_classes=4, n_val_unseen=1, n_test_unseen=1, videos_per_class=3, duration_s=1.0,
                          width=32, height=32, defects=False)
    generate_demo(cfg, tmp_path / "raw", tmp_path / "official")
    result = build_splits("demo", tmp_path / "official", tmp_path / "out", "cls")
    entries = expected_videos("demo", tmp_path / "raw", tmp_path / "official", "cls")
    assert {e.video_id for e in entries} == set(all_split_videos(result))
    assert all(e.path is not None and e.path.stem == e.video_id for e in entries)
