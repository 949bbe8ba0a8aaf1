# Generalised zero-shot evaluation on stage_2_test_seen + stage_2_test_unseen with calibrated stacking
# (the bias selected in stage 1): S, U, HM and ZSL as JSON and as a Markdown table. Both say when the
# features came from random-weight extractors.
# `gpu=1` is what Snakemake counts against `--resources gpu=N`; which GPU a job uses, it finds itself
# (train.device auto/cuda: SLURM's allocation, else the first free per-GPU slot lock, data_splits/devices.py).


rule evaluate:
    input:
        unpack(get_model_inputs),
        stage1="results/train/{dataset}/{split_kind}/{model}/stage1/stage1.json",
        final="results/train/{dataset}/{split_kind}/{model}/stage2/final.pt",
    output:
        metrics="results/evaluate/{dataset}/{split_kind}/{model}/metrics.json",
        table="results/evaluate/{dataset}/{split_kind}/{model}/metrics.md",
    params:
        experiment=get_experiment_params,
    log:
        "logs/evaluate/{dataset}/{split_kind}/{model}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}-{split_kind}-{model}.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1,
    script:
        "../scripts/evaluate.py"
