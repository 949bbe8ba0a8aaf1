"""Class embeddings: benchmark fastText method, word2vec, MiniLM, official vectors aligned by name."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from data_splits.build import build_splits
from data_splits.class_embeddings import (
    EmbeddingConfig,
    EmbeddingError,
    build_class_embeddings,
    embed_class_names,
    reference_permutation,
)
from data_splits.io import read_class_embeddings, read_classes

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "avgzsl-official"
needs_official = pytest.mark.usefixtures("official_lists")  # conftest: skips locally, fails on CI
NPZ = {
    "ucf": "UCF/class-split/word_embeddings_ucf_normed.npz",
    "vggsound": "VGGSound/class-split/word_embeddings_vggsound_normed.npz",
    "activitynet": "ActivityNet/class-split/word_embeddings_activity_normed.npz",
}

CORPUS = [
    "apply eye makeup with a brush before the show",
    "the archer practises archery every morning",
    "a dog is barking at the puppy in the yard",
    "she is playing the violin and the cello",
    "people are playing guitar and playing drums",
] * 20


@pytest.fixture(scope="module")
def classes_tsv(tmp_path_factory):
    """classes.tsv of each dataset, built once from the official lists."""
    root = tmp_path_factory.mktemp("classes")
    return {ds: build_splits(ds, OFFICIAL, root / ds, "cls").out_dir / "classes.tsv" for ds in NPZ}


def fasttext_subword_buckets(phrase: str, minn: int, maxn: int, bucket: int) -> list[int]:
    """fastText's own subword rule (Dictionary::computeSubwords, FNV-1a hash), written out for ASCII text.

    Independent of gensim, so the test checks that the backend really follows fastText for phrases.
    """
    word = f"<{phrase}>"
    out = []
    for i in range(len(word)):
        for n in range(1, maxn + 1):
            if i + n > len(word):
                break
            if n >= minn and not (n == 1 and (i == 0 or i + n == len(word))):
                h = 2166136261
                for byte in word[i : i + n].encode():
                    h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
                out.append(h % bucket)
    return out


@pytest.fixture(scope="module")
def fasttext_bin(tmp_path_factory) -> Path:
    """A tiny fastText model trained with gensim, saved in Facebook's .bin format (300-d like wiki.en)."""
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    model = FastText(vector_size=300, window=3, min_count=1, min_n=3, max_n=6, bucket=5000, epochs=2,
                     workers=1, seed=0)
    sentences = [s.split() for s in CORPUS]
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=model.epochs)
    path = tmp_path_factory.mktemp("ft") / "tiny.bin"
    save_facebook_model(model, str(path))
    return path


def test_fasttext_embeds_whole_phrase_through_oov_ngrams(fasttext_bin):
    from gensim.models.fasttext import load_facebook_vectors

    phrases = ["Apply Eye Makeup", "Archery", "archery", "Playing Violin"]
    vecs = embed_class_names(phrases, EmbeddingConfig(backend="fasttext", path=str(fasttext_bin)))
    assert vecs.shape == (4, 300) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)

    kv = load_facebook_vectors(str(fasttext_bin))
    # A phrase with spaces is one out-of-vocabulary "word": the mean of the hashed character n-grams of
    # "<Apply Eye Makeup>" (n = 3..6, n-grams spanning the spaces included), then L2-normalised.
    assert "Apply Eye Makeup" not in kv.key_to_index
    hashes = fasttext_subword_buckets("Apply Eye Makeup", 3, 6, kv.bucket)
    assert len(hashes) == sum(len("<Apply Eye Makeup>") - n + 1 for n in range(3, 7))
    manual = kv.vectors_ngrams[hashes].mean(axis=0)
    np.testing.assert_allclose(vecs[0], manual / np.linalg.norm(manual), rtol=1e-5, atol=1e-6)
    # ...which is not what a word-by-word average would give.
    words = np.mean([kv.get_vector(w) for w in ["Apply", "Eye", "Makeup"]], axis=0)
    assert abs(float(vecs[0] @ (words / np.linalg.norm(words)))) < 0.999
    # An in-vocabulary word uses fastText's word+n-gram vector; case is kept (Archery is OOV, archery is not).
    assert "archery" in kv.key_to_index and "Archery" not in kv.key_to_index
    np.testing.assert_allclose(vecs[2], kv.get_vector("archery") / np.linalg.norm(kv.get_vector("archery")),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(vecs[1], vecs[2])


def test_word2vec_mean_of_word_vectors(tmp_path):
    from gensim.models import KeyedVectors

    rng = np.random.default_rng(0)
    kv = KeyedVectors(vector_size=8)
    words = ["dog", "barking", "violin", "playing"]
    kv.add_vectors(words, rng.normal(size=(4, 8)).astype(np.float32))
    path = tmp_path / "w2v.bin"
    kv.save_word2vec_format(str(path), binary=True)
    cfg = {"backend": "word2vec", "path": str(path)}
    vecs = embed_class_names(["Dog barking", "playing violin"], cfg)
    want = (kv["dog"] + kv["barking"]) / 2
    np.testing.assert_allclose(vecs[0], want / np.linalg.norm(want), rtol=1e-5)
    with pytest.raises(EmbeddingError, match="no word of class phrase 'zither'"):
        embed_class_names(["zither"], cfg)


@needs_official
@pytest.mark.parametrize("dataset", list(NPZ))
def test_official_vectors_align_to_class_list_by_name(tmp_path, classes_tsv, dataset):
    out = build_class_embeddings(classes_tsv[dataset], tmp_path / f"{dataset}.npz",
                                 {"backend": "official"}, dataset=dataset, official_dir=OFFICIAL)
    emb = read_class_embeddings(out)
    classes = read_classes(classes_tsv[dataset])
    assert emb.names == [c.name for c in classes]  # row i = class id i
    assert emb.vectors.shape == (len(classes), 300)
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-6)
    with np.load(OFFICIAL / NPZ[dataset]) as z:
        table = dict(zip(z["names"].tolist(), z["vectors"], strict=True))
    for c, row in zip(classes, emb.vectors, strict=True):
        assert np.array_equal(row, table[c.readable_name]), c.name
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backend"] == "official" and meta["dim"] == 300 and len(meta["model_sha256"]) == 64


