"""C3D (Tran et al. 2015) video extractor: 16-frame clips -> fc7 after ReLU (4096-d), Sports-1M weights.

State-dict layout of DavideA/c3d-pytorch (`c3d.pickle`): conv1, conv2, conv3a, conv3b, conv4a, conv4b, conv5a, conv5b,
fc6, fc7, fc8 (487-way Sports-1M classifier, loaded for strictness, never evaluated).

Two presets (every difference also in docs/extractors.md):

| step              | `paper` (correct input)               | `reference` (reproduces the benchmark's released features)  |
|-------------------|---------------------------------------|-------------------------------------------------------------|
| channel order     | RGB                                   | BGR (OpenCV frames)                                         |
| colour inversion  | never                                 | v -> (256 - v) % 256 on uint8 frames before resizing, for   |
|                   |                                       | UCF and VGGSound (float tensor fed to ToPILImage); not for  |
|                   |                                       | ActivityNet/demo                                            |
| resize 128x171    | torch bilinear, antialias, float      | PIL bilinear (Pillow, antialiased) on uint8, as torchvision |
|                   | (no rounding)                         | 0.8 did; result rounded to uint8                            |
| crop              | centre 112 (rows 8:120, cols 30:142)  | same                                                        |
| normalise         | /255, Kinetics mean/std in R,G,B      | /255, Kinetics mean/std in channel positions 0,1,2 = B,G,R  |
| last partial clip | zero frames after normalisation       | same (= mean-colour frames, as the benchmark did)           |
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_splits.common import check_keys, resolve_device

from .weights import (
    RANDOM,
    cuda_precision,
    init_random_,
    load_state_dict_file,
    resolve_weights_sha256,
    seeded,
    weights_attrs,
)

log = logging.getLogger(__name__)

FRAMES_PER_CLIP = 16
FPS = 25
RESIZE_HW = (128, 171)
CROP = 112
FEATURE_DIM = 4096
RESIZE_CHUNK = 8  # frames resized at once (bounds the full-resolution float copy)
# torchvision's Kinetics-400 RGB statistics, the constants of the official extraction scripts.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# Datasets whose official frames went through the float->uint8 wrap-around (spec §2.3).
INVERTED_DATASETS = ("ucf", "vggsound")


class C3D(nn.Module):
    """clips [B, 3, 16, 112, 112] -> fc7 after ReLU [B, 4096] (dropout is identity in eval mode)."""

    def __init__(self, n_classes: int = 487):
        super().__init__()
        conv = lambda i, o: nn.Conv3d(i, o, kernel_size=3, padding=1)
        self.conv1, self.conv2 = conv(3, 64), conv(64, 128)
        self.conv3a, self.conv3b = conv(128, 256), conv(256, 256)
        self.conv4a, self.conv4b = conv(256, 512), conv(512, 512)
        self.conv5a, self.conv5b = conv(512, 512), conv(512, 512)
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))  # keep time resolution in the first block
        self.pool = nn.MaxPool3d(2, 2)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))  # 7x7 -> 4x4
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, n_classes)
        self.dropout = nn.Dropout(0.5)
        # Run the first block in cache-sized steps (see _first_block_in_steps); the CPU extractor turns this on.
        self.first_block_in_steps = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, FRAMES_PER_CLIP, CROP, CROP), (
            f"expected [B,3,16,112,112], got {tuple(x.shape)}"
        )
        # Max-pooling and ReLU commute exactly (both monotone), so each block pools first and rectifies the 4-8x
        # smaller result in place: the same numbers as the published relu-then-pool order, with a fraction of the
        # memory traffic (on CPU the full-resolution ReLU pass cost as much as a convolution).
        if self.first_block_in_steps:
            x = self._first_block_in_steps(x)
        else:
            x = self.pool1(self.conv1(x)).relu_()  # [B, 64, 16, 56, 56]
        x = self.pool(self.conv2(x)).relu_()  # [B, 128, 8, 28, 28]
        x = self.pool(self.conv3b(self.conv3a(x).relu_())).relu_()  # [B, 256, 4, 14, 14]
        x = self.pool(self.conv4b(self.conv4a(x).relu_())).relu_()  # [B, 512, 2, 7, 7]
        x = self.pool5(self.conv5b(self.conv5a(x).relu_())).relu_()  # [B, 512, 1, 4, 4]
        # Channel-major flatten (C, T, H, W), the order the Caffe-converted fc6 weights expect.
        x = self.dropout(self.fc6(x.flatten(1)).relu_())  # [B, 4096]
        return self.dropout(self.fc7(x).relu_())  # [B, 4096] fc7 after ReLU

    def _first_block_in_steps(self, x: torch.Tensor, clips_per_step: int = 2) -> torch.Tensor:
        """conv1 -> pool1 -> ReLU, one output frame of `clips_per_step` clips per step: [B,3,16,112,112] ->
        [B,64,16,56,56].

        conv1's output is the largest activation (64x16x112x112 per clip: 26 MB in bf16, 51 MB in fp32). Computed
        whole, it goes out to memory and comes back for the pool; a step's output (3-6 MB) is pooled while it is still
        in the CPU cache. Measured on a 2-core Xeon: the block ~2x faster in fp32 and in bf16, and its largest
        temporary one frame of two clips instead of the whole batch. Every output value is the same sum (the temporal
        zero padding is made explicit), so the result is the whole-block one: bit-identical in the tests, at most
        float rounding apart where oneDNN picks another kernel for the smaller shape.
        """
        b, c, t, h, w = x.shape
        cl = x.is_contiguous(memory_format=torch.channels_last_3d)
        layout = torch.channels_last_3d if cl else torch.contiguous_format
        edge = x.new_zeros((b, c, 1, h, w))
        padded = torch.cat([edge, x, edge], dim=2).contiguous(memory_format=layout)  # [B,3,18,112,112]
        w1, b1 = self.conv1.weight, self.conv1.bias
        rows = []
        for i in range(0, b, clips_per_step):
            clips = padded[i : i + clips_per_step]
            frames = [  # [b',64,1,56,56] each
                self.pool1(F.conv3d(clips[:, :, t0 : t0 + 3], w1, b1, padding=(0, 1, 1))).relu_()
                for t0 in range(t)
            ]
            rows.append(torch.cat(frames, dim=2))
        return torch.cat(rows).contiguous(memory_format=layout)


def published_order_forward(net: C3D, x: torch.Tensor) -> torch.Tensor:
    """`net` run as the published code writes C3D: conv -> out-of-place ReLU -> pool. `C3D.forward` pools first and
    rectifies in place (same numbers); this is the reference it is tested against and the benchmark's baseline."""
    r = F.relu
    x = net.pool1(r(net.conv1(x)))
    x = net.pool(r(net.conv2(x)))
    x = net.pool(r(net.conv3b(r(net.conv3a(x)))))
    x = net.pool(r(net.conv4b(r(net.conv4a(x)))))
    x = net.pool5(r(net.conv5b(r(net.conv5a(x)))))
    return net.dropout(r(net.fc7(net.dropout(r(net.fc6(x.flatten(1)))))))


