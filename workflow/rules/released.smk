# The benchmark's released features and checkpoints (docs/released.md).
#
# import_released_features converts TCAF's per-class pickles or AVCA's per-class h5 files into the same
# Zarr store and sidecar table that extraction writes, so splits, training, evaluation, coverage and the
# report run unchanged; the store's attributes say where the features came from. evaluate_released scores
# the officially released TCAF run folders on that store as the official get_evaluation.py does.

if FEATURE_SOURCE == "released":

    rule import_released_features:
        input:
            released=get_released_files,
            # class ids and the lists the counts are taken against (either split kind has all classes)
            classes=get_classes_tsv,
            splits=get_import_split_files,
        output:
            store=directory("results/features/{dataset}/features.zarr"),
            table="results/features/{dataset}/features.tsv",
            summary="results/features/{dataset}/import.json",
        params:
            released=get_released_params(),
        log:
            "logs/import_released/{dataset}.log",
        benchmark:
            "benchmarks/import_released/{dataset}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=240,
        script:
            "../scripts/import_released.py"


rule evaluate_released:
    input:
        unpack(get_model_inputs),
        unpack(get_released_checkpoint_files),
    output:
        metrics="results/evaluate/{dataset}/{split_kind}/released/metrics.json",
        table="results/evaluate/{dataset}/{split_kind}/released/metrics.md",
    params:
        released=config["released_checkpoints"],
        experiment=get_tcaf_experiment_params(),
    log:
        "logs/evaluate/{dataset}/{split_kind}/released.log",
    benchmark:
        "benchmarks/evaluate/{dataset}-{split_kind}-released.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1,
    script:
        "../scripts/evaluate_released.py"