@needs_official
@pytest.mark.parametrize(("dataset", "n_permuted"), [("ucf", 79), ("vggsound", 205), ("activitynet", 8)])
def test_reference_permutation_differs_from_alignment_by_name(tmp_path, classes_tsv, dataset, n_permuted):
    """TCAF spec 2.5: the reference indexes the phrase-sorted vectors with class ids. We align by name."""
    classes = read_classes(classes_tsv[dataset])
    readable = [c.readable_name for c in classes]
    perm = reference_permutation(readable)
    assert int((perm != np.arange(len(classes))).sum()) == n_permuted
    out = build_class_embeddings(classes_tsv[dataset], tmp_path / "e.npz", {"backend": "official"},
                                 dataset=dataset, official_dir=OFFICIAL)
    emb = read_class_embeddings(out)
    reference = emb.vectors[perm]
    by_id = {c.name: i for i, c in enumerate(classes)}
    if dataset == "ucf":
        # CuttingInKitchen gets its own "Cut Kitchen" vector here, "Diving"'s in the reference.
        k = by_id["CuttingInKitchen"]
        assert emb.readable_names[k] == "Cut Kitchen"
        assert np.array_equal(reference[k], emb.aligned(["Diving"])[0])
        assert not np.array_equal(reference[k], emb.vectors[k])
    assert int(sum(not np.array_equal(a, b) for a, b in zip(reference, emb.vectors, strict=True))) == n_permuted


