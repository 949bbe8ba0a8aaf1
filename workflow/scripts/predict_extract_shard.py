"""Rule predict_extract_shard: one shard of the prediction folder's manifest, extracted with exactly the extractors
of the model's training store (model.predict.extract_features -> extractors.extract.extract_shard), for the store
groups the models to rank read."""

from extractors.jobs import start_job
from extractors.manifest import shard_rows
from model.predict import extract_features, resolve_training_store


def main(smk) -> None:
    start_job(smk.log[0], smk.threads)
    # every n-th manifest row, as the training data's shards take theirs
    rows = shard_rows(smk.input.manifest, smk.wildcards.scatteritem)
    store = smk.params.training_store or resolve_training_store(smk.params.model)
    extract_features(rows, smk.output.store, store, smk.params.device, streams=smk.params.streams)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
