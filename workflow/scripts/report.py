"""Rule report: results table, training curves and t-SNE plot for `snakemake --report`."""

import logging
import sys

from model.report import write_report_figures


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    write_report_figures(
        metrics_json=smk.input.metrics,
        embeddings_npz=smk.input.embeddings,
        histories={"stage 1": smk.input.history1, "stage 2": smk.input.history2},
        table=smk.output.table,
        curves=smk.output.curves,
        tsne=smk.output.tsne,
        cfg=smk.params.report,
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