def test_official_npy_dict_and_lookup_errors(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(3, 300)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    table = {"red apple": vecs[0], "kiwi fruit": vecs[1], "ripe mango": vecs[2]}
    buf = io.BytesIO()
    np.save(buf, table)
    (tmp_path / "w.npy").write_bytes(buf.getvalue())
    cfg = {"backend": "official", "path": str(tmp_path / "w.npy")}
    got = embed_class_names(["ripe mango", "red apple"], cfg)
    assert np.array_equal(got, vecs[[2, 0]])
    with pytest.raises(EmbeddingError, match="no vector for 1 class phrase"):
        embed_class_names(["durian"], cfg)
    with pytest.raises(EmbeddingError, match="does not exist"):
        embed_class_names(["x"], {"backend": "official", "path": str(tmp_path / "nope.npz")})
    with pytest.raises(ValueError, match="backend"):
        EmbeddingConfig(backend="glove")
    with pytest.raises(ValueError, match="unknown key"):
        EmbeddingConfig.from_dict({"backend": "official", "dims": 3})


def test_aligned_lookup_is_by_name(tmp_path):
    from data_splits.io import write_class_embeddings

    vecs = np.eye(3, dtype=np.float32)
    write_class_embeddings(tmp_path / "e.npz", ["b", "a", "c"], ["B", "A", "C"], vecs, {"backend": "test"})
    emb = read_class_embeddings(tmp_path / "e.npz")
    assert np.array_equal(emb.aligned(["a", "b", "c"]), vecs[[1, 0, 2]])
    assert emb.meta == {"backend": "test"}
    with pytest.raises(KeyError, match="lack 1 class"):
        emb.aligned(["a", "z"])


@pytest.mark.slow
def test_minilm_default_backend_is_384d_normalised_and_sensible():
    vecs = embed_class_names(["dog barking", "puppy yapping", "playing violin"], {"backend": "sentence_transformers"})
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert float(vecs[0] @ vecs[1]) > float(vecs[0] @ vecs[2]) + 0.1


# ---------------------------------------------------------------------------------- ClipClap's CLIP / CLAP vectors

PHRASES = ["Apply Eye Makeup", "Playing Violin", "Dog Barking"]
# OpenAI's CLIP files are TorchScript archives; torch 2.11 deprecates the API that reads them.
JIT_DEPRECATED = "ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning"


@pytest.fixture(scope="module")
def prompt_models(tmp_path_factory):
    """A tiny OpenAI-format CLIP archive, a tiny WavCaps checkpoint with BERT, and a BERT vocab.txt for it."""
    import torch
    from test_extract_nets_clap import tiny_state_dict
    from test_extract_nets_clip import tiny_openai_clip, write_openai_archive

    from data_splits.class_embeddings import TEMPLATES

    root = tmp_path_factory.mktemp("prompt_models")
    words = {w.strip(".").lower() for t in TEMPLATES["clap"]["ucf"] + TEMPLATES["clap"]["vggsound"] for w in t.split()}
    words |= {w.lower() for p in PHRASES for w in p.split()}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *sorted(words - {"{}"})]
    vocab_txt = root / "vocab.txt"
    vocab_txt.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    clip_model = tiny_openai_clip()
    clip_pt = write_openai_archive(clip_model.state_dict(), root / "ViT-B-32.pt")
    sd = tiny_state_dict(vocab_size=len(vocab))
    wavcaps = root / "HTSAT_BERT_zero_shot.pt"
    torch.save({"model": sd}, wavcaps)
    return {"clip_model": clip_model, "clip": clip_pt, "wavcaps_sd": sd, "wavcaps": wavcaps, "vocab": vocab_txt}


def prompt_cfg(models, backend, **kw):
    return {
        "backend": backend,
        "clip_weights": str(models["clip"]),
        "clap_weights": str(models["wavcaps"]),
        "clap_vocab": str(models["vocab"]),
        **kw,
    }


@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_clipclap_templates_per_dataset():
    from data_splits.class_embeddings import TEMPLATES, EmbeddingConfig, template_set

    assert [len(TEMPLATES["clip"][d]) for d in ("ucf", "activitynet", "vggsound")] == [48, 48, 8]
    assert [len(TEMPLATES["clap"][d]) for d in ("ucf", "activitynet", "vggsound")] == [30, 30, 9]
    assert TEMPLATES["clip"]["ucf"][:2] == ("a photo of a person {}.", "a video of a person {}.")
    assert TEMPLATES["clip"]["ucf"][-1] == "a demonstration of the person practicing {}."
    assert "a photo of the person {}." in TEMPLATES["clip"]["vggsound"]  # as in the reference list
    assert "a person during {} can be heard." not in TEMPLATES["clap"]["ucf"]  # the reference skips it
    assert TEMPLATES["clap"]["vggsound"][-1] == "a demonstration of {} can be heard."
    for part in ("clip", "clap"):
        for ts in TEMPLATES[part].values():
            assert len(set(ts)) == len(ts) and all(t.count("{}") == 1 for t in ts)
    cfg = EmbeddingConfig(backend="clip")
    assert [template_set(cfg, d) for d in ("ucf", "activitynet", "vggsound", "demo")] == [
        "ucf", "activitynet", "vggsound", "vggsound"]
    assert template_set(EmbeddingConfig(backend="clip", templates="none"), "ucf") == "none"
    with pytest.raises(ValueError, match="class_embeddings.templates"):
        EmbeddingConfig(backend="clip", templates="kinetics")


@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_clip_backend_is_the_normalised_mean_of_normalised_prompts(prompt_models):
    import open_clip
    import torch

    from data_splits.class_embeddings import TEMPLATES

    vecs = embed_class_names(PHRASES, prompt_cfg(prompt_models, "clip"), dataset="vggsound")
    assert vecs.shape == (3, 16) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    model = prompt_models["clip_model"]
    for phrase, row in zip(PHRASES, vecs, strict=True):
        with torch.no_grad():
            e = model.encode_text(open_clip.tokenize([t.format(phrase) for t in TEMPLATES["clip"]["vggsound"]]))
        e = torch.nn.functional.normalize(e, dim=-1).mean(0)
        np.testing.assert_allclose(row, (e / e.norm()).numpy(), rtol=1e-4, atol=1e-6)
    plain = embed_class_names(PHRASES, prompt_cfg(prompt_models, "clip", templates="none"))
    assert not np.allclose(plain, vecs)  # the prompts matter


