"""Rule extract_shard: the features of one shard of the manifest (extract.streams: VGGish, C3D, CLIP, CLAP) into its own Zarr store."""

import logging
import sys

import torch

from extractors.extract import ExtractConfig, extract_shard
from extractors.manifest import read_manifest


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
    # scatteritem "i-of-n": this shard takes every n-th manifest row starting at row i-1, which spreads
    # long and short videos (and classes) evenly over the shards.
    i, n = (int(x) for x in smk.wildcards.scatteritem.split("-of-"))
    rows = read_manifest(smk.input.manifest)[i - 1 :: n]
    decoders = smk.config["extract"].get("decoders", "auto")  # speed only: not among the shard's params
    cfg = ExtractConfig.from_dict({**smk.params.extract, "dataset": smk.params.dataset, "decoders": decoders})
    extract_shard(rows, smk.output.store, cfg, threads=smk.threads)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
