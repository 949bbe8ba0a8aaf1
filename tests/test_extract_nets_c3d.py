"""C3D extractor: published state-dict format, presets, last-clip padding, batching (random weights, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from extractors.c3d import (
    C3D,
    KINETICS_MEAN,
    KINETICS_STD,
    FramePreprocessor,
    VideoExtractorConfig,
    build_video_extractor,
    invert_colours,
)
from extractors.weights import sha256_file

C3D_KEYS = [
    f"{layer}.{p}"
    for layer in (
        "conv1",
        "conv2",
        "conv3a",
        "conv3b",
        "conv4a",
        "conv4b",
        "conv5a",
        "conv5b",
        "fc6",
        "fc7",
        "fc8",
    )
    for p in ("weight", "bias")
]


# One C3D clip costs ~40 GFLOPs (1-3 s on 2 CPU cores): the real network runs on 6 clips in this file; tests of
# the extractor's own plumbing (entry points, padding, streaming) swap in a cheap clip network with the same I/O.


class CheapClipNet(torch.nn.Module):
    """[B,3,16,112,112] -> [B,4096] non-negative; every output depends on every frame, so misplaced frames show."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 4, kernel_size=(16, 8, 8), stride=(16, 8, 8))
        self.fc = torch.nn.Linear(4 * 14 * 14, 4096)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def forward(self, x):
        return torch.relu(self.fc(self.conv(x).flatten(1)))


@pytest.fixture(scope="module")
def paper():
    return build_video_extractor(VideoExtractorConfig(seed=0, batch_size=2), "cpu")


@pytest.fixture
def cheap(paper):
    saved = paper.net
    paper.net = CheapClipNet().eval()
    yield paper
    paper.net = saved


