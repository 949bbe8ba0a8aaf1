"""Rule report: the results table, training curves and the t-SNE figure shown by `snakemake --report`."""

import csv
import json
import logging
import sys
from pathlib import Path

import torch

from data_splits.common import atomic_open
from model.plots import plot_training_curves
from model.tsne import plot_tsne

COLUMNS = ("dataset", "split_kind", "preset", "S", "U", "HM", "ZSL", "bias", "n_seeds", "features")


def results_table(metrics_json: str, out_tsv: str) -> None:
    """One row: the test metrics (mean over seeds, %) and where the features came from."""
    m = json.loads(Path(metrics_json).read_text())
    source = m.get("feature_source") or {"kind": "extract"}
    if m["random_weight_features"]:
        features = "RANDOM-WEIGHT extractors (pipeline test only)"
    elif source.get("kind") == "released":
        features = f"released ({source.get('layout')} files)"
    else:
        features = "extracted, pretrained weights"
    row = {**{k: m.get(k) for k in COLUMNS}, "features": features}
    for k in ("S", "U", "HM", "ZSL", "bias"):
        row[k] = f"{row[k]:.2f}"
    with atomic_open(out_tsv, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerow(row)


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
    results_table(smk.input.metrics, smk.output.table)
    plot_training_curves({"stage 1": smk.input.history1, "stage 2": smk.input.history2}, smk.output.curves)
    opts = smk.params.report
    info = plot_tsne(
        Path(smk.input.features).with_suffix(".zarr"),  # the sidecar's store
        Path(smk.input.classes).parent,
        smk.input.class_embeddings,
        smk.params.experiment,
        smk.input.final,
        smk.output.tsne,
        classes=opts["tsne_classes"],
        n_seen=opts["tsne_n_seen"],
        n_unseen=opts["tsne_n_unseen"],
        max_per_class=opts["tsne_max_per_class"],
        tsne_seed=opts["seed"],
    )
    logging.getLogger("report").info("t-SNE: %s", info)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
