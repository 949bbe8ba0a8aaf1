"""C3D fast paths on CPU: channels-last fp32 is exact, bf16 autocast is close and stored as configured.

The real network runs here on a handful of single clips (~1 s each in fp32 on 2 cores, ~0.3 s in bf16).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_extract_io_fixtures import write_media

from extractors.c3d import C3D, VideoExtractorConfig, build_video_extractor, published_order_forward
from extractors.extract import ExtractConfig, extract_shard
from extractors.manifest import build_manifest
from extractors.store import FeatureStore


def _clips(n: int, seed: int = 0) -> torch.Tensor:
    """Normalised-scale random clips [n,3,16,112,112] (what preprocess+make_clips produce)."""
    return torch.randn(n, 3, 16, 112, 112, generator=torch.Generator().manual_seed(seed))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def fp32():
    return build_video_extractor(VideoExtractorConfig(seed=0, batch_size=2), "cpu")


@pytest.fixture(scope="module")
def clips_and_fp32(fp32):
    clips = _clips(2)
    return clips, fp32.embed_preprocessed(clips)


def test_channels_last_fp32_equals_the_default_layout(fp32, clips_and_fp32):
    clips, got = clips_and_fp32
    # The extractor really runs channels-last on CPU (otherwise this test would compare a path with itself).
    assert fp32.net.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not fp32.net.conv1.weight.is_contiguous()
    assert fp32.attrs["memory_format"] == "channels_last_3d" and fp32.attrs["autocast"] == "none"

    # Same weights in a plain (contiguous, NCDHW) C3D, run in the published order (ReLU before every pool).
    ref_net = C3D().eval()
    ref_net.load_state_dict(fp32.net.state_dict())
    assert ref_net.conv1.weight.is_contiguous()
    with torch.inference_mode():
        ref = published_order_forward(ref_net, clips.contiguous()).numpy()
    assert got.dtype == np.float32 and got.shape == (2, 4096)
    assert (got > 0).any() and (got == 0).any()  # fc7 after ReLU
    # Only the summation order differs: float32 rounding, ~1e-6 of the activation scale.
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_pool_before_relu_is_exactly_the_published_order(fp32):
    # Same layout, same kernels: commuting ReLU with max-pooling must not change a single bit.
    clips = _clips(1, seed=3).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        ours = fp32.net(clips)
        ref = published_order_forward(fp32.net, clips)
    assert (ours > 0).any() and (ours == 0).any()
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_clips", [1, 3])  # a single clip, and an odd batch (the last step has one clip)
def test_first_block_in_steps_equals_the_whole_block(fp32, dtype, n_clips):
    assert fp32.net.first_block_in_steps  # the CPU extractor runs the stepped block
    net = C3D().eval()
    net.load_state_dict(fp32.net.state_dict())
    net = net.to(dtype=dtype, memory_format=torch.channels_last_3d)
    x = _clips(n_clips, seed=5).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    y = x.clone()
    y[:, :, -1] += 10  # only the last frame changes
    with torch.inference_mode():
        whole = net.pool1(net.conv1(x)).relu_()  # [n,64,16,56,56]
        stepped, moved = net._first_block_in_steps(x), net._first_block_in_steps(y)
    assert stepped.shape == whole.shape == (n_clips, 64, 16, 56, 56)
    assert stepped.is_contiguous(memory_format=torch.channels_last_3d)
    assert (whole > 0).any() and (whole == 0).any()
    # Same sums; at most the rounding of another oneDNN kernel (bit-identical on the benchmark machine).
    rtol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(stepped, whole, rtol=rtol, atol=rtol * float(whole.abs().max()))
    # The explicit temporal padding: frame 15 reaches output frames 14 and 15 only.
    assert torch.equal(moved[:, :, :14], stepped[:, :, :14]) and not torch.equal(moved[:, :, 15], stepped[:, :, 15])


def test_cpu_bf16_copy_is_bit_identical_to_autocast(clips_and_fp32, fp32):
    clips, _ = clips_and_fp32
    bf16 = build_video_extractor(VideoExtractorConfig(seed=0, batch_size=2, autocast="bf16"), "cpu")
    # The fast path really holds bf16 weights (otherwise this would compare autocast with itself) ...
    assert bf16.net.conv1.weight.dtype == torch.bfloat16 and fp32.net.conv1.weight.dtype == torch.float32
    got = bf16.embed_preprocessed(clips)
    # ... and gives exactly what autocast gives on the fp32 network.
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = fp32.net(clips.contiguous(memory_format=torch.channels_last_3d)).float().numpy()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
def test_bf16_autocast_on_cpu_is_close_to_fp32(clips_and_fp32, out_dtype):
    clips, ref = clips_and_fp32
    bf16 = build_video_extractor(
        VideoExtractorConfig(seed=0, batch_size=2, autocast="bf16", out_dtype=out_dtype), "cpu"
    )
    assert bf16.attrs["autocast"] == "bf16" and bf16.attrs["dtype"] == out_dtype
    got = bf16.embed_preprocessed(clips)
    assert got.dtype == np.dtype(out_dtype) and got.shape == ref.shape
    # bf16 really ran (8-bit mantissa): the features are not the fp32 ones ...
    assert np.abs(got.astype(np.float32) - ref).max() > 1e-4 * np.abs(ref).max()
    # ... but point the same way (measured ~0.99998 on random weights).
    assert _cosine(got, ref).min() > 0.99
    # Zeros after ReLU stay mostly where they were.
    assert ((got == 0) == (ref == 0)).mean() > 0.95


def test_fp16_autocast_on_cpu_falls_back_to_fp32_and_says_so(clips_and_fp32, caplog):
    with caplog.at_level("WARNING", logger="extractors.c3d"):
        ex = build_video_extractor(VideoExtractorConfig(seed=0, batch_size=2, autocast="fp16"), "cpu")
    assert "fp16 is GPU-only" in caplog.text
    assert ex.attrs["autocast"] == "none" and ex.attrs["config"]["autocast"] == "fp16"
    clips, ref = clips_and_fp32
    np.testing.assert_array_equal(ex.embed_preprocessed(clips), ref)  # same batch shape: the same fp32 kernels


def test_bf16_store_holds_the_configured_dtype(tmp_path, fp32):
    path = write_media(tmp_path / "v.mp4", fps=25, n_frames=16, size=(64, 48), audio_s=1.2)  # one clip
    rows = build_manifest([("v", path, None, None, "c")])
    stores = {}
    for name, video_cfg, video in [
        ("fp32", {"seed": 0, "batch_size": 2}, fp32),  # the module's fp32 extractor: same config, built once
        ("bf16", {"seed": 0, "batch_size": 2, "autocast": "bf16", "out_dtype": "float16"}, None),
    ]:
        cfg = ExtractConfig.from_dict({"device": "cpu", "video": video_cfg})
        summary = extract_shard(rows, tmp_path / f"{name}.zarr", cfg, video_extractor=video)
        assert summary["statuses"] == {"ok": 1}
        stores[name] = FeatureStore(tmp_path / f"{name}.zarr")
    fast = stores["bf16"]
    values, offsets = fast.read("video")
    assert values.dtype == np.float16 and values.shape == (1, 4096) and list(offsets) == [0, 1]
    assert fast.attrs["video"]["autocast"] == "bf16" and fast.attrs["video"]["dtype"] == "float16"
    exact, _ = stores["fp32"].read("video")
    assert exact.dtype == np.float32 and stores["fp32"].attrs["video"]["autocast"] == "none"
    assert _cosine(values, exact).min() > 0.99
