"""Torch VGGish, PCA quantisation and the AudioExtractor API (random weights, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from extractors.vggish import AudioExtractorConfig, VGGish, build_audio_extractor
from extractors.vggish.frontend import min_samples
from extractors.vggish.postprocess import PCAQuantizer, load_pca_params


@pytest.fixture(scope="module")
def audio():
    return build_audio_extractor(AudioExtractorConfig(weights="random", seed=0, postprocess="raw"), "cpu")


def _wave(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.randn(n, generator=g)).float()


def test_vggish_shapes_and_final_relu_switch():
    torch.manual_seed(0)
    net = VGGish(final_relu=False).eval()
    x = torch.randn(3, 96, 64)
    with torch.no_grad():
        pre = net(x)
        net.final_relu = True
        post = net(x)
    assert pre.shape == (3, 128)
    assert (pre < 0).any(), "random pre-activation embeddings should have negative entries"
    torch.testing.assert_close(post, pre.clamp_min(0))
    # State-dict keys follow the common torch ports, so their converted files load strictly.
    assert {k.rsplit(".", 1)[0] for k in net.state_dict()} == {
        "features.0", "features.3", "features.6", "features.8", "features.11", "features.13",
        "embeddings.0", "embeddings.2", "embeddings.4",
    }  # fmt: skip


def test_flatten_is_nhwc():
    """fc1 must see features in TF's (H, W, C) order: a unit at (h=1, w=2, c=5) maps to column (1*4+2)*512+5."""
    net = VGGish(final_relu=False).eval()
    feat = torch.zeros(1, 512, 6, 4)
    feat[0, 5, 1, 2] = 1.0
    net.features = torch.nn.Identity()  # feed the conv output directly
    with torch.no_grad():
        for m in net.embeddings:
            if isinstance(m, torch.nn.Linear):
                m.weight.zero_(), m.bias.zero_()
        net.embeddings[0].weight[0, (1 * 4 + 2) * 512 + 5] = 1.0
        net.embeddings[2].weight[0, 0] = 1.0
        net.embeddings[4].weight[0, 0] = 1.0
        out = net.embeddings(net_forward_flatten(feat))
    assert out[0, 0] == 1.0


def net_forward_flatten(feat: torch.Tensor) -> torch.Tensor:
    # Same permutation as VGGish.forward, applied to a [B,512,6,4] tensor (checked against forward below).
    return feat.permute(0, 2, 3, 1).flatten(1)


def test_forward_uses_nhwc_flatten():
    torch.manual_seed(1)
    net = VGGish(final_relu=False).eval()
    x = torch.randn(2, 96, 64)
    with torch.no_grad():
        ref = net.embeddings(net_forward_flatten(net.features(x[:, None])))
        torch.testing.assert_close(net(x), ref)


def test_pca_quantiser_formula(tmp_path):
    rng = np.random.default_rng(0)
    e = rng.standard_normal((128, 128))
    mu = rng.standard_normal(128)
    np.savez(tmp_path / "pca.npz", pca_eigen_vectors=e, pca_means=mu)
    q = PCAQuantizer.from_spec(tmp_path / "pca.npz")
    x = rng.standard_normal((5, 128)).astype(np.float32)
    y = np.clip((e @ (x.astype(np.float64) - mu).T).T, -2, 2)
    expected = np.floor((y + 2) * 63.75).astype(np.uint8)
    np.testing.assert_array_equal(q(x), expected)
    # Boundary values of the quantiser with the identity transform.
    ident = PCAQuantizer.from_spec("identity")
    codes = ident(np.array([[-5.0, -2.0, 0.0, 1.999, 2.0, 7.0] + [0.0] * 122]))
    assert codes[0, :6].tolist() == [0, 0, 127, 254, 255, 255]


def test_pca_params_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", pca_means=np.zeros(128))
    with pytest.raises(AssertionError, match="pca_eigen_vectors"):
        load_pca_params(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", pca_eigen_vectors=np.zeros((64, 128)), pca_means=np.zeros(128))
    with pytest.raises(AssertionError, match=r"\[128,128\]"):
        load_pca_params(tmp_path / "shape.npz")


def test_embed_shapes_dtypes_and_short_audio(audio):
    assert audio.embed(_wave(min_samples(3), 0)).shape == (3, 128)
    assert audio.embed(_wave(min_samples(1) - 1, 0)).shape == (0, 128)
    assert audio.embed(_wave(100, 0)).shape == (0, 128)
    assert audio.embed(_wave(min_samples(1), 0)).dtype == np.float32
    q = build_audio_extractor(AudioExtractorConfig(weights="random", seed=0), "cpu")
    codes = q.embed(_wave(min_samples(2), 0))
    assert codes.dtype == np.uint8 and codes.shape == (2, 128)
    assert len(np.unique(codes)) > 10, "random-weight codes should not collapse to a constant"
    assert q.attrs["dtype"] == "uint8" and q.attrs["pca"]["source"] == "identity"


def test_cpu_channels_last_equals_the_default_layout(audio):
    # The extractor really runs channels-last on CPU (otherwise this would compare a path with itself) ...
    conv2 = audio.net.features[3].weight  # conv1 has one input channel: both layouts coincide there
    assert conv2.is_contiguous(memory_format=torch.channels_last) and not conv2.is_contiguous()
    assert audio.attrs["memory_format"] == "channels_last"
    plain = VGGish(final_relu=audio.cfg.final_relu).eval()
    plain.load_state_dict(audio.net.state_dict())
    assert plain.features[3].weight.is_contiguous()
    examples = torch.randn(5, 96, 64, generator=torch.Generator().manual_seed(1))
    got = audio.embed_examples(examples)
    with torch.inference_mode():
        ref = plain(examples).numpy()
    assert (ref > 0).any() and (ref == 0).any()  # final ReLU on random weights
    # ... and only the order of float32 sums differs.
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * float(np.abs(ref).max()))


