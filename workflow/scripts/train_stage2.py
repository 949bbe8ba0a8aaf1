"""Rule train_stage2: TCAF stage-2 training (model/pipeline.py), resumable after a crash."""

import shutil
from pathlib import Path

from extractors.jobs import start_job
from model.pipeline import resume_dir, train_stage2


def main(smk) -> None:
    start_job(smk.log[0], smk.threads)
    resume = resume_dir(Path(smk.output.final).parent, smk.input, smk.params.experiment)
    train_stage2(
        features_store=Path(smk.input.features).with_suffix(".zarr"),  # the sidecar's store
        splits_dir=Path(smk.input.classes).parent,
        class_embeddings=smk.input.class_embeddings,
        cfg=smk.params.experiment,
        stage1_json=smk.input.stage1,
        out_dir=Path(smk.output.final).parent,
        checkpoint_dir=resume,
    )
    # Finished: a later forced rerun must train again, not resume from the last epoch.
    shutil.rmtree(resume.parent)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
