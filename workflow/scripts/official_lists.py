"""Rule official_lists: copy (or download and verify) the benchmark's class and video lists."""

import logging
from pathlib import Path

from data_splits.official import OfficialConfig, obtain_official
from extractors.jobs import start_job


def main(smk) -> None:
    start_job(smk.log[0])
    root = Path(smk.output.provenance).parents[1]  # <root>/<DS>/provenance.json
    result = obtain_official(smk.params.dataset, root, OfficialConfig.from_dict(smk.params.official))
    logging.getLogger("official_lists").info("official lists for %s: %d files from %s", smk.params.dataset, len(result.files), result.source)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
