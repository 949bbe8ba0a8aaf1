"""C3D extractor: published state-dict format, presets, last-clip padding, batching (random weights, CPU).

Features are computed by ``extract_shard`` itself, from lossless video files (FFV1 in Matroska at 25 fps, so
the decoder returns exactly the frames written): its decode thread, preprocessing, cross-video batching and
network calls are the ones a pipeline run uses. Expected values come from the extractor's documented steps:
``preprocess`` -> ``make_clips`` -> the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision import transforms as tv

from extractors.c3d import (
    C3D,
    KINETICS_MEAN,
    KINETICS_STD,
    FramePreprocessor,
    VideoExtractorConfig,
    build_video_extractor,
    invert_colours,
    pil_bilinear_resize,
)
from extractors.decode import DecodeConfig
from extractors.extract import ExtractConfig, extract_shard
from extractors.manifest import ManifestRow
from extractors.store import FeatureStore
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


def _write_lossless(path: Path, frames: torch.Tensor) -> Path:
    """Frames [T,H,W,3] as a 25 fps FFV1/Matroska file (decodes bit-exactly) with 1 s or more of PCM audio."""
    t, h, w, _ = frames.shape
    with av.open(str(path), "w") as c:
        vs = c.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "bgr0"
        a = c.add_stream("pcm_s16le", rate=16_000)
        a.layout = "mono"
        for f in frames.numpy():
            for packet in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in vs.encode():
            c.mux(packet)
        n = max(16_000, t * 640)  # the video's length, at least one VGGish example
        tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(n) / 16_000)).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16_000, 0
        for packet in [*a.encode(frame), *a.encode()]:
            c.mux(packet)
    return path


class SilentAudio:
    """VGGish stand-in: the audio side is not under test here."""

    def __init__(self):
        self.attrs = {"extractor": "fake-vggish", "dtype": "uint8", "weights": {"random": True}}

    def embed_batch(self, waves):
        return [np.zeros((max(1, len(w) // 15_360), 128), np.uint8) for w in waves]


def _extract_shard(folder: Path, ex, videos: list[torch.Tensor], clip_batch: int = 8) -> list[np.ndarray]:
    """C3D features of each video (frames [T,H,W,3]) from one ``extract_shard`` run over their files."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [ManifestRow(f"v{i}", str(_write_lossless(folder / f"v{i}.mkv", f)), None, None, "c", "ok")
            for i, f in enumerate(videos)]
    store = folder / "shard.zarr"
    cfg = ExtractConfig(device="cpu", decode=DecodeConfig(clip_batch=clip_batch), log_every=10_000)
    extract_shard(rows, store, cfg, SilentAudio(), ex)
    fs = FeatureStore(store)
    assert [r["status"] for r in fs.table] == ["ok"] * len(videos), fs.table
    return [fs.get("video", f"v{i}") for i in range(len(videos))]


def _expected_clips(ex, frames: torch.Tensor) -> torch.Tensor:
    """The extractor's documented steps: normalised frames, then 16-frame clips zero-padded after normalisation."""
    return ex.make_clips(ex.preprocess(frames))


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
    (got,) = _extract_shard(tmp_path / "shard", ex, [frames])
    with torch.no_grad():
        ref = net(_expected_clips(ex, frames)).numpy()
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
    if dataset == "ucf" and np.array([510.0], np.float32).astype(np.uint8)[0] != 254:
        # ToPILImage casts float*255 with numpy's astype(uint8), which wraps on x86 (the reference machine, and
        # this project's CI) and saturates on e.g. ARM: there torchvision itself no longer inverts, so it
        # cannot be the oracle of the inversion (test_inversion_known_pixel checks it with known values).
        pytest.skip("numpy's float32->uint8 cast saturates on this CPU instead of wrapping as on x86")
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


@pytest.mark.parametrize("hw", [(240, 320), (48, 64), (1080, 1920), (121, 170), (130, 171), (128, 171), (100, 500)])
def test_batched_pil_resize_is_pillow_bit_for_bit(hw):
    from PIL import Image

    rng = np.random.default_rng(hw[0] * 7 + hw[1])
    n = 1 if hw[0] > 500 else 3  # random pixels: the hardest case for rounding
    frames = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    expected = np.stack([np.asarray(Image.fromarray(f).resize((171, 128), Image.BILINEAR)) for f in frames])
    np.testing.assert_array_equal(pil_bilinear_resize(torch.from_numpy(frames)).numpy(), expected)


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


