"""CLIP's frame is ClipClap's: the middle-frame rule applied to the video's native frames.

ClipClap's scripts read every frame with OpenCV at the file's own rate and take frame ``n // 2`` (UCF) or the frame
whose one-based number is ``n // 2`` (VGGSound, ActivityNet). The videos here (24, 29.97 and 30 fps) show their own
frame index in binary, so each test reads back which source frame reached CLIP's crop.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_extract_nets_clip import tiny_clip  # noqa: F401 (fixture)

from extractors.c3d import VideoExtractorConfig
from extractors.clip import ImageExtractorConfig, build_image_extractor
from extractors.decode import DecodeConfig, count_native_frames, iter_frames, iter_native_frames
from extractors.manifest import ManifestRow
from extractors.pool import DecoderPool, VideoFrames

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning")

SIZE, BITS = 256, 8  # square frames: CLIP's resize to 224 keeps all of them, no centre crop cuts a stripe
DARK, LIGHT = 40, 200  # grey: the reference preset's channel swap leaves it, UCF's inversion maps it to 216 / 56
# (name, container, codec, rate, frames): rates where the 25 fps grid and the native frames disagree.
VIDEOS = [
    ("f24", "mp4", "libx264", Fraction(24), 40),
    ("f2997", "mp4", "libx264", Fraction(30000, 1001), 50),
    ("f30", "avi", "mpeg4", Fraction(30), 30),
]


def write_indexed_video(path: Path, codec: str, rate: Fraction, n: int) -> Path:
    """Frame i shows i in binary: stripe j (32 px wide) is light when bit j of i is set."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=rate)
        vs.width = vs.height = SIZE
        vs.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((SIZE, SIZE, 3), DARK, np.uint8)
            for j in range(BITS):
                if i >> j & 1:
                    img[:, j * SIZE // BITS : (j + 1) * SIZE // BITS] = LIGHT
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    return path


def read_index(image: np.ndarray, inverted: bool = False) -> int:
    """The index a frame (any size, uint8 [H, W, 3]) shows; ``inverted`` undoes UCF's ``(256 - x) mod 256``."""
    img = image.astype(np.int32)
    if inverted:
        img = (256 - img) % 256
    w = img.shape[1] / BITS
    levels = [img[:, int(w * j + w / 2)].mean() for j in range(BITS)]
    return sum(1 << j for j, v in enumerate(levels) if v > (DARK + LIGHT) / 2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexed")
    return {name: (write_indexed_video(root / f"{name}.{ext}", codec, rate, n), rate, n)
            for name, ext, codec, rate, n in VIDEOS}


def expected_index(n: int, preset: str, dataset: str) -> int:
    # ClipClap's VGGSound/ActivityNet loops compare a one-based counter with n // 2.
    return n // 2 - 1 if preset == "reference" and dataset in ("vggsound", "activitynet") else n // 2


def pool_frames(rows, clip: ImageExtractorConfig, streams=("clip",), decoders: int = 0) -> dict[str, np.ndarray]:
    out = {}
    with DecoderPool(rows, DecodeConfig(clip_batch=2), VideoExtractorConfig(), decoders, slots=2,
                     streams=list(streams), clip=clip) as pool:
        for msg in pool:
            if isinstance(msg, VideoFrames):
                out[rows[msg.i].video_id] = msg.crops
    return out


def row(vid: str, path: Path, start_s=None, end_s=None) -> ManifestRow:
    return ManifestRow(vid, str(path), start_s, end_s, "c", "ok")


def test_native_frames_are_the_files_own(videos):
    for path, _, n in videos.values():
        assert count_native_frames(path) == n
        assert [read_index(f) for f in iter_native_frames(path)] == list(range(n))
        picked = list(iter_native_frames(path, select=[n - 1, 3]))
        assert [read_index(f) for f in picked] == [3, n - 1]


@pytest.mark.parametrize(("preset", "dataset"), [("reference", "vggsound"), ("reference", "activitynet"),
                                                 ("reference", "ucf"), ("reference", "demo"), ("paper", "vggsound")])
def test_clip_takes_clipclaps_source_frame(videos, preset, dataset):
    cfg = ImageExtractorConfig(preset=preset, dataset=dataset)
    rows = [row(name, path) for name, (path, _, _) in videos.items()]
    crops = pool_frames(rows, cfg)
    grid_differs = False
    for name, (path, _, n) in videos.items():
        assert crops[name].shape == (1, 224, 224, 3)
        want = expected_index(n, preset, dataset)
        assert read_index(crops[name][0], inverted=cfg.inverts) == want, name
        # The 25 fps grid's middle frame, which extraction took before, is another source frame on these files.
        grid = list(iter_frames(path))
        g = len(grid) // 2 - 1 if want == n // 2 - 1 else len(grid) // 2
        grid_differs |= read_index(grid[g]) != want
    assert grid_differs


def test_same_frame_after_the_c3d_pass_and_in_decoder_processes(videos):
    cfg = ImageExtractorConfig(preset="reference", dataset="vggsound")
    rows = [row(name, path) for name, (path, _, _) in videos.items()]
    alone = pool_frames(rows, cfg)
    for streams, decoders in ((("video", "clip"), 0), (("video", "clip"), 1)):
        other = pool_frames(rows, cfg, streams, decoders)
        for name in alone:
            np.testing.assert_array_equal(other[name], alone[name], err_msg=f"{name} {streams} {decoders}")


def test_segments_count_their_own_frames(videos):
    path, _, _ = videos["f2997"]
    # Frames whose time stamp lies in [0.5 s, 1.2 s): i / rate >= 0.5 from i = 15, < 1.2 up to i = 35.
    first, last = 15, 35
    assert count_native_frames(path, start_s=0.5, end_s=1.2) == last - first + 1
    for dataset in ("vggsound", "ucf"):
        cfg = ImageExtractorConfig(preset="reference", dataset=dataset, invert_colours=False)
        for streams in (("clip",), ("video", "clip")):
            crop = pool_frames([row("seg", path, 0.5, 1.2)], cfg, streams)["seg"]
            assert read_index(crop[0]) == first + expected_index(last - first + 1, "reference", dataset)


def test_all_frames_stay_on_the_25fps_grid(videos):
    path, _, _ = videos["f30"]
    crops = pool_frames([row("a", path)], ImageExtractorConfig(frames="all", preset="paper"))["a"]
    grid = list(iter_frames(path))
    assert [read_index(c) for c in crops] == [read_index(f) for f in grid]


def test_store_attributes_name_the_frames(tiny_clip):  # noqa: F811
    _, jit, _ = tiny_clip
    middle = build_image_extractor({"weights": str(jit), "dataset": "vggsound"}, device="cpu").attrs
    assert middle["frame_source"] == "native" and middle["frame_rule"] == "n//2-1"
    every = build_image_extractor({"weights": str(jit), "frames": "all"}, device="cpu").attrs
    assert every["frame_source"] == "grid_25fps"
