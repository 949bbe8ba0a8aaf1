# One vector per class from its readable name (the `manual` column of <ds>_w2v_class_names.csv, carried
# into classes.tsv), with the configured backend: sentence_transformers (all-MiniLM-L6-v2, offline),
# fasttext, word2vec, the benchmark's own released vectors (official), or ClipClap-GZSL's prompt ensembles
# with CLIP / WavCaps CLAP text encoders (clip, clap, clipclap; docs/clip_clap.md). Row i = class id i.


rule class_embeddings:
    input:
        classes=get_classes_tsv,
        provenance=get_official_provenance(),
        models=get_class_embedding_files,
    output:
        vectors="results/class_embeddings/{dataset}.npz",
        meta="results/class_embeddings/{dataset}.json",
    params:
        dataset=DATASET,
        class_embeddings=config["class_embeddings"],
    log:
        "logs/class_embeddings/{dataset}.log",
    benchmark:
        "benchmarks/class_embeddings/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/class_embeddings.py"


# ClipClap's class vectors for methods trained on CLIP/CLAP features (features.methods, docs/clip_clap.md) when the
# configured backend is another one: the clipclap backend with the same section's clip_* / clap_* / templates /
# names_csv keys, beside the configured backend's file (whose path and checksum keys are not used here).

rule class_embeddings_clipclap:
    input:
        classes=get_classes_tsv,
        provenance=get_official_provenance(),
        models=get_class_embedding_files,
    output:
        vectors="results/class_embeddings/{dataset}.clipclap.npz",
        meta="results/class_embeddings/{dataset}.clipclap.json",
    params:
        dataset=DATASET,
        class_embeddings={**config["class_embeddings"], "backend": "clipclap", "path": None, "sha256": None},
    log:
        "logs/class_embeddings/{dataset}.clipclap.log",
    benchmark:
        "benchmarks/class_embeddings/{dataset}.clipclap.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/class_embeddings.py"
