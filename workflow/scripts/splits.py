"""Rule splits: the six split files with benchmark class ids, classes.tsv and seen_unseen.json."""

import logging
import sys
from pathlib import Path

from data_splits.build import build_splits


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    build_splits(
        smk.params.dataset,
        Path(smk.input.provenance).parents[1],  # <root>/<DS>/provenance.json
        Path(smk.output.classes).parent,
        smk.wildcards.split_kind,
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
