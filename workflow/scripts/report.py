"""Rule report: the results table, training curves and the t-SNE plot shown by `snakemake --report`."""

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # not pyplot: no GUI backend on cluster nodes
from sklearn.manifold import TSNE

from data_splits.io import read_class_embeddings, read_classes
from model.data import build_split, load_class_vectors, open_store
from model.pipeline import experiment_config, load_checkpoint
from model.train import compute_embeddings

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


def tsne_plot(store_path: Path, splits_dir: Path, class_embeddings: str, cfg: dict, checkpoint: str,
              out_png: str, tsne_perplexity: float, tsne_max_points: int, seed: int) -> None:
    """t-SNE of the final model's test-video embeddings (theta_o) and projected class embeddings (theta_w)."""
    store = open_store(store_path)
    exp = experiment_config(cfg, store=store, word_dim=read_class_embeddings(class_embeddings).vectors.shape[1])
    classes = read_classes(splits_dir / "classes.tsv")
    vectors = load_class_vectors(class_embeddings, classes, permutation_quirk=exp.train.class_vector_permutation)
    test = build_split(store, splits_dir, "stage_2_test", vectors, classes, device="cpu", video_dtype="float32")
    models, _ = load_checkpoint(checkpoint, "cpu")
    net = models[min(models)]  # the first seed's model
    with torch.no_grad():
        videos, class_points = compute_embeddings(net, test, torch.device("cpu"), exp.train.window(),
                                                  exp.train.eval_batch_size)
    labels = test.labels_cpu.numpy()
    keep = np.random.default_rng(seed).permutation(len(labels))[:tsne_max_points]
    points = np.concatenate([videos.numpy()[keep], class_points.numpy()])
    # t-SNE needs perplexity < number of points; the demo has only a few dozen test videos.
    perplexity = min(tsne_perplexity, max(2.0, (len(points) - 1) / 3))
    xy = TSNE(perplexity=perplexity, random_state=seed, init="pca").fit_transform(points)
    n = len(keep)
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    colours = matplotlib_colours(test.n_classes)
    unseen = test.unseen.cpu().numpy()
    for c, name in enumerate(test.class_names):
        mine = labels[keep] == c
        marker = "^" if unseen[c] else "o"
        ax.scatter(xy[:n][mine, 0], xy[:n][mine, 1], s=14, marker=marker, color=colours[c], alpha=0.7,
                   label=f"{name}{' (unseen)' if unseen[c] else ''}")
        ax.scatter(*xy[n + c], s=180, marker="*", color=colours[c], edgecolors="black")
    ax.set(title="t-SNE of test videos (o seen, ^ unseen) and class embeddings (*)", xticks=[], yticks=[])
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out_png, dpi=120, bbox_inches="tight")


def matplotlib_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def main(smk) -> None:
    # Kept open (no with-block) so that an uncaught exception's traceback also lands in the job log.
    sys.stderr = open(smk.log[0], "w", buffering=1)  # noqa: SIM115
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(smk.threads)
    results_table(smk.input.metrics, smk.output.table)
    training_curves({"stage 1": smk.input.history1, "stage 2": smk.input.history2}, smk.output.curves)
    tsne_plot(
        Path(smk.input.features).with_suffix(".zarr"),  # the sidecar's store
        Path(smk.input.classes).parent,
        smk.input.class_embeddings,
        smk.params.experiment,
        smk.input.final,
        smk.output.tsne,
        **smk.params.report,
    )


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
