"""Rule train_stage2: TCAF stage-2 training (model/pipeline.py), resumable after a crash."""

import hashlib
import logging
import shutil
import sys
from pathlib import Path

import torch

from model.pipeline import train_stage2


def resume_dir(smk) -> Path:
    """Where resumable training state goes: outside the declared outputs (Snakemake deletes those before a
    job), keyed by the inputs' sizes and mtimes and the params, so a rerun after a crash resumes, while a
    rerun on re-extracted features or a changed config starts afresh."""
    key = hashlib.sha256(repr(sorted(smk.params.experiment.items())).encode())
    for path in sorted(str(p) for p in smk.input):
        st = Path(path).stat()
        key.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return Path(smk.output.final).parent / "resume" / key.hexdigest()[:16]


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
    resume = resume_dir(smk)
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
