"""Rule class_embeddings: one L2-normalised vector per class name with the configured backend."""

from pathlib import Path

from data_splits.class_embeddings import build_class_embeddings
from extractors.jobs import start_job


def main(smk) -> None:
    start_job(smk.log[0])
    build_class_embeddings(
        smk.input.classes,
        smk.output.vectors,
        smk.params.class_embeddings,
        dataset=smk.params.dataset,
        official_dir=Path(smk.input.provenance).parents[1],  # <root>/<DS>/provenance.json
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
