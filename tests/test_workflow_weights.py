"""The weights rules: weight files are verified (or fetched) once, before extraction, with clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

RECORD = "results/weights/demo/c3d.json"


def _config(workflow, tmp_path: Path, write_yaml, video: dict, weights: dict | None = None) -> list[Path]:
    override = {"extract": {"video": video}}
    if weights:
        override["weights"] = weights
    return [workflow.configs["config"], write_yaml(tmp_path / "weights.yaml", override)]


def test_file_weights_are_verified_before_every_extraction_job(workflow, tmp_path, write_yaml):
    (tmp_path / "c3d.pickle").write_bytes(b"weights")
    configfiles = _config(workflow, tmp_path, write_yaml, {"weights": "c3d.pickle"})
    res = workflow.run(tmp_path, "-n", configfiles=configfiles)
    assert res.returncode == 0, res.stdout
    jobs = workflow.planned_jobs(res.stdout)
    # One check of the one configured file (VGGish stays random here), nothing to fetch: it is present.
    assert jobs["weights"] == 1 and not any(j.startswith("fetch_weights") for j in jobs), jobs
    assert RECORD in res.stdout


def test_missing_weight_file_fails_once_naming_file_key_and_source(workflow, tmp_path, write_yaml):
    configfiles = _config(workflow, tmp_path, write_yaml, {"weights": "resources/weights/c3d.pickle"})
    res = workflow.run(tmp_path, "--cores", "1", RECORD, configfiles=configfiles)
    assert res.returncode != 0
    assert "weight file not found: resources/weights/c3d.pickle" in res.stdout, res.stdout
    assert "extract.video.weights" in res.stdout and "DavideA/c3d-pytorch" in res.stdout, res.stdout
    assert res.stdout.count("Error in rule fetch_weights_c3d") == 1
    assert not (tmp_path / "resources/weights/c3d.pickle").exists() and not (tmp_path / RECORD).exists()


def test_checksum_mismatch_names_file_and_keys(workflow, tmp_path, write_yaml):
    (tmp_path / "c3d.pickle").write_bytes(b"not the published weights")
    configfiles = _config(workflow, tmp_path, write_yaml, {"weights": "c3d.pickle", "sha256": "0" * 64})
    res = workflow.run(tmp_path, "--cores", "1", RECORD, configfiles=configfiles)
    assert res.returncode != 0
    actual = hashlib.sha256(b"not the published weights").hexdigest()
    assert "checksum mismatch for c3d.pickle" in res.stdout and actual in res.stdout, res.stdout
    assert "extract.video.sha256" in res.stdout
    assert not (tmp_path / RECORD).exists()


def test_missing_file_is_downloaded_verified_and_then_left_alone(workflow, tmp_path, write_yaml):
    # A file:// URL stands in for the download host (no network needed).
    source = tmp_path / "mirror" / "c3d.pickle"
    source.parent.mkdir()
    source.write_bytes(b"c3d weights from a mirror")
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    configfiles = _config(workflow, tmp_path, write_yaml, {"weights": "resources/weights/c3d.pickle", "sha256": sha},
                          {"c3d_url": source.as_uri()})
    res = workflow.run(tmp_path, "--cores", "1", RECORD, configfiles=configfiles)
    assert res.returncode == 0, res.stdout
    assert (tmp_path / "resources/weights/c3d.pickle").read_bytes() == source.read_bytes()
    record = json.loads((tmp_path / RECORD).read_text())
    assert record["sha256"] == sha and record["sha256_configured"] is True
    assert record["config_key"] == "extract.video.weights"
    # Now the file is a plain input: no fetch rule, and the record (so extraction) is not redone.
    again = workflow.run(tmp_path, "-n", RECORD, configfiles=configfiles)
    assert again.returncode == 0, again.stdout
    assert workflow.planned_jobs(again.stdout) == {}, again.stdout


@pytest.mark.slow  # TensorFlow: converts a random 290 MB VGGish SavedModel
def test_missing_torch_vggish_is_converted_from_the_savedmodel(workflow, tmp_path, write_yaml, vggish_savedmodel):
    # The SavedModel of the TF-Hub tests (tests/conftest.py), by its absolute path
    override = {"extract": {"audio": {"weights": "resources/vggish.pth", "pca_params": "identity"}},
                "weights": {"vggish_savedmodel": str(vggish_savedmodel)}}
    configfiles = [workflow.configs["config"], write_yaml(tmp_path / "weights.yaml", override)]
    res = workflow.run(tmp_path, "--cores", "1", "--until", "weights", configfiles=configfiles)
    assert res.returncode == 0, res.stdout
    assert "fetch_weights_vggish" in res.stdout
    record = json.loads((tmp_path / "results/weights/demo/vggish.json").read_text())
    assert record["kind"] == "vggish_torch" and record["sha256_configured"] is False

    from extractors.vggish.model import VGGish
    from extractors.weights import load_state_dict_file, sha256_file

    assert record["sha256"] == sha256_file(tmp_path / "resources/vggish.pth")
    VGGish().load_state_dict(load_state_dict_file(tmp_path / "resources/vggish.pth", "vggish_torch"), strict=True)
