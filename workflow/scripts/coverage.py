"""Rule coverage: per split, listed / found / with features / missing / failed videos, with names."""

import logging
import sys
from pathlib import Path

from data_splits.coverage import coverage_report


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    split_dir = Path(smk.input.splits[0]).parent
    coverage_report(
        split_dir,
        out_dir=Path(smk.output.json).parent,
        manifest=smk.input.get("manifest"),  # none for released features
        features_table=smk.input.features,
        min_coverage=smk.params.splits["min_coverage"],
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
