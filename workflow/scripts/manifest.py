"""Rule manifest: match the listed videos to raw files and probe each one (status + reason per video)."""

import logging
import sys
from pathlib import Path

from data_splits.matching import expected_videos
from extractors.manifest import build_manifest


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = smk.params.manifest
    entries = expected_videos(
        p["dataset"],
        p["raw_dir"],
        Path(smk.input.provenance).parents[1],  # <root>/<DS>/provenance.json
        p["split_kind"],
        annotations=p["raw_videos"].get("annotations"),
        extensions=p["raw_videos"].get("extensions"),
    )
    build_manifest(entries, smk.output.manifest, min_duration_s=p["manifest"]["min_duration_s"], workers=smk.threads)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
