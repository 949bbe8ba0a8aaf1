"""Command line for the split stages outside Snakemake: ``python -m data_splits.cli <command> ...``.

Commands: ``official`` (obtain the lists), ``build`` (split directory), ``match`` (work list TSV),
``coverage`` (report + min_coverage check), ``embed`` (class embeddings).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from data_splits.build import build_splits
from data_splits.class_embeddings import BACKENDS, EmbeddingConfig, EmbeddingError, build_class_embeddings
from data_splits.common import atomic_open
from data_splits.coverage import CoverageError, coverage_report
from data_splits.matching import expected_videos
from data_splits.official import DATASETS, SPLIT_KINDS, OfficialConfig, OfficialListsError, obtain_official

ENTRY_COLUMNS = ("video_id", "path", "start_s", "end_s", "class_name", "reason")


def _common(p: argparse.ArgumentParser, official: bool = True) -> None:
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    if official:
        p.add_argument("--official-dir", required=True, type=Path, help="folder holding <DS>/class-split/...")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_splits.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("official", help="copy (--local-dir) or download the official lists into --dest")
    _common(p, official=False)
    p.add_argument("--dest", required=True, type=Path)
    p.add_argument("--local-dir", default=None)
    p.add_argument("--no-download", action="store_true")

    p = sub.add_parser("build", help="write classes.tsv, the six split CSVs and seen_unseen.json")
    _common(p)
    p.add_argument("--split-kind", default="cls", choices=sorted(SPLIT_KINDS))
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("match", help="match the split videos to a raw folder, write a TSV work list")
    _common(p)
    p.add_argument("--split-kind", default="cls", choices=sorted(SPLIT_KINDS))
    p.add_argument("--raw-dir", required=True, type=Path)
    p.add_argument("--annotations", default=None, help="ActivityNet annotation JSON for untrimmed videos")
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("coverage", help="coverage.json/.md for a split directory")
    p.add_argument("--split-dir", required=True, type=Path)
    p.add_argument("--manifest", default=None, type=Path)
    p.add_argument("--features-table", default=None, type=Path)
    p.add_argument("--min-coverage", default=0.0, type=float)

    p = sub.add_parser("embed", help="class embeddings for a classes.tsv")
    p.add_argument("--classes", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="<dataset>.npz (a .json sidecar is written next to it)")
    p.add_argument("--backend", default="sentence_transformers", choices=BACKENDS)
    p.add_argument("--path", default=None, help="model file/folder or official .npy/.npz")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS))
    p.add_argument("--official-dir", default=None, type=Path)
    return parser


def write_entries(path: Path, entries) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(ENTRY_COLUMNS)
        for e in entries:
            writer.writerow([e.video_id, e.path or "", "" if e.start_s is None else e.start_s,
                             "" if e.end_s is None else e.end_s, e.class_name, e.reason])


def run(args: argparse.Namespace) -> str:
    if args.command == "official":
        cfg = OfficialConfig(local_dir=args.local_dir, download=not args.no_download)
        res = obtain_official(args.dataset, args.dest, cfg)
        return f"{len(res.files)} files from {res.source} in {res.root}"
    if args.command == "build":
        res = build_splits(args.dataset, args.official_dir, args.out, args.split_kind)
        return ", ".join(f"{s}: {len(rows)}" for s, rows in res.splits.items())
    if args.command == "match":
        entries = expected_videos(args.dataset, args.raw_dir, args.official_dir, args.split_kind, args.annotations)
        write_entries(args.out, entries)
        found = sum(e.path is not None for e in entries)
        return f"{found} of {len(entries)} videos found; work list in {args.out}"
    if args.command == "coverage":
        rep = coverage_report(args.split_dir, args.split_dir, args.manifest, args.features_table, args.min_coverage)
        return ", ".join(f"{s}: {c.ok}/{c.listed}" for s, c in rep.splits.items())
    cfg = EmbeddingConfig(backend=args.backend, path=args.path)
    out = build_class_embeddings(args.classes, args.out, cfg, dataset=args.dataset, official_dir=args.official_dir)
    return f"wrote {out}"


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        print(run(args))
    except (OfficialListsError, CoverageError, EmbeddingError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
