"""Weight files as explicit, checksummed inputs.

Every network weight the extractors use is a file named in the config (path + sha256). This module turns such a
spec into a verified local path, downloads it when a URL is known and the machine is online, and otherwise fails
with a message that says which file is missing, where to get it and which config key to point at it.
`"random"` selects seeded random weights (tests, demo); callers record that in the feature store attributes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from data_splits.common import atomic_open

RANDOM = "random"


@dataclass(frozen=True)
class WeightSource:
    """Where a published weight file comes from and where the config expects it."""

    url: str | None  # direct download URL (None when only a landing page exists)
    page: str  # human-readable origin
    config_key: str  # config key that holds the path
    note: str = ""


# OpenAI publishes CLIP checkpoints under URLs that contain their sha256 (`clip.load` verifies it).
CLIP_VIT_B32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
CLIP_VIT_B32_URL = f"https://openaipublic.azureedge.net/clip/models/{CLIP_VIT_B32_SHA256}/ViT-B-32.pt"

# Official origins. Checksums are not hard-coded here: the config carries them (sha256), so a user who downloads a
# different but equivalent file states it explicitly instead of us guessing.
SOURCES: dict[str, WeightSource] = {
    "vggish_savedmodel": WeightSource(
        url=None,
        page="https://tfhub.dev/google/vggish/1 (now https://www.kaggle.com/models/google/vggish/tensorFlow2/vggish/1);"
        " download the TF2 SavedModel archive and unpack it into a directory",
        config_key="extract.audio.weights (backend: tfhub) or the `weights` rule input",
        note="convert it for the torch backend with "
        "`python -m extractors.vggish.convert SAVEDMODEL_DIR OUT.pth`",
    ),
    "vggish_torch": WeightSource(
        url=None,
        page="converted from the VGGish SavedModel by `python -m extractors.vggish.convert SAVEDMODEL_DIR OUT.pth`",
        config_key="extract.audio.weights (backend: torch)",
    ),
    "vggish_pca": WeightSource(
        url="https://storage.googleapis.com/audioset/vggish_pca_params.npz",
        page="https://storage.googleapis.com/audioset/vggish_pca_params.npz (AudioSet release)",
        config_key="extract.audio.pca_params",
    ),
    "c3d": WeightSource(
        url=None,
        page="c3d.pickle (Sports-1M) from the link in the DavideA/c3d-pytorch README "
        "(https://github.com/DavideA/c3d-pytorch)",
        config_key="extract.video.weights",
    ),
    "clip_vit_b32": WeightSource(
        url=CLIP_VIT_B32_URL,
        page=f"OpenAI CLIP ViT-B/32, {CLIP_VIT_B32_URL} (the file `clip.load('ViT-B/32')` downloads; its sha256 is the "
        f"URL's second-to-last component, {CLIP_VIT_B32_SHA256})",
        config_key="extract.clip.weights / class_embeddings.clip_weights",
    ),
    "wavcaps_htsat_bert": WeightSource(
        url=None,
        page="HTSAT_BERT_zero_shot.pt (WavCaps retrieval checkpoint, HTSAT audio encoder + BERT text encoder) from the "
        "links in the WavCaps README (https://github.com/XinhaoMei/WavCaps, retrieval/README.md)",
        config_key="extract.clap.weights / class_embeddings.clap_weights",
    ),
    "bert_base_uncased_vocab": WeightSource(
        url="https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt",
        page="vocab.txt of bert-base-uncased (https://huggingface.co/google-bert/bert-base-uncased), the tokenizer of "
        "WavCaps' BERT text encoder",
        config_key="class_embeddings.clap_vocab",
    ),
}


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so multi-GB weight files never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory (e.g. a SavedModel) as a hash over sorted (relative path, file hash)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f.relative_to(p).as_posix().encode())
        h.update(b"\0")
        h.update(sha256_file(f).encode())
        h.update(b"\n")
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, name: str) -> str:
    """Return the actual sha256; raise when `expected` is given and differs."""
    actual = sha256_path(path)
    if expected is not None and actual.lower() != expected.lower():
        raise ValueError(
            f"{name}: checksum mismatch for {path}\n  expected sha256 {expected}\n  actual   sha256 {actual}\n"
            "The file is corrupt, truncated or a different release: re-download it, or update the sha256 in the "
            "config if you really mean to use this file."
        )
    return actual


def _missing_message(spec: str, name: str, url: str | None, why: str = "") -> str:
    src = SOURCES.get(name)
    lines = [f"{name}: weight file not found: {spec}"]
    if why:
        lines.append(f"  ({why})")
    if src is not None:
        lines.append(f"  get it from: {src.page}")
        if src.note:
            lines.append(f"  then: {src.note}")
        lines.append(f"  and set `{src.config_key}` to its path (with its sha256).")
    elif url:
        lines.append(f"  get it from: {url}")
    lines.append("  For tests and the demo, `random` selects seeded random weights instead.")
    return "\n".join(lines)


def _download(
    url: str, dest: str | os.PathLike, expected_sha256: str | None, name: str, timeout_s: float = 30.0
) -> tuple[Path, str]:
    """`download`, also returning the sha256 it verified."""
    dest = Path(dest)
    # The file is verified under its temporary name and only then renamed into place (data_splits.common.atomic_open),
    # so `dest` never holds an unverified or half-downloaded file; it gets the permissions of any new file.
    with atomic_open(dest, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
        shutil.copyfileobj(resp, out, length=1 << 20)
        out.flush()
        sha = verify_sha256(out.name, expected_sha256, name)
    return dest, sha


def download(
    url: str, dest: str | os.PathLike, expected_sha256: str | None, name: str, timeout_s: float = 30.0
) -> Path:
    """Download to `dest` atomically (temp file + rename) and verify the checksum before publishing it."""
    return _download(url, dest, expected_sha256, name, timeout_s)[0]


def resolve_weights(
    spec: str,
    expected_sha256: str | None,
    name: str,
    url: str | None = None,
    dest: str | os.PathLike | None = None,
) -> Path | None:
    """Turn a weights spec into a verified local path.

    - `"random"` -> None (the caller builds seeded random weights).
    - an existing file/directory -> its path, after checking `expected_sha256` (when given).
    - a missing path -> download `url` to `dest` (default: the spec path) when a URL is known and the network answers;
      otherwise FileNotFoundError naming the file, where to get it and which config key to set.
    """
    return resolve_weights_sha256(spec, expected_sha256, name, url, dest)[0]


def resolve_weights_sha256(
    spec: str,
    expected_sha256: str | None,
    name: str,
    url: str | None = None,
    dest: str | os.PathLike | None = None,
) -> tuple[Path | None, str | None]:
    """`resolve_weights`, also returning the file's sha256 (None for random weights).

    The file is hashed exactly once, to verify it, and that hash is returned, so that a caller records it (e.g. in
    the store attributes, `weights_attrs`) without reading a multi-GB file a second time.
    """
    assert isinstance(spec, str) and spec, f"{name}: weights spec must be 'random' or a path, got {spec!r}"
    if spec == RANDOM:
        return None, None
    path = Path(spec).expanduser()
    if path.exists():
        return path, verify_sha256(path, expected_sha256, name)
    if name == "vggish_savedmodel" and url is None:
        return _fetch_savedmodel(spec, expected_sha256, Path(dest) if dest is not None else path)
    url = url if url is not None else (SOURCES[name].url if name in SOURCES else None)
    if url is None:
        raise FileNotFoundError(_missing_message(spec, name, url, "no direct download URL is known"))
    target = Path(dest) if dest is not None else path
    try:
        return _download(url, target, expected_sha256, name)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise FileNotFoundError(_missing_message(spec, name, url, f"download from {url} failed: {e}")) from e


def _fetch_savedmodel(spec: str, expected_sha256: str | None, dest: Path) -> tuple[Path, str]:
    """The VGGish SavedModel has no single-file URL: tensorflow_hub resolves (downloads) the TF-Hub handle."""
    try:
        from .vggish.tfhub import TFHUB_HANDLE, download_savedmodel

        download_savedmodel(dest, TFHUB_HANDLE)
    except Exception as e:  # offline, hub not installed, Kaggle unreachable: all mean "get it yourself"
        raise FileNotFoundError(
            _missing_message(spec, "vggish_savedmodel", None, f"tensorflow_hub download failed: {e}")
        ) from e
    try:
        sha = verify_sha256(dest, expected_sha256, "vggish_savedmodel")
    except ValueError:
        shutil.rmtree(dest, ignore_errors=True)  # never leave an unverified model where the config points
        raise
    return dest, sha


@dataclass(frozen=True)
class ExtractorWeights:
    """An extractor's ``weights`` / ``sha256`` / ``seed`` keys resolved: the verified file (None for seeded random
    weights), its sha256 and the ``weights`` record of the store's attributes."""

    path: Path | None
    sha256: str | None
    attrs: dict

    @property
    def random(self) -> bool:
        return self.path is None


