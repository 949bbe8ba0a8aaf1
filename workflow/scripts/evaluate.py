"""Rule evaluate: GZSL metrics (S, U, HM, ZSL) on the stage-2 test splits, as JSON and Markdown."""

import logging
import sys
from pathlib import Path

import torch

from model.pipeline import evaluate


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
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
