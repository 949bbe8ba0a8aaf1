"""CLAP (WavCaps HTSAT-BERT) audio extractor: checkpoint format, frontend, windows, features per video."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest
import torch

from extractors import clap
from extractors.clap import (
    SAMPLE_RATE,
    WINDOW_SECONDS,
    ClapExtractorConfig,
    build_clap_extractor,
    center_window,
    load_wavcaps_state_dict,
    random_wavcaps_state_dict,
)
from extractors.weights import sha256_file

PROJ = 32
WIN = SAMPLE_RATE * WINDOW_SECONDS
TINY_BERT = {
    "hidden_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
}


def tiny_state_dict(seed: int = 0, vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """A WavCaps-format ASE state dict: HTS-AT of width 16 with one block per stage (the published one: 96, 2-2-6-2)."""
    text = None if vocab_size is None else {**TINY_BERT, "vocab_size": vocab_size}
    return random_wavcaps_state_dict(
        seed, embed_dim=16, depths=(1, 1, 1, 1), heads=(1, 2, 2, 2), projection_dim=PROJ, text=text
    )


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """HTSAT_BERT_zero_shot.pt's layout: torch.save({"model": ASE state dict, ...})."""
    path = tmp_path_factory.mktemp("wavcaps") / "HTSAT_BERT_zero_shot.pt"
    sd = tiny_state_dict()
    torch.save({"model": sd, "epoch": 7}, path)
    return path, sd


def tone(seconds: float, freq: float = 440.0, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ loading


def test_checkpoint_format_loads_and_keys_round_trip(tiny_ckpt):
    path, sd = tiny_ckpt
    loaded = load_wavcaps_state_dict(path)
    assert loaded.keys() == sd.keys()
    mapped = clap.wavcaps_to_clap_audio(loaded)
    back = clap.clap_audio_to_wavcaps(mapped)
    audio_keys = {
        k
        for k in sd
        if (k.startswith(clap.AUDIO) and "audio_feats_extractor" not in k) or k.startswith("audio_proj.")
    }
    assert back.keys() == audio_keys
    for k in audio_keys:
        torch.testing.assert_close(back[k], sd[k], rtol=0, atol=0)


def test_qkv_is_split_into_query_key_value():
    sd = tiny_state_dict()
    k = f"{clap.AUDIO}layers.0.blocks.0.attn.qkv.weight"
    mapped = clap.wavcaps_to_clap_audio(sd)
    pre = "audio_model.audio_encoder.layers.0.blocks.0.attention.self."
    c = sd[k].shape[1]
    for i, part in enumerate(("query", "key", "value")):
        torch.testing.assert_close(mapped[pre + part + ".weight"], sd[k][i * c : (i + 1) * c])


def test_architecture_is_read_from_the_shapes():
    cfg = clap.audio_config_from_state_dict(tiny_state_dict())
    assert cfg.patch_embeds_hidden_size == 16 and list(cfg.depths) == [1, 1, 1, 1]
    assert list(cfg.num_attention_heads) == [1, 2, 2, 2] and cfg.window_size == 8
    assert cfg.hidden_size == 128 and cfg.projection_dim == PROJ


def test_extractor_uses_the_checkpoint_weights(tiny_ckpt):
    path, sd = tiny_ckpt
    ex = build_clap_extractor({"weights": str(path), "sha256": sha256_file(path)}, device="cpu")
    proj = sd["audio_proj.2.weight"]
    torch.testing.assert_close(ex.model.net.audio_projection.linear2.weight, proj)
    torch.testing.assert_close(ex.model.frontend.mel, sd[clap.FRONTEND_MEL])
    assert ex.attrs["weights"] == {
        "source": str(path),
        "sha256": sha256_file(path),
        "random": False,
        "seed": None,
    }
    other = torch.load(path, weights_only=True)
    other["model"]["audio_proj.2.bias"] = other["model"]["audio_proj.2.bias"] + 1.0
    changed = path.with_name("changed.pt")
    torch.save(other, changed)
    w = tone(3.0)
    assert not np.allclose(
        ex.embed(w), build_clap_extractor({"weights": str(changed)}, device="cpu").embed(w)
    )


def test_bad_files_and_checksums_are_named(tmp_path, tiny_ckpt):
    not_wavcaps = tmp_path / "other.pt"
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, not_wavcaps)
    with pytest.raises(ValueError, match="not a WavCaps HTSAT checkpoint"):
        build_clap_extractor({"weights": str(not_wavcaps)}, device="cpu")
    with pytest.raises(ValueError, match="checksum mismatch"):
        build_clap_extractor({"weights": str(tiny_ckpt[0]), "sha256": "0" * 64}, device="cpu")
    with pytest.raises(FileNotFoundError) as err:
        build_clap_extractor({"weights": str(tmp_path / "HTSAT_BERT_zero_shot.pt")}, device="cpu")
    msg = str(err.value)
    assert "HTSAT_BERT_zero_shot.pt" in msg and "WavCaps" in msg and "extract.clap.weights" in msg
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": tiny_ckpt[1], "when": datetime.date(2023, 1, 1)}, pickled)
    with pytest.raises(ValueError, match=r"(?s)weights_only=True.*torch.save\(\{'model'"):
        build_clap_extractor({"weights": str(pickled)}, device="cpu")
    with pytest.raises(ValueError, match="extract.clap.windows"):
        ClapExtractorConfig.from_dict({"windows": "sliding"})


# ------------------------------------------------------------------------------------------------ frontend