@dataclass
class VideoExtractorConfig:
    weights: str = RANDOM  # "random" or c3d.pickle (torch-saved state dict, DavideA/c3d-pytorch format)
    sha256: str | None = None
    seed: int = 0
    preset: Literal["paper", "reference"] = "paper"
    # ucf | vggsound | activitynet | demo: picks the reference preset's colour-inversion default
    dataset: str | None = None
    invert_colours: bool | None = None  # None = preset default for `dataset`
    batch_size: int = 32  # clips per forward pass
    # none = exact fp32; bf16 on GPU or CPU (fast on CPUs with AVX512_BF16/AMX); fp16 on GPU only (CPU: fp32)
    autocast: Literal["none", "bf16", "fp16"] = "none"
    out_dtype: Literal["float32", "float16"] = "float32"
    resize: Literal["preset", "torch", "pil"] = "preset"  # override the preset's resize implementation
    last_clip: Literal["pad", "drop"] = "pad"  # pad = zero frames after normalisation (benchmark)
    allow_tf32: bool = False  # see weights.cuda_precision: off keeps fp32 convolutions exact on GPU

    @classmethod
    def from_dict(cls, d: dict) -> VideoExtractorConfig:
        check_keys(cls, d, "extract.video")
        return cls(**d).validate()

    def validate(self) -> VideoExtractorConfig:
        choices = {
            "preset": ("paper", "reference"),
            "autocast": ("none", "bf16", "fp16"),
            "out_dtype": ("float32", "float16"),
            "resize": ("preset", "torch", "pil"),
            "last_clip": ("pad", "drop"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"extract.video.{key}: {getattr(self, key)!r} is not one of {list(allowed)}")
        if not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ValueError(f"extract.video.batch_size must be a positive int, got {self.batch_size!r}")
        if self.preset == "paper" and self.invert_colours:
            raise ValueError(
                "extract.video.invert_colours: the paper preset never inverts; use preset: reference"
            )
        if self.preset == "reference" and self.invert_colours is None and self.dataset is None:
            raise ValueError(
                "extract.video.dataset: the reference preset inverts colours for ucf/vggsound only; set `dataset` "
                "(or `invert_colours` explicitly)"
            )
        return self

    @property
    def inverts(self) -> bool:
        if self.invert_colours is not None:
            return self.invert_colours
        return self.preset == "reference" and str(self.dataset).lower() in INVERTED_DATASETS

    @property
    def bgr(self) -> bool:
        return self.preset == "reference"

    @property
    def resize_backend(self) -> str:
        if self.resize != "preset":
            return self.resize
        return "pil" if self.preset == "reference" else "torch"


def invert_colours(frames: torch.Tensor) -> torch.Tensor:
    """uint8 v -> (256 - v) % 256: what torchvision's float path (mul(255).byte(), wrapping) did to 0..255 floats."""
    assert frames.dtype == torch.uint8, f"inversion is defined on uint8 frames, got {frames.dtype}"
    return (256 - frames.to(torch.int16)).remainder(256).to(torch.uint8)


def _resize_pil(frames: torch.Tensor) -> torch.Tensor:
    """[T,H,W,3] uint8 -> [T,128,171,3] uint8 with Pillow bilinear (antialiased on downscale, rounds to uint8)."""
    from PIL import Image

    h, w = RESIZE_HW
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for i, f in enumerate(frames.cpu().numpy()):
        out[i] = np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR))
    return torch.from_numpy(out)


