"""What the extraction job scripts share (extractors.jobs.start_job, extractors.manifest.shard_rows): the shard's
rows, and the job's log file; workflow/scripts/extract_shard.py run as Snakemake runs it, on a small shard."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_extract_nets_clip import tiny_openai_clip, write_openai_archive

from extractors import store as S
from extractors.manifest import ManifestRow, shard_rows, write_manifest

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]


def manifest(path: Path, n: int) -> Path:
    write_manifest([ManifestRow(f"v{i}", "", None, None, "c", "missing", reason="file not found") for i in range(n)],
                   path)
    return path


def test_shards_take_every_nth_row_once(tmp_path):
    m = manifest(tmp_path / "m.tsv", 7)
    assert [r.video_id for r in shard_rows(m, "2-of-3")] == ["v1", "v4"]
    shards = [[r.video_id for r in shard_rows(m, f"{i}-of-3")] for i in (1, 2, 3)]
    assert sorted(v for s in shards for v in s) == [f"v{i}" for i in range(7)]
    for bad in ("0-of-3", "4-of-3", "1of3", "a-of-b"):
        with pytest.raises(ValueError, match=rf"shard '{bad}' of .*m\.tsv: expected 'i-of-n'"):
            shard_rows(m, bad)


@pytest.fixture
def job_globals(monkeypatch):
    """A job script changes the process's stderr and torch threads: restored after the test."""
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_extract_shard_script_writes_its_shard_and_its_log(tmp_path, job_globals):
    clip = write_openai_archive(tiny_openai_clip().state_dict(), tmp_path / "ViT-B-32.pt")
    smk = SimpleNamespace(
        log=[str(tmp_path / "extract.log")], threads=1,
        input=SimpleNamespace(manifest=str(manifest(tmp_path / "m.tsv", 5))),
        wildcards=SimpleNamespace(scatteritem="2-of-2"),
        output=SimpleNamespace(store=str(tmp_path / "2-of-2.zarr")),
        config={"extract": {"decoders": 0}},
        params=SimpleNamespace(extract={"streams": ["clip"], "clip": {"weights": str(clip)}}, dataset="demo"),
    )
    runpy.run_path(str(ROOT / "workflow/scripts/extract_shard.py"), init_globals={"snakemake": smk})
    store = S.FeatureStore(tmp_path / "2-of-2.zarr")
    assert list(store.video_ids) == ["v1", "v3"] and [r["status"] for r in store.table] == ["missing"] * 2
    assert torch.get_num_threads() == 1 and sys.stderr.name == smk.log[0]


def test_job_log_gets_the_log_lines_and_an_uncaught_traceback(tmp_path):
    log = tmp_path / "job.log"
    code = (f"import logging; from extractors.jobs import start_job; start_job({str(log)!r}, 1); "
            "logging.getLogger('extractors.test').info('shard started'); raise RuntimeError('the job failed')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 1 and res.stderr == ""
    text = log.read_text()
    assert "extractors.test: shard started" in text and "RuntimeError: the job failed" in text
