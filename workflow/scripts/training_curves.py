"""Rule training_curves: loss and validation HM per epoch of both stages of one method."""


from extractors.jobs import start_job
from model.plots import plot_training_curves


def main(smk) -> None:
    start_job(smk.log[0])
    plot_training_curves({"stage 1": smk.input.history1, "stage 2": smk.input.history2}, smk.output.curves)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