@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_clap_backend_is_wavcaps_bert_cls_projection(prompt_models):
    import torch
    from test_extract_nets_clap import TINY_BERT
    from transformers import BertConfig, BertModel, BertTokenizer

    from data_splits.class_embeddings import TEMPLATES

    vecs = embed_class_names(PHRASES, prompt_cfg(prompt_models, "clap"), dataset="ucf")
    assert vecs.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    sd = prompt_models["wavcaps_sd"]
    tok = BertTokenizer(str(prompt_models["vocab"]))
    bert = BertModel(BertConfig(**TINY_BERT, vocab_size=len(tok)), add_pooling_layer=False).eval()
    bert.load_state_dict({k[len("text_encoder.text_encoder."):]: v for k, v in sd.items()
                          if k.startswith("text_encoder.text_encoder.")}, strict=False)
    for phrase, row in zip(PHRASES, vecs, strict=True):
        t = tok([x.format(phrase) for x in TEMPLATES["clap"]["ucf"]], padding="longest", truncation=True,
                max_length=30, return_tensors="pt")
        with torch.no_grad():
            cls = bert(input_ids=t.input_ids, attention_mask=t.attention_mask)[0][:, 0]
            h = torch.relu(cls @ sd["text_proj.0.weight"].T + sd["text_proj.0.bias"])
            e = torch.nn.functional.normalize(h @ sd["text_proj.2.weight"].T + sd["text_proj.2.bias"], dim=-1)
        m = e.mean(0)
        np.testing.assert_allclose(row, (m / m.norm()).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_clipclap_build_concatenates_unit_parts_and_renames(tmp_path, prompt_models):
    classes = tmp_path / "classes.tsv"
    classes.write_text("class_id\tname\treadable_name\n0\tPushUps\tPushups\n1\tYoYo\tYoYo\n", encoding="utf-8")
    names = tmp_path / "ucf_clip_class_names.csv"
    names.write_text("original,manual,clip_class_name\nPushUps,Pushups,Push Ups\nYoYo,YoYo,Yo Yo\n", encoding="utf-8")
    cfg = prompt_cfg(prompt_models, "clipclap", names_csv=str(names))
    out = build_class_embeddings(classes, tmp_path / "ucf.npz", cfg, dataset="ucf")
    emb = read_class_embeddings(out)
    assert emb.vectors.shape == (2, 16 + 32) and emb.readable_names == ["Push Ups", "Yo Yo"]
    np.testing.assert_allclose(np.linalg.norm(emb.vectors[:, :16], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb.vectors[:, 16:], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(emb.vectors[:, :16], embed_class_names(["Push Ups", "Yo Yo"], {
        **prompt_cfg(prompt_models, "clip")}, dataset="ucf"), rtol=1e-6)
    meta = emb.meta
    assert meta["backend"] == "clipclap" and meta["dim"] == 48 and len(meta["templates"]["clip"]) == 48
    assert len(meta["templates"]["clap"]) == 30 and set(meta["model_sha256"]) == {"clip_weights", "clap_weights",
                                                                                 "clap_vocab"}
    assert all(len(v) == 64 for v in meta["model_sha256"].values())
    with pytest.raises(EmbeddingError, match="no row for class"):
        names.write_text("original,clip_class_name\nPushUps,Push Ups\n", encoding="utf-8")
        build_class_embeddings(classes, tmp_path / "x.npz", cfg, dataset="ucf")


@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_prompt_backends_name_missing_weights(tmp_path, prompt_models):
    with pytest.raises(EmbeddingError, match=r"(?s)class_embeddings.clip_weights is not set.*ViT-B-32.pt"):
        embed_class_names(PHRASES, {"backend": "clip"})
    missing = {**prompt_cfg(prompt_models, "clap"), "clap_weights": str(tmp_path / "HTSAT_BERT_zero_shot.pt")}
    with pytest.raises(EmbeddingError, match=r"(?s)class_embeddings.clap_weights: .*not found.*WavCaps"):
        embed_class_names(PHRASES, missing)
    with pytest.raises(EmbeddingError, match="clap_vocab is not set"):
        embed_class_names(PHRASES, {**prompt_cfg(prompt_models, "clap"), "clap_vocab": None})
    with pytest.raises(EmbeddingError, match="sha256"):
        embed_class_names(PHRASES, {**prompt_cfg(prompt_models, "clap"), "clap_sha256": "0" * 64})
    with pytest.raises(ValueError, match="not path"):
        EmbeddingConfig.from_dict({"backend": "clipclap", "path": "x"})
