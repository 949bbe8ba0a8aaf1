"""Rule predict_rank: one model's zero-shot predictions for the prediction folder's assembled features
(model/predict.py)."""

from pathlib import Path

from extractors.jobs import start_job
from model.predict import predict


def main(smk) -> None:
    start_job(smk.log[0], smk.threads)
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
