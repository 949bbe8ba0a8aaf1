"""Check real extractor weights against the published smoke-test numbers (spec §1.5, §1.6).

    python -m extractors.smoke_check --vggish-savedmodel DIR --pca vggish_pca_params.npz --c3d c3d.pickle

VGGish input: the upstream smoke signal, a 3 s 1 kHz sine generated at 44.1 kHz (`np.linspace(0, 3, 132300)`) and
resampled to 16 kHz with resampy's kaiser_best filter (resampy when installed, else the same Kaiser-windowed sinc in
torchaudio). Expected values:

| quantity                                             | expected          | tolerance  | source                    |
|------------------------------------------------------|-------------------|------------|---------------------------|
| TF-Hub output (pre-activation) mean / std            | -0.0333 / 0.380   | rtol 0.1   | vggish_export_tfhub.py    |
| embedding with ReLU (original checkpoint) mean / std | 0.131 / 0.238     | rtol 0.02  | torch port README/asserts |
| PCA + uint8 codes mean / std                         | 123.0 / 75.0      | rtol 0.02  | original vggish smoke test|
| torch (converted) vs TF-Hub codes                    | >= 99 % equal, max diff 1 | -  | spec §6 validation        |

C3D has no published reference numbers; the check loads `c3d.pickle` strictly, reports its sha256, and checks that fc7
features of a synthetic clip are finite, non-negative, partly sparse and batch-invariant.
Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

# resampy 0.2.2 `kaiser_best`: 64 zero crossings, rolloff and Kaiser beta as published in its filter table.
KAISER_BEST = {"lowpass_filter_width": 64, "rolloff": 0.9475937167399596, "beta": 14.769656459379492}

EXPECTED = {
    "hub_preactivation": (-0.0333, 0.380, 0.1),
    "embedding_relu": (0.131, 0.238, 0.02),
    "postprocessed": (123.0, 75.0, 0.02),
}


@dataclass
class Check:
    name: str
    value: object
    expected: object
    ok: bool


def smoke_sine_16k() -> np.ndarray:
    """The upstream smoke-test waveform at 16 kHz: float32 [48000]."""
    sr, seconds, freq = 44100, 3, 1000
    x = np.sin(2 * np.pi * freq * np.linspace(0, seconds, seconds * sr))
    try:
        import resampy

        y = resampy.resample(x, sr, 16000, filter="kaiser_best")
    except ImportError:
        import torchaudio.functional as taf

        y = taf.resample(
            torch.from_numpy(x), sr, 16000, resampling_method="sinc_interp_kaiser", **KAISER_BEST
        ).numpy()
    return y[: len(x) * 16000 // sr].astype(np.float32)


def _mean_std_check(name: str, arr: np.ndarray, key: str) -> list[Check]:
    mean_e, std_e, rtol = EXPECTED[key]
    mean, std = float(np.mean(arr)), float(np.std(arr))
    return [
        Check(
            f"{name} mean",
            round(mean, 5),
            f"{mean_e} (rtol {rtol})",
            abs(mean - mean_e) <= rtol * abs(mean_e),
        ),
        Check(f"{name} std", round(std, 5), f"{std_e} (rtol {rtol})", abs(std - std_e) <= rtol * abs(std_e)),
    ]


def check_vggish(
    saved_model_dir: str | Path,
    pca: str | Path,
    device: str = "auto",
    torch_weights: str | Path | None = None,
) -> list[Check]:
    """Run TF-Hub and converted-torch VGGish on the smoke sine and compare with the published numbers."""
    from .vggish import AudioExtractorConfig, build_audio_extractor
    from .vggish.convert import convert_savedmodel_to_torch
    from .vggish.postprocess import PCAQuantizer

    wave = torch.from_numpy(smoke_sine_16k())
    quantize = PCAQuantizer.from_spec(
        pca
    )  # the extractor's own postprocessing, applied once per backend below
    checks: list[Check] = []
    hub_raw = build_audio_extractor(
        AudioExtractorConfig(
            backend="tfhub", weights=str(saved_model_dir), postprocess="raw", final_relu=False
        ),
        device,
    ).embed(wave)
    checks.append(Check("tfhub examples", hub_raw.shape[0], 3, hub_raw.shape == (3, 128)))
    checks += _mean_std_check("tfhub pre-activation", hub_raw, "hub_preactivation")
    checks += _mean_std_check("tfhub + ReLU", np.maximum(hub_raw, 0), "embedding_relu")
    hub_codes = quantize(np.maximum(hub_raw, 0))

    with tempfile.TemporaryDirectory() as tmp:
        pth = torch_weights or convert_savedmodel_to_torch(saved_model_dir, Path(tmp) / "vggish.pth")
        cfg = AudioExtractorConfig(backend="torch", weights=str(pth), final_relu=True, postprocess="raw")
        t_emb = build_audio_extractor(cfg, device).embed(wave)
    t_codes = quantize(t_emb)
    checks += _mean_std_check("torch embedding (ReLU)", t_emb, "embedding_relu")
    checks += _mean_std_check("torch PCA uint8 codes", t_codes.astype(np.float64), "postprocessed")
    checks += _mean_std_check("tfhub PCA uint8 codes", hub_codes.astype(np.float64), "postprocessed")
    # The two frontends differ only in float32 (tf.signal) vs float64 rounding: 1e-3 of the embedding scale.
    hub_relu = np.maximum(hub_raw, 0)
    comparable = hub_relu.shape == t_emb.shape and t_emb.size > 0
    scale = max(float(np.abs(t_emb).max()), 1e-6) if comparable else 1.0
    rel = float(np.abs(hub_relu - t_emb).max()) / scale if comparable else float("inf")
    checks.append(Check("torch vs tfhub max |diff| / scale", round(rel, 7), "<= 1e-3", rel <= 1e-3))
    same = float((t_codes == hub_codes).mean()) if comparable else 0.0
    dmax = int(np.abs(t_codes.astype(int) - hub_codes.astype(int)).max()) if comparable else 255
    checks.append(Check("torch vs tfhub codes equal", round(same, 4), ">= 0.99", same >= 0.99))
    checks.append(Check("torch vs tfhub codes max |diff|", dmax, "<= 1", dmax <= 1))
    return checks


def check_c3d(path: str | Path, sha256: str | None = None, device: str = "auto") -> list[Check]:
    """Strict load of c3d.pickle and structural checks of fc7 on a synthetic 2-clip video."""
    from .c3d import VideoExtractorConfig, build_video_extractor

    ex = build_video_extractor(VideoExtractorConfig(weights=str(path), sha256=sha256, batch_size=2), device)
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(32, 120, 160, 3, generator=g) * 255).to(torch.uint8)
    clips = ex.make_clips(ex.preprocess(frames))
    batched = ex.embed_preprocessed(clips)
    single = ex.embed_preprocessed(clips[:1])
    nonzero = float((batched > 0).mean())
    valid = bool(np.isfinite(batched).all() and (batched >= 0).all())
    diff = float(np.abs(batched[:1] - single).max())
    return [
        Check("c3d sha256", ex.attrs["weights"]["sha256"], sha256 or "(not given)", True),
        Check("c3d fc7 shape", list(batched.shape), [2, 4096], batched.shape == (2, 4096)),
        Check("c3d fc7 finite, >= 0", valid, True, valid),
        Check("c3d fc7 non-zero fraction", round(nonzero, 4), "in (0, 1)", 0.0 < nonzero < 1.0),
        Check(
            "c3d batch invariance max |diff|",
            diff,
            "<= 1e-3 (rel)",
            bool(np.allclose(batched[:1], single, 1e-3, 1e-3)),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Check real VGGish/C3D weights against the published smoke numbers."
    )
    p.add_argument("--vggish-savedmodel", help="VGGish TF SavedModel directory (TF-Hub google/vggish/1)")
    p.add_argument(
        "--vggish-pth", help="converted torch VGGish (default: convert the SavedModel to a temp file)"
    )
    p.add_argument("--pca", help="vggish_pca_params.npz (required with --vggish-savedmodel)")
    p.add_argument("--c3d", help="c3d.pickle (Sports-1M, DavideA/c3d-pytorch format)")
    p.add_argument("--c3d-sha256", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the checks to this JSON file")
    a = p.parse_args(argv)
    if not (a.vggish_savedmodel or a.c3d):
        p.error("give --vggish-savedmodel DIR --pca PATH and/or --c3d PATH")
    if a.vggish_savedmodel and not a.pca:
        p.error("--vggish-savedmodel needs --pca vggish_pca_params.npz")
    for flag, val in (("--vggish-savedmodel", a.vggish_savedmodel), ("--pca", a.pca), ("--c3d", a.c3d)):
        if val and not Path(val).exists():
            p.error(f"{flag} {val}: no such file or directory (see docs/extractors.md, section Weights)")
    checks: list[Check] = []
    if a.vggish_savedmodel:
        checks += check_vggish(a.vggish_savedmodel, a.pca, a.device, a.vggish_pth)
    if a.c3d:
        checks += check_c3d(a.c3d, a.c3d_sha256, a.device)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.value!s:<24} expected {c.expected}")
    ok = all(c.ok for c in checks)
    print("all checks passed" if ok else f"{sum(not c.ok for c in checks)} check(s) failed")
    if a.json:
        Path(a.json).write_text(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
