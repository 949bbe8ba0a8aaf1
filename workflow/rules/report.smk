# Figures and the results table for `snakemake --report`: the table (S, U, HM, ZSL; says whether the
# features came from random-weight extractors), training curves of both stages (model/plots.py), and the
# paper's Fig. 3 t-SNE (model/tsne.py): audio and visual input features next to the learnt test embeddings
# of the final model with the class embeddings.


rule report:
    input:
        unpack(get_model_inputs),
        metrics="results/evaluate/{dataset}/{split_kind}/metrics.json",
        history1="results/train/{dataset}/{split_kind}/stage1/history.csv",
        history2="results/train/{dataset}/{split_kind}/stage2/history.csv",
        final="results/train/{dataset}/{split_kind}/stage2/final.pt",
    output:
        table=report(
            "results/report/{dataset}/{split_kind}/results.tsv",
            caption="../report/results.rst",
            category="Results",
        ),
        curves=report(
            "results/report/{dataset}/{split_kind}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
        tsne=report(
            "results/report/{dataset}/{split_kind}/tsne.png",
            caption="../report/tsne.rst",
            category="Embeddings",
        ),
    params:
        report=config["report"],
        experiment=get_experiment_params(),
    log:
        "logs/report/{dataset}/{split_kind}.log",
    benchmark:
        "benchmarks/report/{dataset}-{split_kind}.tsv"
    # Not a local rule: the t-SNE embeds the whole test split with the final model (minutes on CPU for VGGSound).
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/report.py"
