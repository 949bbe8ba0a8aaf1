"""Rule extract_shard: the features of one shard of the manifest (extract.streams: VGGish, C3D, CLIP, CLAP) into its own Zarr store."""

from extractors.extract import ExtractConfig, extract_shard
from extractors.jobs import start_job
from extractors.manifest import shard_rows


def main(smk) -> None:
    start_job(smk.log[0], smk.threads)
    rows = shard_rows(smk.input.manifest, smk.wildcards.scatteritem)
    decoders = smk.config["extract"].get("decoders", "auto")  # speed only: not among the shard's params
    cfg = ExtractConfig.from_dict({**smk.params.extract, "dataset": smk.params.dataset, "decoders": decoders})
    extract_shard(rows, smk.output.store, cfg, threads=smk.threads)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
