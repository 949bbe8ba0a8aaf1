"""Rule import_released_features: the benchmark's released feature files -> the dataset's feature store."""

import json
from pathlib import Path

from data_splits.common import atomic_write_text
from extractors.jobs import start_job
from extractors.released import import_released


def main(smk) -> None:
    start_job(smk.log[0])
    opts = smk.params.released
    result = import_released(
        opts["dir"],
        smk.output.store,
        dataset=opts["dataset"],
        splits_dir=Path(smk.input.classes).parent,
        layout=opts["layout"],
        video_dtype=opts["video_dtype"],
    )
    atomic_write_text(smk.output.summary, json.dumps(result.to_dict(), indent=1) + "\n")


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