def resolve_extractor_weights(spec: str, sha256: str | None, seed: int, name: str) -> ExtractorWeights:
    """`resolve_weights_sha256` + `weights_attrs` for an extractor config (the seed is recorded for random weights
    only): a missing file, a failed download or a checksum mismatch fails here, naming the file and the config key."""
    path, sha = resolve_weights_sha256(spec, sha256, name)
    return ExtractorWeights(path, sha, weights_attrs(spec, path, seed if path is None else None, sha))


@contextlib.contextmanager
def reading_checkpoint(name: str, path: Path, what: str, errors: tuple[type[BaseException], ...] = (Exception,),
                       hint: str = ""):
    """Re-raise a failure (one of `errors`) to read `path` as a ValueError naming the file and what it should hold;
    `hint` (how to fix it) is appended to the message."""
    try:
        yield
    except errors as e:
        raise ValueError(f"{name}: cannot read {path} as {what} ({type(e).__name__}: {e}){hint}") from e


def weights_attrs(spec: str, path: Path | None, seed: int | None, sha256: str | None = None) -> dict:
    """The `weights` record stored in feature-store attributes (source, sha256, random, seed).

    Pass the `sha256` that `resolve_weights_sha256` returned: without it the file is hashed again here.
    """
    if path is None:
        return {"source": RANDOM, "sha256": None, "random": True, "seed": seed}
    return {"source": str(spec), "sha256": sha256 or sha256_path(path), "random": False, "seed": None}


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with a fixed torch RNG state and restore the caller's state afterwards.

    Random weights must not depend on how much randomness the caller consumed before (and must not perturb it),
    so that the same seed gives the same features in a test, in the demo and across shards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_state_dict_file(path: Path, name: str) -> dict[str, torch.Tensor]:
    """torch.load a state dict on CPU with a clear error if the file is not one."""
    with reading_checkpoint(name, path, "a torch state dict"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{name}: {path} does not contain a state dict (dict of tensors)")
    return obj


# The unknown-key check of every config section (data_splits.common.check_keys), under the name that
# extractors/extract.py imports.


def init_random_(module: torch.nn.Module) -> None:
    """Variance-preserving random init (He normal, zero bias) for conv/linear layers.

    PyTorch's default init shrinks activations layer by layer in these deep ReLU stacks, so random-weight features
    would be nearly constant; He init keeps them O(1) and informative enough for tests and the demo.
    """
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d | torch.nn.Linear):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)


