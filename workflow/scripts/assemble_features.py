"""Rule assemble_features: concatenate the shard stores into the dataset's store (shard by shard)."""

import logging
import sys

from extractors.store import assemble


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    assemble(list(smk.input.stores), smk.output.store)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
