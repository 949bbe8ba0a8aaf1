"""Rule predict_extract_shard: one shard of the prediction folder's manifest, extracted with exactly the extractors
of the model's training store (model.predict.extract_features -> extractors.extract.extract_shard), for the store
groups the models to rank read."""

import logging
import sys

import torch

from extractors.manifest import read_manifest
from model.predict import extract_features, resolve_training_store


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
    # scatteritem "i-of-n": every n-th manifest row from row i-1, as the training data's shards take theirs.
    i, n = (int(x) for x in smk.wildcards.scatteritem.split("-of-"))
    rows = read_manifest(smk.input.manifest)[i - 1 :: n]
    store = smk.params.training_store or resolve_training_store(smk.params.model)
    extract_features(rows, smk.output.store, store, smk.params.device, streams=smk.params.streams)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
