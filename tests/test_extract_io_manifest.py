"""Manifest: probing statuses for good and bad files, TSV round trip, folder scan."""

from __future__ import annotations

import numpy as np
import pytest
from test_extract_io_fixtures import write_media, write_truncated

from extractors import manifest as M


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    garbage = d / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    good = write_media(d / "good.mp4", fps=30, n_frames=60)
    return {
        "good": good,
        "mkv": write_media(d / "b.mkv", fps=24, n_frames=48, size=(48, 32)),
        "noaudio": write_media(d / "noaudio.mp4", audio_s=0),
        "audioonly": write_media(d / "audioonly.m4a", video=False, audio_s=2),
        "short": write_media(d / "short.mp4", fps=25, n_frames=10),
        "garbage": garbage,
        "cut": write_truncated(good, d / "cut.mp4", 0.5),
        "empty": d / "empty.mp4",
    }


def test_probe_good_files(media):
    p = M.probe_video(media["good"])
    assert (p.status, p.reason) == ("ok", "")
    assert p.fps == 30 and (p.width, p.height) == (64, 48) and p.has_audio and p.has_video
    assert p.duration_s == pytest.approx(2.0, abs=0.05)
    p = M.probe_video(media["mkv"])
    assert p.status == "ok" and p.fps == 24 and (p.width, p.height) == (48, 32)


def test_probe_segment_duration(media):
    assert M.probe_video(media["good"], 0.5, 1.5).duration_s == pytest.approx(1.0)
    seg = M.probe_video(media["good"], 1.5, 1.9)
    assert seg.status == "too_short" and "VGGish" in seg.reason
    assert M.probe_video(media["good"], 5.0, 9.0).status == "too_short"  # segment past the end


@pytest.mark.parametrize("name, status, words", [
    ("noaudio", "no_audio", "no audio stream"),
    ("audioonly", "no_video", "no video stream"),
    ("short", "too_short", "0.4"),
    ("garbage", "unreadable", "no media container header"),
    ("cut", "unreadable", "MP4/QuickTime header found but the file cannot be opened"),
    ("empty", "unreadable", "not found"),
])
def test_probe_never_raises_and_says_why(media, name, status, words):
    p = M.probe_video(media[name])
    assert p.status == status and words in p.reason, p


def test_build_write_read_manifest(media, tmp_path):
    entries = [("v_good", media["good"], None, None, "Good Class"),
               ("v_seg", media["good"], 0.25, 1.5, "Good Class"),
               ("v_missing", None, None, None, "Gone"),
               ("v_garbage", media["garbage"], None, None, "Bad")]
    rows = M.build_manifest(entries, tmp_path / "manifest.tsv", workers=2)
    assert [r.status for r in rows] == ["ok", "ok", "missing", "unreadable"]
    path = tmp_path / "manifest.tsv"
    assert path.read_text().splitlines()[0].split("\t") == list(M.COLUMNS)
    back = M.read_manifest(path)
    assert back == rows
    assert back[1].start_s == 0.25 and back[1].end_s == 1.5 and back[0].start_s is None
    strict = M.build_manifest(entries[1:2], min_duration_s=1.5)
    assert strict[0].status == "too_short" and "1.500" in strict[0].reason
    with pytest.raises(ValueError, match="unique"):
        M.build_manifest(entries + entries[:1])


def test_read_manifest_names_bad_cells(tmp_path):
    rows = [M.ManifestRow("a", "/x.mp4", None, None, "c", "ok")]
    path = M.write_manifest(rows, tmp_path / "m.tsv")
    path.write_text(path.read_text().replace("false", "maybe", 1))
    with pytest.raises(ValueError, match="has_audio"):
        M.read_manifest(path)
    with pytest.raises(ValueError, match="status"):
        M.ManifestRow("a", "", None, None, "c", "fine")


def test_scan_folder_sorted_and_filtered(tmp_path):
    for name in ("b/z.MP4", "a/y.mkv", "a/notes.txt", "c.avi"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    got = M.scan_folder(tmp_path, ["mp4", ".mkv", ".avi"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/y.mkv", "b/z.MP4", "c.avi"]
    with pytest.raises(FileNotFoundError, match="raw_videos.dir"):
        M.scan_folder(tmp_path / "nope")
