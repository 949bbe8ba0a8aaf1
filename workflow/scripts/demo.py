"""Rule demo: generate the synthetic demo videos and their benchmark-style lists."""

import json
from pathlib import Path

from data_splits.common import atomic_write_text
from data_splits.synthetic import SyntheticConfig, generate_demo
from extractors.jobs import start_job


def main(smk) -> None:
    start_job(smk.log[0])
    # The held-out files' folder is where the rule declares them (classes.txt and labels.tsv sit beside videos/).
    heldout = Path(smk.output.heldout_videos).parent
    if {Path(smk.output.heldout_classes).parent, Path(smk.output.heldout_labels).parent} != {heldout}:
        raise ValueError("rule demo: heldout_classes and heldout_labels must lie beside the heldout_videos folder")
    summary = generate_demo(SyntheticConfig.from_dict(smk.params.demo), smk.output.videos, smk.output.lists,
                            heldout)
    atomic_write_text(smk.output.summary, json.dumps(summary, indent=1))


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
