"""The start of a workflow job script (``workflow/scripts``): its log file and its cores."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


def start_job(log_path: str | Path, threads: int | None = None) -> None:
    """Send log lines and stderr to ``log_path``; with ``threads``, torch uses that many cores.

    The file is kept open for the rest of the process (no with-block), so that an uncaught exception's traceback
    also lands in the job log.
    """
    sys.stderr = open(log_path, "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    if threads:
        import torch

        torch.set_num_threads(threads)
