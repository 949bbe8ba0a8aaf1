"""Record what the official AVGZSLNet computes, for tests/test_method_avgzslnet.py.

Builds the official AVGZSLNet model (``src/model.py`` and ``src/loss.py`` of ExplainableML/AVCA-GZSL at commit
2711aeb5d7257ece4c5464fa46d7849a4edf6470) on CPU at small sizes with a fixed seed, runs one official
training step on small random inputs (positives and one negative each, as ``train_step`` feeds them), the
optimiser step of ``main.py``, and the official evaluation (``evaluate_dataset``), and saves everything a
re-implementation must reproduce to ``tests/fixtures/methods/avgzslnet.pt`` (about 150 KB).

Run as benchmarks/official_fixtures/common.py says: ``.venv/bin/python benchmarks/official_fixtures/avgzslnet.py
--official <work tree of the official code>``.

The official files are used unchanged. What this script changes in its own process, and why:

* ``torch.utils.tensorboard`` is replaced by a stub when tensorboard is not installed (``src/utils.py``
  imports ``SummaryWriter`` at import time; it is never used here);
* the sizes the official model hard-codes (300 for the word vectors, for the hidden layer of the word network
  f_t and for the decoder's output) are shrunk by wrapping the official ``EmbeddingNet`` constructor while
  the model is built, so the modules are still built in the official order from the same RNG stream. The
  parameter count at the real UCF cls config is taken from an unshrunk model.

Recorded (float32, CPU): the initial official state dict; the inputs; in train mode with dropout 0, the 12
outputs of the official forward, every loss term of ``AVGZSLLoss`` (its debug dict), the gradients of its
backward, the BatchNorm buffers after the step's forward passes and the state after one
``optim.Adam(model.parameters(), lr=1e-3)`` step, as in ``main.py``; then, in eval mode, the evaluation
embeddings and the "both" distance matrix that ``get_best_evaluation`` ranks (captured from the official
``evaluate_dataset``), with its S/U/HM/ZSL. A second run with the official dropout rates (0.8 in the
embedding networks, 0.5 in the decoder, the defaults every run script keeps) and a fixed RNG seed records the
step's outputs and losses, to check that a re-implementation draws its dropout masks in the official order.
Also the official parameter counts.
"""

from __future__ import annotations

import sys
import types
from argparse import Namespace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # the sibling module: stand-ins, patches and saving shared by these scripts
    COMMIT,
    adam_step,
    buffers,
    build_shrunk,
    detached_state,
    import_official,
    make_inputs,
    official_evaluation,
    record_and_save,
    source_hashes,
)

# Small sizes, all different so that a wiring mistake changes a shape. The embedding width (64) is
# hard-coded in the official model and kept.
SMALL = {"audio": 6, "video": 10, "hidden": 12, "word": 8, "word_hidden": 7, "decoder_hidden": 5, "out": 64}
BATCH, N_CLASSES, N_EVAL, N_SEEN = 10, 6, 20, 4
SEED = 0
DROPOUT_SEED = 1234
DROPOUTS = {"embedding_dropout": 0.8, "decoder_dropout": 0.5}  # official defaults, kept by every run script
FORWARD_OUTPUTS = ("x_t_p", "a_p", "v_p", "t_p", "a_q", "v_q", "t_q", "x_ta_p", "x_tv_p", "x_tt_p", "x_ta_q",
                   "x_tv_q")


def official_args(*, small: bool, embedding_dropout: float, decoder_dropout: float) -> Namespace:
    """The arguments ``AVGZSLNet(args)`` reads, as the UCF cls run script sets them (hidden 1024, decoder
    hidden 64, BN in both, normalised decoder outputs)."""
    return Namespace(input_size=None, input_size_audio=SMALL["audio"] if small else 128,
                     input_size_video=SMALL["video"] if small else 4096,
                     embeddings_hidden_size=SMALL["hidden"] if small else 1024,
                     decoder_hidden_size=SMALL["decoder_hidden"] if small else 64,
                     embedding_dropout=embedding_dropout, decoder_dropout=decoder_dropout,
                     embedding_use_bn=True, decoder_use_bn=True, normalize_decoder_outputs=True)


def build_official(om: types.ModuleType, *, small: bool, embedding_dropout: float,
                   decoder_dropout: float) -> nn.Module:
    """The official AVGZSLNet, built from the current RNG state; f_t and the decoder shrunk when ``small``."""
    args = official_args(small=small, embedding_dropout=embedding_dropout, decoder_dropout=decoder_dropout)
    if not small:
        return om.AVGZSLNet(args)
    model, built = build_shrunk(om, "EmbeddingNet", lambda: om.AVGZSLNet(args), SMALL)
    s = SMALL
    expect = [(s["audio"], s["hidden"], s["out"]), (s["video"], s["hidden"], s["out"]),
              (s["word"], s["word_hidden"], s["out"]), (s["out"], s["decoder_hidden"], s["word"])]
    assert built == expect, f"the official constructor built {built}, not f_a, f_v, f_t, decoder = {expect}"
    return model


