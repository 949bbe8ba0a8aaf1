"""Rule tsne: the paper's Fig. 3 for one temporal method (input features vs learnt test embeddings)."""

import logging
from pathlib import Path

from extractors.jobs import start_job
from model.tsne import plot_tsne


def main(smk) -> None:
    start_job(smk.log[0], smk.threads)
    opts = smk.params.report
    info = plot_tsne(
        Path(smk.input.features).with_suffix(".zarr"),  # the sidecar's store
        Path(smk.input.classes).parent,
        smk.input.class_embeddings,
        smk.params.experiment,
        smk.input.final,
        smk.output.tsne,
        classes=opts["tsne_classes"],
        n_seen=opts["tsne_n_seen"],
        n_unseen=opts["tsne_n_unseen"],
        max_per_class=opts["tsne_max_per_class"],
        tsne_seed=opts["seed"],
    )
    logging.getLogger("tsne").info("t-SNE: %s", info)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
