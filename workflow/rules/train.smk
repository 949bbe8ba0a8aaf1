# The two-stage protocol, once per method of 'models' (the {model} wildcard). Stage 1 trains on
# stage_1_train and selects the epoch (and calibration bias) on stage_1_val_seen/unseen; stage 2 retrains
# from scratch on stage_2_train for that many epochs.
# `gpu=1` is what Snakemake counts against `--resources gpu=N`; which GPU a job uses, it finds itself
# (train.device auto/cuda: SLURM's allocation, else the first free per-GPU slot lock, data_splits/devices.py).
# The resumable checkpoint of a running job lives outside the declared outputs (Snakemake deletes
# outputs before a job starts); best.pt / final.pt are written once training is done.


rule train_stage1:
    input:
        unpack(get_model_inputs),
    output:
        best="results/train/{dataset}/{split_kind}/{model}/stage1/best.pt",
        history="results/train/{dataset}/{split_kind}/{model}/stage1/history.csv",
        summary="results/train/{dataset}/{split_kind}/{model}/stage1/stage1.json",
    params:
        experiment=get_experiment_params,
    log:
        "logs/train/{dataset}/{split_kind}/{model}/stage1.log",
    benchmark:
        "benchmarks/train/{dataset}-{split_kind}-{model}-stage1.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    script:
        "../scripts/train_stage1.py"


rule train_stage2:
    input:
        unpack(get_model_inputs),
        stage1="results/train/{dataset}/{split_kind}/{model}/stage1/stage1.json",
    output:
        final="results/train/{dataset}/{split_kind}/{model}/stage2/final.pt",
        history="results/train/{dataset}/{split_kind}/{model}/stage2/history.csv",
        summary="results/train/{dataset}/{split_kind}/{model}/stage2/stage2.json",
    params:
        experiment=get_experiment_params,
    log:
        "logs/train/{dataset}/{split_kind}/{model}/stage2.log",
    benchmark:
        "benchmarks/train/{dataset}-{split_kind}-{model}-stage2.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    script:
        "../scripts/train_stage2.py"
