"""CLAP audio (and text) features as ClipClap-GZSL computes them: WavCaps' HTSAT-BERT retrieval model.

ClipClap's "CLAP" is the WavCaps audio-text model `HTSAT_BERT_zero_shot.pt` (an HTS-AT Swin audio encoder and a
bert-base-uncased text encoder, each followed by a 2-layer ReLU projection to a shared 1024-d space). Per video it
embeds ONE 10 s window of 32 kHz mono audio: shorter audio is zero-padded at the end, longer audio is cut to the
10 s around its centre (`start = n // 2 - 160000`); the embedding is L2-normalised.

The network is built from `transformers` (`ClapAudioModelWithProjection`: the HTS-AT encoder of LAION's CLAP, the
same architecture as WavCaps' copy, with the same projection layer; `BertModel` without pooler for the text side),
with WavCaps' weights renamed on load (`wavcaps_to_clap_audio`). The log-mel frontend is WavCaps' torchlibrosa one,
rebuilt here from the DFT and mel matrices stored in the checkpoint itself: reflect-padded 1024-point STFT with hop
320 as a convolution, power spectrum, 64 Slaney mel bands 50-14000 Hz, ``10 log10(max(x, 1e-10))``.

`windows: all` embeds every 10 s window of the audio (last one zero-padded) instead of the centre one.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data_splits.common import check_keys, resolve_device

from .weights import RANDOM, cuda_precision, reading_checkpoint, resolve_extractor_weights, seeded

log = logging.getLogger(__name__)

SAMPLE_RATE = 32000
WINDOW_SECONDS = 10
N_FFT = 1024
HOP = 320
N_MELS = 64
F_MIN, F_MAX = 50.0, 14000.0
AMIN = 1e-10
SPEC_SIZE = 256  # HTS-AT's input image; fixed by the architecture, not by the weights
WINDOWS = ("center", "all")
# WavCaps module prefixes (ASE: audio_encoder.audio_enc = HTSAT_Swin_Transformer, audio_proj, text_encoder.text_encoder
# = BertModel, text_proj).
AUDIO = "audio_encoder.audio_enc."
FRONTEND_REAL = AUDIO + "audio_feats_extractor.mel_trans.stft.conv_real.weight"
FRONTEND_IMAG = AUDIO + "audio_feats_extractor.mel_trans.stft.conv_imag.weight"
FRONTEND_MEL = AUDIO + "audio_feats_extractor.log_trans.melW"
TEXT = "text_encoder.text_encoder."
TEXT_MAX_TOKENS = 30  # WavCaps TextEncoder: padding="longest", truncation, max_length=30


@dataclass
class ClapExtractorConfig:
    """``extract.clap`` section."""

    weights: str = RANDOM  # WavCaps HTSAT_BERT_zero_shot.pt or "random"
    sha256: str | None = None
    seed: int = 0
    windows: str = "center"
    batch_size: int = 16
    allow_tf32: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> ClapExtractorConfig:
        return cls(**check_keys(cls, d, "extract.clap")).validate()

    def validate(self) -> ClapExtractorConfig:
        if self.windows not in WINDOWS:
            raise ValueError(f"extract.clap.windows: {self.windows!r} is not one of {list(WINDOWS)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"extract.clap.batch_size must be a positive int, got {self.batch_size!r}")
        return self


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint format
# ----------------------------------------------------------------------------------------------------------------


def load_wavcaps_state_dict(path: Path, name: str = "wavcaps_htsat_bert") -> dict[str, torch.Tensor]:
    """The ASE state dict of a WavCaps checkpoint (``{"model": state_dict, ...}``, as published) or a bare one."""
    with reading_checkpoint(
        name, path, "a torch checkpoint of tensors",
        hint=". Files are read with weights_only=True; if this is WavCaps' HTSAT_BERT_zero_shot.pt holding other "
        "pickled objects, keep its weights once with\n  python -c \"import torch; torch.save({'model': "
        "torch.load('IN.pt', weights_only=False)['model']}, 'OUT.pt')\"\nand point the config at OUT.pt (with its "
        "sha256)",
    ):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{name}: {path} holds no state dict under 'model' (WavCaps' checkpoint format)")
    obj = {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel saves
    needed = [AUDIO + "patch_embed.proj.weight", "audio_proj.0.weight", FRONTEND_REAL, FRONTEND_MEL]
    missing = [k for k in needed if k not in obj]
    if missing:
        raise ValueError(f"{name}: {path} is not a WavCaps HTSAT checkpoint: missing {missing}")
    return obj


def audio_config_from_state_dict(sd: dict[str, torch.Tensor]):
    """ClapAudioConfig of the HTS-AT in `sd`: widths, depths, heads and window read from the tensor shapes."""
    from transformers import ClapAudioConfig

    embed = sd[AUDIO + "patch_embed.proj.weight"]
    depths, heads = [], []
    i = 0
    while f"{AUDIO}layers.{i}.blocks.0.norm1.weight" in sd:
        j = 0
        while f"{AUDIO}layers.{i}.blocks.{j}.norm1.weight" in sd:
            j += 1
        depths.append(j)
        heads.append(int(sd[f"{AUDIO}layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]))
        i += 1
    table = int(sd[f"{AUDIO}layers.0.blocks.0.attn.relative_position_bias_table"].shape[0])
    window = (round(math.sqrt(table)) + 1) // 2
    proj = sd["audio_proj.0.weight"]
    return ClapAudioConfig(
        window_size=window,
        num_mel_bins=int(sd[AUDIO + "bn0.weight"].shape[0]),
        spec_size=SPEC_SIZE,
        patch_size=int(embed.shape[-1]),
        patch_stride=(int(embed.shape[-2]), int(embed.shape[-1])),
        hidden_size=int(proj.shape[1]),
        projection_dim=int(proj.shape[0]),
        depths=depths,
        num_attention_heads=heads,
        patch_embeds_hidden_size=int(embed.shape[0]),
        enable_fusion=False,
        projection_hidden_act="relu",
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        drop_path_rate=0.0,
        attention_probs_dropout_prob=0.0,
    )


_BLOCK_RENAMES = (
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("attn.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("attn.relative_position_index", "attention.self.relative_position_index"),
    ("attn.proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
)


def wavcaps_to_clap_audio(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """WavCaps' HTS-AT + audio_proj keys -> `ClapAudioModelWithProjection` keys (qkv split into query/key/value).

    Dropped: the frontend matrices (used by `LogMelFrontend`), the AudioSet head (`tscam_conv`, `head`) that the
    embedding never reaches, and the shifted-window masks (`attn_mask`), which transformers recomputes.
    """
    out = {}
    enc = "audio_model.audio_encoder."
    for k, v in sd.items():
        if k.startswith("audio_proj."):
            idx, rest = k[len("audio_proj.") :].split(".", 1)
            out[f"audio_projection.linear{ {'0': 1, '2': 2}[idx] }.{rest}"] = v
            continue
        if not k.startswith(AUDIO):
            continue
        k = k[len(AUDIO) :]
        if k.startswith(("audio_feats_extractor.", "tscam_conv.", "head.")) or k.endswith("attn_mask"):
            continue
        if k.startswith("bn0."):
            out[enc + "batch_norm." + k[4:]] = v
            continue
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)", k)
        if m:
            prefix = f"{enc}layers.{m[1]}.blocks.{m[2]}."
            rest = m[3]
            if rest.startswith("attn.qkv."):
                for part, t in zip(("query", "key", "value"), v.chunk(3, dim=0), strict=True):
                    out[prefix + f"attention.self.{part}.{rest[len('attn.qkv.') :]}"] = t
                continue
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            out[prefix + rest] = v
            continue
        out[enc + k] = v  # patch_embed.*, layers.i.downsample.*, norm.*
    return out


# ----------------------------------------------------------------------------------------------------------------
# Frontend
# ----------------------------------------------------------------------------------------------------------------


def dft_matrices(n_fft: int = N_FFT) -> tuple[torch.Tensor, torch.Tensor]:
    """torchlibrosa's STFT kernels: periodic Hann x DFT, real and imaginary parts, [n_fft//2+1, 1, n_fft]."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
    real = (torch.cos(angle) * window).float()[:, None, :]
    imag = (-torch.sin(angle) * window).float()[:, None, :]
    return real, imag


