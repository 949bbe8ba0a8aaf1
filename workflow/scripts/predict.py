"""Rule predict_rank: one model's zero-shot predictions for the prediction folder's assembled features
(model/predict.py)."""

import logging
import sys
from pathlib import Path

import torch

from model.predict import predict


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
    predict(
        smk.params.videos,
        Path(smk.input.classes),
        smk.params.model,
        Path(smk.output.csv).parent,
        calibrate=smk.params.calibrate,
        top_k=smk.params.top_k,
        device=smk.params.device,
        features=str(Path(smk.input.features).with_suffix(".zarr")),
        class_embeddings=smk.params.class_embeddings,  # None: beside another run's model
        **smk.params.windows,
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
