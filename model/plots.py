"""Training curves from the ``history.csv`` files that ``model.pipeline`` writes per stage.

One column per stage: the training loss (top) and the validation HM in % (bottom) per epoch, one line per
seed. The t-SNE figure of the paper (Fig. 3) is ``model.tsne.plot_tsne``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure  # not pyplot: no GUI backend (or global state) needed on cluster nodes
from matplotlib.ticker import MaxNLocator


def _float(value: str | None) -> float:
    # An epoch without a validation pass leaves the cell empty; NaN leaves a gap in the line instead of failing.
    return float(value) if value not in (None, "") else math.nan


def _read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"seed", "epoch", "loss", "val_HM"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ValueError(f"{path}: not a training history (needs the columns seed, epoch, loss, val_HM and at "
                         f"least one row; missing: {sorted(missing) or 'rows'})")
    return rows


def plot_training_curves(history_csv_paths: Mapping[str, str | Path] | Sequence[str | Path],
                         out_png: str | Path) -> Path:
    """Write the loss / validation-HM curves of each history file to ``out_png``.

    ``history_csv_paths``: ``{panel title: path}``, or a list of paths titled by their folder (``stage1``).
    """
    if isinstance(history_csv_paths, Mapping):
        histories = {str(k): Path(v) for k, v in history_csv_paths.items()}
    else:
        histories = {Path(p).parent.name or Path(p).stem: Path(p) for p in history_csv_paths}
    if not histories:
        raise ValueError("plot_training_curves: no history files given")
    fig = Figure(figsize=(5 * len(histories), 6))
    axes = fig.subplots(2, len(histories), squeeze=False)
    for col, (title, path) in enumerate(histories.items()):
        rows = _read_history(path)
        for seed in sorted({r["seed"] for r in rows}, key=int):
            mine = [r for r in rows if r["seed"] == seed]
            epochs = [int(r["epoch"]) for r in mine]
            axes[0, col].plot(epochs, [_float(r["loss"]) for r in mine], marker="o", label=f"seed {seed}")
            axes[1, col].plot(epochs, [100 * _float(r["val_HM"]) for r in mine], marker="o", label=f"seed {seed}")
        axes[0, col].set(title=f"{title}: training loss", xlabel="epoch", ylabel="loss")
        axes[1, col].set(title=f"{title}: validation HM (%)", xlabel="epoch", ylabel="HM")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return out_png


__all__ = ["plot_training_curves"]