def test_last_partial_clip_is_zero_padded_after_normalisation(cheap, tmp_path):
    frames = _frames(20)
    pre = cheap.preprocess(frames)
    clips = cheap.make_clips(pre)  # [2,3,16,112,112]
    assert clips.shape == (2, 3, 16, 112, 112)
    torch.testing.assert_close(clips[1, :, :4], pre[16:].transpose(0, 1))
    assert (clips[1, :, 4:] == 0).all()  # zeros in normalised space (= mean colour), not black pixels
    # A video padded with black frames instead: the padding must be in normalised space to tell them apart.
    black = torch.cat([frames[16:], torch.zeros(12, *frames.shape[1:], dtype=torch.uint8)])
    feats, black_feats = _extract_shard(tmp_path, cheap, [frames, black])
    assert feats.shape == (2, 4096)
    np.testing.assert_allclose(feats, cheap.embed_preprocessed(clips), rtol=1e-4, atol=1e-5)
    assert not np.allclose(black_feats[0], feats[1])


def test_batch_invariance_real_c3d(paper):
    """2 clips in one forward == each clip alone, with the real network."""
    clips = paper.make_clips(paper.preprocess(_frames(32, seed=7)))
    batched = paper.embed_preprocessed(clips)  # batch_size=2: one forward
    single = np.concatenate([paper.embed_preprocessed(clips[i : i + 1]) for i in range(2)])
    assert batched.shape == (2, 4096)
    # CPU conv kernels may sum in another order for other batch sizes: equal to float32 accumulation error.
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)


def test_batches_across_videos_equal_each_clip_alone(cheap, tmp_path):
    """batch_size 2 over videos of 3 and 2 clips: network batches mix two videos, one of them is partial."""
    videos = [_frames(48, seed=7), _frames(20, seed=8)]
    got = _extract_shard(tmp_path, cheap, videos)
    for frames, feats in zip(videos, got, strict=True):
        clips = _expected_clips(cheap, frames)
        one_by_one = np.concatenate([cheap.embed_preprocessed(clips[i : i + 1]) for i in range(len(clips))])
        assert feats.shape == (len(clips), 4096)
        np.testing.assert_allclose(feats, one_by_one, rtol=1e-4, atol=1e-5)
    # Clip order is preserved (a permutation would still pass a sorted comparison, not this one).
    assert not np.allclose(got[0][0], got[0][1])


def test_streaming_decode_batches_equal_whole_video(cheap, tmp_path):
    """The decoder hands a video over one clip at a time (decode.clip_batch 1) or all at once: same features."""
    frames = _frames(37, seed=9)
    (streamed,) = _extract_shard(tmp_path / "streamed", cheap, [frames], clip_batch=1)
    (whole,) = _extract_shard(tmp_path / "whole", cheap, [frames], clip_batch=8)
    assert whole.shape == (3, 4096)
    np.testing.assert_allclose(streamed, whole, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole, cheap.embed_preprocessed(_expected_clips(cheap, frames)), rtol=1e-4, atol=1e-5)


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
    if not torch.cuda.is_available():  # a GPU asked for and absent is an error, never a silent run on the CPU
        with pytest.raises(RuntimeError, match="extract.device: cuda asks for a CUDA GPU"):
            build_video_extractor({}, "cuda")
    ex = build_video_extractor({"out_dtype": "float16", "autocast": "bf16"}, "cpu")
    assert ex.device.type == "cpu"  # bf16 autocast runs on CPU too (test_extract_speed.py)
    assert ex.attrs["autocast"] == "bf16" and ex.attrs["dtype"] == "float16"
    assert json.loads(json.dumps(ex.attrs)) == ex.attrs  # stored as Zarr JSON attributes
    for key in ("extractor", "preset", "weights", "fps", "frames_per_clip", "hop_s", "layer", "dtype"):
        assert key in ex.attrs
    assert ex.attrs["weights"]["random"] is True and ex.attrs["hop_s"] == 0.64
    empty = ex.embed_preprocessed(torch.zeros(0, 3, 16, 112, 112))
    assert empty.shape == (0, 4096) and empty.dtype == np.float16
    with pytest.raises(AssertionError, match=r"\[T,H,W,3\]"):
        ex.preprocess(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
