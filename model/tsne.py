"""t-SNE of input features vs learnt embeddings for chosen seen and unseen classes (paper Fig. 3).

Three panels over the same test videos: the audio input features and the visual input features
(each averaged over time, as in the paper; audio scaled like the model's input), and the learnt
audio-visual embeddings theta_o with the projected class-label embeddings theta_w drawn as squares.
Seen classes are drawn with filled markers, unseen classes with hollow ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.packing import SplitData
from model.pipeline import ExperimentConfig, load_checkpoint, load_experiment
from model.train import compute_embeddings

log = logging.getLogger(__name__)


def _time_averaged_inputs(split: SplitData, rows: np.ndarray, audio_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the valid tokens of each selected video: ``[n, 128]`` audio and ``[n, 4096]`` video."""
    a_out, v_out = [], []
    for mod, out, scale in ((split.audio, a_out, audio_scale), (split.video, v_out, 1.0)):
        vals, off, lens = mod.values, mod.offsets.cpu(), mod.lengths_cpu
        for i in rows.tolist():
            seg = vals[int(off[i]) : int(off[i]) + int(lens[i])].float().cpu()
            out.append((seg.mean(0) / scale).numpy())
    return np.stack(a_out), np.stack(v_out)


def pick_classes(split: SplitData, n_seen: int, n_unseen: int, names: Sequence[str] | None) -> list[int]:
    """Column indices of the classes to plot: by name, or the first seen / unseen classes with samples."""
    present = set(split.labels_cpu.tolist())
    if names:
        col = {n: i for i, n in enumerate(split.class_names)}
        missing = [n for n in names if n not in col]
        if missing:
            raise ValueError(f"t-SNE classes {missing} are not in the {split.name} split; choose among "
                             f"{split.class_names[:10]}...")
        return [col[n] for n in names]
    unseen = split.unseen.cpu().tolist()
    seen_cols = [c for c in range(split.n_classes) if not unseen[c] and c in present][:n_seen]
    unseen_cols = [c for c in range(split.n_classes) if unseen[c] and c in present][:n_unseen]
    return seen_cols + unseen_cols


def tsne_points(x: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(perplexity, max(2.0, (len(x) - 1) / 3)))  # sklearn needs perplexity < n_samples
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def plot_tsne(
    features_store: str | Path,
    splits_dir: str | Path,
    class_embeddings: str | Path,
    cfg: Mapping[str, Any] | ExperimentConfig,
    final_checkpoint: str | Path,
    out_png: str | Path,
    *,
    classes: Sequence[str] | None = None,
    n_seen: int = 5,
    n_unseen: int = 2,
    max_per_class: int = 100,
    seed: int | None = None,
    tsne_seed: int = 0,
) -> dict[str, Any]:
    """Plot the paper's Fig. 3 for the test split with the stage-2 model of ``seed`` (default: first).

    ``classes`` are class names (``classes.tsv`` ``name``); default: the first ``n_seen`` seen and
    ``n_unseen`` unseen test classes. Returns what was plotted (classes, sample counts, seed).
    """
    import matplotlib

    matplotlib.use("Agg")  # file output only; no display needed on cluster nodes
    import matplotlib.pyplot as plt

    ctx = load_experiment(features_store, splits_dir, class_embeddings, cfg, ("stage_2_test",))
    split = ctx.splits["stage_2_test"]
    models, _ = load_checkpoint(final_checkpoint, ctx.device)
    seed = min(models) if seed is None else seed
    if seed not in models:
        raise ValueError(f"{final_checkpoint} has no model for seed {seed}; it has {sorted(models)}")
    net = models[seed]
    cols = pick_classes(split, n_seen, n_unseen, classes)
    rng = np.random.default_rng(tsne_seed)
    labels = split.labels_cpu.numpy()
    rows = np.concatenate([
        np.sort(rng.permutation(np.flatnonzero(labels == c))[:max_per_class]) for c in cols
    ])
    emb, cls_emb = compute_embeddings(net, split, ctx.device, ctx.exp.train.window(), ctx.exp.train.eval_batch_size)
    emb = emb.cpu().numpy()[rows]
    cls_emb = cls_emb.cpu().numpy()[cols]
    audio_in, video_in = _time_averaged_inputs(split, rows, ctx.exp.model.audio_input_scale)
    y = labels[rows]

    panels = [
        ("audio input features (time-averaged)", tsne_points(audio_in, tsne_seed), None),
        ("visual input features (time-averaged)", tsne_points(video_in, tsne_seed), None),
    ]
    joint = tsne_points(np.concatenate([emb, cls_emb]), tsne_seed)
    panels.append(("learnt audio-visual embeddings $\\theta_o$ (squares: $\\theta_w$)", joint[: len(emb)],
                   joint[len(emb):]))

    unseen = split.unseen.cpu().numpy()
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    for ax, (title, pts, cls_pts) in zip(axes, panels, strict=True):
        for k, c in enumerate(cols):
            sel = y == c
            face = "none" if unseen[c] else colours(k % 10)
            ax.scatter(pts[sel, 0], pts[sel, 1], s=14, facecolors=face, edgecolors=colours(k % 10), linewidths=0.8,
                       label=f"{split.class_names[c]}{' (unseen)' if unseen[c] else ''}")
            if cls_pts is not None:
                ax.scatter(cls_pts[k, 0], cls_pts[k, 1], marker="s", s=110, color=colours(k % 10),
                           edgecolors="black", linewidths=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    suffix = " - RANDOM-WEIGHT FEATURE EXTRACTORS" if ctx.random_weights else ""
    fig.suptitle(f"t-SNE, {ctx.exp.dataset or 'dataset'} test split, seed {seed}{suffix}", fontsize=11)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return {"classes": [split.class_names[c] for c in cols], "unseen": [bool(unseen[c]) for c in cols],
            "samples": len(rows), "seed": seed, "png": str(out_png)}


__all__ = ["pick_classes", "plot_tsne", "tsne_points"]
