# Feature extraction, scattered over shards of the manifest (one job and one Zarr store per shard, so no
# store ever has two writers), then gathered into the dataset's store by one assembling job.
#
# Each store is declared as a directory() output (Snakemake deletes it before the job and removes it when
# the job fails); the writer builds it under <store>.tmp-<pid> and renames it into place. Its .tsv sidecar
# (one row per video: status, token counts) is written with it and is what downstream rules depend on.

# With features.source: released, released.smk writes the same store instead (no raw video, no weights).

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
            extract=get_extract_params(),
            dataset=DATASET,
        log:
            "logs/extract/{dataset}/{scatteritem}.log",
        benchmark:
            "benchmarks/extract/{dataset}-{scatteritem}.tsv"
        threads: 4
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=1,
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
