"""Rule official_lists: copy (or download and verify) the benchmark's class and video lists."""

import logging
import sys
from pathlib import Path

from data_splits.official import OfficialConfig, obtain_official


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = Path(smk.output.provenance).parents[1]  # <root>/<DS>/provenance.json
    result = obtain_official(smk.params.dataset, root, OfficialConfig.from_dict(smk.params.official))
    logging.getLogger("official_lists").info("official lists for %s: %d files from %s", smk.params.dataset, len(result.files), result.source)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
