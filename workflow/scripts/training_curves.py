"""Rule training_curves: loss and validation HM per epoch of both stages of one method."""

import logging
import sys

from model.plots import plot_training_curves


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    plot_training_curves({"stage 1": smk.input.history1, "stage 2": smk.input.history2}, smk.output.curves)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