def prepare(model: nn.Module, x: dict[str, torch.Tensor]) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics (those of one train-mode
    pass over the evaluation inputs, with noise), so that train- and eval-mode outputs depend on all of them.
    Seeded by the caller."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
            m.bias.copy_(0.1 * torch.randn_like(m.bias))
            m.momentum = 1.0  # the running statistics become those of the (last) batch
        model.train()
        model(x["eval_audio"], x["eval_video"], x["class_vectors"], x["eval_audio"], x["eval_video"],
              x["class_vectors"])
        for m in bns:
            m.momentum = 0.1
            m.running_mean.add_(0.1 * torch.randn_like(m.running_mean))
            m.running_var.mul_(1 + 0.1 * torch.rand_like(m.running_var))
            m.num_batches_tracked.zero_()


def official_step(ol: types.ModuleType, model: nn.Module, x: dict[str, torch.Tensor]) -> dict:
    """One official training step (train mode) as ``train_step`` runs it for AVGZSLNet: the forward on
    positives and negatives, ``AVGZSLLoss`` and the backward."""
    model.train()
    criterion = ol.AVGZSLLoss(margin=1.0, distance_fn=ol.L2Loss())
    outputs = model(x["audio"], x["video"], x["word"], x["neg_audio"], x["neg_video"], x["neg_word"])
    loss, details = criterion(*outputs)
    loss.backward()
    # The debug dict's terms under the re-implementation's names ("l_rec" -> "rec").
    losses = {k[2:]: v.clone() for part in ("cmd", "ct") for k, v in details[part].items()}
    losses["total"] = loss.detach().clone()
    return {"forward": {n: o.detach().clone() for n, o in zip(FORWARD_OUTPUTS, outputs, strict=True)},
            "losses": losses}


def record(official: Path) -> dict:
    ol, om, ou = import_official(official, "loss", "model", "utils")
    torch.set_num_threads(1)
    x = make_inputs(SMALL, batch=BATCH, n_classes=N_CLASSES, n_eval=N_EVAL, seed=SEED, eval_labels=True)
    out: dict = {"commit": COMMIT, "sources_sha256": source_hashes(official, "model.py", "loss.py", "utils.py"),
                 "small": dict(SMALL), "inputs": x, "seed": SEED, "n_seen": N_SEEN}

    torch.manual_seed(SEED)
    full = build_official(om, small=False, **DROPOUTS)
    out["param_count_ucf"] = sum(p.numel() for p in full.parameters())
    del full

    # --- dropout 0: forward, loss, gradients, the Adam step of main.py, evaluation
    torch.manual_seed(SEED)
    model = build_official(om, small=True, embedding_dropout=0.0, decoder_dropout=0.0)
    out["param_count_small"] = sum(p.numel() for p in model.parameters())
    out["state_init"] = detached_state(model)
    prepare(model, x)
    out["state"] = detached_state(model)
    out.update(official_step(ol, model, x))
    out.update(adam_step(model))

    model.load_state_dict(out["state"])
    firsts, metrics, ev = official_evaluation(ou, model, x, cjme=False, n_classes=N_CLASSES, n_seen=N_SEEN)
    out["eval"] = {"a_p": ev[1], "v_p": ev[2], "t_p": ev[3], "distances": firsts["both"],
                   "distances_audio": firsts["audio"], "distances_video": firsts["video"], "metrics": metrics}

    # --- official dropout rates, seeded just before the step: same outputs only if masks are drawn in the
    # official order
    torch.manual_seed(SEED)
    model = build_official(om, small=True, **DROPOUTS)
    model.load_state_dict(out["state"])
    torch.manual_seed(DROPOUT_SEED)
    step = official_step(ol, model, x)
    out["dropout"] = {"rates": dict(DROPOUTS), "seed": DROPOUT_SEED, **step,
                      "buffers_after_step": buffers(model)}
    return out


if __name__ == "__main__":
    record_and_save(__doc__, "avgzslnet", holding="model.py", record=record,
                    summary=lambda data: f"official parameter count at the UCF cls config: "
                                         f"{data['param_count_ucf']:,}; small: {data['param_count_small']:,}; "
                                         f"losses { {k: round(float(v), 4) for k, v in data['losses'].items()} }")
