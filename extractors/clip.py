"""CLIP ViT-B/32 image features as ClipClap-GZSL computes them (open_clip on OpenAI's checkpoint).

ClipClap embeds ONE frame per video, the middle one, with OpenAI's ViT-B/32 (`clip.load("ViT-B/32")`): the frame is
turned into a PIL image, resized (bicubic, shorter side 224), centre-cropped to 224x224, normalised with CLIP's
statistics, embedded and L2-normalised (512-d). `open_clip.load_openai_model` reads the very file `clip.load`
downloads (a TorchScript archive) and rebuilds the same network with the same precision rule (fp16 weights with
float32 LayerNorms on a GPU, float32 on the CPU), so the features are those of the reference up to kernel rounding.

Presets (`extract.clip.preset`):

* ``reference`` reproduces the reference scripts' input: OpenCV frames in **BGR** order handed to PIL as if they were
  RGB, and for UCF additionally the colour "inversion" of handing a float 0..255 tensor to `ToPILImage`
  (``x -> (256 - x) mod 256``); the middle frame is ``n // 2`` for UCF and ``n // 2 - 1`` for VGGSound and ActivityNet
  (their scripts count frames from one).
* ``paper`` feeds the same frame position (``n // 2``) as true RGB, without inversion.

``n`` counts the video's native frames (every picture the decoder outputs, as OpenCV's read loop does;
``decode.iter_native_frames``), so the frame is the reference's own whatever the file's rate. `frames: all` embeds
every frame of the 25 fps grid instead (one row per grid frame) for temporal models; ClipClap uses `middle`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_splits.common import check_keys, resolve_device

from .weights import RANDOM, cuda_precision, reading_checkpoint, resolve_extractor_weights, seeded

log = logging.getLogger(__name__)

INPUT_SIZE = 224
# CLIP's image statistics (OpenAI `clip/clip.py` `_transform`; open_clip OPENAI_DATASET_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# OpenAI's ViT-B/32 (QuickGELU) in open_clip's registry: random weights of the published architecture.
OPENAI_MODEL = "ViT-B-32-quickgelu"
PRESETS = ("reference", "paper")
DATASETS = ("ucf", "vggsound", "activitynet", "demo")
PRECISIONS = ("auto", "fp32", "fp16")
FRAMES = ("middle", "all")
# `middle` counts the video's native frames, as ClipClap's OpenCV loop does; `all` takes the 25 fps grid that
# C3D's clips are cut from, so that a temporal model sees one time axis whatever the file's rate.
FRAME_SOURCES = {"middle": "native", "all": "grid_25fps"}
# Keys of OpenAI's state dict that the architecture is read from; a file without them is not a CLIP checkpoint.
REQUIRED_KEYS = (
    "visual.conv1.weight",
    "visual.proj",
    "text_projection",
    "token_embedding.weight",
    "positional_embedding",
)


@dataclass
class ImageExtractorConfig:
    """``extract.clip`` section."""

    weights: str = RANDOM  # OpenAI ViT-B-32.pt (TorchScript archive or state dict) or "random"
    sha256: str | None = None
    seed: int = 0
    preset: str = "reference"
    dataset: str | None = None  # reference preset: frame index rule and UCF's inversion
    invert_colours: bool | None = None  # None = preset default for `dataset`
    frames: str = "middle"
    precision: str = "auto"  # auto = fp16 on CUDA, fp32 on CPU (what clip.load does)
    batch_size: int = 64
    allow_tf32: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> ImageExtractorConfig:
        return cls(**check_keys(cls, d, "extract.clip")).validate()

    def validate(self) -> ImageExtractorConfig:
        for key, allowed in (("preset", PRESETS), ("precision", PRECISIONS), ("frames", FRAMES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"extract.clip.{key}: {getattr(self, key)!r} is not one of {list(allowed)}")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(
                f"extract.clip.dataset: {self.dataset!r} is not one of {list(DATASETS)} (or null)"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"extract.clip.batch_size must be a positive int, got {self.batch_size!r}")
        if self.invert_colours and self.preset != "reference":
            raise ValueError("extract.clip.invert_colours: the inversion exists only in the reference preset")
        return self

    @property
    def bgr(self) -> bool:
        return self.preset == "reference"

    @property
    def inverts(self) -> bool:
        if self.invert_colours is not None:
            return bool(self.invert_colours)
        return self.preset == "reference" and self.dataset == "ucf"


def middle_frame_index(n_frames: int, cfg: ImageExtractorConfig) -> int | None:
    """Index of the frame ClipClap embeds for a video of `n_frames` native frames; None when there is none.

    The VGGSound/ActivityNet scripts compare a counter that starts at one with ``n // 2``, so they take frame
    ``n // 2 - 1``; a one-frame video gives them no frame (ActivityNet: empty features) and is skipped here too.
    """
    if n_frames <= 0:
        return None
    if cfg.preset == "reference" and cfg.dataset in ("vggsound", "activitynet"):
        return n_frames // 2 - 1 if n_frames >= 2 else None
    return n_frames // 2


def select_frames(n_frames: int, cfg: ImageExtractorConfig) -> list[int]:
    """Indices of the frames that get a feature row, in order."""
    if cfg.frames == "all":
        return list(range(max(n_frames, 0)))
    i = middle_frame_index(n_frames, cfg)
    return [] if i is None else [i]


def to_pil(frame_rgb: np.ndarray, cfg: ImageExtractorConfig) -> Image.Image:
    """The PIL image the reference hands to CLIP's transform, from a decoder frame (uint8 RGB [H, W, 3])."""
    frame = np.asarray(frame_rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"clip: expected uint8 RGB frames [H, W, 3], got {frame.dtype} {frame.shape}")
    if cfg.bgr:
        frame = frame[:, :, ::-1]  # OpenCV order, read by PIL as RGB
    if cfg.inverts:
        # ToPILImage on a float tensor multiplies by 255 and casts to uint8: 255 x mod 256 = (256 - x) mod 256.
        frame = ((256 - frame.astype(np.int32)) % 256).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(frame), mode="RGB")