def _crop_offsets() -> tuple[int, int]:
    """torchvision CenterCrop's offsets of the 112x112 crop in a 128x171 frame: 8, 30."""
    return (RESIZE_HW[0] - CROP + 1) // 2, (RESIZE_HW[1] - CROP + 1) // 2


# Pillow's fixed-point resampling (libImaging/Resample.c): coefficients scaled to 22-bit integers, a horizontal then a
# vertical pass, each rounded to uint8.
_PIL_PRECISION_BITS = 22


@functools.lru_cache(maxsize=64)
def _pil_bilinear_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and integer weights [out_size, taps] of Pillow's antialiased bilinear filter, computed with
    the same double-precision steps in the same order as Pillow's precompute_coeffs and normalize_coeffs_8bpc."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear (triangle) filter's support is 1
    taps = math.ceil(support) * 2 + 1
    idx = np.zeros((out_size, taps), np.int64)
    weights = np.zeros((out_size, taps), np.int64)
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        n = min(int(center + support + 0.5), in_size) - xmin
        w, total = [], 0.0
        for x in range(n):  # summed one by one, as Pillow does (a pairwise sum can differ in the last bit)
            t = abs((x + xmin - center + 0.5) * ss)
            w.append(1.0 - t if t < 1.0 else 0.0)
            total += w[-1]
        for x in range(n):
            k = w[x] / total if total != 0.0 else w[x]
            weights[xx, x] = int(0.5 + k * (1 << _PIL_PRECISION_BITS))  # k >= 0 for the triangle filter
            idx[xx, x] = xmin + x
        idx[xx, n:] = xmin  # unused taps: weight 0
    return idx, weights


