"""Reference values of the official DeViSE / ALE / SJE for tests/test_method_devise.py.

Runs the official AVCA-GZSL code (ExplainableML/AVCA-GZSL, commit 2711aeb5d7257ece4c5464fa46d7849a4edf6470) on CPU
with small input sizes and a fixed seed, and saves ``tests/fixtures/methods/devise.pt``:

* the official ``DeviseModel`` state dict (a fresh one under ``torch.manual_seed(INIT_SEED)``, and the one the
  comparison runs on), the inputs, the logits and projections;
* one official training step per loss (``src.train.train_step``, its ``model_devise`` branch, with the official
  ``ClsContrastiveLoss`` as ``main.py`` builds it for ``--devise``, ``--ale`` and ``--sje``; dropout 0): the loss,
  the gradient and the weights after the official Adam step;
* one training-mode forward with dropout 0.2 under ``torch.manual_seed(DROPOUT_SEED)`` (the dropout masks of the
  input and of the class-vector matrix) and the three losses on it;
* the official evaluation (``src.utils.evaluate_dataset_baseline`` with ``model_devise=True``): the distance matrix
  it hands to calibrated stacking, recorded from its ``torch.cdist`` call, and its result dict;
* the official parameter count at the real UCF cls config (``--input_size_audio 128 --input_size_video 4096``).

Run as benchmarks/official_fixtures/common.py says: ``.venv/bin/python benchmarks/official_fixtures/devise.py
--official <work tree of the official code>`` (default: /tmp/official-devise).

Patches: none to the official files. Before importing them the script puts a stand-in
``torch.utils.tensorboard`` module (only ``SummaryWriter`` is imported, never used here) into ``sys.modules``
when tensorboard is not installed. The official loader and dataset are replaced by minimal stand-ins that hand
``train_step`` and ``evaluate_dataset_baseline`` the batch dicts and attributes they read (``map_embeddings_target``
of the real dataset calls ``.cuda()``; the stand-in returns the same pair on the CPU).
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
from common import (  # the sibling module: stand-ins, patches and saving shared by these scripts
    COMMIT,
    Loader,
    Stats,
    baseline_evaluation,
    fixture_args,
    import_official,
    save_fixture,
)

AUDIO_DIM, VIDEO_DIM, WORD_DIM = 4, 8, 300  # the official model hard-codes 300
CLASS_IDS = [2, 5, 9, 11, 17, 23]  # benchmark ids of the split's classes (sparse, as in a real split)
UNSEEN_IDS = [9, 23]  # for the evaluation: seen = the others
N_TRAIN, N_EVAL = 12, 12
INIT_SEED, DATA_SEED, DROPOUT_SEED = 0, 1, 7
LR = 1e-3
# main.py: the three criteria of the family.
CRITERIA = {
    "devise": {"margin": 0.1, "max_violation": False, "topk": None, "reduction": "sum"},
    "ale": {"margin": 0.1, "max_violation": False, "topk": None, "reduction": "weighted"},
    "sje": {"margin": 0.1, "max_violation": True, "topk": 1, "reduction": "sum"},
}


def official_modules(root: Path) -> types.SimpleNamespace:
    loss, model, train, utils = import_official(root, "loss", "model", "train", "utils")
    return types.SimpleNamespace(model=model, loss=loss, train=train, utils=utils)


def official_args(audio_dim: int, video_dim: int, dropout: float) -> argparse.Namespace:
    """The attributes of main.py's argument namespace that DeviseModel and the training/evaluation steps read."""
    return argparse.Namespace(input_size=None, input_size_audio=audio_dim, input_size_video=video_dim,
                              dropout_baselines=dropout, norm_inputs=True, z_score_inputs=False, cjme=False)


def make_data(g: torch.Generator, n: int, every_class: bool = False) -> dict:
    audio = torch.rand(n, AUDIO_DIM, generator=g) * 255.0  # averaged uint8 VGGish codes
    video = torch.randn(n, VIDEO_DIM, generator=g).abs() * 3.0  # post-ReLU C3D fc7
    if every_class:  # each class at least once (per-class recall is 0/0 for a class without samples)
        labels = (torch.arange(n) % len(CLASS_IDS))[torch.randperm(n, generator=g)]
    else:
        labels = torch.randint(len(CLASS_IDS), (n,), generator=g)
    return {"audio": audio, "video": video, "labels": labels,
            "targets": torch.tensor(CLASS_IDS)[labels]}


def fixture_start(script: str, *, lr: float, init_seed: int, init_state: dict, state: dict, fresh,
                  train: dict, class_vectors: torch.Tensor, **meta) -> dict:
    """The first entries of the DeViSE and the APN fixture: what ran, the initial and the compared official
    weights, the parameters the official optimiser steps, and the training inputs."""
    return {
        "meta": {"commit": COMMIT, "torch": str(torch.__version__), "script": f"benchmarks/official_fixtures/{script}",
                 "audio_dim": AUDIO_DIM, "video_dim": VIDEO_DIM, "word_dim": WORD_DIM, "lr": lr,
                 "init_seed": init_seed, **meta},
        "init_state_dict": init_state,
        "state_dict": state,
        "optimizer_params": [n for n, _ in fresh.named_parameters()],
        "train": {"audio": train["audio"], "video": train["video"], "labels": train["labels"],
                  "targets": train["targets"], "class_ids": torch.tensor(CLASS_IDS),
                  "class_vectors": class_vectors},
    }


