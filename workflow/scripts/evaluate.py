"""Rule evaluate: GZSL metrics (S, U, HM, ZSL) on the stage-2 test splits, as JSON and Markdown."""

from pathlib import Path

from extractors.jobs import start_job
from model.pipeline import evaluate


def main(smk) -> None:
    start_job(smk.log[0], smk.threads)
    evaluate(
        features_store=Path(smk.input.features).with_suffix(".zarr"),  # the sidecar's store
        splits_dir=Path(smk.input.classes).parent,
        class_embeddings=smk.input.class_embeddings,
        cfg=smk.params.experiment,
        stage1_json=smk.input.stage1,
        final_checkpoint=smk.input.final,
        out_dir=Path(smk.output.metrics).parent,
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