def numpy_log_mel(wave: np.ndarray) -> np.ndarray:
    """torchlibrosa's Spectrogram + LogmelFilterBank as WavCaps configures them, written out in numpy (float64)."""
    n_fft, hop = 1024, 320
    x = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    frames = np.stack([x[i : i + n_fft] for i in range(0, len(x) - n_fft + 1, hop)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return 10 * np.log10(np.maximum(power @ slaney_mel(), 1e-10))


def slaney_mel(
    sr: int = SAMPLE_RATE, n_fft: int = 1024, n_mels: int = 64, fmin: float = 50.0, fmax: float = 14000.0
):
    """librosa.filters.mel (Slaney mel scale, area normalisation), [n_fft//2+1, n_mels]."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log_part, lin)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.T


def test_frontend_matches_the_formulas():
    real, imag = clap.dft_matrices()
    fe = clap.LogMelFrontend(real, imag, clap.mel_matrix())
    np.testing.assert_allclose(clap.mel_matrix().numpy(), slaney_mel(), atol=1e-6)
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32)
    got = fe(torch.from_numpy(wave)[None])[0, 0].numpy()
    want = numpy_log_mel(wave)
    assert got.shape == want.shape == (1 + SAMPLE_RATE // 320, 64)
    np.testing.assert_allclose(got, want, atol=2e-3)  # dB; float32 DFT as a convolution


def test_ten_seconds_fill_the_htsat_input():
    # 10 s at 32 kHz: 1001 frames, stretched (bicubic) to HTS-AT's 1024 = 256 x freq ratio 4
    real, imag = clap.dft_matrices()
    fe = clap.LogMelFrontend(real, imag, clap.mel_matrix())
    assert fe(torch.zeros(1, WIN)).shape == (1, 1, 1001, 64)


# ------------------------------------------------------------------------------------------------ windows


def test_center_window_pads_or_keeps_the_middle():
    short = torch.arange(5.0)
    padded = center_window(short, 8)
    assert padded.tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    ramp = torch.arange(3 * WIN, dtype=torch.float64)
    mid = center_window(ramp)
    start = len(ramp) // 2 - WIN // 2  # ClipClap: centre - 5 s .. centre + 5 s
    assert len(mid) == WIN and mid[0] == start and mid[-1] == start + WIN - 1
    odd = torch.arange(WIN + 3, dtype=torch.float64)
    assert center_window(odd)[0] == (WIN + 3) // 2 - WIN // 2


def test_rows_per_video_and_batching(tiny_ckpt):
    path, _ = tiny_ckpt
    center = build_clap_extractor({"weights": str(path)}, device="cpu")
    every = build_clap_extractor({"weights": str(path), "windows": "all", "batch_size": 2}, device="cpu")
    waves = [tone(1.5), tone(12.0, 880.0), tone(25.0, 220.0), np.zeros(0, np.float32)]
    rows = center.embed_batch(waves)
    assert [r.shape for r in rows] == [(1, PROJ), (1, PROJ), (1, PROJ), (0, PROJ)]
    np.testing.assert_allclose(np.linalg.norm(np.concatenate(rows), axis=1), 1.0, rtol=1e-5)
    for w, r in zip(waves[:3], rows[:3], strict=True):  # batch-invariant: the same as one video alone
        np.testing.assert_allclose(r, center.embed(w), rtol=1e-4, atol=1e-5)
    assert [r.shape[0] for r in every.embed_batch(waves)] == [1, 2, 3, 0]
    # the padded 1.5 s window is the one centre window
    np.testing.assert_allclose(every.embed(waves[0]), rows[0], rtol=1e-4, atol=1e-5)
    # 12 s: the centre window is samples 1 s .. 11 s
    w = waves[1]
    start = len(w) // 2 - WIN // 2
    np.testing.assert_allclose(center.embed(w), center.embed(w[start : start + WIN]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # three published-size networks, ~35 s on two cores
def test_random_weights_are_seeded():
    a = build_clap_extractor({"seed": 3}, device="cpu")
    w = tone(2.0)
    fa = a.embed(w)
    assert fa.shape == (1, 1024)  # the published sizes
    np.testing.assert_array_equal(fa, build_clap_extractor({"seed": 3}, device="cpu").embed(w))
    assert not np.allclose(fa, build_clap_extractor({"seed": 4}, device="cpu").embed(w))
    assert a.attrs["weights"]["random"] is True and a.attrs["sample_rate"] == SAMPLE_RATE


# ------------------------------------------------------------------------------------------ synthetic videos


def decode_32k_mono(path) -> np.ndarray:
    """The audio stream at 32 kHz mono float, as ClipClap reads it (ffmpeg decode, then to 32 kHz mono)."""
    import av

    out = []
    with av.open(str(path)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in c.decode(audio=0):
            out.extend(f.to_ndarray()[0] for f in res.resample(frame))
        out.extend(f.to_ndarray()[0] for f in res.resample(None))
    return np.concatenate(out).astype(np.float32)


def test_features_per_synthetic_video(tiny_ckpt, tmp_path):
    from test_extract_nets_clip import SYNTHETIC, write_synthetic_video

    ex = build_clap_extractor({"weights": str(tiny_ckpt[0])}, device="cpu")
    every = build_clap_extractor({"weights": str(tiny_ckpt[0]), "windows": "all"}, device="cpu")
    for ext, vc, ac, fps, sr, seconds in SYNTHETIC:
        path = write_synthetic_video(tmp_path / f"v{fps}.{ext}", vc, ac, fps, sr, seconds)
        wave = decode_32k_mono(path)
        assert abs(len(wave) - seconds * SAMPLE_RATE) < 0.1 * SAMPLE_RATE
        feats = ex.embed(wave)
        assert feats.shape == (1, PROJ) and np.isfinite(feats).all()
        assert every.embed(wave).shape == (math.ceil(len(wave) / WIN), PROJ)
