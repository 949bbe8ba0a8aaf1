# Zero-shot prediction on a folder of the user's own videos with class names of their choosing (model/predict.py,
# docs/predict.md): features extracted with exactly the training store's settings (one extraction job, inside
# this rule), class names embedded with the training run's text backend, classes ranked by a trained model.
# Not part of the default target: `snakemake --cores N predict` with the config keys predict.videos and
# predict.classes set (predict.model defaults to the first of `models`); without them the rule fails before any
# job, naming the keys (model.predict.WorkflowSettings.inputs).

from model.predict import WorkflowSettings

PREDICT = WorkflowSettings(config.get("predict") or {}, DATASET, SPLIT_KIND, MODELS)


rule predict:
    input:
        unpack(lambda wildcards: PREDICT.inputs()),
    output:
        csv=f"{PREDICT.out_dir}/predictions.csv",
        json=f"{PREDICT.out_dir}/predictions.json",
        html=f"{PREDICT.out_dir}/predictions.html",
        features=directory(f"{PREDICT.out_dir}/features.zarr"),
    params:
        model=lambda wildcards: PREDICT.model,
        calibrate=PREDICT.predict.get("calibrate", True),
        top_k=PREDICT.predict.get("top_k", 5),
        device=config["extract"].get("device", "auto"),
    log:
        f"logs/predict/{PREDICT.name}.log",
    benchmark:
        f"benchmarks/predict/{PREDICT.name}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    script:
        "../scripts/predict.py"
