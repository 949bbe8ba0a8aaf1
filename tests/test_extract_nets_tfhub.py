"""TF-Hub backend and SavedModel -> torch conversion, on a random-weight VGGish SavedModel built here.

The SavedModel mirrors google/vggish/1: a tf.Module whose `__call__` takes a 1-D float32 16 kHz waveform, computes the
YAMNet-style tf.signal frontend (periodic Hann STFT, `linear_to_mel_weight_matrix`, log(x+0.01), 96-frame patches) and
the VGGish stack with variables named as `vggish_slim` names them, and returns pre-activation embeddings.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch  # torch before tensorflow, as everywhere in the project

# Hard dependencies of the project (pyproject.toml): a missing one is an error, not a skip.
# isort: off
import tensorflow as tf
import tensorflow_hub  # noqa: F401 - the tfhub backend loads SavedModels with it
# isort: on

from extractors.vggish import AudioExtractorConfig, build_audio_extractor
from extractors.vggish.convert import convert_savedmodel_to_torch
from extractors.vggish.frontend import mel_matrix

# Importing TensorFlow alone takes ~10 s on a 2-core machine and the random SavedModel is ~290 MB.
pytestmark = pytest.mark.slow

LAYERS = [  # (slim scope, weight shape in TF layout)
    ("conv1", (3, 3, 1, 64)),
    ("conv2", (3, 3, 64, 128)),
    ("conv3/conv3_1", (3, 3, 128, 256)),
    ("conv3/conv3_2", (3, 3, 256, 256)),
    ("conv4/conv4_1", (3, 3, 256, 512)),
    ("conv4/conv4_2", (3, 3, 512, 512)),
    ("fc1/fc1_1", (12288, 4096)),
    ("fc1/fc1_2", (4096, 4096)),
    ("fc2", (4096, 128)),
]


class RandomHubVGGish(tf.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self._variables = []
        for scope, shape in LAYERS:
            fan_in = int(np.prod(shape[:-1]))
            w = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
            b = rng.standard_normal(shape[-1], dtype=np.float32) * np.float32(0.05)
            self._variables += [
                tf.Variable(w, name=f"vggish/{scope}/weights"),
                tf.Variable(b, name=f"vggish/{scope}/biases"),
            ]

    @tf.function(input_signature=(tf.TensorSpec(shape=[None], dtype=tf.float32),))
    def __call__(self, waveform):
        spec = tf.abs(tf.signal.stft(waveform, frame_length=400, frame_step=160, fft_length=512))  # [T, 257]
        # float32 mel matrix, like the hub export's YAMNet frontend
        mel = tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125.0, 7500.0)
        logmel = tf.math.log(tf.matmul(spec, mel) + 0.01)  # [T, 64]
        x = tf.signal.frame(logmel, 96, 96, axis=0)[..., None]  # [K, 96, 64, 1], complete patches only
        v = self._variables
        for i in range(6):
            x = tf.nn.relu(tf.nn.conv2d(x, v[2 * i], 1, "SAME") + v[2 * i + 1])
            if i in (0, 1, 3, 5):
                x = tf.nn.max_pool2d(x, 2, 2, "SAME")
        x = tf.reshape(x, [-1, 6 * 4 * 512])  # NHWC flatten, as slim.flatten
        x = tf.nn.relu(tf.matmul(x, v[12]) + v[13])
        x = tf.nn.relu(tf.matmul(x, v[14]) + v[15])
        return tf.matmul(x, v[16]) + v[17]  # pre-activation embedding, as google/vggish/1


@pytest.fixture(scope="module")
def saved_model(vggish_savedmodel):
    """RandomHubVGGish(seed=3), saved (tests/conftest.py)."""
    return vggish_savedmodel


@pytest.fixture(scope="module")
def converted(saved_model, tmp_path_factory):
    return convert_savedmodel_to_torch(saved_model, tmp_path_factory.mktemp("vggish_pth") / "vggish.pth")


def _waveform(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    chirp = torch.sin(2 * math.pi * (300 + 900 * t) * t)
    return (0.5 * chirp + 0.1 * torch.randn(len(t), generator=g)).float()


def test_mel_matrix_matches_tf_signal_in_float64():
    ours = mel_matrix()
    theirs = tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125.0, 7500.0, dtype=tf.float64).numpy()
    # Same HTK formula; TF computes the DC row as zero too. Only float64 rounding separates them.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_tfhub_and_converted_torch_agree(saved_model, converted):
    wave = _waveform(2.5)  # -> 2 complete examples
    raw = {"postprocess": "raw", "final_relu": False}
    hub = build_audio_extractor(AudioExtractorConfig(backend="tfhub", weights=str(saved_model), **raw), "cpu")
    pt = build_audio_extractor(AudioExtractorConfig(backend="torch", weights=str(converted), **raw), "cpu")
    e_hub, e_pt = hub.embed(wave), pt.embed(wave)
    assert e_hub.shape == e_pt.shape == (2, 128) and e_hub.dtype == e_pt.dtype == np.float32
    # Differences come only from the float32 tf.signal frontend vs our float64 one (~1e-6 relative in the log-mel),
    # amplified by the random network: 1e-3 of the embedding scale is far below any real change of weights/layout.
    scale = np.abs(e_hub).max()
    assert np.abs(e_hub - e_pt).max() <= 1e-3 * scale, (np.abs(e_hub - e_pt).max(), scale)
    # A wrong transpose/flatten order would decorrelate the outputs completely.
    assert np.corrcoef(e_hub.ravel(), e_pt.ravel())[0, 1] > 0.99999


def test_tfhub_relu_and_quantisation_match_torch(saved_model, converted):
    wave = _waveform(1.2, seed=1)
    cfg = {"final_relu": True, "postprocess": "pca_quantized", "pca_params": "identity"}
    q_hub = build_audio_extractor(
        AudioExtractorConfig(backend="tfhub", weights=str(saved_model), **cfg), "cpu"
    )
    q_pt = build_audio_extractor(AudioExtractorConfig(backend="torch", weights=str(converted), **cfg), "cpu")
    a, b = q_hub.embed(wave), q_pt.embed(wave)
    assert a.dtype == b.dtype == np.uint8 and a.shape == (1, 128)
    # Codes may flip by one where a value sits on a quantisation boundary (spec §1.6: "occasional ±1").
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a == b).mean() >= 0.95
    assert q_hub.attrs["backend"] == "tfhub" and q_hub.attrs["weights"]["random"] is False
    assert q_hub.attrs["weights"]["sha256"] and len(q_hub.attrs["weights"]["sha256"]) == 64


def test_tfhub_short_waveform_gives_zero_rows(saved_model):
    hub = build_audio_extractor(
        AudioExtractorConfig(backend="tfhub", weights=str(saved_model), postprocess="raw")
    )
    assert hub.embed(_waveform(0.9)).shape == (0, 128)


def test_convert_rejects_non_vggish_savedmodel(tmp_path):
    class Other(tf.Module):
        def __init__(self):
            super().__init__()
            self.v = tf.Variable(np.zeros(3, np.float32), name="something/else")

        @tf.function(input_signature=(tf.TensorSpec(shape=[None], dtype=tf.float32),))
        def __call__(self, x):
            return x + tf.reduce_sum(self.v)

    tf.saved_model.save(Other(), str(tmp_path / "sm"))
    with pytest.raises(KeyError, match="vggish/conv1/weights"):
        convert_savedmodel_to_torch(tmp_path / "sm", tmp_path / "out.pth")
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        convert_savedmodel_to_torch(tmp_path, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_smoke_check_runs_on_a_savedmodel(saved_model, converted, tmp_path):
    """With random weights the published numbers must NOT be met, while torch/TF-Hub agreement must hold."""
    import json

    from extractors.smoke_check import main, smoke_sine_16k

    assert smoke_sine_16k().shape == (48_000,)  # 3 s -> 3 examples
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pca.npz", pca_eigen_vectors=rng.standard_normal((128, 128)), pca_means=np.zeros(128))
    argv = [
        "--vggish-savedmodel",
        str(saved_model),
        "--vggish-pth",
        str(converted),
        "--pca",
        str(tmp_path / "pca.npz"),
    ]
    status = main([*argv, "--device", "cpu", "--json", str(tmp_path / "smoke.json")])
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert status == 1 and report["ok"] is False
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["tfhub examples"]["ok"] and by_name["tfhub examples"]["value"] == 3
    assert by_name["torch vs tfhub max |diff| / scale"]["ok"]
    assert by_name["torch vs tfhub codes max |diff|"]["ok"]
    assert not by_name["tfhub pre-activation std"]["ok"]  # random weights are not google/vggish/1


def test_missing_savedmodel_is_fetched_through_tensorflow_hub(saved_model, tmp_path, monkeypatch):
    import tensorflow_hub as hub

    from extractors.weights import resolve_weights, sha256_path

    seen = []
    monkeypatch.setattr(
        hub, "resolve", lambda handle: seen.append(handle) or str(saved_model)
    )  # stands in for the network
    dest = tmp_path / "models" / "vggish"
    dest.parent.mkdir()
    got = resolve_weights(str(dest), sha256_path(saved_model), "vggish_savedmodel")
    assert (
        got == dest and (dest / "saved_model.pb").exists() and seen == ["https://tfhub.dev/google/vggish/1"]
    )
    with pytest.raises(ValueError, match="checksum mismatch"):
        resolve_weights(str(tmp_path / "models" / "other"), "0" * 64, "vggish_savedmodel")
    assert not (tmp_path / "models" / "other").exists()
