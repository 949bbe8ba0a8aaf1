"""Reference values of the official APN for tests/test_method_apn.py.

Runs the official AVCA-GZSL code (ExplainableML/AVCA-GZSL, commit 2711aeb5d7257ece4c5464fa46d7849a4edf6470) on CPU
with small input sizes and a fixed seed, and saves ``tests/fixtures/methods/apn.pt``:

* the official ``APN`` state dict (a fresh one under ``torch.manual_seed(INIT_SEED)``, and the one the comparison
  runs on), the inputs, and the forward outputs (``output_final``, ``pre_attri['final']``,
  ``pre_attri['layer4']``, ``pre_class['layer4']``);
* one official training step (``src.train.train_step``, its ``apn`` branch, with the official ``APN_Loss``):
  every loss term (computed with the loss object's own ``criterion`` / ``criterion_regre`` on the arguments the
  step passed it), the total, the gradients and the weights after the official Adam step;
* the official evaluation (``src.utils.evaluate_dataset_baseline`` with ``apn=True``): the distance matrix it
  hands to calibrated stacking, recorded from its ``torch.cdist`` call, and its result dict;
* the official parameter count at the real UCF cls config (``--input_size_audio 128 --input_size_video 4096``).

How to run (from the repository root)::

    mkdir -p /tmp/official-devise
    git -C <clone of ExplainableML/AVCA-GZSL> archive 2711aeb5d7257ece4c5464fa46d7849a4edf6470 src \\
        | tar -x -C /tmp/official-devise
    .venv/bin/python benchmarks/official_fixtures/apn.py --official /tmp/official-devise

Patches: none to the official files; the same stand-ins as benchmarks/official_fixtures/devise.py (a
``torch.utils.tensorboard`` module when tensorboard is missing; a one-batch loader and a dataset object with the
attributes ``train_step`` and ``evaluate_dataset_baseline`` read).
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The sibling script: the official imports, the stand-ins and the shared sizes.
from devise import (
    AUDIO_DIM,
    CLASS_IDS,
    COMMIT,
    UNSEEN_IDS,
    VIDEO_DIM,
    WORD_DIM,
    _Loader,
    _Stats,
    import_official,
    make_data,
)

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "methods" / "apn.pt"
N_TRAIN, N_EVAL = 8, 12
INIT_SEED, DATA_SEED = 0, 3
LR = 1e-3


def official_args(audio_dim: int, video_dim: int) -> argparse.Namespace:
    """The attributes of main.py's argument namespace that APN and the training/evaluation steps read."""
    return argparse.Namespace(input_size=None, input_size_audio=audio_dim, input_size_video=video_dim,
                              norm_inputs=True, z_score_inputs=False, cjme=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, default=Path("/tmp/official-devise"),
                        help="work tree of the official repository (holds src/)")
    parser.add_argument("--out", type=Path, default=OUT)
    a = parser.parse_args()
    logging.disable(logging.CRITICAL)
    off = import_official(a.official)
    torch.set_num_threads(1)
    args = official_args(AUDIO_DIM, VIDEO_DIM)

    # --- models -------------------------------------------------------------------------------------------
    torch.manual_seed(INIT_SEED)
    fresh = off.model.APN(args)
    init_state = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
    g = torch.Generator().manual_seed(DATA_SEED)
    # Comparison weights: the official init (2e-4 * U(0,1)) makes every softmax uniform; random weights of
    # both signs give informative outputs and gradients.
    state = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in init_state.items()}
    class_vectors = F.normalize(torch.randn(len(CLASS_IDS), WORD_DIM, generator=g), dim=1)

    train = make_data(g, N_TRAIN)
    train["text"] = class_vectors[train["labels"]]
    loader = _Loader(train, class_vectors)

    # --- one official training step --------------------------------------------------------------------------
    model = off.model.APN(args)
    model.load_state_dict(state)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # main.py
    criterion = off.loss.APN_Loss()
    seen = {}

    def record(mod, output, pre_attri, pre_class, label_a, label_v):
        seen.update(
            output_final=output.detach().clone(),
            pre_attri={k: v.detach().clone() for k, v in pre_attri.items()},
            pre_class={k: v.detach().clone() for k, v in pre_class.items()},
            word=label_a.clone(), labels=label_v.clone(),
            terms={
                "ce_final": criterion.criterion(output, label_v).detach().clone(),
                "mse_final": criterion.criterion_regre(pre_attri["final"], label_a).detach().clone(),
                "ce_layer4": criterion.criterion(pre_class["layer4"], label_v).detach().clone(),
                "mse_layer4": criterion.criterion_regre(pre_attri["layer4"], label_a).detach().clone(),
            },
        )
        loss, details = criterion(mod, output, pre_attri, pre_class, label_a, label_v)
        seen["total"] = loss.detach().clone()
        return loss, details

    off.train.train_step(loader, model, record, optimizer, 0, 1, None, "cpu", [], _Stats(),
                         False, False, True, False, args)
    assert torch.equal(seen["labels"], train["labels"]), "the official label mapping differs"
    assert torch.equal(seen["word"], train["text"])
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    after = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # --- the official evaluation ----------------------------------------------------------------------------
    ev = make_data(g, N_EVAL, every_class=True)
    model = off.model.APN(args)
    model.load_state_dict(state)
    seen_ids = [c for c in CLASS_IDS if c not in UNSEEN_IDS]
    dataset = types.SimpleNamespace(
        all_data={"audio": ev["audio"], "video": ev["video"], "text": class_vectors, "target": ev["targets"]},
        targets=ev["targets"], seen_class_ids=seen_ids, unseen_class_ids=UNSEEN_IDS,
        all_class_ids=list(range(max(CLASS_IDS) + 1)))
    calls = []
    cdist = torch.cdist

    def recording_cdist(x1, x2, *args_, **kwargs):
        out = cdist(x1, x2, *args_, **kwargs)
        calls.append(out.detach().clone())
        return out

    torch.cdist = recording_cdist
    try:
        with torch.no_grad():
            result = off.utils.evaluate_dataset_baseline(dataset, model, "cpu", "L2Loss", apn=True, args=args)
    finally:
        torch.cdist = cdist
    assert all(torch.equal(c, calls[0]) for c in calls), "the distance matrix changed between betas"

    # --- parameter count at the real UCF cls config ------------------------------------------------------------
    ucf = off.model.APN(official_args(128, 4096))
    counts = {"ucf_cls": sum(p.numel() for p in ucf.parameters())}

    fixture = {
        "meta": {"commit": COMMIT, "torch": str(torch.__version__), "script": "benchmarks/official_fixtures/apn.py",
                 "audio_dim": AUDIO_DIM, "video_dim": VIDEO_DIM, "word_dim": WORD_DIM, "lr": LR,
                 "init_seed": INIT_SEED},
        "init_state_dict": init_state,
        "state_dict": state,
        "optimizer_params": [n for n, _ in fresh.named_parameters()],
        "train": {"audio": train["audio"], "video": train["video"], "labels": train["labels"],
                  "targets": train["targets"], "class_ids": torch.tensor(CLASS_IDS),
                  "class_vectors": class_vectors},
        "output_final": seen["output_final"],
        "pre_attri": seen["pre_attri"],
        "pre_class": seen["pre_class"],
        "losses": {**seen["terms"], "total": seen["total"]},
        "grad": grads,
        "after_step": after,
        "eval": {
            "audio": ev["audio"], "video": ev["video"], "targets": ev["targets"], "labels": ev["labels"],
            "seen_ids": torch.tensor(seen_ids), "unseen_ids": torch.tensor(UNSEEN_IDS), "distances": calls[0],
            "result": {k: {m: v[m] for m in ("seen", "unseen", "hm", "zsl", "beta")} for k, v in result.items()},
        },
        "param_counts": counts,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1024:.1f} KiB); param counts {counts}")
    print({k: float(v) for k, v in fixture["losses"].items()}, fixture["eval"]["result"]["both"])


if __name__ == "__main__":
    main()
