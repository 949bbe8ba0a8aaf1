"""Coverage of the official splits by the user's raw copy and by the extracted features.

For each split: how many videos are listed, how many raw files were found, how many have
features (status ``ok``), how many are missing (no raw file) and how many failed (found but
unreadable / no audio / broken stream ...), with the names. Missing videos never stop the
pipeline by themselves; ``min_coverage`` turns too little coverage into a clear failure.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_splits.common import SPLIT_NAMES, atomic_write_text
from data_splits.io import read_split

MD_NAME_LIMIT = 50  # names listed per category in coverage.md; coverage.json has them all


class CoverageError(RuntimeError):
    """Coverage below the configured minimum."""


@dataclass
class VideoStatus:
    status: str  # ok | missing | <failure status>
    reason: str = ""


@dataclass
class SplitCoverage:
    listed: int = 0
    found: int = 0  # raw file present
    ok: int = 0  # usable: features extracted (or, without a feature table, probe ok)
    missing: int = 0
    failed: int = 0
    coverage: float = 0.0  # ok / listed
    missing_ids: list[str] = field(default_factory=list)
    failed_ids: dict[str, str] = field(default_factory=dict)  # video id -> "status: reason"


@dataclass
class CoverageReport:
    basis: str  # "features" (store sidecar) or "manifest" (raw files probed, nothing extracted yet)
    splits: dict[str, SplitCoverage]
    min_coverage: float = 0.0


def read_status_table(path: str | Path) -> dict[str, VideoStatus]:
    """``video_id``/``status``/``reason`` columns of a manifest or feature-store sidecar TSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the stage that writes it first")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if not {"video_id", "status"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs tab-separated columns video_id and status, got {reader.fieldnames}")
        return {r["video_id"]: VideoStatus(r["status"], r.get("reason") or "") for r in reader}


def resolve_status(
    video_id: str, manifest: dict[str, VideoStatus] | None, features: dict[str, VideoStatus] | None
) -> VideoStatus:
    """Combine the manifest (is the raw file there and readable?) with the feature table (extracted?)."""
    probed = manifest.get(video_id) if manifest is not None else None
    if probed is not None and probed.status != "ok":
        return probed  # missing/unreadable/no_audio/...: the raw-file verdict is the most specific
    if features is not None:
        extracted = features.get(video_id)
        if extracted is not None:
            return extracted
        if probed is not None:
            return VideoStatus("not_extracted", "probed ok but absent from the feature table")
        return VideoStatus("missing", "absent from the manifest and the feature table")
    return probed if probed is not None else VideoStatus("missing", "absent from the manifest")


def split_coverage(video_ids: list[str], statuses: dict[str, VideoStatus]) -> SplitCoverage:
    cov = SplitCoverage(listed=len(video_ids))
    for vid in video_ids:
        st = statuses[vid]
        if st.status == "ok":
            cov.ok += 1
        elif st.status == "missing":
            cov.missing += 1
            cov.missing_ids.append(vid)
        else:
            cov.failed += 1
            cov.failed_ids[vid] = f"{st.status}: {st.reason}" if st.reason else st.status
    cov.found = cov.listed - cov.missing
    cov.coverage = cov.ok / cov.listed if cov.listed else 1.0
    return cov


def compute_coverage(
    split_dir: str | Path,
    manifest: str | Path | None = None,
    features_table: str | Path | None = None,
) -> CoverageReport:
    """Coverage of each split in ``split_dir`` given a manifest TSV and/or a store sidecar TSV."""
    if manifest is None and features_table is None:
        raise ValueError("coverage needs a manifest TSV, a feature-store sidecar TSV, or both")
    man = read_status_table(manifest) if manifest is not None else None
    feat = read_status_table(features_table) if features_table is not None else None
    splits: dict[str, SplitCoverage] = {}
    for split in SPLIT_NAMES:
        ids = [r.video_id for r in read_split(Path(split_dir) / f"{split}.csv")]
        statuses = {vid: resolve_status(vid, man, feat) for vid in ids}
        splits[split] = split_coverage(ids, statuses)
    return CoverageReport("features" if feat is not None else "manifest", splits)


def render_markdown(report: CoverageReport) -> str:
    what = "with features in the store" if report.basis == "features" else "found and readable (not yet extracted)"
    lines = [
        "# Split coverage",
        "",
        f"`ok` = videos {what}; minimum coverage per split: {report.min_coverage:.1%}.",
        "",
        "| split | listed | found | ok | missing | failed | coverage |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in report.splits.items():
        lines.append(f"| {name} | {c.listed} | {c.found} | {c.ok} | {c.missing} | {c.failed} | {c.coverage:.1%} |")
    for name, c in report.splits.items():
        for title, items in (("missing", c.missing_ids), ("failed", [f"{k} ({v})" for k, v in c.failed_ids.items()])):
            if not items:
                continue
            shown = ", ".join(items[:MD_NAME_LIMIT])
            more = f" ... and {len(items) - MD_NAME_LIMIT} more (see coverage.json)" if len(items) > MD_NAME_LIMIT else ""
            lines += ["", f"**{name}: {title} ({len(items)})**: {shown}{more}"]
    return "\n".join(lines) + "\n"


def write_coverage(report: CoverageReport, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "coverage.json", out / "coverage.md"
    atomic_write_text(json_path, json.dumps(asdict(report), indent=1) + "\n")
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path


def check_coverage(report: CoverageReport, min_coverage: float) -> None:
    """Raise :class:`CoverageError` naming every split below ``min_coverage`` (a fraction, 0..1)."""
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be a fraction in [0, 1], got {min_coverage}")
    low = {s: c for s, c in report.splits.items() if c.coverage < min_coverage}
    if low:
        detail = "; ".join(
            f"{s}: {c.ok}/{c.listed} = {c.coverage:.1%} ({c.missing} missing, {c.failed} failed)" for s, c in low.items()
        )
        raise CoverageError(
            f"coverage below min_coverage={min_coverage:.1%} in {len(low)} split(s): {detail}. See coverage.md for "
            f"the video names; add the missing raw videos or lower min_coverage in the config."
        )


def coverage_report(
    split_dir: str | Path,
    out_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    features_table: str | Path | None = None,
    min_coverage: float = 0.0,
) -> CoverageReport:
    """Compute, write ``coverage.json``/``coverage.md`` (always, so a failure can be inspected), then check."""
    report = compute_coverage(split_dir, manifest, features_table)
    report.min_coverage = min_coverage
    write_coverage(report, out_dir if out_dir is not None else split_dir)
    check_coverage(report, min_coverage)
    return report
