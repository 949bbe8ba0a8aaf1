"""Rules assemble_features and predict_assemble: concatenate shard stores into one store, shard by shard."""

import logging
import sys

from extractors.manifest import read_manifest
from extractors.store import assemble


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Every manifest row, whatever its status, must be in exactly one shard: nothing is dropped silently.
    expected = [row.video_id for row in read_manifest(smk.input.manifest)]
    assemble(list(smk.input.stores), smk.output.store, expected_ids=expected)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
