"""Rule splits: the six split files with benchmark class ids, classes.tsv and seen_unseen.json."""

from pathlib import Path

from data_splits.build import build_splits
from extractors.jobs import start_job


def main(smk) -> None:
    start_job(smk.log[0])
    build_splits(
        smk.params.dataset,
        Path(smk.input.provenance).parents[1],  # <root>/<DS>/provenance.json
        Path(smk.output.classes).parent,
        smk.wildcards.split_kind,
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
