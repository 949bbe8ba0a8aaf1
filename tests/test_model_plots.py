"""Training-curve figure from tiny history files."""

from __future__ import annotations

import csv

import pytest

from model.plots import plot_training_curves
from model.train import HISTORY_COLUMNS


def _history(path, stage: str, seeds=(1, 2), epochs=3):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for seed in seeds:
            for epoch in range(epochs):
                writer.writerow({"seed": seed, "stage": stage, "epoch": epoch, "loss": 2.0 / (epoch + 1),
                                 "val_HM": "" if epoch == 0 else 0.1 * epoch})  # empty cell: a gap, not an error
    return path


def test_curves_png_from_history_files(tmp_path):
    (tmp_path / "stage1").mkdir()
    h1 = _history(tmp_path / "stage1" / "history.csv", "stage1")
    h2 = _history(tmp_path / "h2.csv", "stage2", seeds=(1,), epochs=2)
    out = plot_training_curves({"stage 1": h1, "stage 2": h2}, tmp_path / "figs" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    assert width == 10 * 120  # two stage columns, 5 inches each at 120 dpi
    single = plot_training_curves([h1], tmp_path / "one.png")
    assert int.from_bytes(single.read_bytes()[16:20], "big") == 5 * 120


def test_not_a_history_file_is_named(tmp_path):
    bad = tmp_path / "metrics.csv"
    bad.write_text("S,U\n1,2\n")
    with pytest.raises(ValueError, match=r"metrics\.csv.*val_HM"):
        plot_training_curves([bad], tmp_path / "x.png")
