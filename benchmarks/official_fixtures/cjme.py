"""Record what the official CJME computes, for tests/test_method_cjme.py.

Builds the official CJME model (``src/model.py`` and ``src/loss.py`` of ExplainableML/AVCA-GZSL at commit
2711aeb5d7257ece4c5464fa46d7849a4edf6470) on CPU at small sizes with a fixed seed, runs one official
training step on small random inputs (positives and one negative each, as ``train_step`` feeds them), the
optimiser step of ``main.py``, and the official evaluation (``evaluate_dataset``), and saves everything a
re-implementation must reproduce to ``tests/fixtures/methods/cjme.pt`` (about 150 KB).

Run as benchmarks/official_fixtures/common.py says: ``.venv/bin/python benchmarks/official_fixtures/cjme.py
--official <work tree of the official code>``.

The official files are used unchanged. What this script changes in its own process, and why:

* ``Tensor.cuda`` returns the tensor itself while the official loss runs: ``CJMELoss.forward`` moves the
  attention weights and their supervision to the GPU with ``.cuda()``, and this runs on CPU;
* ``torch.utils.tensorboard`` is replaced by a stub when tensorboard is not installed (``src/utils.py``
  imports ``SummaryWriter`` at import time; it is never used here);
* the sizes the official model hard-codes (300 for the word vectors and for the hidden layer of the word
  network f_t) are shrunk by wrapping the official ``EmbeddingNetCJME`` constructor while the model is built,
  so the modules are still built in the official order from the same RNG stream. The parameter count at the
  real UCF cls config is taken from an unshrunk model.

Recorded (float32, CPU): the initial official state dict; the inputs; in train mode with dropout 0, every
output of the official forward, the class embeddings of the train-time pass over the class matrix, every
loss term and intermediate of ``CJMELoss.forward`` (read from its locals: entropies, attention supervision,
the [B,B] composite triplet matrix), the gradients of its backward, the BatchNorm buffers after the step's
forward passes and the state after one ``optim.Adam(model.parameters(), lr=1e-3)`` step, as in ``main.py``;
then, in eval mode, the evaluation embeddings, the hard attention and the "both" distance matrix that
``get_best_evaluation`` ranks (captured from the official ``evaluate_dataset``), with its S/U/HM/ZSL. A second
run with the UCF dropout (0.2) and a fixed RNG seed records the step's outputs and losses, to check that a
re-implementation draws its dropout masks in the official order. Also the official parameter counts.
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
    cuda_returns_self,
    detached_state,
    import_official,
    make_inputs,
    official_evaluation,
    on_return,
    patched,
    record_and_save,
    source_hashes,
    tensor_locals,
)

# Small sizes, all different so that a wiring mistake changes a shape. The embedding width (64) is
# hard-coded in the official model and kept.
SMALL = {"audio": 6, "video": 10, "hidden": 12, "word": 8, "word_hidden": 7, "out": 64}
BATCH, N_CLASSES, N_EVAL, N_SEEN = 10, 6, 20, 4
SEED = 0
DROPOUT_SEED = 1234
UCF_DROPOUT = 0.2
# Official locals of CJMELoss.forward -> names in the fixture.
LOSS_LOCALS = {"logits_audio": "probs_audio", "logits_video": "probs_video", "entropy_audio": "entropy_audio",
               "entropy_video": "entropy_video", "supervision_attention": "supervision",
               "loss_supervision_attention": "attention", "ct_loss": "triplet", "L_av": "modality"}


def official_args(*, small: bool, dropout: float) -> Namespace:
    """The arguments ``CJME(args)`` reads, as the UCF cls run script sets them (hidden 1024, BN)."""
    return Namespace(input_size=None, input_size_audio=SMALL["audio"] if small else 128,
                     input_size_video=SMALL["video"] if small else 4096,
                     embeddings_hidden_size=SMALL["hidden"] if small else 1024,
                     dropout_baselines=dropout, embedding_use_bn=True)


def build_official(om: types.ModuleType, *, small: bool, dropout: float) -> nn.Module:
    """The official CJME, built from the current RNG state; f_t shrunk to SMALL when ``small``."""
    args = official_args(small=small, dropout=dropout)
    if not small:
        return om.CJME(args)
    model, built = build_shrunk(om, "EmbeddingNetCJME", lambda: om.CJME(args), SMALL)
    s = SMALL
    expect = [(s["audio"], s["hidden"], s["out"]), (s["video"], s["hidden"], s["out"]),
              (s["word"], s["word_hidden"], s["out"])]
    assert built == expect, f"the official constructor built {built}, expected f_a, f_v, f_t = {expect}"
    return model


def prepare(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so that train- and
    eval-mode outputs depend on all of them. Seeded by the caller."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
        # Running statistics: those of a batch on the input scales, with some noise.
        bn = model.attention_model[0]
        x = make_inputs(SMALL, batch=BATCH, n_classes=N_CLASSES, n_eval=N_EVAL, seed=SEED, eval_labels=True)
        inputs = torch.cat([x["eval_audio"], x["eval_video"]], dim=1)
        bn.running_mean.copy_(inputs.mean(0) * (1 + 0.1 * torch.randn_like(bn.running_mean)))
        bn.running_var.copy_(inputs.var(0) * (1 + 0.1 * torch.rand_like(bn.running_var)))
        for net, data in ((model.triplet_net.embedding_net1, x["eval_audio"]),
                          (model.triplet_net.embedding_net2, x["eval_video"]),
                          (model.triplet_net.embedding_net3, x["class_vectors"])):
            h = net.fc[0](data)
            net.fc[1].running_mean.copy_(h.mean(0) + 0.1 * torch.randn_like(h[0]))
            net.fc[1].running_var.copy_(h.var(0) * (1 + 0.1 * torch.rand_like(h[0])))


def official_step(ol: types.ModuleType, model: nn.Module, x: dict[str, torch.Tensor]) -> dict:
    """One official training step (train mode) as ``train_step`` runs it for CJME: the forward on
    positives and negatives, f_t over the class matrix (``get_classes_embedding``), the loss (its locals read
    when ``CJMELoss.forward`` returns) and the backward."""
    captured: dict[str, torch.Tensor] = {}
    composite: list[torch.Tensor] = []
    model.train()
    criterion = ol.CJMELoss(margin=1.0, distance_fn=ol.L2Loss())
    outputs = model(x["audio"], x["video"], x["word"], x["neg_audio"], x["neg_video"], x["neg_word"])
    class_embeddings = model.get_classes_embedding(x["class_vectors"])
    # CPU only: the loss calls .cuda() on two tensors. Read: the loss's locals, and the [B,B] broadcast of the
    # composite triplet loss before its .mean().
    with patched(torch.Tensor, "cuda", lambda _: cuda_returns_self), on_return(
        (ol.CJMELoss.forward.__code__, lambda frame, _: captured.update(tensor_locals(frame))),
        (ol.CompositeCJMETripletLoss.forward.__code__, lambda _, value: composite.append(value[0].detach().clone())),
    ):
        loss, details = criterion(*outputs, class_embeddings.detach())
    loss.backward()
    missing = set(LOSS_LOCALS) - set(captured)
    assert not missing and len(composite) == 1, f"official loss locals not found: {missing}"
    names = ("a_p", "v_p", "t_p", "a_q", "v_q", "t_q", "attention", "hard_attention")
    losses = {LOSS_LOCALS[k]: captured[k] for k in LOSS_LOCALS}
    losses.update(total=loss.detach().clone(), triplet_matrix=composite[0],
                  l_ta=details["ct"]["l_ta"].clone(), l_tv=details["ct"]["l_tv"].clone())
    return {"forward": {n: o.detach().clone() for n, o in zip(names, outputs, strict=True)},
            "class_embeddings": class_embeddings.detach().clone(), "losses": losses}


def record(official: Path) -> dict:
    ol, om, ou = import_official(official, "loss", "model", "utils")
    torch.set_num_threads(1)
    x = make_inputs(SMALL, batch=BATCH, n_classes=N_CLASSES, n_eval=N_EVAL, seed=SEED, eval_labels=True)
    out: dict = {"commit": COMMIT, "sources_sha256": source_hashes(official, "model.py", "loss.py", "utils.py"),
                 "small": dict(SMALL), "inputs": x, "seed": SEED, "n_seen": N_SEEN}

    torch.manual_seed(SEED)
    full = build_official(om, small=False, dropout=UCF_DROPOUT)
    out["param_count_ucf"] = sum(p.numel() for p in full.parameters())
    del full

    # --- dropout 0: forward, loss, gradients, the Adam step of main.py, evaluation
    torch.manual_seed(SEED)
    model = build_official(om, small=True, dropout=0.0)
    out["param_count_small"] = sum(p.numel() for p in model.parameters())
    out["state_init"] = detached_state(model)
    prepare(model)
    out["state"] = detached_state(model)
    step = official_step(ol, model, x)
    sup = step["losses"]["supervision"]
    assert {0.0, 0.5, 1.0} <= set(sup.tolist()), f"supervision lacks a case: {sup.tolist()}"
    out.update(step)
    out.update(adam_step(model))

    model.load_state_dict(out["state"])
    firsts, metrics, ev = official_evaluation(ou, model, x, cjme=True, n_classes=N_CLASSES, n_seen=N_SEEN)
    out["eval"] = {"a_p": ev[0], "v_p": ev[1], "t_p": ev[2], "attention": ev[6], "hard_attention": ev[7],
                   "distances": firsts["both"], "distances_audio": firsts["audio"],
                   "distances_video": firsts["video"], "metrics": metrics}
    hard = out["eval"]["hard_attention"]
    assert 0 < hard.sum() < len(hard), f"evaluation attention is all {hard[0].item()}"

    # --- UCF dropout, seeded just before the step: same outputs only if masks are drawn in the official order
    torch.manual_seed(SEED)
    model = build_official(om, small=True, dropout=UCF_DROPOUT)
    model.load_state_dict(out["state"])
    torch.manual_seed(DROPOUT_SEED)
    step = official_step(ol, model, x)
    out["dropout"] = {"rate": UCF_DROPOUT, "seed": DROPOUT_SEED, **step,
                      "buffers_after_step": buffers(model)}
    return out


if __name__ == "__main__":
    record_and_save(__doc__, "cjme", holding="model.py", record=record,
                    summary=lambda data: f"official parameter count at the UCF cls config: "
                                         f"{data['param_count_ucf']:,}; small: {data['param_count_small']:,}; "
                                         f"supervision {data['losses']['supervision'].tolist()}")
