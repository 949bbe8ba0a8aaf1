"""Rule class_embeddings: one L2-normalised vector per class name with the configured backend."""

import logging
import sys
from pathlib import Path

from data_splits.class_embeddings import build_class_embeddings


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    build_class_embeddings(
        smk.input.classes,
        smk.output.vectors,
        smk.params.class_embeddings,
        dataset=smk.params.dataset,
        official_dir=Path(smk.input.provenance).parents[1],  # <root>/<DS>/provenance.json
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
