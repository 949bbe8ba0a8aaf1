# Zero-shot prediction on a folder of videos with class names of the user's choosing (model/predict.py,
# docs/predict.md). The videos go through the same sharded extraction as the training data, with the training
# store's settings:
#
#   predict_manifest ──> predict_extract_shard × N ──> predict_assemble ──> predict_rank (one job per model)
#                        (scatter)                      (gather)
#
# Each shard job rebuilds the extractors from the attributes of the model's training store and runs the training
# data's extractors.extract.extract_shard, for the store groups the models read (VGGish/C3D, CLIP/CLAP or both:
# features.methods); the ranking job checks the assembled store against each model's training store for its own
# groups (any difference is an error naming both) and ranks with the class vectors the model was trained with
# (ClipClap's for CLIP/CLAP models). Outputs: results/predict/<name>/<model>/. The predictions are in
# the default target when predict.videos and predict.classes are set; for the demo they default to its held-out
# videos and class list (a class list with names never trained on). `snakemake predict` asks for them alone and
# fails before any job, naming the keys, when they are unknown.

from model.predict import WorkflowSettings, demo_heldout_defaults

# For the demo, predict.videos and predict.classes default to its held-out set when the demo rule makes one.
PREDICT = WorkflowSettings(
    config["predict"],
    DATASET,
    SPLIT_KIND,
    MODELS,
    get_n_shards(),
    defaults=demo_heldout_defaults({str(path) for path in rules.demo.output} if is_demo() else set()),
    features={m: get_method_features(m) for m in MODELS},
    class_embeddings={m: get_class_embeddings_path(DATASET, get_method_features(m)) for m in MODELS},
)


# --set-scatter predict=N retunes it per run, as extract=N does for the training data.
scattergather:
    predict=PREDICT.n_shards,


rule predict_manifest:
    input:
        unpack(lambda wildcards: PREDICT.manifest_inputs()),
    output:
        manifest=f"{PREDICT.out_dir}/manifest.tsv",
    log:
        f"logs/predict/{PREDICT.name}/manifest.log",
    benchmark:
        f"benchmarks/predict/{PREDICT.name}-manifest.tsv"
    threads: 4
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../scripts/predict_manifest.py"


rule predict_extract_shard:
    input:
        unpack(lambda wildcards: PREDICT.shard_inputs()),
    output:
        store=directory(f"{PREDICT.out_dir}/shards/{{scatteritem}}.zarr"),
        table=f"{PREDICT.out_dir}/shards/{{scatteritem}}.tsv",
    params:
        training_store=lambda wildcards: PREDICT.training_store,
        model=lambda wildcards: PREDICT.reference_model,
        # the groups the models of predict.model read (null: every group of the training store)
        streams=lambda wildcards: PREDICT.streams,
        device=config["extract"].get("device", "auto"),
    log:
        f"logs/predict/{PREDICT.name}/extract-{{scatteritem}}.log",
    benchmark:
        f"benchmarks/predict/{PREDICT.name}-extract-{{scatteritem}}.tsv"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    script:
        "../scripts/predict_extract_shard.py"


rule predict_assemble:
    input:
        manifest=f"{PREDICT.out_dir}/manifest.tsv",
        stores=gather.predict(f"{PREDICT.out_dir}/shards/{{scatteritem}}.zarr"),
        tables=gather.predict(f"{PREDICT.out_dir}/shards/{{scatteritem}}.tsv"),
    output:
        store=directory(f"{PREDICT.out_dir}/features.zarr"),
        table=f"{PREDICT.out_dir}/features.tsv",
    log:
        f"logs/predict/{PREDICT.name}/assemble.log",
    benchmark:
        f"benchmarks/predict/{PREDICT.name}-assemble.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        # the training data's assembly script: every listed video in exactly one shard, the settings checked
        "../scripts/assemble_features.py"


rule predict_rank:
    input:
        unpack(lambda wildcards: PREDICT.rank_inputs(wildcards.pmodel)),
    output:
        csv=f"{PREDICT.out_dir}/{{pmodel}}/predictions.csv",
        json=f"{PREDICT.out_dir}/{{pmodel}}/predictions.json",
        html=report(
            f"{PREDICT.out_dir}/{{pmodel}}/predictions.html",
            caption="../report/predictions.rst",
            category="Predictions",
            subcategory="{pmodel}",
        ),
        windows=(f"{PREDICT.out_dir}/{{pmodel}}/windows.csv" if PREDICT.windows["windows"] else []),
    params:
        model=lambda wildcards: PREDICT.model_paths[wildcards.pmodel],
        class_embeddings=lambda wildcards: PREDICT.class_embeddings_of(wildcards.pmodel),
        videos=PREDICT.videos,
        calibrate=config["predict"]["calibrate"],
        top_k=config["predict"]["top_k"],
        windows=PREDICT.windows,
        device=config["extract"].get("device", "auto"),
    log:
        f"logs/predict/{PREDICT.name}/{{pmodel}}.log",
    benchmark:
        f"benchmarks/predict/{PREDICT.name}-{{pmodel}}.tsv"
    wildcard_constraints:
        pmodel="|".join(map(re.escape, PREDICT.model_paths)) if PREDICT.enabled else "(?!)",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    script:
        "../scripts/predict.py"


rule predict:
    localrule: True
    input:
        lambda wildcards: PREDICT.target_inputs(),
