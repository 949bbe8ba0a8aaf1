# What `snakemake --report` shows: the comparison of the run's methods (the paper's Table 1 layout, with the
# published numbers beside the measured ones, and a chart of HM and ZSL per method; model/compare.py), the
# training curves of each method (model/plots.py), and for the temporal methods the paper's Fig. 3 t-SNE
# (model/tsne.py): audio and visual input features next to the learnt test embeddings. The prediction pages of
# predict_rank (predict.smk; for the demo, its held-out videos) appear under "Predictions", one per method, with
# the caption workflow/report/predictions.rst.


rule compare:
    input:
        metrics=get_model_metrics,
    output:
        table=report(
            "results/report/{dataset}/{split_kind}/results.tsv",
            caption="../report/results.rst",
            category="Results",
        ),
        markdown="results/report/{dataset}/{split_kind}/results.md",
        chart=report(
            "results/report/{dataset}/{split_kind}/results.png",
            caption="../report/results_chart.rst",
            category="Results",
        ),
    log:
        "logs/report/{dataset}/{split_kind}/compare.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/compare.py"


rule training_curves:
    input:
        history1="results/train/{dataset}/{split_kind}/{model}/stage1/history.csv",
        history2="results/train/{dataset}/{split_kind}/{model}/stage2/history.csv",
    output:
        curves=report(
            "results/report/{dataset}/{split_kind}/{model}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="{model}",
        ),
    log:
        "logs/report/{dataset}/{split_kind}/{model}/training_curves.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/training_curves.py"


rule tsne:
    input:
        unpack(get_model_inputs),
        final="results/train/{dataset}/{split_kind}/{model}/stage2/final.pt",
    output:
        tsne=report(
            "results/report/{dataset}/{split_kind}/{model}/tsne.png",
            caption="../report/tsne.rst",
            category="Embeddings",
            subcategory="{model}",
        ),
    params:
        report=config["report"],
        experiment=get_experiment_params,
    log:
        "logs/report/{dataset}/{split_kind}/{model}/tsne.log",
    benchmark:
        "benchmarks/report/{dataset}-{split_kind}-{model}-tsne.tsv"
    wildcard_constraints:
        model="|".join(TEMPORAL_METHODS),
    # Not a local rule: the t-SNE embeds the whole test split with the final model (minutes on CPU for VGGSound).
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/tsne.py"
