"""Rules assemble_features and predict_assemble: concatenate shard stores into one store, shard by shard."""


from extractors.jobs import start_job
from extractors.manifest import read_manifest
from extractors.store import assemble


def main(smk) -> None:
    start_job(smk.log[0])
    # Every manifest row, whatever its status, must be in exactly one shard: nothing is dropped silently.
    expected = [row.video_id for row in read_manifest(smk.input.manifest)]
    assemble(list(smk.input.stores), smk.output.store, expected_ids=expected)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
