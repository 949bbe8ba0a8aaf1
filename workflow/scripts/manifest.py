"""Rule manifest: match the listed videos to raw files and probe each one (status + reason per video)."""

from pathlib import Path

from data_splits.matching import expected_videos
from extractors.jobs import start_job
from extractors.manifest import build_manifest


def main(smk) -> None:
    start_job(smk.log[0])
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
