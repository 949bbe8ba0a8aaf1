"""Rules weights / fetch_weights_<name>: make a configured weight file present and verified.

fetch: download it (or, for the torch VGGish backend, obtain the SavedModel and convert it); verify: check its
sha256 and write the record the extraction jobs depend on. Failures are printed on the terminal as well as in
the job log, because what to download and where to put it is the whole point of the message.
"""

import json
import logging
import sys
from pathlib import Path

from data_splits.common import atomic_write_text
from extractors.jobs import start_job
from extractors.weights import resolve_weights, resolve_weights_sha256, verify_sha256

log = logging.getLogger("weights")


def fetch(spec: dict) -> tuple[Path, str]:
    """The weight file, present and verified, and its sha256 (computed once, to verify it)."""
    if spec["kind"] != "vggish_torch":
        # resolve_weights_sha256 downloads a missing file from `url` (default: the published one, if any) or raises
        # FileNotFoundError saying where to get it and which config key to set.
        path, sha = resolve_weights_sha256(spec["path"], spec["sha256"], spec["kind"], url=spec["url"])
        assert path is not None and sha is not None
        return path, sha
    # The torch VGGish state dict is made from the TF SavedModel (a local copy, else tensorflow_hub's download).
    try:
        savedmodel = resolve_weights(spec["savedmodel"], spec["savedmodel_sha256"], "vggish_savedmodel")
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"vggish_torch: weight file not found: {spec['path']}\n"
            f"  It is converted from the VGGish SavedModel (config key 'weights.vggish_savedmodel', here "
            f"{spec['savedmodel']!r}), which could not be obtained either:\n{e}\n"
            f"  Or convert it yourself and set `{spec['config_key']}` to the .pth (with its sha256)."
        ) from e
    import torch  # noqa: F401 - torch before tensorflow in one process (the conversion imports tensorflow)

    from extractors.vggish.convert import convert_savedmodel_to_torch

    log.info("converting %s -> %s", savedmodel, spec["path"])
    out = convert_savedmodel_to_torch(savedmodel, spec["path"])
    try:
        sha = verify_sha256(out, spec["sha256"], "vggish_torch")
    except ValueError:
        out.unlink()  # never leave an unverified file where the config points
        raise
    return out, sha


def verify(spec: dict, out_json: str) -> None:
    try:
        sha = verify_sha256(spec["path"], spec["sha256"], spec["kind"])
    except ValueError as e:
        raise ValueError(f"{e}\n  (config keys '{spec['config_key']}' and '{spec['sha_key']}')") from e
    record = {**{k: spec[k] for k in ("kind", "path", "config_key")}, "sha256": sha,
              "sha256_configured": spec["sha256"] is not None}
    if spec["sha256"] is None:
        log.warning("%s: no sha256 configured; set %s: %s to pin this file", spec["path"], spec["sha_key"], sha)
    atomic_write_text(out_json, json.dumps(record, indent=2) + "\n")


def main(smk) -> None:
    terminal = sys.stderr
    start_job(smk.log[0])
    spec = smk.params.spec
    try:
        if smk.rule == "weights":
            verify(spec, smk.output[0])
        else:
            path, sha = fetch(spec)
            log.info("%s: %s sha256 %s", spec["kind"], path, sha)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        print(f"\n{e}\n", file=terminal)
        sys.exit(1)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