def test_embed_batch_equals_one_by_one(audio):
    waves = [_wave(n, s) for s, n in enumerate([min_samples(2), 100, min_samples(1) + 777, min_samples(3)])]
    batched = audio.embed_batch(waves)
    assert [len(b) for b in batched] == [2, 0, 1, 3]
    for w, b in zip(waves, batched, strict=True):
        # Conv kernels may pick other algorithms for other batch sizes: equal up to float32 summation order.
        np.testing.assert_allclose(audio.embed(w), b, rtol=1e-4, atol=1e-5)


def test_random_weights_are_seeded_and_recorded():
    w = _wave(min_samples(1), 3)
    a = build_audio_extractor(AudioExtractorConfig(seed=7, postprocess="raw"), "cpu")
    torch.manual_seed(123)  # caller RNG state must not matter
    b = build_audio_extractor(AudioExtractorConfig(seed=7, postprocess="raw"), "cpu")
    c = build_audio_extractor(AudioExtractorConfig(seed=8, postprocess="raw"), "cpu")
    np.testing.assert_array_equal(a.embed(w), b.embed(w))
    assert not np.allclose(a.embed(w), c.embed(w))
    assert a.attrs["weights"] == {"source": "random", "sha256": None, "random": True, "seed": 7}
    for key in ("extractor", "backend", "sample_rate", "hop_s", "window_s", "postprocess", "dtype"):
        assert key in a.attrs
    assert a.attrs["hop_s"] == a.attrs["window_s"] == 0.96 and a.attrs["sample_rate"] == 16000
    assert json.loads(json.dumps(a.attrs)) == a.attrs  # stored as Zarr JSON attributes


def test_torch_weights_file_roundtrip_and_checksum(tmp_path):
    from extractors.weights import sha256_file

    net = VGGish()
    torch.save(net.state_dict(), tmp_path / "v.pth")
    sha = sha256_file(tmp_path / "v.pth")
    ex = build_audio_extractor(
        AudioExtractorConfig(weights=str(tmp_path / "v.pth"), sha256=sha, postprocess="raw"), "cpu"
    )
    w = _wave(min_samples(1), 0)
    with torch.no_grad():
        ref = net.eval()(ex.frontend.examples(w)).numpy()
    np.testing.assert_allclose(ex.embed(w), ref, rtol=1e-5, atol=1e-6)
    assert ex.attrs["weights"] == {
        "source": str(tmp_path / "v.pth"),
        "sha256": sha,
        "random": False,
        "seed": None,
    }
    with pytest.raises(ValueError, match="checksum mismatch"):
        build_audio_extractor(
            AudioExtractorConfig(weights=str(tmp_path / "v.pth"), sha256="0" * 64, postprocess="raw"), "cpu"
        )
    # The benchmark's own port (`pytorch_vggish.pth`) names the linears fc.{0,2,4}: accepted as the same network.
    port = {k.replace("embeddings.", "fc."): v for k, v in net.state_dict().items()}
    torch.save(port, tmp_path / "pytorch_vggish.pth")
    ex_port = build_audio_extractor(
        AudioExtractorConfig(weights=str(tmp_path / "pytorch_vggish.pth"), postprocess="raw"), "cpu"
    )
    np.testing.assert_allclose(ex_port.embed(w), ref, rtol=1e-5, atol=1e-6)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="VGGish layout"):
        build_audio_extractor(
            AudioExtractorConfig(weights=str(tmp_path / "bad.pth"), postprocess="raw"), "cpu"
        )


def test_config_validation():
    with pytest.raises(ValueError, match="unknown key.*'hop'"):
        AudioExtractorConfig.from_dict({"hop": 1})
    with pytest.raises(ValueError, match="extract.audio.backend"):
        AudioExtractorConfig.from_dict({"backend": "onnx"})
    with pytest.raises(ValueError, match="pca_params"):
        AudioExtractorConfig.from_dict({"weights": "/some/vggish.pth", "postprocess": "pca_quantized"})
    with pytest.raises(ValueError, match="tfhub"):
        AudioExtractorConfig.from_dict({"backend": "tfhub", "weights": "random"})
    cfg = AudioExtractorConfig.from_dict({"postprocess": "raw", "batch_size": 8})
    assert cfg.batch_size == 8 and cfg.backend == "torch"
    with pytest.raises(FileNotFoundError, match="extract.audio.weights"):
        build_audio_extractor({"weights": "/nonexistent/vggish.pth", "postprocess": "raw"}, "cpu")
