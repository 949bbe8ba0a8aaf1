"""Rule compare: every method's test metrics beside the published ones (TSV, Markdown, chart)."""

import logging
import sys

from model.compare import write_comparison


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    write_comparison(smk.input.metrics, smk.output.table, smk.output.markdown, smk.output.chart)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
