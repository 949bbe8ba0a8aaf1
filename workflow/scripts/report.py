"""Rule report: the results table, training curves and the t-SNE plot shown by `snakemake --report`."""

import csv
import json
import logging
import sys
from pathlib import Path

from matplotlib.figure import Figure  # not pyplot: no GUI backend on cluster nodes
from model.tsne import plot_tsne

COLUMNS = ("dataset", "split_kind", "preset", "S", "U", "HM", "ZSL", "bias", "n_seeds", "features")


def results_table(metrics_json: str, out_tsv: str) -> None:
    """One row: the test metrics (mean over seeds, %) and which extractor weights made the features."""
    m = json.loads(Path(metrics_json).read_text())
    features = "RANDOM-WEIGHT extractors (pipeline test only)" if m["random_weight_features"] else "pretrained"
    row = {**{k: m.get(k) for k in COLUMNS}, "features": features}
    for k in ("S", "U", "HM", "ZSL", "bias"):
        row[k] = f"{row[k]:.2f}"
    with open(out_tsv, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerow(row)


def training_curves(histories: dict[str, str], out_png: str) -> None:
    """Loss and validation HM per epoch, one line per seed, for each stage."""
    fig = Figure(figsize=(5 * len(histories), 6))
    axes = fig.subplots(2, len(histories), squeeze=False)
    for col, (stage, path) in enumerate(histories.items()):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for seed in sorted({r["seed"] for r in rows}, key=int):
            mine = [r for r in rows if r["seed"] == seed]
            epochs = [int(r["epoch"]) for r in mine]
            axes[0, col].plot(epochs, [float(r["loss"]) for r in mine], marker="o", label=f"seed {seed}")
            axes[1, col].plot(epochs, [100 * float(r["val_HM"]) for r in mine], marker="o", label=f"seed {seed}")
        axes[0, col].set(title=f"{stage}: training loss", xlabel="epoch", ylabel="loss")
        axes[1, col].set(title=f"{stage}: HM on stage_1_val (%)", xlabel="epoch", ylabel="HM")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results_table(smk.input.metrics, smk.output.table)
    training_curves({"stage 1": smk.input.history1, "stage 2": smk.input.history2}, smk.output.curves)
    plot_tsne(
        features_store=Path(smk.input.features).with_suffix(".zarr"),  # the sidecar's store
        splits_dir=Path(smk.input.classes).parent,
        class_embeddings=smk.input.class_embeddings,
        cfg=smk.params.experiment,
        checkpoint=smk.input.final,
        out_png=smk.output.tsne,
        **smk.params.report,
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
