# Feature extraction, scattered over shards of the manifest (one job and one Zarr store per shard, so no
# store ever has two writers), then gathered into the dataset's store by one assembling job.
#
# Each store is declared as a directory() output (Snakemake deletes it before the job and removes it when
# the job fails); the writer builds it under <store>.tmp-<pid> and renames it into place. Its .tsv sidecar
# (one row per video: status, token counts) is written with it and is what downstream rules depend on.

# With features.source: released, released.smk writes the same store instead (no raw video, no weights).

# Decoder processes (extract.decoders) run beside the networks: an explicit count asks for one core each plus one for
# the networks; "auto" sizes the pool from the cores the job gets. The count changes speed, never the features, so
# it is no parameter of the shard's content (the script reads it from the config).
EXTRACT_DECODERS = config["extract"].get("decoders", "auto")
EXTRACT_THREADS = 4 if EXTRACT_DECODERS in ("auto", 0) else max(4, int(EXTRACT_DECODERS) + 1)
# A GPU is requested unless the config pins extraction to the CPU ("auto" uses the GPU the job is given).
EXTRACT_GPUS = 0 if str(config["extract"].get("device", "auto")) == "cpu" else 1

if FEATURE_SOURCE == "extract":

    rule extract_shard:
        input:
            manifest="results/manifest/{dataset}.tsv",
            # Verified weight files (weights.smk); none with random weights. The shards read the files themselves.
            weights=get_weight_records,
        output:
            store=directory("results/features/{dataset}/shards/{scatteritem}.zarr"),
            table="results/features/{dataset}/shards/{scatteritem}.tsv",
        params:
            extract={key: value for key, value in get_extract_params().items() if key != "decoders"},
            dataset=DATASET,
        log:
            "logs/extract/{dataset}/{scatteritem}.log",
        benchmark:
            "benchmarks/extract/{dataset}-{scatteritem}.tsv"
        threads: EXTRACT_THREADS
        resources:
            # Each decoder process holds its own torch and FFmpeg (~300 MB) and its shared buffers.
            mem_mb=lambda wildcards, threads: 6000 + 500 * threads,
            runtime=240,
            gpu=EXTRACT_GPUS,
        script:
            "../scripts/extract_shard.py"


    rule assemble_features:
        input:
            manifest="results/manifest/{dataset}.tsv",
            stores=gather.extract("results/features/{{dataset}}/shards/{scatteritem}.zarr"),
            tables=gather.extract("results/features/{{dataset}}/shards/{scatteritem}.tsv"),
        output:
            store=directory("results/features/{dataset}/features.zarr"),
            table="results/features/{dataset}/features.tsv",
        log:
            "logs/extract/{dataset}/assemble.log",
        benchmark:
            "benchmarks/extract/{dataset}-assemble.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=120,
        script:
            "../scripts/assemble_features.py"