def mel_matrix(n_fft: int = N_FFT, n_mels: int = N_MELS, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin=50, fmax=14000) (Slaney scale and area norm), [n_freqs, n_mels]."""
    import torchaudio

    return torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, F_MIN, F_MAX, n_mels, sr, norm="slaney", mel_scale="slaney"
    ).float()


class LogMelFrontend(torch.nn.Module):
    """WavCaps' torchlibrosa Spectrogram + LogmelFilterBank: waveform [B, S] -> log-mel [B, 1, T, n_mels]."""

    def __init__(self, conv_real: torch.Tensor, conv_imag: torch.Tensor, mel: torch.Tensor):
        super().__init__()
        self.register_buffer("conv_real", conv_real.float().clone())
        self.register_buffer("conv_imag", conv_imag.float().clone())
        self.register_buffer("mel", mel.float().clone())
        self.n_fft = int(conv_real.shape[-1])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = F.pad(wave[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real = F.conv1d(x, self.conv_real, stride=HOP)
        imag = F.conv1d(x, self.conv_imag, stride=HOP)
        power = (real**2 + imag**2).transpose(1, 2)[:, None]  # [B, 1, T, F]
        mel = torch.matmul(power, self.mel)
        return 10.0 * torch.log10(torch.clamp(mel, min=AMIN))


# ----------------------------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------------------------


def center_window(wave: torch.Tensor, length: int = SAMPLE_RATE * WINDOW_SECONDS) -> torch.Tensor:
    """ClipClap's `read_prepare_audio`: zero-pad at the end to `length`, or keep `length` samples around the centre."""
    n = wave.shape[-1]
    if n < length:
        return F.pad(wave, (0, length - n))
    if n > length:
        start = n // 2 - length // 2
        return wave[start : start + length]
    return wave


def all_windows(wave: torch.Tensor, length: int = SAMPLE_RATE * WINDOW_SECONDS) -> torch.Tensor:
    """Consecutive non-overlapping windows [K, length], K = ceil(n / length), the last one zero-padded."""
    n = wave.shape[-1]
    k = -(-n // length)
    return F.pad(wave, (0, k * length - n)).reshape(k, length)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


class WavCapsAudio(torch.nn.Module):
    """Frontend + transformers' HTS-AT with projection, loaded from a WavCaps state dict."""

    def __init__(self, sd: dict[str, torch.Tensor]):
        super().__init__()
        from transformers import ClapAudioModelWithProjection

        self.frontend = LogMelFrontend(sd[FRONTEND_REAL], sd[FRONTEND_IMAG], sd[FRONTEND_MEL])
        self.net = ClapAudioModelWithProjection(audio_config_from_state_dict(sd))
        mapped = wavcaps_to_clap_audio(sd)
        own = self.net.state_dict()
        for k in own:  # index buffers are functions of the window size; older saves may lack them
            if k.endswith("relative_position_index") and k not in mapped:
                mapped[k] = own[k]
        missing, unexpected = self.net.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"wavcaps_htsat_bert: the checkpoint does not fit the HTS-AT encoder: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        feats = self.frontend(wave)
        emb = self.net(input_features=feats).audio_embeds
        return F.normalize(emb, dim=-1)


def random_wavcaps_state_dict(
    seed: int = 0,
    embed_dim: int = 96,
    depths=(2, 2, 6, 2),
    heads=(4, 8, 16, 32),
    projection_dim: int = 1024,
    text: dict | None = None,
) -> dict[str, torch.Tensor]:
    """A WavCaps-format ASE state dict with seeded random weights (the real frontend matrices).

    Default sizes are the published model's; tests pass smaller ones. `text` = BertConfig keyword arguments to add a
    BERT text encoder and its projection (None: audio side only).
    """
    from transformers import BertConfig, BertModel, ClapAudioConfig, ClapAudioModelWithProjection

    width = embed_dim * 2 ** (len(depths) - 1)
    cfg = ClapAudioConfig(
        patch_embeds_hidden_size=embed_dim,
        depths=list(depths),
        num_attention_heads=list(heads),
        hidden_size=width,
        projection_dim=projection_dim,
        enable_fusion=False,
    )
    with seeded(seed):
        net = ClapAudioModelWithProjection(cfg).eval()
        with torch.no_grad():
            bn = net.audio_model.audio_encoder.batch_norm
            bn.running_mean.normal_(0.0, 5.0).add_(-20.0)  # log-mel scale, so the encoder sees O(1) inputs
            bn.running_var.uniform_(50.0, 150.0)
        sd = clap_audio_to_wavcaps(net.state_dict())
        real, imag = dft_matrices()
        sd[FRONTEND_REAL], sd[FRONTEND_IMAG], sd[FRONTEND_MEL] = real, imag, mel_matrix()
        if text is not None:
            bert = BertModel(BertConfig(**text), add_pooling_layer=False).eval()
            for k, v in bert.state_dict().items():
                sd[TEXT + k] = v
            h = bert.config.hidden_size
            sd["text_proj.0.weight"] = torch.randn(projection_dim, h) / math.sqrt(h)
            sd["text_proj.0.bias"] = torch.zeros(projection_dim)
            sd["text_proj.2.weight"] = torch.randn(projection_dim, projection_dim) / math.sqrt(projection_dim)
            sd["text_proj.2.bias"] = torch.zeros(projection_dim)
    return sd


def clap_audio_to_wavcaps(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `wavcaps_to_clap_audio` (query/key/value fused back into qkv), for writing WavCaps-format files."""
    out = {}
    enc = "audio_model.audio_encoder."
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.startswith("audio_projection."):
            layer, rest = k[len("audio_projection.") :].split(".", 1)
            out[f"audio_proj.{ {'linear1': 0, 'linear2': 2}[layer] }.{rest}"] = v
            continue
        k = k[len(enc) :]
        if k.startswith("batch_norm."):
            out[AUDIO + "bn0." + k[len("batch_norm.") :]] = v
            continue
        m = re.match(r"(layers\.\d+\.blocks\.\d+\.)(.*)", k)
        if m:
            rest = m[2]
            q = re.match(r"attention\.self\.(query|key|value)\.(weight|bias)", rest)
            if q:
                fused.setdefault(f"{AUDIO}{m[1]}attn.qkv.{q[2]}", {})[q[1]] = v
                continue
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(new):
                    rest = old + rest[len(new) :]
                    break
            out[AUDIO + m[1] + rest] = v
            continue
        out[AUDIO + k] = v
    for k, parts in fused.items():
        out[k] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


class ClapExtractor:
    """32 kHz mono waveform in, L2-normalised 1024-d CLAP rows out (one per 10 s window)."""

    def __init__(self, cfg: ClapExtractorConfig, device: str | torch.device | None = "auto"):
        self.cfg = cfg
        self.device = resolve_device(device if device is not None else "auto", "extract.device")
        weights = resolve_extractor_weights(cfg.weights, cfg.sha256, cfg.seed, "wavcaps_htsat_bert")
        sd = random_wavcaps_state_dict(cfg.seed) if weights.random else load_wavcaps_state_dict(weights.path)
        self.model = WavCapsAudio(sd).to(self.device).eval()
        self.dim = int(self.model.net.config.projection_dim)
        self._weights = weights.attrs

    def windows(self, waveform_32k: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[S] -> [K, 320000]: K = 1 (`center`, K = 0 for empty audio) or ceil(S / 320000) (`all`)."""
        wave = torch.as_tensor(np.asarray(waveform_32k, dtype=np.float32))
        if wave.ndim != 1:
            raise ValueError(f"clap: expected a mono waveform [S], got shape {tuple(wave.shape)}")
        if wave.numel() == 0:
            return torch.zeros((0, SAMPLE_RATE * WINDOW_SECONDS))
        return center_window(wave)[None] if self.cfg.windows == "center" else all_windows(wave)

    @torch.no_grad()
    def embed_windows(self, windows: torch.Tensor) -> np.ndarray:
        out = []
        with cuda_precision(self.device, self.cfg.allow_tf32):
            for i in range(0, len(windows), self.cfg.batch_size):
                out.append(self.model(windows[i : i + self.cfg.batch_size].to(self.device)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def embed(self, waveform_32k: torch.Tensor | np.ndarray) -> np.ndarray:
        """One video's 32 kHz mono audio [S] -> float32 [K, 1024]."""
        return self.embed_windows(self.windows(waveform_32k))

    def embed_batch(self, waveforms: list) -> list[np.ndarray]:
        """Several videos in shared network batches; the result is split back per video."""
        wins = [self.windows(w) for w in waveforms]
        rows = self.embed_windows(torch.cat(wins)) if wins else np.zeros((0, self.dim), np.float32)
        return np.split(rows, np.cumsum([len(w) for w in wins])[:-1]) if wins else []

    @property
    def attrs(self) -> dict:
        return {
            "extractor": "wavcaps_htsat_bert",
            "weights": self._weights,
            "dim": self.dim,
            "sample_rate": SAMPLE_RATE,
            "window_s": WINDOW_SECONDS,
            "windows": self.cfg.windows,
            "frontend": f"stft{N_FFT}_hop{HOP}_mel{N_MELS}_{int(F_MIN)}-{int(F_MAX)}Hz_log10",
            "l2_normalised": True,
            "dtype": "float32",
            "config": asdict(self.cfg),
        }


def build_clap_extractor(
    cfg: ClapExtractorConfig | dict, device: str | torch.device | None = "auto"
) -> ClapExtractor:
    """Config (dataclass or mapping) -> ready ClapExtractor on `device` ('auto' = cuda if available)."""
    if not isinstance(cfg, ClapExtractorConfig):
        cfg = ClapExtractorConfig.from_dict(cfg)
    return ClapExtractor(cfg, device)


# ----------------------------------------------------------------------------------------------------------------
# Text side
# ----------------------------------------------------------------------------------------------------------------


class WavCapsText(torch.nn.Module):
    """BERT (no pooler) + text_proj of a WavCaps checkpoint; the [CLS] state is projected and L2-normalised."""

    def __init__(self, sd: dict[str, torch.Tensor], vocab: Path):
        super().__init__()
        from transformers import BertConfig, BertModel, BertTokenizer

        if TEXT + "embeddings.word_embeddings.weight" not in sd:
            raise ValueError(
                "wavcaps_htsat_bert: the checkpoint has no BERT text encoder (text_encoder.text_encoder.*)"
            )
        words = sd[TEXT + "embeddings.word_embeddings.weight"]
        n_layers = 0
        while f"{TEXT}encoder.layer.{n_layers}.attention.self.query.weight" in sd:
            n_layers += 1
        hidden = int(words.shape[1])
        config = BertConfig(
            vocab_size=int(words.shape[0]),
            hidden_size=hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=max(hidden // 64, 1),  # BERT's heads are 64 wide (bert-base: 12 x 64)
            intermediate_size=int(sd[f"{TEXT}encoder.layer.0.intermediate.dense.weight"].shape[0]),
            max_position_embeddings=int(sd[TEXT + "embeddings.position_embeddings.weight"].shape[0]),
            type_vocab_size=int(sd[TEXT + "embeddings.token_type_embeddings.weight"].shape[0]),
        )
        self.bert = BertModel(config, add_pooling_layer=False)
        text_sd = {k[len(TEXT) :]: v for k, v in sd.items() if k.startswith(TEXT)}
        missing, unexpected = self.bert.load_state_dict(text_sd, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(
                f"wavcaps_htsat_bert: BERT weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        dim = int(sd["text_proj.0.weight"].shape[0])
        self.proj = torch.nn.Sequential(
            torch.nn.Linear(hidden, dim), torch.nn.ReLU(), torch.nn.Linear(dim, dim)
        )
        self.proj.load_state_dict(
            {k[len("text_proj.") :]: v for k, v in sd.items() if k.startswith("text_proj.")}
        )
        self.tokenizer = BertTokenizer(str(vocab), do_lower_case=True)
        if len(self.tokenizer) != config.vocab_size:
            raise ValueError(
                f"class_embeddings.clap_vocab: {vocab} has {len(self.tokenizer)} tokens but the checkpoint's BERT has "
                f"{config.vocab_size}; use bert-base-uncased's vocab.txt"
            )

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.proj[0].weight.device
        tok = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt"
        ).to(device)
        hidden = self.bert(input_ids=tok.input_ids, attention_mask=tok.attention_mask)[0]
        return F.normalize(self.proj(hidden[:, 0, :]), dim=-1)