def _frames(t: int, h: int = 72, w: int = 96, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB video [t,h,w,3] uint8 (smooth so resize implementations are comparable)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(t, 3, h // 8, w // 8, generator=g)
    big = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return (big * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A random C3D state dict saved like the Sports-1M `c3d.pickle` (legacy, pre-zip torch pickle format)."""
    torch.manual_seed(0)
    net = C3D().eval()
    path = tmp_path_factory.mktemp("c3d") / "c3d.pickle"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    return net, path


@pytest.mark.slow  # writes, hashes and reads a 310 MB state dict
def test_published_state_dict_format_loads_and_runs(published, tmp_path):
    net, path = published
    state = net.state_dict()
    assert sorted(state) == sorted(C3D_KEYS) and state["fc8.weight"].shape == (487, 4096)
    sha = sha256_file(path)
    ex = build_video_extractor(VideoExtractorConfig(weights=str(path), sha256=sha), "cpu")
    frames = _frames(16)
    got = ex.embed_frames(frames)
    with torch.no_grad():
        ref = net(ex.make_clips(ex.preprocess(frames))).numpy()
    assert got.shape == (1, 4096) and got.dtype == np.float32
    # fc7 after ReLU (non-negative, some exact zeros); eval mode: no dropout noise between the two runs.
    assert (got >= 0).all() and (got == 0).any() and (got > 0).any()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert ex.attrs["weights"] == {"source": str(path), "sha256": sha, "random": False, "seed": None}

    # Strict loading: a file without fc8 (or with renamed keys) is rejected with the layout named.
    del state["fc8.weight"]
    torch.save(state, tmp_path / "partial.pickle")
    with pytest.raises(ValueError, match="DavideA/c3d-pytorch layout"):
        build_video_extractor(VideoExtractorConfig(weights=str(tmp_path / "partial.pickle")), "cpu")


@pytest.mark.slow  # 3 real C3D clips
def test_smoke_check_c3d_part(published, capsys):
    from extractors.smoke_check import main

    _, path = published
    assert main(["--c3d", str(path), "--c3d-sha256", sha256_file(path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PASS  c3d fc7 shape" in out and "all checks passed" in out


def test_inversion_known_pixel():
    px = torch.tensor([0, 1, 2, 127, 128, 129, 254, 255], dtype=torch.uint8)
    assert invert_colours(px).tolist() == [0, 255, 254, 129, 128, 127, 2, 1]


@pytest.mark.parametrize(
    ("preset", "dataset", "order", "inverted"),
    [
        ("paper", None, (0, 1, 2), False),
        ("reference", "ucf", (2, 1, 0), True),
        ("reference", "vggsound", (2, 1, 0), True),
        ("reference", "activitynet", (2, 1, 0), False),
    ],
)
def test_preset_colour_handling_on_uniform_frame(preset, dataset, order, inverted):
    rgb = (10, 100, 200)
    frames = torch.tensor(rgb, dtype=torch.uint8).expand(2, 60, 80, 3).contiguous()
    ex = FramePreprocessor(VideoExtractorConfig(preset=preset, dataset=dataset), "cpu")
    out = ex.preprocess(frames)
    assert out.shape == (2, 3, 112, 112)
    values = [(256 - v) % 256 if inverted else v for v in rgb]
    for pos, src in enumerate(order):
        # Constants are applied by channel position (reference: B,G,R through the R,G,B statistics).
        expected = (values[src] / 255.0 - KINETICS_MEAN[pos]) / KINETICS_STD[pos]
        torch.testing.assert_close(out[:, pos], torch.full_like(out[:, pos], expected), rtol=0, atol=1e-5)
    assert ex.cfg.bgr == (order[0] == 2) and ex.cfg.inverts is inverted


@pytest.mark.parametrize("dataset", ["ucf", "activitynet"])
def test_reference_preset_equals_the_torchvision_pipeline(dataset):
    """The official per-frame transform, run with torchvision itself, is the oracle for the reference preset.

    UCF/VGGSound scripts hand ToPILImage a float 0..255 CHW tensor of a BGR frame; its `* 255` then a uint8 cast wraps
    (the colour inversion). ActivityNet hands it a uint8 tensor. Both then Resize((128,171)) with PIL bilinear,
    CenterCrop(112), ToTensor, Normalize(Kinetics) (spec §2.2-2.3).
    """
    tv = pytest.importorskip("torchvision.transforms", reason="torchvision not installed")
    if np.array([510.0], np.float32).astype(np.uint8)[0] != 254:
        pytest.skip("this platform does not wrap float->uint8 casts like the reference machine")
    official = tv.Compose(
        [
            tv.ToPILImage(),
            tv.Resize((128, 171)),
            tv.CenterCrop(112),
            tv.ToTensor(),
            tv.Normalize(KINETICS_MEAN, KINETICS_STD),
        ]
    )
    g = torch.Generator().manual_seed(0)
    rgb = (torch.rand(3, 90, 160, 3, generator=g) * 255).to(torch.uint8)
    bgr = rgb.flip(-1)  # what OpenCV hands the scripts
    chw = [f.permute(2, 0, 1).contiguous() for f in bgr]
    expected = torch.stack([official(f.float() if dataset == "ucf" else f) for f in chw])
    ours = FramePreprocessor(VideoExtractorConfig(preset="reference", dataset=dataset), "cpu").preprocess(rgb)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_pil_and_torch_resize_are_close():
    frames = _frames(2, 240, 320, seed=5)
    pil = FramePreprocessor(VideoExtractorConfig(resize="pil"), "cpu").preprocess(frames)
    tch = FramePreprocessor(VideoExtractorConfig(resize="torch"), "cpu").preprocess(frames)
    # Both are antialiased bilinear (same triangle filter scaled by the downscale factor); PIL rounds to uint8, so
    # they differ by rounding (measured: mean 0.28, max 1.0 grey levels).
    diff_levels = ((pil - tch) * torch.tensor(KINETICS_STD).view(1, 3, 1, 1) * 255).abs()
    assert diff_levels.mean() < 0.5 and diff_levels.max() < 1.5


def test_crop_window_matches_torchvision_centre_crop():
    """Rows 8..119 and columns 30..141 of the 128x171 resized frame (spec §2.2)."""
    frames = torch.zeros(1, 128, 171, 3, dtype=torch.uint8)  # already at the resize size: resize is identity
    frames[0, 8, 30] = 255
    frames[0, 119, 141] = 255
    frames[0, 7, 29] = 255  # just outside the crop
    ex = FramePreprocessor(VideoExtractorConfig(resize="pil"), "cpu")
    out = ex.preprocess(frames)[0, 0] * KINETICS_STD[0] + KINETICS_MEAN[0]  # back to [0,1]
    assert out[0, 0] == pytest.approx(1.0, abs=1e-5) and out[111, 111] == pytest.approx(1.0, abs=1e-5)
    assert (out > 0.5).sum() == 2


def test_last_partial_clip_is_zero_padded_after_normalisation(cheap):
    frames = _frames(20)
    pre = cheap.preprocess(frames)
    clips = cheap.make_clips(pre)  # [2,3,16,112,112]
    assert clips.shape == (2, 3, 16, 112, 112)
    torch.testing.assert_close(clips[1, :, :4], pre[16:].transpose(0, 1))
    assert (clips[1, :, 4:] == 0).all()  # zeros in normalised space (= mean colour), not black pixels
    feats = cheap.embed_frames(frames)
    assert feats.shape == (2, 4096)
    np.testing.assert_allclose(feats[1], cheap.embed_preprocessed(clips[1:])[0], rtol=1e-4, atol=1e-5)
    # A padded clip differs from one padded with black frames: the padding is in normalised space.
    black = torch.cat([frames[16:], torch.zeros(12, *frames.shape[1:], dtype=torch.uint8)])
    assert not np.allclose(cheap.embed_frames(black)[0], feats[1])

    drop = FramePreprocessor(VideoExtractorConfig(last_clip="drop"), "cpu")
    assert drop.make_clips(pre).shape == (1, 3, 16, 112, 112)
    assert drop.make_clips(pre[:10]).shape == (0, 3, 16, 112, 112)


def test_batch_invariance_real_c3d(paper):
    """2 clips in one forward == each clip alone, with the real network."""
    clips = paper.make_clips(paper.preprocess(_frames(32, seed=7)))
    batched = paper.embed_preprocessed(clips)  # batch_size=2: one forward
    single = np.concatenate([paper.embed_preprocessed(clips[i : i + 1]) for i in range(2)])
    assert batched.shape == (2, 4096)
    # CPU conv kernels may sum in another order for other batch sizes: equal to float32 accumulation error.
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)


def test_entry_points_and_batching_agree(cheap):
    frames = _frames(48, seed=7)  # 3 clips, batch_size 2 -> a full and a partial batch
    ref = cheap.embed_frames(frames)
    assert ref.shape == (3, 4096)
    clips_u8 = frames.reshape(3, 16, *frames.shape[1:])  # uint8 [n,16,H,W,3]
    np.testing.assert_allclose(cheap.embed_clips(clips_u8), ref, rtol=1e-4, atol=1e-5)
    pre = cheap.make_clips(cheap.preprocess(frames))  # float [n,3,16,112,112]
    np.testing.assert_allclose(cheap.embed_clips(pre), ref, rtol=1e-4, atol=1e-5)
    one_by_one = np.concatenate([cheap.embed_clips(clips_u8[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(one_by_one, ref, rtol=1e-4, atol=1e-5)
    # Clip order is preserved (a permutation would still pass a sorted comparison, not this one).
    assert not np.allclose(ref[0], ref[1])


def test_streaming_chunks_equal_whole_video(cheap):
    frames = _frames(37, seed=9)
    whole = cheap.embed_frames(frames)
    parts = [
        cheap.embed_frames(frames[:16]),
        cheap.embed_frames(frames[16:32]),
        cheap.embed_frames(frames[32:]),
    ]
    assert whole.shape == (3, 4096)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-4, atol=1e-5)


def test_config_validation_dtype_and_device():
    with pytest.raises(ValueError, match="unknown key.*'fps'"):
        VideoExtractorConfig.from_dict({"fps": 30})
    with pytest.raises(ValueError, match="extract.video.dataset"):
        VideoExtractorConfig.from_dict({"preset": "reference"})
    with pytest.raises(ValueError, match="never inverts"):
        VideoExtractorConfig.from_dict({"preset": "paper", "invert_colours": True})
    with pytest.raises(ValueError, match="extract.video.autocast"):
        VideoExtractorConfig.from_dict({"autocast": "int8"})
    cfg = VideoExtractorConfig.from_dict({"preset": "reference", "dataset": "UCF"})
    assert cfg.inverts and cfg.bgr and cfg.resize_backend == "pil"
    assert not VideoExtractorConfig(preset="reference", dataset="ucf", invert_colours=False).inverts
    with pytest.raises(FileNotFoundError, match="extract.video.weights"):
        build_video_extractor({"weights": "/nonexistent/c3d.pickle"}, "cpu")
    ex = build_video_extractor(
        {"out_dtype": "float16", "autocast": "bf16"}, "cuda" if not torch.cuda.is_available() else "cpu"
    )
    assert ex.device.type == "cpu"  # no GPU here: falls back; bf16 autocast runs on CPU too (test_extract_speed.py)
    assert ex.attrs["autocast"] == "bf16" and ex.attrs["dtype"] == "float16"
    assert json.loads(json.dumps(ex.attrs)) == ex.attrs  # stored as Zarr JSON attributes
    for key in ("extractor", "preset", "weights", "fps", "frames_per_clip", "hop_s", "layer", "dtype"):
        assert key in ex.attrs
    assert ex.attrs["weights"]["random"] is True and ex.attrs["hop_s"] == 0.64
    assert ex.embed_clips(torch.zeros(0, 3, 16, 112, 112)).shape == (0, 4096)
    assert ex.embed_frames(torch.zeros(0, 8, 8, 3, dtype=torch.uint8)).dtype == np.float16
    with pytest.raises(AssertionError, match=r"\[T,H,W,3\]"):
        ex.preprocess(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
