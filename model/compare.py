"""The comparison table of a run: every trained method's test metrics beside the published ones, in the
layout of the TCAF paper's Table 1 (S, U, HM, ZSL per dataset and method; mean ± std over seeds), as TSV and
Markdown, plus a bar chart of HM and ZSL per method for the HTML report.

Input: the ``metrics.json`` files that ``model.pipeline.evaluate`` writes (one per method). ``feature_set`` says which
features each method trained on (VGGish/C3D or CLIP/CLAP: ``methods.FEATURE_SETS``), ``features`` where they came
from (extracted, released, random-weight extractors).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from data_splits.common import atomic_open, atomic_write_text
from model.methods import FEATURE_TITLES
from model.pipeline import METHOD_TITLES, describe_feature_source
from model.published import SOURCES, published

METRICS = ("S", "U", "HM", "ZSL")
COLUMNS = ("dataset", "split_kind", "method", "preset", "features", "feature_set", "n_seeds",
           *(f"{k}{s}" for k in METRICS for s in ("", "_std")), *(f"published_{k}" for k in METRICS),
           "published_source")  # fmt: skip


def features_label(m: dict[str, Any]) -> str:
    if m.get("random_weight_features"):
        return "RANDOM-WEIGHT extractors (pipeline test only)"
    source = m.get("feature_source") or {"kind": "extract"}
    if source.get("kind") == "released":
        return f"released ({source.get('layout')} files)"
    return "extracted, pretrained weights"


def comparison_rows(metrics_files: Iterable[str | Path]) -> list[dict[str, Any]]:
    """One row per method (in the given order) with its mean/std metrics and the published ones."""
    rows = []
    for path in metrics_files:
        m = json.loads(Path(path).read_text())
        method = m.get("method", "tcaf")
        pub = published(method, m.get("dataset") or "", m.get("split_kind") or "cls") or {}
        row = {"dataset": m.get("dataset"), "split_kind": m.get("split_kind"), "method": method,
               "preset": m.get("preset"), "features": features_label(m),
               # metrics written before the choice existed are VGGish/C3D runs
               "feature_set": m.get("features") or "vggish_c3d", "n_seeds": m["n_seeds"],
               "published_source": SOURCES.get(method, "") if pub else ""}
        for k in METRICS:
            row[k], row[f"{k}_std"] = m[k], m["std"][k]
            row[f"published_{k}"] = pub.get(k)
        row["_source"] = m.get("feature_source") or {"kind": "extract"}
        rows.append(row)
    datasets = {(r["dataset"], r["split_kind"]) for r in rows}
    if len(datasets) > 1:
        raise ValueError(f"metrics of several datasets/split kinds in one comparison: {sorted(datasets)}")
    return rows


def write_comparison_tsv(rows: Sequence[dict[str, Any]], out_tsv: str | Path) -> None:
    with atomic_open(out_tsv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.2f}" if isinstance(v, float) else ("" if v is None else v))
                             for k, v in row.items()})


def comparison_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Table 1's layout for one dataset: methods as rows, S/U/HM/ZSL measured (± std over seeds) with the
    published value in parentheses."""
    if not rows:
        return "# Comparison\n\nNo method was evaluated.\n"
    first = rows[0]
    lines = [f"# Comparison: {first['dataset']} ({first['split_kind']} split)", ""]
    if any("RANDOM" in r["features"] for r in rows):
        lines += [("> **WARNING: features come from RANDOM-WEIGHT extractors.** These numbers test the pipeline; "
                  "they are not comparable with the published ones."), ""]
    lines += ["| method | features | preset | seeds | S | U | HM | ZSL |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for k in METRICS:
            measured = f"{r[k]:.2f}" + (f" ± {r[f'{k}_std']:.2f}" if r["n_seeds"] > 1 else "")
            pub = r[f"published_{k}"]
            cells.append(measured + (f" ({pub:.2f})" if pub is not None else ""))
        title = METHOD_TITLES.get(r["method"], r["method"])
        features = FEATURE_TITLES.get(r["feature_set"], r["feature_set"])
        lines.append(f"| {title} | {features} | {r['preset']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    sources = sorted({r["published_source"] for r in rows if r["published_source"]})
    lines += ["", "Test metrics in % (mean class accuracy), mean ± std over seeds; in parentheses the published "
              "value" + (f" ({'; '.join(sources)})" if sources else " (none for this dataset)") + ".",
              f"Features: {describe_feature_source(first['_source'])}.", ""]
    return "\n".join(lines)


def plot_comparison(rows: Sequence[dict[str, Any]], out_png: str | Path) -> Path:
    """Bars of HM and ZSL per method; published values as hollow markers where there are any."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 1.3 * len(rows) + 2), 4))
    axes = fig.subplots(1, 2, squeeze=False)[0]
    names = [METHOD_TITLES.get(r["method"], r["method"]) for r in rows]
    x = list(range(len(rows)))
    for ax, k in zip(axes, ("HM", "ZSL"), strict=True):
        ax.bar(x, [r[k] for r in rows], yerr=[r[f"{k}_std"] for r in rows], capsize=3, color="#4C72B0",
               label="measured")
        pub = [(i, r[f"published_{k}"]) for i, r in enumerate(rows) if r[f"published_{k}"] is not None]
        if pub:
            ax.scatter([i for i, _ in pub], [v for _, v in pub], marker="D", facecolors="none", edgecolors="#C44E52",
                       zorder=3, label="published")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set(title=f"{k} (%)", ylabel=k)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return out_png


def write_comparison(metrics_files: Iterable[str | Path], out_tsv: str | Path, out_md: str | Path,
                     out_png: str | Path) -> list[dict[str, Any]]:
    rows = comparison_rows(metrics_files)
    write_comparison_tsv(rows, out_tsv)
    atomic_write_text(out_md, comparison_markdown(rows))
    plot_comparison(rows, out_png)
    return rows