class FrameCropper:
    """The model-free half of the input chain, for decoder processes: frame -> uint8 [224, 224, 3] (channel order,
    inversion, bicubic resize, centre crop). :func:`normalise_crops` finishes it; together they equal
    :meth:`ImageExtractor.preprocess` bit for bit, and a crop is 150 kB instead of a float tensor's 600 kB."""

    def __init__(self, cfg: ImageExtractorConfig):
        import torchvision.transforms as T

        self.cfg = cfg
        self._resize = T.Compose([T.Resize(INPUT_SIZE, interpolation=T.InterpolationMode.BICUBIC),
                                  T.CenterCrop(INPUT_SIZE)])

    def __call__(self, frame_rgb: np.ndarray) -> np.ndarray:
        return np.asarray(self._resize(to_pil(frame_rgb, self.cfg)), dtype=np.uint8)


def normalise_crops(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [n, 224, 224, 3] crops -> [n, 3, 224, 224] float32, as torchvision's ToTensor + Normalize compute it."""
    x = torch.as_tensor(np.asarray(crops)).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return x.sub(mean).div(std)


def _tensor_transform():
    import torchvision.transforms as T

    # The transforms of OpenAI's `_transform(224)`, on PIL images as the reference runs them.
    return T.Compose(
        [
            T.Resize(INPUT_SIZE, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(INPUT_SIZE),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def load_openai_checkpoint(path: Path, precision: str, device: torch.device) -> torch.nn.Module:
    """OpenAI's CLIP file (TorchScript archive or plain state dict) -> open_clip CLIP on `device` in `precision`."""
    import open_clip

    try:
        with reading_checkpoint("clip", path, "an OpenAI CLIP checkpoint", (RuntimeError, OSError, EOFError)):
            model = open_clip.load_openai_model(str(path), precision=precision, device=str(device))
    except KeyError as e:
        raise ValueError(
            f"clip: {path} is not an OpenAI CLIP checkpoint (missing key {e}); expected ViT-B-32.pt as published by "
            "OpenAI (keys " + ", ".join(REQUIRED_KEYS) + ")"
        ) from e
    return model.eval()


def write_openai_archive(state_dict: dict[str, torch.Tensor], path: str | Path,
                         dtype: torch.dtype | None = None) -> Path:
    """Save ``state_dict`` as a TorchScript archive, the format of OpenAI's ``ViT-B-32.pt`` (read back by
    ``load_openai_checkpoint``): how tests and the GPU check make checkpoints with chosen (random) values.
    ``dtype`` casts the floating-point tensors (OpenAI's file holds float16); None keeps them as they are."""
    import warnings

    class Node(torch.nn.Module):
        pass

    root = Node()
    for key, value in state_dict.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, Node())
            node = getattr(node, name)
        if value.is_floating_point():
            value = value.to(dtype) if dtype is not None else value.clone()
            node.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
        else:
            node.register_buffer(leaf, value.clone())
    path = Path(path)
    with warnings.catch_warnings():  # torch deprecates TorchScript, the format of OpenAI's files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(root).save(str(path))
    return path


def random_model(seed: int, precision: str, device: torch.device) -> torch.nn.Module:
    """ViT-B/32 (OpenAI architecture) with seeded random weights, cast like a loaded checkpoint."""
    import open_clip

    with seeded(seed):
        model = open_clip.create_model(OPENAI_MODEL, pretrained=None, precision=precision, device=str(device))
    return model.eval()


class ImageExtractor:
    """Frames in, one L2-normalised 512-d CLIP row per selected frame out."""

    def __init__(self, cfg: ImageExtractorConfig, device: str | torch.device | None = "auto"):
        self.cfg = cfg
        self.device = resolve_device(device if device is not None else "auto", "extract.device")
        precision = cfg.precision
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        if precision == "fp16" and self.device.type != "cuda":
            log.warning("extract.clip.precision: fp16 needs a GPU; running fp32 on %s", self.device)
            precision = "fp32"
        self.precision = precision
        weights = resolve_extractor_weights(cfg.weights, cfg.sha256, cfg.seed, "clip_vit_b32")
        if weights.random:
            self.model = random_model(cfg.seed, precision, self.device)
        else:
            self.model = load_openai_checkpoint(weights.path, precision, self.device)
        self._weights = weights.attrs
        self.dtype = self.model.visual.conv1.weight.dtype
        self.dim = int(self.model.visual.output_dim)
        self._transform = _tensor_transform()

    def select_frames(self, n_frames: int) -> list[int]:
        return select_frames(n_frames, self.cfg)

    def to_pil(self, frame_rgb: np.ndarray) -> Image.Image:
        """The PIL image the reference hands to CLIP's transform, from a decoder frame (uint8 RGB [H, W, 3])."""
        return to_pil(frame_rgb, self.cfg)

    def preprocess(self, frames_uint8_rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB [T, H, W, 3] -> normalised float32 [T, 3, 224, 224] on the CPU."""
        frames = frames_uint8_rgb.numpy() if isinstance(frames_uint8_rgb, torch.Tensor) else frames_uint8_rgb
        frames = np.asarray(frames)
        if frames.ndim != 4:
            raise ValueError(f"clip: expected frames [T, H, W, 3], got shape {frames.shape}")
        if len(frames) == 0:
            return torch.zeros((0, 3, INPUT_SIZE, INPUT_SIZE))
        return torch.stack([self._transform(self.to_pil(f)) for f in frames])

    @torch.no_grad()
    def embed_preprocessed(self, x: torch.Tensor) -> np.ndarray:
        """[n, 3, 224, 224] -> float32 [n, 512], each row L2-normalised in the model's precision (as the reference)."""
        out = []
        with cuda_precision(self.device, self.cfg.allow_tf32):
            for i in range(0, len(x), self.cfg.batch_size):
                chunk = x[i : i + self.cfg.batch_size].to(self.device, self.dtype)
                f = self.model.encode_image(chunk)
                f = f / f.norm(dim=-1, keepdim=True)
                out.append(f.float().cpu())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(out).numpy()

    def embed_video(self, frames_uint8_rgb: np.ndarray | torch.Tensor) -> np.ndarray:
        """The frames of one video [T, H, W, 3] -> [K, 512]: K = 1 (middle frame) or T (`frames: all`).

        Pipeline equality: `frames: middle` takes the native frames (`decode.iter_native_frames`), `all` the 25 fps
        grid's (`decode.iter_frames`)."""
        idx = self.select_frames(len(frames_uint8_rgb))
        return self.embed_preprocessed(self.preprocess(np.asarray(frames_uint8_rgb)[idx]))

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Token-encoded texts (OpenAI's BPE, 77 tokens) -> text features [n, 512] in the model's dtype, unnormalised."""
        import open_clip

        tokens = open_clip.tokenize(list(texts)).to(self.device)
        with cuda_precision(self.device, self.cfg.allow_tf32):
            return self.model.encode_text(tokens)

    @property
    def attrs(self) -> dict:
        return {
            "extractor": "clip_vit_b32",
            "preset": self.cfg.preset,
            "weights": self._weights,
            "dim": self.dim,
            "frames": self.cfg.frames,
            # Which frames `frame_rule` counts: the video's own (ClipClap's middle frame) or the 25 fps grid's.
            "frame_source": FRAME_SOURCES[self.cfg.frames],
            "frame_rule": "n//2-1"
            if self.cfg.preset == "reference" and self.cfg.dataset in ("vggsound", "activitynet")
            else "n//2",
            "channel_order": "bgr" if self.cfg.bgr else "rgb",
            "invert_colours": self.cfg.inverts,
            "resize": "pil_bicubic_224_centre_crop",
            "precision": self.precision,
            "l2_normalised": True,
            "dtype": "float32",
            "config": asdict(self.cfg),
        }


def build_image_extractor(
    cfg: ImageExtractorConfig | dict, device: str | torch.device | None = "auto"
) -> ImageExtractor:
    """Config (dataclass or mapping) -> ready ImageExtractor on `device` ('auto' = cuda if available)."""
    if not isinstance(cfg, ImageExtractorConfig):
        cfg = ImageExtractorConfig.from_dict(cfg)
    return ImageExtractor(cfg, device)
