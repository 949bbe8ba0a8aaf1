"""CLIP image extractor: OpenAI checkpoint loading, ClipClap's frame choice and input, features per video."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from extractors import weights
from extractors.clip import (
    CLIP_MEAN,
    CLIP_STD,
    ImageExtractorConfig,
    build_image_extractor,
    middle_frame_index,
    write_openai_archive,
)
from extractors.weights import sha256_file

EMBED_DIM = 16
# OpenAI publishes TorchScript archives; torch 2.11 deprecates the API open_clip reads them with.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning")


def tiny_openai_clip(seed: int = 0):
    """An open_clip CLIP with OpenAI's state-dict layout (ViT/32 at 224 px), one narrow layer per tower."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=EMBED_DIM,
        vision_cfg=CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=32, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    ).eval()
    # OpenAI's files hold fp16 weights and the loader rounds through fp16 as clip.load does: use values it keeps.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(source model, TorchScript archive, plain state-dict file) with the same random weights."""
    model = tiny_openai_clip()
    root = tmp_path_factory.mktemp("clip")
    jit = write_openai_archive(model.state_dict(), root / "ViT-B-32.pt")
    plain = root / "state_dict.pt"
    torch.save(model.state_dict(), plain)
    return model, jit, plain


def frames(n: int, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def reference_input(frame_rgb: np.ndarray, float_tensor: bool) -> torch.Tensor:
    """ClipClap's input, built the way its scripts do: OpenCV's BGR frame, CHW, ToPILImage, CLIP's transform.

    UCF's script hands ToPILImage a float tensor of 0..255 values, the others a uint8 tensor.
    """
    import torchvision.transforms as T

    bgr = torch.from_numpy(np.ascontiguousarray(frame_rgb[:, :, ::-1])).permute(2, 0, 1)
    pil = T.ToPILImage()(bgr.float() if float_tensor else bgr)
    pipeline = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            lambda im: im.convert("RGB"),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    return pipeline(pil)


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("fmt", ["jit", "plain"])
def test_openai_checkpoint_loads_the_weights_it_holds(tiny_clip, fmt):
    model, jit, plain = tiny_clip
    ex = build_image_extractor({"weights": str(jit if fmt == "jit" else plain)}, device="cpu")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = model.encode_image(x)
    want = (want / want.norm(dim=-1, keepdim=True)).numpy()
    got = ex.embed_preprocessed(x)
    assert got.shape == (2, EMBED_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert ex.precision == "fp32"  # auto on the CPU, as clip.load
    assert ex.attrs["weights"]["sha256"] == sha256_file(jit if fmt == "jit" else plain)


def test_checksum_is_verified(tiny_clip):
    _, jit, _ = tiny_clip
    ex = build_image_extractor({"weights": str(jit), "sha256": sha256_file(jit)}, device="cpu")
    assert ex.attrs["weights"]["random"] is False
    with pytest.raises(ValueError, match="checksum mismatch"):
        build_image_extractor({"weights": str(jit), "sha256": "0" * 64}, device="cpu")


def test_not_a_clip_checkpoint_is_rejected(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not an OpenAI CLIP checkpoint"):
        build_image_extractor({"weights": str(bad)}, device="cpu")


def test_missing_file_names_where_to_get_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(weights, "_download", offline)  # never touch the network in a test
    with pytest.raises(FileNotFoundError) as err:
        build_image_extractor({"weights": str(tmp_path / "ViT-B-32.pt")}, device="cpu")
    msg = str(err.value)
    assert "ViT-B-32.pt" in msg and weights.CLIP_VIT_B32_SHA256 in msg and "extract.clip.weights" in msg


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="extract.clip.preset"):
        ImageExtractorConfig.from_dict({"preset": "nope"})
    with pytest.raises(ValueError, match="extract.clip.frobnicate"):
        ImageExtractorConfig.from_dict({"frobnicate": 1})
    with pytest.raises(ValueError, match="invert_colours"):
        ImageExtractorConfig.from_dict({"preset": "paper", "invert_colours": True})


def test_fp16_on_cpu_runs_fp32_with_a_warning(tiny_clip, caplog):
    with caplog.at_level(logging.WARNING):
        ex = build_image_extractor({"weights": str(tiny_clip[1]), "precision": "fp16"}, device="cpu")
    assert ex.precision == "fp32" and ex.model.visual.conv1.weight.dtype == torch.float32
    assert "fp16 needs a GPU" in caplog.text


# ------------------------------------------------------------------------------------------ reference input


@pytest.mark.parametrize(
    ("dataset", "float_tensor"), [("ucf", True), ("vggsound", False), ("activitynet", False)]
)
def test_reference_preset_equals_the_scripts_input(tiny_clip, dataset, float_tensor):
    ex = build_image_extractor({"weights": str(tiny_clip[1]), "dataset": dataset}, device="cpu")
    f = frames(2, 90, 160, seed=3)
    got = ex.preprocess(f)
    want = torch.stack([reference_input(x, float_tensor) for x in f])
    assert got.shape == (2, 3, 224, 224)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_ucf_inversion_and_channel_order(tiny_clip):
    ref = build_image_extractor({"weights": str(tiny_clip[1]), "dataset": "ucf"}, device="cpu")
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 1, 128, 255  # R, G, B
    got = np.asarray(ref.to_pil(img))[0, 0]
    # BGR order, then 0->0, 1->255, 128->128, 255->1
    assert got.tolist() == [1, 128, 255]
    paper = build_image_extractor({"weights": str(tiny_clip[1]), "preset": "paper"}, device="cpu")
    assert np.asarray(paper.to_pil(img))[0, 0].tolist() == [1, 128, 255]
    vgg = build_image_extractor({"weights": str(tiny_clip[1]), "dataset": "vggsound"}, device="cpu")
    assert np.asarray(vgg.to_pil(img))[0, 0].tolist() == [255, 128, 1]


def test_middle_frame_rules():
    ucf = ImageExtractorConfig(dataset="ucf")
    vgg = ImageExtractorConfig(dataset="vggsound")
    paper = ImageExtractorConfig(preset="paper", dataset="vggsound")
    assert [middle_frame_index(n, ucf) for n in (0, 1, 2, 9, 10)] == [None, 0, 1, 4, 5]
    assert [middle_frame_index(n, vgg) for n in (0, 1, 2, 9, 10)] == [None, None, 0, 3, 4]
    assert [middle_frame_index(n, paper) for n in (1, 10)] == [0, 5]


def test_embed_video_uses_the_middle_frame_only(tiny_clip):
    ex = build_image_extractor({"weights": str(tiny_clip[1]), "dataset": "ucf"}, device="cpu")
    f = frames(7, seed=1)
    one = ex.embed_video(f)
    assert one.shape == (1, EMBED_DIM)
    np.testing.assert_allclose(one, ex.embed_preprocessed(ex.preprocess(f[3:4])), rtol=1e-6)
    changed = f.copy()
    changed[[0, 1, 2, 4, 5, 6]] = 0  # every other frame: no effect
    np.testing.assert_array_equal(ex.embed_video(changed), one)
    all_ex = build_image_extractor(
        {"weights": str(tiny_clip[1]), "frames": "all", "batch_size": 3}, device="cpu"
    )
    rows = all_ex.embed_video(f)
    assert rows.shape == (7, EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    assert ex.embed_video(f[:0]).shape == (0, EMBED_DIM)


# ------------------------------------------------------------------------------------------ synthetic videos


# (container, video codec, audio codec, fps, sample rate, seconds): the demo's three kinds of files, as
# data_splits/synthetic.py writes them (H.264/AAC, MPEG-4/MP3 at film rate, VP8/Opus), one short video each.
SYNTHETIC = [
    ("mp4", "libx264", "aac", 30, 44100, 1.0),
    ("mkv", "mpeg4", "libmp3lame", 24, 48000, 2.0),
    ("webm", "libvpx", "libopus", 25, 48000, 0.6),
]


def write_synthetic_video(path: Path, vcodec: str, acodec: str, fps: int, rate: int, seconds: float) -> Path:
    """A moving colour gradient with a 440 Hz tone (stereo), encoded with PyAV like the demo videos."""
    n = round(seconds * fps)
    yy, xx = np.mgrid[0:48, 0:64]
    with av.open(str(path), "w") as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream(acodec, rate=rate)
        a.layout = "stereo"
        for i in range(n):
            img = np.stack([(xx * 4 + i * 8) % 256, (yy * 5) % 256, np.full_like(xx, (i * 20) % 256)], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(round(seconds * rate)) / rate
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        block = a.frame_size or 1024
        for start in range(0, len(wave), block):
            chunk = np.repeat(wave[None, start : start + block], 2, axis=0)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def synthetic_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return [
        write_synthetic_video(root / f"v{fps}.{ext}", vc, ac, fps, sr, sec)
        for ext, vc, ac, fps, sr, sec in SYNTHETIC
    ]


def test_features_per_synthetic_video(tiny_clip, synthetic_videos):
    from extractors.decode import iter_frames

    ex = build_image_extractor({"weights": str(tiny_clip[1]), "dataset": "ucf"}, device="cpu")
    every = build_image_extractor({"weights": str(tiny_clip[1]), "frames": "all"}, device="cpu")
    for path, (*_, seconds) in zip(synthetic_videos, SYNTHETIC, strict=True):
        video = np.stack(list(iter_frames(path)))  # the decoder's 25 fps grid
        assert video.dtype == np.uint8 and video.shape[1:] == (48, 64, 3)
        assert abs(len(video) - 25 * seconds) <= 1
        one = ex.embed_video(video)
        assert one.shape == (1, EMBED_DIM) and np.isfinite(one).all()
        assert every.embed_video(video).shape == (len(video), EMBED_DIM)
