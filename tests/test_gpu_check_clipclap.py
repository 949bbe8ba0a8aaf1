"""benchmarks/gpu_check.py's ``clip_clap`` part (CLIP and CLAP extraction, their device/CPU agreement) in the CPU
smoke mode, and how its agreement becomes targets."""

from __future__ import annotations

import copy
import json

import pytest
from test_gpu_check import _positive_spread

# OpenAI's checkpoint format is a TorchScript archive; torch 2.11 deprecates the API that reads it.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def quick_run(gpu_check, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "clip_clap.json"
    returned = gpu_check.main(["--device", "cpu", "--quick", "--parts", "clip_clap", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res == json.loads(json.dumps(returned))  # the JSON is what main returns
    return res


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cpu_quick_run_of_the_clip_clap_part(quick_run):
    res = quick_run
    assert res["parts"] == ["clip_clap"] and res["device"] == "cpu" and res["gpu"] is None
    assert not {"extraction", "training", "determinism"} & set(res)  # only the part asked for ran
    cc = res["clip_clap"]
    n = cc["videos"]
    assert n >= 2 and cc["full"]["statuses"] == {"ok": n}
    assert cc["corpus"]["videos"] + cc["corpus"]["hd_videos"] == n
    # frames: middle and windows: center give each video one CLIP and one CLAP row
    assert cc["clip"]["frames"] == "middle" and cc["clap"]["windows"] == "center"
    assert cc["clip_rows"] == n and cc["clap_rows"] == n
    # no GPU: CLIP's precision "auto" is fp32 on the CPU, CLAP is fp32 everywhere
    assert cc["clip"]["precision"] == "fp32" and cc["clap"]["precision"] == "fp32"
    assert cc["clip"]["dim"] > 0 and cc["clap"]["dim"] > 0
    assert cc["models"]["size"].startswith("tiny")

    for side in ("decode_only", "full"):
        _positive_spread(cc[side]["seconds"])
        _positive_spread(cc[side]["videos_per_s"])
        for secs, rate in zip(cc[side]["seconds"]["runs"], cc[side]["videos_per_s"]["runs"], strict=True):
            assert rate == pytest.approx(n / secs, rel=0.01)
    assert "decode_throughput" in cc["decode_only"]["source"]  # says how decode-only was timed, and why so
    # each video's audio, as decoded for CLAP: at most the corpus' short clips, more than nothing
    assert 0 < cc["decode_only"]["audio_s"] <= 2 * n
    runs = zip(cc["full"]["seconds"]["runs"], cc["decode_only"]["seconds"]["runs"], cc["full_over_decode_only"]["runs"],
               strict=True)
    for full, dec, ratio in runs:
        assert ratio == pytest.approx(full / dec, rel=0.01)
    assert cc["full"]["gpu_utilisation_pct"]["samples"] == 0 and "peak_gpu_memory_mb" not in cc["full"]
    assert 0 <= cc["full"]["cpu_busy_fraction"] <= 1

    agree = cc["agreement"]
    assert agree["devices"] == ["cpu", "cpu"] and agree["status"].startswith("cpu against itself")
    assert "not run" in agree["status"]
    tol = agree["tolerances"]
    for name in ("clip", "clap"):
        r = agree[name]
        assert r["precision"] == ["fp32", "fp32"]
        assert r["rows"] == len(r["cosine"]) >= 2
        # the same checkpoint on the same device: equal rows
        assert r["rel_max_diff"] == 0 and r["cosine_min"] == pytest.approx(1.0, abs=1e-9) and r["ok"] is True
        assert 0 < tol[f"{name}_rel"] < 1 and 0.99 < tol[f"{name}_cosine_min"] < 1
        # the rows compared belong to different videos, not one input repeated
        assert r["cosine_between_inputs_max"] < 1 - 1e-6

    targets = [t for t in res["targets"] if t["target"].startswith(("CLIP rows", "CLAP rows"))]
    assert len(targets) == 2 == len(res["targets"])
    for t, name in zip(targets, ("clip", "clap"), strict=True):
        assert t["met"] is True and t["value"]["cosine_min"] == agree[name]["cosine_min"]
        assert str(tol[f"{name}_cosine_min"]) in t["target"] and str(tol[f"{name}_rel"]) in t["target"]
    assert res["seconds"]["clip_clap"] > 0 and "corpus" in res["seconds"]


def test_a_disagreeing_device_is_a_target_not_met(gpu_check):
    tol = gpu_check.CLIP_CLAP_TOLERANCES
    ok = {"rows": 4, "cosine_min": 1.0, "rel_max_diff": 0.0}
    res = {"clip_clap": {"agreement": {
        "devices": ["cpu", "cuda:0"], "tolerances": tol,
        "clip": {**ok, "precision": ["fp32", "fp16"], "cosine_min": tol["clip_cosine_min"] - 1e-4, "ok": False},
        "clap": {**ok, "precision": ["fp32", "fp32"], "ok": True},
    }}}
    targets = {t["target"].split()[0]: t for t in gpu_check.targets(res)}
    assert set(targets) == {"CLIP", "CLAP"}
    assert targets["CLIP"]["met"] is False and targets["CLAP"]["met"] is True
    assert "cuda:0 (fp16)" in targets["CLIP"]["target"] and "cpu (fp32)" in targets["CLIP"]["target"]
    assert targets["CLIP"]["value"]["cosine_min"] == res["clip_clap"]["agreement"]["clip"]["cosine_min"]


def test_the_agreement_measures_cosine_per_row_and_relative_difference(gpu_check):
    import numpy as np

    cpu = np.eye(3, 8)
    other = copy.deepcopy(cpu)
    other[1, 1], other[1, 2] = np.cos(0.1), np.sin(0.1)  # row 1 turned by 0.1 rad
    r = gpu_check._rows_agreement(other, cpu)
    assert r["cosine"][0] == r["cosine"][2] == 1.0 and r["cosine_min"] == pytest.approx(np.cos(0.1))
    assert r["rel_max_diff"] == pytest.approx(np.sin(0.1))
    assert r["cosine_between_inputs_max"] == 0.0  # orthogonal rows
    with pytest.raises(RuntimeError, match="rows"):
        gpu_check._rows_agreement(other[:2], cpu)


def test_clip_clap_is_a_default_part(gpu_check):
    assert "clip_clap" in gpu_check.parse_args(["--device", "cpu"]).parts
    assert gpu_check.parse_args(["--parts", "clip_clap"]).parts == ["clip_clap"]
