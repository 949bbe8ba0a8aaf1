# The stage-1 and stage-2 split files with benchmark class ids (from the official lists alone), and the
# coverage report: per split, how many listed videos have features, are missing or failed, with names.


rule splits:
    input:
        provenance=get_official_provenance(),
    output:
        classes="results/splits/{dataset}/{split_kind}/classes.tsv",
        splits=expand("results/splits/{{dataset}}/{{split_kind}}/{split}.csv", split=SPLIT_NAMES),
        seen_unseen="results/splits/{dataset}/{split_kind}/seen_unseen.json",
    params:
        dataset=DATASET,
    log:
        "logs/splits/{dataset}/{split_kind}.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/splits.py"


# Fails (after writing the report) when a split's coverage is below splits.min_coverage.
rule coverage:
    input:
        unpack(get_coverage_inputs),
        splits=expand("results/splits/{{dataset}}/{{split_kind}}/{split}.csv", split=SPLIT_NAMES),
    output:
        json="results/splits/{dataset}/{split_kind}/coverage.json",
        md=report(
            "results/splits/{dataset}/{split_kind}/coverage.md",
            caption="../report/coverage.rst",
            category="Data",
        ),
    params:
        splits=config["splits"],
    log:
        "logs/coverage/{dataset}/{split_kind}.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/coverage.py"
