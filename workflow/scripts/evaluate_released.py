"""Rule evaluate_released: the official TCAF checkpoints (stage A / stage B run folders) on this pipeline's
features, with the official evaluation protocol; S, U, HM, ZSL as JSON and Markdown."""

from pathlib import Path

from extractors.jobs import start_job
from model.released import evaluate_official_run


def main(smk) -> None:
    start_job(smk.log[0], smk.threads)
    released = dict(smk.params.released)
    missing = [k for k in ("stage_a", "stage_b") if not released.get(k)]
    if missing:
        raise ValueError(f"params.released lacks {missing}: set the official stage-1 and stage-2 run folders")
    evaluate_official_run(
        features_store=Path(smk.input.features).with_suffix(".zarr"),  # the sidecar's store
        splits_dir=Path(smk.input.classes).parent,
        class_embeddings=smk.input.class_embeddings,
        stage_a=released["stage_a"],
        stage_b=released["stage_b"],
        out_dir=Path(smk.output.metrics).parent,
        # The experiment's preset says how this pipeline trains; the released models were trained by the
        # official code, so its behaviour ("reference") is the default here, changed by released.preset only.
        cfg={**smk.params.experiment, "preset": released.get("preset") or "reference"},
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
