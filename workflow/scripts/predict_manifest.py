"""Rule predict_manifest: probe every video file of the prediction folder (one manifest row per file)."""

import logging
import sys

from model.predict import video_manifest


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    video_manifest(smk.input.videos, smk.output.manifest, workers=smk.threads)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