def main() -> None:
    a = fixture_args(__doc__, "devise", holding="model.py", default_official=Path("/tmp/official-devise"))
    logging.disable(logging.CRITICAL)
    off = official_modules(a.official)
    torch.set_num_threads(1)

    # --- models -------------------------------------------------------------------------------------------
    torch.manual_seed(INIT_SEED)
    fresh = off.model.DeviseModel(official_args(AUDIO_DIM, VIDEO_DIM, 0.0))
    init_state = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
    g = torch.Generator().manual_seed(DATA_SEED)
    # Comparison weights: wider than the default init so that the number of violating classes varies
    # from 0 to C-1 across the batch (ALE's rank weight).
    state = {"bilinear.weight": torch.randn(WORD_DIM, AUDIO_DIM + VIDEO_DIM, generator=g) * 0.6}
    class_vectors = F.normalize(torch.randn(len(CLASS_IDS), WORD_DIM, generator=g), dim=1)  # unit w2v rows

    train = make_data(g, N_TRAIN)
    train["text"] = class_vectors[train["labels"]]
    loader = Loader(train, class_vectors, CLASS_IDS)

    # --- one official training step per criterion --------------------------------------------------------
    losses = {}
    logits = projected = None
    for name, kwargs in CRITERIA.items():
        model = off.model.DeviseModel(official_args(AUDIO_DIM, VIDEO_DIM, 0.0))
        model.load_state_dict(state)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # main.py
        seen = {}
        criterion = off.loss.ClsContrastiveLoss(**kwargs)

        def record(crit=criterion, seen=seen):
            def call(scores, labels):
                seen["scores"], seen["labels"] = scores.detach().clone(), labels.clone()
                out = crit(scores, labels)
                seen["loss"] = out[0].detach().clone()
                return out
            return call

        hook = model.register_forward_hook(
            lambda mod, inp, out, seen=seen: seen.update(projected=out[1].detach().clone()))
        off.train.train_step(loader, model, record(), optimizer, 0, 1, None, "cpu", [], Stats(),
                             False, True, False, False, official_args(AUDIO_DIM, VIDEO_DIM, 0.0))
        hook.remove()
        assert torch.equal(seen["labels"], train["labels"]), "the official label mapping differs"
        if logits is None:
            logits, projected = seen["scores"], seen["projected"]
        losses[name] = {
            "loss": seen["loss"],
            "grad": {"bilinear.weight": model.bilinear.weight.grad.detach().clone()},
            "after_step": {k: v.detach().clone() for k, v in model.state_dict().items()},
        }
    pos = logits.gather(1, train["labels"][:, None])
    cost = (0.1 + logits - pos).clamp(min=0).masked_fill(F.one_hot(train["labels"], len(CLASS_IDS)).bool(), 0)
    violations = (cost > 0).sum(1)
    print("ALE violations per sample:", violations.tolist())

    # --- a training-mode forward with dropout (masks on the input and on the class matrix) -----------------
    dropped = off.model.DeviseModel(official_args(AUDIO_DIM, VIDEO_DIM, 0.2))
    dropped.load_state_dict(state)
    dropped.train()
    x = torch.cat((train["video"], train["audio"]), 1)
    torch.manual_seed(DROPOUT_SEED)
    d_logits, _, d_text = dropped(x, class_vectors)
    dropout = {
        "p": 0.2, "seed": DROPOUT_SEED, "logits": d_logits.detach().clone(),
        "class_vectors": d_text.detach().clone(),
        "losses": {n: off.loss.ClsContrastiveLoss(**kw)(d_logits, train["labels"])[0].detach().clone()
                   for n, kw in CRITERIA.items()},
    }

    # --- the official evaluation ----------------------------------------------------------------------------
    ev = make_data(g, N_EVAL, every_class=True)
    model = off.model.DeviseModel(official_args(AUDIO_DIM, VIDEO_DIM, 0.0))
    model.load_state_dict(state)
    evaluation = baseline_evaluation(off.utils, model, ev, class_vectors, class_ids=CLASS_IDS, unseen_ids=UNSEEN_IDS,
                                     args=official_args(AUDIO_DIM, VIDEO_DIM, 0.0), model_devise=True)

    # --- parameter count at the real UCF cls config ------------------------------------------------------------
    ucf = off.model.DeviseModel(official_args(128, 4096, 0.2))
    counts = {"ucf_cls": sum(p.numel() for p in ucf.parameters())}

    fixture = {
        **fixture_start("devise.py", lr=LR, init_seed=INIT_SEED, init_state=init_state, state=state, fresh=fresh,
                        train=train, class_vectors=class_vectors, criteria=CRITERIA),
        "logits": logits, "projected": projected, "violations": violations,
        "losses": losses,
        "dropout": dropout,
        "eval": evaluation,
        "param_counts": counts,
    }
    save_fixture(fixture, a.out)
    print(f"param counts {counts}")
    print({n: float(v["loss"]) for n, v in losses.items()}, evaluation["result"]["both"])


if __name__ == "__main__":
    main()
