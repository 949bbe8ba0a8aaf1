"""Rule tsne: the paper's Fig. 3 for one temporal method (input features vs learnt test embeddings)."""

import logging
import sys
from pathlib import Path

import torch

from model.tsne import plot_tsne


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
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
