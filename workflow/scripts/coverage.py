"""Rule coverage: per split, listed / found / with features / missing / failed videos, with names."""

from pathlib import Path

from data_splits.coverage import coverage_report
from extractors.jobs import start_job


def main(smk) -> None:
    start_job(smk.log[0])
    split_dir = Path(smk.input.splits[0]).parent
    coverage_report(
        split_dir,
        out_dir=Path(smk.output.json).parent,
        manifest=smk.input.get("manifest"),  # none for released features
        features_table=smk.input.features,
        min_coverage=smk.params.splits["min_coverage"],
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
