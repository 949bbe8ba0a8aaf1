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

Run as benchmarks/official_fixtures/common.py says: ``.venv/bin/python benchmarks/official_fixtures/apn.py
--official <work tree of the official code>`` (default: /tmp/official-devise).

Patches: none to the official files; the stand-ins of benchmarks/official_fixtures/common.py, as for DeViSE (a
``torch.utils.tensorboard`` module when tensorboard is missing; a one-batch loader and a dataset object with the
attributes ``train_step`` and ``evaluate_dataset_baseline`` read).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Loader, Stats, baseline_evaluation, fixture_args, save_fixture

# The sibling script: the official imports, the sizes and the data shared with DeViSE.
from devise import (
    AUDIO_DIM,
    CLASS_IDS,
    UNSEEN_IDS,
    VIDEO_DIM,
    WORD_DIM,
    fixture_start,
    make_data,
    official_modules,
)

N_TRAIN, N_EVAL = 8, 12
INIT_SEED, DATA_SEED = 0, 3
LR = 1e-3


def official_args(audio_dim: int, video_dim: int) -> argparse.Namespace:
    """The attributes of main.py's argument namespace that APN and the training/evaluation steps read."""
    return argparse.Namespace(input_size=None, input_size_audio=audio_dim, input_size_video=video_dim,
                              norm_inputs=True, z_score_inputs=False, cjme=False)


def main() -> None:
    a = fixture_args(__doc__, "apn", holding="model.py", default_official=Path("/tmp/official-devise"))
    logging.disable(logging.CRITICAL)
    off = official_modules(a.official)
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
    loader = Loader(train, class_vectors, CLASS_IDS)

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

    off.train.train_step(loader, model, record, optimizer, 0, 1, None, "cpu", [], Stats(),
                         False, False, True, False, args)
    assert torch.equal(seen["labels"], train["labels"]), "the official label mapping differs"
    assert torch.equal(seen["word"], train["text"])
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    after = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # --- the official evaluation ----------------------------------------------------------------------------
    ev = make_data(g, N_EVAL, every_class=True)
    model = off.model.APN(args)
    model.load_state_dict(state)
    evaluation = baseline_evaluation(off.utils, model, ev, class_vectors, class_ids=CLASS_IDS, unseen_ids=UNSEEN_IDS,
                                     args=args, apn=True)

    # --- parameter count at the real UCF cls config ------------------------------------------------------------
    ucf = off.model.APN(official_args(128, 4096))
    counts = {"ucf_cls": sum(p.numel() for p in ucf.parameters())}

    fixture = {
        **fixture_start("apn.py", lr=LR, init_seed=INIT_SEED, init_state=init_state, state=state, fresh=fresh,
                        train=train, class_vectors=class_vectors),
        "output_final": seen["output_final"],
        "pre_attri": seen["pre_attri"],
        "pre_class": seen["pre_class"],
        "losses": {**seen["terms"], "total": seen["total"]},
        "grad": grads,
        "after_step": after,
        "eval": evaluation,
        "param_counts": counts,
    }
    save_fixture(fixture, a.out)
    print(f"param counts {counts}")
    print({k: float(v) for k, v in fixture["losses"].items()}, fixture["eval"]["result"]["both"])


if __name__ == "__main__":
    main()