def _pil_pass(x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    idx, weights = _pil_bilinear_coeffs(x.shape[dim], out_size)
    idx, weights = torch.from_numpy(idx).to(x.device), torch.from_numpy(weights).to(x.device, torch.int32)
    x = x.movedim(dim, -1).to(torch.int32)
    acc = torch.full((*x.shape[:-1], out_size), 1 << (_PIL_PRECISION_BITS - 1), dtype=torch.int32, device=x.device)
    for k in range(idx.shape[1]):  # at most 255 * 2**22 in total: no int32 overflow, as in Pillow
        acc += x[..., idx[:, k]] * weights[:, k]
    return (acc >> _PIL_PRECISION_BITS).clamp_(0, 255).to(torch.uint8).movedim(-1, dim)


def pil_bilinear_resize(frames: torch.Tensor, size: tuple[int, int] = RESIZE_HW) -> torch.Tensor:
    """uint8 [n,H,W,C] -> uint8 [n,h,w,C]: Pillow's ``Image.resize(..., BILINEAR)`` bit for bit, batched, on the
    frames' device.

    Integer arithmetic throughout, so the result does not depend on the device. On a GPU it replaces one Pillow call
    per frame; on the CPU Pillow's own C loop is faster (measured 3-30x on 2 cores), so the CPU path keeps Pillow.
    """
    assert frames.ndim == 4 and frames.dtype == torch.uint8, f"expected uint8 [n,H,W,C], got {frames.dtype} {tuple(frames.shape)}"
    h, w = size
    x = frames
    if x.shape[2] != w:  # Pillow skips a pass whose size does not change
        x = _pil_pass(x, 2, w)
    if x.shape[1] != h:
        x = _pil_pass(x, 1, h)
    return x


class FramePreprocessor:
    """The preset's frame pipeline, without the network: frames -> normalised 112x112 crops -> 16-frame clips."""

    def __init__(self, cfg: VideoExtractorConfig, device: str | torch.device | None = "auto"):
        self.cfg = cfg.validate()
        self.device = resolve_device(device, "extract.device")
        # Constants sit in channel *positions*: reference feeds B,G,R through the R,G,B statistics, as the scripts did.
        self.mean = torch.tensor(KINETICS_MEAN, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(KINETICS_STD, device=self.device).view(3, 1, 1)

    @torch.inference_mode()
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames [T,H,W,3] (any resolution) -> normalised float32 [T,3,112,112] on the device."""
        frames = torch.as_tensor(frames)
        assert frames.ndim == 4 and frames.shape[-1] == 3, (
            f"expected frames [T,H,W,3], got {tuple(frames.shape)}"
        )
        assert frames.dtype == torch.uint8, f"expected uint8 RGB frames, got {frames.dtype}"
        if self.cfg.inverts:
            frames = invert_colours(frames)
        # Full-resolution float copies cost 12 bytes per pixel: resize a few frames at a time so memory stays bounded
        # by RESIZE_CHUNK frames (~200 MB at 1080p) instead of by the caller's batch.
        resized = [self._resize(frames[i : i + RESIZE_CHUNK]) for i in range(0, len(frames), RESIZE_CHUNK)]
        x = torch.cat(resized) if resized else torch.zeros((0, 3, *RESIZE_HW), device=self.device)
        return self._crop_normalise(x)

    @torch.inference_mode()
    def resize_frames(self, frames: np.ndarray) -> np.ndarray:
        """Decoded uint8 RGB frames [n,H,W,3] of any size -> the preset's inverted and resized frames, float32
        [n,128,171,3] (0..255 scale), on the CPU.

        The part of :meth:`preprocess` that depends on the input size, for the decoder to run on a few frames at a
        time (``extractors.decode.iter_clip_batches``): decode batches then hold 128x171 frames whatever the video's
        resolution (a 4K clip costs what a small one does), and a frame size that changes mid-stream needs nothing
        special. Same numbers as :meth:`preprocess` on the CPU.
        """
        x = torch.from_numpy(np.ascontiguousarray(frames))
        assert x.ndim == 4 and x.dtype == torch.uint8 and x.shape[-1] == 3, (
            f"expected uint8 RGB frames [n,H,W,3], got {x.dtype} {tuple(x.shape)}"
        )
        if self.cfg.inverts:
            x = invert_colours(x)
        if self.cfg.resize_backend == "pil":
            return _resize_pil(x).numpy().astype(np.float32)
        y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=RESIZE_HW, mode="bilinear", antialias=True,
                          align_corners=False)
        return y.permute(0, 2, 3, 1).contiguous().numpy()

    @property
    def crop_dtype(self) -> np.dtype:
        """What :meth:`crop_frames` returns: uint8 where the preset's resize rounds (PIL), float32 where it does not."""
        return np.dtype(np.uint8 if self.cfg.resize_backend == "pil" else np.float32)

    @torch.inference_mode()
    def crop_frames(self, frames: np.ndarray) -> np.ndarray:
        """Decoded uint8 RGB frames [n,H,W,3] -> the network's 112x112 centre crops of the resized frames, [n,112,112,3]
        on the CPU, in :attr:`crop_dtype` (0..255 scale): what a decoder process hands over.

        The same values as :meth:`resize_frames` followed by the crop of :meth:`preprocess_resized`; handing over the
        crop instead of the 128x171 frame moves 1.75x fewer bytes, and the reference preset's rounded PIL output
        travels as uint8 (4x fewer again) because it is exactly representable there.
        """
        x = torch.from_numpy(np.ascontiguousarray(frames))
        assert x.ndim == 4 and x.dtype == torch.uint8 and x.shape[-1] == 3, (
            f"expected uint8 RGB frames [n,H,W,3], got {x.dtype} {tuple(x.shape)}"
        )
        if self.cfg.inverts:
            x = invert_colours(x)
        top, left = _crop_offsets()
        if self.cfg.resize_backend == "pil":
            return np.ascontiguousarray(_resize_pil(x).numpy()[:, top : top + CROP, left : left + CROP])
        y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=RESIZE_HW, mode="bilinear", antialias=True,
                          align_corners=False)
        return y[:, :, top : top + CROP, left : left + CROP].permute(0, 2, 3, 1).contiguous().numpy()

    @torch.inference_mode()
    def normalise_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops from :meth:`crop_frames` ([T,112,112,3], uint8 or float32, on any device) -> normalised float32
        [T,3,112,112] on that device: the channel order and the Kinetics statistics of the preset."""
        crops = torch.as_tensor(crops)
        assert crops.ndim == 4 and tuple(crops.shape[1:]) == (CROP, CROP, 3), (
            f"expected crops [T,{CROP},{CROP},3], got {tuple(crops.shape)}"
        )
        x = crops.to(torch.float32).permute(0, 3, 1, 2)
        if self.cfg.bgr:
            x = x[:, [2, 1, 0]]
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return x.contiguous().div_(255.0).sub_(mean).div_(std)

    @torch.inference_mode()
    def preprocess_resized(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames from :meth:`resize_frames`, float32 [T,128,171,3] -> normalised float32 [T,3,112,112] on the device."""
        frames = torch.as_tensor(frames)
        assert frames.ndim == 4 and tuple(frames.shape[1:]) == (*RESIZE_HW, 3), (
            f"expected resized frames [T,{RESIZE_HW[0]},{RESIZE_HW[1]},3], got {tuple(frames.shape)}"
        )
        return self._crop_normalise(frames.to(self.device, torch.float32).permute(0, 3, 1, 2))

    def _crop_normalise(self, x: torch.Tensor) -> torch.Tensor:
        """float [T,3,128,171] (0..255) -> normalised [T,3,112,112]."""
        top, left = _crop_offsets()
        x = x[:, :, top : top + CROP, left : left + CROP]  # [T,3,112,112]
        if self.cfg.bgr:
            x = x[:, [2, 1, 0]]  # RGB -> BGR for the reference preset
        # The same three float operations as (x / 255 - mean) / std, in place on one copy of the crop.
        return x.contiguous().div_(255.0).sub_(self.mean).div_(self.std)

    def _resize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [t,H,W,3] -> float [t,3,128,171] on the device (0..255 scale)."""
        if self.cfg.resize_backend == "pil":
            # integer values 0..255, as PIL rounds; on a GPU the batched bit-exact equivalent runs there
            if self.device.type == "cuda":
                return pil_bilinear_resize(frames.to(self.device)).permute(0, 3, 1, 2).float()
            return _resize_pil(frames).to(self.device).permute(0, 3, 1, 2).float()
        x = frames.to(self.device).permute(0, 3, 1, 2).float()  # [t,3,H,W]
        return F.interpolate(x, size=RESIZE_HW, mode="bilinear", antialias=True, align_corners=False)

    def make_clips(self, pre: torch.Tensor) -> torch.Tensor:
        """[T,3,112,112] preprocessed -> [n,3,16,112,112]; the last partial clip is zero-padded (or dropped).

        Zeros are added *after* normalisation, exactly like the benchmark (a padded frame is the mean colour).
        """
        assert pre.ndim == 4 and pre.shape[1:] == (3, CROP, CROP), (
            f"expected [T,3,112,112], got {tuple(pre.shape)}"
        )
        n_full, rest = divmod(len(pre), FRAMES_PER_CLIP)
        if rest and self.cfg.last_clip == "pad":
            pad = pre.new_zeros((FRAMES_PER_CLIP - rest, *pre.shape[1:]))
            pre = torch.cat([pre, pad])
            n_full += 1
        pre = pre[: n_full * FRAMES_PER_CLIP]
        return pre.reshape(n_full, FRAMES_PER_CLIP, 3, CROP, CROP).transpose(1, 2)  # [n,3,16,112,112]


class VideoExtractor:
    """Preprocessing (preset) + batched C3D, returning fc7-after-ReLU features."""

    def __init__(self, cfg: VideoExtractorConfig, device: str | torch.device | None = "auto"):
        self.cfg = cfg.validate()
        self.device = resolve_device(device, "extract.device")
        path, sha = resolve_weights_sha256(cfg.weights, cfg.sha256, "c3d")  # the one hash of the file
        net = C3D()
        if path is None:
            with seeded(cfg.seed):
                init_random_(net)
        else:
            state = load_state_dict_file(path, "c3d")
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise ValueError(
                    f"c3d: {path} is not a C3D state dict in the DavideA/c3d-pytorch layout: {e}"
                ) from e
        self.net: nn.Module = net.eval().to(self.device)
        # Channels-last (NDHWC) lets oneDNN run its blocked 3-D convolutions without reordering every activation:
        # measured on CPU 1.3-1.6x faster in fp32 (same results to ~2e-6 relative, only the summation order
        # changes) and ~2x faster under bf16 autocast. Not measured on GPU, so CUDA keeps the default layout.
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
            # Cache blocking pays on CPU only; on a GPU the extra kernel launches would cost more than they save.
            self.net.first_block_in_steps = True
        self.autocast = cfg.autocast
        if self.device.type == "cpu" and cfg.autocast == "fp16":
            # CPU fp16 convolutions have no fast kernels and lose range; run exact fp32 and record that.
            log.warning("extract.video.autocast: fp16 is GPU-only; running C3D in fp32 on cpu (use bf16 on CPU)")
            self.autocast = "none"
        # bf16 on CPU runs a bf16 copy of the network instead of autocast: the same arithmetic (autocast rounds the
        # weights and the input of every convolution and linear to bf16 as well; the outputs are bit-identical, see
        # tests/test_extract_speed.py) without re-casting ~60M weights on every forward, which cost a third of the time.
        self.net_dtype = torch.bfloat16 if self.device.type == "cpu" and self.autocast == "bf16" else torch.float32
        self.net = self.net.to(self.net_dtype)
        self._weights_attrs = weights_attrs(cfg.weights, path, cfg.seed, cfg.sha256 or sha)
        self.frames = FramePreprocessor(cfg, self.device)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames [T,H,W,3] -> normalised float32 [T,3,112,112] on the device (see FramePreprocessor)."""
        return self.frames.preprocess(frames)

    def make_clips(self, pre: torch.Tensor) -> torch.Tensor:
        """[T,3,112,112] -> [ceil(T/16),3,16,112,112], last clip zero-padded after normalisation."""
        return self.frames.make_clips(pre)

    def resize_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames [n,H,W,3] -> float32 [n,128,171,3] (see FramePreprocessor.resize_frames): the decoder's
        transform."""
        return self.frames.resize_frames(frames)

    def preprocess_resized(self, frames: torch.Tensor) -> torch.Tensor:
        """Resized frames float32 [T,128,171,3] -> normalised float32 [T,3,112,112] on the device."""
        return self.frames.preprocess_resized(frames)

    def crop_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames [n,H,W,3] -> [n,112,112,3] crops (see FramePreprocessor.crop_frames): the decoders' transform."""
        return self.frames.crop_frames(frames)

    def normalise_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops [T,112,112,3] -> normalised float32 [T,3,112,112] on the crops' device."""
        return self.frames.normalise_crops(crops)

    # ---- network --------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_preprocessed(self, clips: torch.Tensor) -> np.ndarray:
        """normalised clips [n,3,16,112,112] -> np [n,4096] (out_dtype), batch_size clips per forward."""
        assert clips.ndim == 5 and clips.shape[1:] == (3, FRAMES_PER_CLIP, CROP, CROP), (
            f"expected preprocessed clips [n,3,16,112,112], got {tuple(clips.shape)}"
        )
        out_dtype = getattr(torch, self.cfg.out_dtype)
        fmt = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        outs = []
        with cuda_precision(self.device, self.cfg.allow_tf32, self.autocast):
            for i in range(0, len(clips), self.cfg.batch_size):
                batch = clips[i : i + self.cfg.batch_size].to(self.device, self.net_dtype, memory_format=fmt)
                outs.append(self.net(batch).float().to("cpu", out_dtype))
        if not outs:
            return np.zeros((0, FEATURE_DIM), np.dtype(self.cfg.out_dtype))
        return torch.cat(outs).numpy()

    @property
    def attrs(self) -> dict:
        c = self.cfg
        return {
            "extractor": "c3d",
            "preset": c.preset,
            "weights": self._weights_attrs,
            "fps": FPS,
            "frames_per_clip": FRAMES_PER_CLIP,
            "hop_s": FRAMES_PER_CLIP / FPS,
            "layer": "fc7",
            "dtype": c.out_dtype,
            "channel_order": "BGR" if c.bgr else "RGB",
            "invert_colours": c.inverts,
            "resize": c.resize_backend,
            "last_clip": c.last_clip,
            "autocast": self.autocast,  # what ran: fp16 requested on CPU is recorded as none
            "memory_format": "channels_last_3d" if self.channels_last else "contiguous",
            "allow_tf32": c.allow_tf32 and self.device.type == "cuda",
            "config": asdict(c),
        }


def build_video_extractor(
    cfg: VideoExtractorConfig | dict, device: str | torch.device | None = "auto"
) -> VideoExtractor:
    """Config (dataclass or mapping) -> ready VideoExtractor on `device` ('auto' = cuda if available)."""
    if isinstance(cfg, dict):
        cfg = VideoExtractorConfig.from_dict(cfg)
    return VideoExtractor(cfg, device)
