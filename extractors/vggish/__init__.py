"""VGGish audio extractor: 16 kHz waveform -> one 128-d embedding per 0.96 s (raw float32 or PCA-quantised uint8).

from extractors.vggish import build_audio_extractor, AudioExtractorConfig
audio = build_audio_extractor(AudioExtractorConfig(weights="random"), "cpu")
codes = audio.embed(waveform_16k)            # np.ndarray [K, 128] uint8 (pca_quantized) or float32 (raw)
codes_list = audio.embed_batch([w1, w2])     # batched across videos
audio.attrs                                  # dict for the feature store
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from data_splits.common import check_keys, resolve_device

from ..weights import (
    RANDOM,
    cuda_precision,
    init_random_,
    load_state_dict_file,
    resolve_weights_sha256,
    seeded,
    weights_attrs,
)
from .frontend import EXAMPLE_FRAMES, HOP, SAMPLE_RATE, LogMelFrontend
from .model import EMBED_DIM, VGGish, canonical_state_dict
from .postprocess import IDENTITY, PCAQuantizer

__all__ = ["AudioExtractor", "AudioExtractorConfig", "LogMelFrontend", "VGGish", "build_audio_extractor"]


@dataclass
class AudioExtractorConfig:
    backend: Literal["torch", "tfhub"] = "torch"
    # torch: "random" or a .pth state dict (from extractors.vggish.convert); tfhub: a hub handle or SavedModel dir.
    weights: str = RANDOM
    sha256: str | None = None
    seed: int = 0
    postprocess: Literal["pca_quantized", "raw"] = "pca_quantized"
    # vggish_pca_params.npz path, or "identity". None = "identity" with random weights, an error with real ones.
    pca_params: str | None = None
    pca_sha256: str | None = None
    # True = original checkpoint semantics (ReLU on the embedding), which the benchmark's features used.
    # TF-Hub google/vggish/1 outputs pre-activation values; the ReLU is then applied on top of them.
    final_relu: bool = True
    frontend_dtype: Literal["float64", "float32"] = "float64"
    # log-mel examples per forward pass (torch backend); float32 activations take ~3 MB per example on CPU
    batch_size: int = 64
    allow_tf32: bool = False  # GPU only; TF32 convolutions flip uint8 codes (see weights.cuda_precision)

    @classmethod
    def from_dict(cls, d: dict) -> AudioExtractorConfig:
        check_keys(cls, d, "extract.audio")
        return cls(**d).validate()

    def validate(self) -> AudioExtractorConfig:
        def bad(key: str, allowed) -> ValueError:
            return ValueError(f"extract.audio.{key}: {getattr(self, key)!r} is not one of {allowed}")

        if self.backend not in ("torch", "tfhub"):
            raise bad("backend", ["torch", "tfhub"])
        if self.postprocess not in ("pca_quantized", "raw"):
            raise bad("postprocess", ["pca_quantized", "raw"])
        if self.frontend_dtype not in ("float64", "float32"):
            raise bad("frontend_dtype", ["float64", "float32"])
        if self.backend == "tfhub" and self.weights == RANDOM:
            raise ValueError(
                "extract.audio.weights: the tfhub backend needs a hub handle or SavedModel dir, not 'random'"
            )
        if self.postprocess == "pca_quantized" and self.pca_params is None and self.weights != RANDOM:
            raise ValueError(
                "extract.audio.pca_params: pca_quantized with real weights needs the AudioSet PCA file "
                "(https://storage.googleapis.com/audioset/vggish_pca_params.npz); set its path, or 'identity'."
            )
        if not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ValueError(f"extract.audio.batch_size must be a positive int, got {self.batch_size!r}")
        return self


class AudioExtractor:
    """Frontend + VGGish (torch or tfhub) + postprocessing, with the store attributes that describe them."""

    def __init__(self, cfg: AudioExtractorConfig, device: str | torch.device | None = "auto"):
        self.cfg = cfg.validate()
        self.device = resolve_device(device, "extract.device")
        self.net: VGGish | None = None
        self.channels_last = False
        self.hub = None
        if cfg.backend == "torch":
            path, sha = resolve_weights_sha256(cfg.weights, cfg.sha256, "vggish_torch")  # the one hash of the file
            net = VGGish(final_relu=cfg.final_relu)
            if path is None:
                with seeded(cfg.seed):
                    init_random_(net)
            else:
                try:
                    net.load_state_dict(
                        canonical_state_dict(load_state_dict_file(path, "vggish_torch")), strict=True
                    )
                except RuntimeError as e:
                    raise ValueError(f"vggish_torch: {path} does not match the VGGish layout: {e}") from e
            self.net = net.eval().to(self.device)
            # Channels-last (NHWC) on CPU: oneDNN's convolutions run without reordering activations, ~25 % faster;
            # only the order of float32 sums changes (~1e-8 of the embedding scale). GPU keeps the default layout.
            self.channels_last = self.device.type == "cpu"
            if self.channels_last:
                self.net = self.net.to(memory_format=torch.channels_last)
            self.frontend = LogMelFrontend(getattr(torch, cfg.frontend_dtype)).to(self.device)
            self._weights_attrs = weights_attrs(cfg.weights, path, cfg.seed, cfg.sha256 or sha)
        else:
            from .tfhub import TFHubVGGish  # pulls in tensorflow

            # A local SavedModel directory is checksummed like any weight file; a remote hub handle cannot be.
            local = Path(cfg.weights).expanduser()
            sha = None
            if local.exists():
                _, sha = resolve_weights_sha256(cfg.weights, cfg.sha256, "vggish_savedmodel")
                sha = cfg.sha256 or sha
            self.hub = TFHubVGGish(str(local) if local.exists() else cfg.weights, self.device.type)
            self._weights_attrs = {"source": cfg.weights, "sha256": sha, "random": False, "seed": None}

        self.quantizer = None
        self._pca_attrs = None
        if cfg.postprocess == "pca_quantized":
            spec = cfg.pca_params if cfg.pca_params is not None else IDENTITY
            if spec == IDENTITY:
                self.quantizer = PCAQuantizer.from_spec(IDENTITY)
                self._pca_attrs = {"source": IDENTITY, "sha256": None}
            else:
                pca_path, pca_sha = resolve_weights_sha256(spec, cfg.pca_sha256, "vggish_pca")
                self.quantizer = PCAQuantizer.from_spec(pca_path)
                self._pca_attrs = {"source": spec, "sha256": cfg.pca_sha256 or pca_sha}

    # ---- pieces -------------------------------------------------------------------------------------------------
    def _as_tensor(self, waveform) -> torch.Tensor:
        w = torch.as_tensor(waveform)
        assert w.ndim == 1, f"expected a mono 16 kHz waveform [S], got shape {tuple(w.shape)}"
        assert w.is_floating_point(), f"expected float samples in [-1, 1], got dtype {w.dtype}"
        return w

    @torch.inference_mode()
    def embed_examples(self, examples: torch.Tensor) -> np.ndarray:
        """log-mel examples [N, 96, 64] -> float32 embeddings [N, 128] (torch backend), in chunks of batch_size."""
        assert self.net is not None, "embed_examples needs the torch backend"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with cuda_precision(self.device, self.cfg.allow_tf32):
            out = [
                self.net(examples[i : i + self.cfg.batch_size, None].to(self.device, memory_format=fmt))
                .float()
                .cpu()
                for i in range(0, len(examples), self.cfg.batch_size)
            ]
        return torch.cat(out).numpy() if out else np.zeros((0, EMBED_DIM), np.float32)

    def postprocess(self, emb: np.ndarray) -> np.ndarray:
        """float32 [K,128] -> uint8 codes (pca_quantized) or float32 (raw)."""
        return self.quantizer(emb) if self.quantizer is not None else emb.astype(np.float32, copy=False)

    # ---- public API ---------------------------------------------------------------------------------------------
    def embed(self, waveform) -> np.ndarray:
        """waveform [S] float (16 kHz mono) -> [K, 128], K = complete 0.96 s examples (0 rows when < 0.975 s)."""
        return self.embed_batch([waveform])[0]

    @torch.inference_mode()
    def embed_batch(self, waveforms: list) -> list[np.ndarray]:
        """Several videos' waveforms -> one [K_i, 128] array each; the network runs on all examples together."""
        ws = [self._as_tensor(w) for w in waveforms]
        if self.hub is not None:
            embs = [self.hub(w) for w in ws]
            # Hub output is pre-activation; the ReLU reproduces the original checkpoint semantics.
            if self.cfg.final_relu:
                embs = [np.maximum(e, 0.0) for e in embs]
        else:
            # The frontend is cheap; run it per video (lengths differ) on the device, then batch the network.
            examples = [self.frontend.examples(w.to(self.device)) for w in ws]  # each [K_i, 96, 64]
            counts = [len(e) for e in examples]
            flat = self.embed_examples(torch.cat(examples))  # [sum K_i, 128]
            embs = np.split(flat, np.cumsum(counts)[:-1])
        return [self.postprocess(e) for e in embs]

    @property
    def out_dtype(self) -> str:
        return "uint8" if self.quantizer is not None else "float32"

    @property
    def attrs(self) -> dict:
        c = self.cfg
        return {
            "extractor": "vggish",
            "backend": c.backend,
            "weights": self._weights_attrs,
            "sample_rate": SAMPLE_RATE,
            "hop_s": EXAMPLE_FRAMES * HOP / SAMPLE_RATE,
            "window_s": EXAMPLE_FRAMES * HOP / SAMPLE_RATE,
            "postprocess": c.postprocess,
            "pca": self._pca_attrs,
            "final_relu": c.final_relu,
            "frontend": "torch-numpy-equivalent" if c.backend == "torch" else "tfhub-tf.signal",
            "frontend_dtype": c.frontend_dtype if c.backend == "torch" else "float32",
            "dtype": self.out_dtype,
            "memory_format": "channels_last" if self.channels_last else "contiguous",
            "config": asdict(c),
        }


def build_audio_extractor(
    cfg: AudioExtractorConfig | dict, device: str | torch.device | None = "auto"
) -> AudioExtractor:
    """Config (dataclass or mapping) -> ready AudioExtractor on `device` ('auto' = cuda if available)."""
    if isinstance(cfg, dict):
        cfg = AudioExtractorConfig.from_dict(cfg)
    return AudioExtractor(cfg, device)