@contextlib.contextmanager
def cuda_precision(device: torch.device, allow_tf32: bool, autocast: str = "none"):
    """Numerics of a forward pass on `device`, with the process-global flags restored afterwards.

    cuDNN runs fp32 convolutions in TF32 by default on Ampere+ GPUs (~1e-3 relative error, enough to flip uint8 VGGish
    codes); `allow_tf32=False` keeps fp32 exact. `autocast` ("bf16" | "fp16") is applied here on CUDA only and this
    is a no-op on CPU, where C3D runs a bf16 copy of itself instead (`c3d.VideoExtractor`). cuDNN benchmark mode is
    on, since clip/example shapes are fixed.
    """
    if device.type != "cuda":
        yield
        return
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.benchmark = True
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)
    try:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            yield
    finally:
        (
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) = saved


def main(argv: list[str] | None = None) -> int:
    """`python -m extractors.weights NAME PATH [--sha256 HEX] [--url URL]`: make sure a weight file is present.

    For the pipeline's `weights` rule: verifies an existing file, downloads a missing one when a URL is known and the
    network answers, and otherwise exits 1 with the message that says where to get it and where to put it.
    """
    import argparse

    p = argparse.ArgumentParser(description="Verify or fetch a weight file.")
    p.add_argument("name", choices=sorted(SOURCES), help="which weight file")
    p.add_argument("path", help="where the file is expected (downloaded there when missing)")
    p.add_argument("--sha256", default=None)
    p.add_argument("--url", default=None, help="override the download URL")
    a = p.parse_args(argv)
    try:
        path, sha = resolve_weights_sha256(a.path, a.sha256, a.name, url=a.url)
    except (FileNotFoundError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{a.name}: {path} sha256 {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
