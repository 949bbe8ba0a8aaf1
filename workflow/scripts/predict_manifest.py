"""Rule predict_manifest: probe every video file of the prediction folder (one manifest row per file)."""

from extractors.jobs import start_job
from model.predict import video_manifest


def main(smk) -> None:
    start_job(smk.log[0])
    video_manifest(smk.input.videos, smk.output.manifest, workers=smk.threads)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
