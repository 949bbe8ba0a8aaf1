"""benchmarks/gpu_check.py in its CPU smoke mode (``--device cpu --quick``): it runs end to end and its JSON holds
every part with sane values, so the GPU check does not rot between GPU runs (~1 min on 2 idle cores)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _positive_spread(s: dict) -> None:
    assert s["median"] > 0 and s["min"] <= s["median"] <= s["max"] and len(s["runs"]) >= 1, s


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpu_quick_run_writes_every_part(tmp_path):
    out = tmp_path / "check.json"
    proc = _run("--device", "cpu", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["quick"] is True and res["gpu"] is None
    assert res["machine"]["usable_cores"] >= 1 and res["machine"]["busy"] in (True, False)

    ex = res["extraction"]
    n_videos = ex["corpus"]["videos"] + ex["corpus"]["hd_videos"]
    assert set(ex["presets"]) == {"paper", "reference"}
    for r in ex["presets"].values():
        assert r["videos"] == n_videos and r["full"]["statuses"] == {"ok": n_videos}
        assert r["clips"] >= n_videos  # at least one 16-frame clip per video
        for part in ("decode_only", "full"):
            _positive_spread(r[part]["seconds"])
            _positive_spread(r[part]["clips_per_s"])
        # the ratio is full / decode-only of the same round
        runs = zip(r["full"]["seconds"]["runs"], r["decode_only"]["seconds"]["runs"], r["full_over_decode_only"]["runs"],
                   strict=True)
        for full, dec, ratio in runs:
            assert ratio == pytest.approx(full / dec, rel=0.01)
        assert r["full"]["gpu_utilisation_pct"]["samples"] == 0  # nothing to sample on the CPU
        assert 0 <= r["full"]["cpu_busy_fraction"] <= 1

    profiles = {p["profile"]: p for p in res["training"]["profiles"]}
    assert set(profiles) == {"ucf-like", "activitynet-like"}
    for p in profiles.values():
        for mode in ("fp32", "bf16"):
            _positive_spread(p[mode]["samples_per_s"])
        assert p["bf16_speedup"]["median"] == pytest.approx(
            p["bf16"]["samples_per_s"]["median"] / p["fp32"]["samples_per_s"]["median"], rel=0.05)
    assert profiles["activitynet-like"]["mean_video_tokens"] > profiles["ucf-like"]["mean_video_tokens"]

    det = res["determinism"]["training"]
    assert det["identical_metrics"] is True and det["identical_weights"] is True
    assert det["metrics_run1"] == det["metrics_run2"] and len(det["metrics_run1"]) == det["epochs"]
    assert all(math.isfinite(v) for row in det["metrics_run1"] for v in row)
    agree = res["determinism"]["cpu_vs_device"]
    assert agree["devices"] == ["cpu", "cpu"] and agree["status"].startswith("cpu against itself")
    for name in ("c3d", "vggish", "tcaf"):
        assert agree[name]["ok"] is True and agree[name]["rel_max_diff"] <= agree["tolerances"][f"{name}_" + (
            "fc7_rel" if name == "c3d" else "embedding_rel")]

    targets = {t["target"]: t for t in res["targets"]}
    for preset, r in ex["presets"].items():
        t = next(t for name, t in targets.items() if f"({preset})" in name)
        assert t["value"] == r["full_over_decode_only"]["median"] and t["met"] == (t["value"] <= 1.3)
    assert any(t["target"].startswith("two deterministic trainings") and t["met"] for t in res["targets"])
    assert sum("agree within tolerance" in name for name in targets) == 3
    assert res["seconds"]["total"] >= sum(v for k, v in res["seconds"].items() if k != "total") - 1


def test_bad_arguments_name_the_option(gpu_check, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--size", "320", "--device", "cpu"])
    assert exit_.value.code != 0 and "WIDTHxHEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--parts", "extraction,speed", "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and "--parts" in err and "speed" in err


def test_a_missing_gpu_is_an_error_that_says_how_to_run_on_cpu(gpu_check):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--device", "cuda", "--quick"])
    # SystemExit with a message: the process prints it on stderr and exits with status 1
    assert isinstance(exit_.value.code, str)
    assert "CUDA is not available" in exit_.value.code and "--device cpu --quick" in exit_.value.code
