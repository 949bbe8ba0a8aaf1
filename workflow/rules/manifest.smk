# Inputs of the pipeline: the benchmark's official lists (copied from official.local_dir, or downloaded at
# pinned commits and checked against their sha256) and the manifest of every listed video in the raw folder.


rule official_lists:
    input:
        unpack(get_dataset_inputs),
    output:
        provenance=get_official_provenance(),
    params:
        dataset=DATASET,
        official=get_official_params(),
    log:
        "logs/official/{dataset}.log",
    # Local: a download needs the network, which cluster compute nodes often lack; and it takes seconds.
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    script:
        "../scripts/official_lists.py"


# Probes every expected video with PyAV (duration, fps, streams) and records a status per video; nothing is
# dropped: rows for missing or broken files stay in the manifest with the reason.
rule manifest:
    input:
        unpack(get_dataset_inputs),
        provenance=get_official_provenance(),
    output:
        manifest="results/manifest/{dataset}.tsv",
    params:
        manifest=get_manifest_params(),
    log:
        "logs/manifest/{dataset}.log",
    benchmark:
        "benchmarks/manifest/{dataset}.tsv"
    threads: 4
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../scripts/manifest.py"
