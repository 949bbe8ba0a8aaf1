"""Record what the official AVGZSLNet computes, for tests/test_method_avgzslnet.py.

Builds the official AVGZSLNet model (``src/model.py`` and ``src/loss.py`` of ExplainableML/AVCA-GZSL at commit
2711aeb5d7257ece4c5464fa46d7849a4edf6470) on CPU at small sizes with a fixed seed, runs one official
training step on small random inputs (positives and one negative each, as ``train_step`` feeds them), the
optimiser step of ``main.py``, and the official evaluation (``evaluate_dataset``), and saves everything a
re-implementation must reproduce to ``tests/fixtures/methods/avgzslnet.pt`` (about 150 KB).

Run from the repository root, against a work tree of the official code made outside the project::

    mkdir -p /tmp/official-cjme
    git -C <mirror of ExplainableML/AVCA-GZSL> archive 2711aeb5d7257ece4c5464fa46d7849a4edf6470 src \\
        | tar -x -C /tmp/official-cjme
    .venv/bin/python benchmarks/official_fixtures/avgzslnet.py --official /tmp/official-cjme

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

import argparse
import hashlib
import importlib.util
import sys
import types
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
COMMIT = "2711aeb5d7257ece4c5464fa46d7849a4edf6470"

# Small sizes, all different so that a wiring mistake changes a shape. The embedding width (64) is
# hard-coded in the official model and kept.
SMALL = {"audio": 6, "video": 10, "hidden": 12, "word": 8, "word_hidden": 7, "decoder_hidden": 5, "out": 64}
BATCH, N_CLASSES, N_EVAL, N_SEEN = 10, 6, 20, 4
SEED = 0
DROPOUT_SEED = 1234
DROPOUTS = {"embedding_dropout": 0.8, "decoder_dropout": 0.5}  # official defaults, kept by every run script
FORWARD_OUTPUTS = ("x_t_p", "a_p", "v_p", "t_p", "a_q", "v_q", "t_q", "x_ta_p", "x_tv_p", "x_tt_p", "x_ta_q",
                   "x_tv_q")


def install_shims() -> None:
    """In-process replacements for what this CPU-only environment lacks (see the module docstring)."""
    if importlib.util.find_spec("tensorboard") is None:  # torch.utils.tensorboard needs it
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = None
        sys.modules["torch.utils.tensorboard"] = stub


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
    official_net = om.EmbeddingNet
    built: list[tuple[int, int | None, int]] = []

    def embedding_net(input_size, output_size, dropout, use_bn, hidden_size=None):
        if input_size == 300:  # f_t: word vectors (300) -> hidden 300 -> 64, both hard-coded
            assert hidden_size == 300, f"expected f_t's hard-coded hidden 300, got {hidden_size}"
            input_size, hidden_size = SMALL["word"], SMALL["word_hidden"]
        if output_size == 300:  # the decoder: 64 -> hidden -> word vectors (300, hard-coded)
            output_size = SMALL["word"]
        built.append((input_size, hidden_size, output_size))
        # The official __init__ calls super(EmbeddingNet, self): the module name must be the class again.
        om.EmbeddingNet = official_net
        try:
            return official_net(input_size, output_size, dropout, use_bn, hidden_size=hidden_size)
        finally:
            om.EmbeddingNet = embedding_net

    om.EmbeddingNet = embedding_net
    try:
        model = om.AVGZSLNet(args)
    finally:
        om.EmbeddingNet = official_net
    s = SMALL
    expect = [(s["audio"], s["hidden"], s["out"]), (s["video"], s["hidden"], s["out"]),
              (s["word"], s["word_hidden"], s["out"]), (s["out"], s["decoder_hidden"], s["word"])]
    assert built == expect, f"the official constructor built {built}, not f_a, f_v, f_t, decoder = {expect}"
    return model


def make_inputs() -> dict[str, torch.Tensor]:
    """Positives, their negatives (another class each) and an evaluation set, on the scales of the cls
    features: audio 0..255 (averaged uint8 VGGish), video >= 0 (C3D fc7 after ReLU), unit word vectors."""
    g = torch.Generator().manual_seed(SEED + 1)
    classes = torch.randn(N_CLASSES, SMALL["word"], generator=g)
    classes = classes / classes.norm(dim=1, keepdim=True)
    labels = torch.randint(0, N_CLASSES, (BATCH,), generator=g)
    neg_labels = (labels + torch.randint(1, N_CLASSES, (BATCH,), generator=g)) % N_CLASSES
    eval_labels = torch.arange(N_EVAL) % N_CLASSES  # every class has samples

    def audio(n):
        return torch.rand(n, SMALL["audio"], generator=g) * 255

    def video(n):
        return torch.relu(torch.randn(n, SMALL["video"], generator=g)) * 3

    return {"audio": audio(BATCH), "video": video(BATCH), "labels": labels, "word": classes[labels],
            "neg_audio": audio(BATCH), "neg_video": video(BATCH), "neg_labels": neg_labels,
            "neg_word": classes[neg_labels], "class_vectors": classes,
            "eval_audio": audio(N_EVAL), "eval_video": video(N_EVAL), "eval_labels": eval_labels}


def detached_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_buffers()}


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


class EvalDataset:
    """What the official ``evaluate_dataset`` / ``get_best_evaluation`` read from a dataset: class ids
    0..C-1 (the first N_SEEN seen), all of them in the split, so the "both" matrix has no filler columns."""

    def __init__(self, x: dict[str, torch.Tensor]) -> None:
        self.all_data = {"audio": x["eval_audio"], "video": x["eval_video"], "text": x["class_vectors"],
                         "target": x["eval_labels"]}
        self.targets = x["eval_labels"]
        self.all_class_ids = np.arange(N_CLASSES)
        self.seen_class_ids = np.arange(N_SEEN)
        self.unseen_class_ids = np.arange(N_SEEN, N_CLASSES)


def official_evaluation(ou: types.ModuleType, model: nn.Module, x: dict[str, torch.Tensor]) -> dict:
    """The official ``evaluate_dataset`` (eval mode); the "both" matrix is the first argument of its first
    ``torch.argmin`` in the "both" call (beta = 0 adds nothing to it)."""
    mode: list[str] = []
    firsts: dict[str, torch.Tensor] = {}
    official_best, official_argmin = ou.get_best_evaluation, torch.argmin

    def best_evaluation(*args, **kwargs):
        mode.append(kwargs["mode"])
        return official_best(*args, **kwargs)

    def argmin(t, *args, **kwargs):
        firsts.setdefault(mode[-1], t.detach().clone())
        return official_argmin(t, *args, **kwargs)

    ou.get_best_evaluation, torch.argmin = best_evaluation, argmin
    try:
        with torch.no_grad():
            result = ou.evaluate_dataset(EvalDataset(x), model, "cpu", "L2Loss",
                                         args=Namespace(cjme=False, z_score_inputs=False))
    finally:
        ou.get_best_evaluation, torch.argmin = official_best, official_argmin
    assert mode == ["audio", "video", "both"], mode
    model.eval()
    with torch.no_grad():
        out = model(x["eval_audio"], x["eval_video"], x["class_vectors"],
                    x["eval_audio"], x["eval_video"], x["class_vectors"])
    return {"a_p": out[1], "v_p": out[2], "t_p": out[3], "distances": firsts["both"],
            "distances_audio": firsts["audio"], "distances_video": firsts["video"],
            "metrics": {m: {k: float(v) for k, v in r.items() if k != "recall"} for m, r in result.items()}}


def record(official: Path) -> dict:
    install_shims()
    sys.path.insert(0, str(official))
    import src.loss as ol  # the official modules (need the official work tree on sys.path)
    import src.model as om
    import src.utils as ou

    torch.set_num_threads(1)
    x = make_inputs()
    sources = {f: hashlib.sha256((official / "src" / f).read_bytes()).hexdigest()
               for f in ("model.py", "loss.py", "utils.py")}
    out: dict = {"commit": COMMIT, "sources_sha256": sources, "small": dict(SMALL), "inputs": x, "seed": SEED,
                 "n_seen": N_SEEN}

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
    out["grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    out["buffers_after_step"] = buffers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # main.py: every parameter, no weight decay
    out["optimizer_hparams"] = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    optimizer.step()
    out["state_after_step"] = detached_state(model)

    model.load_state_dict(out["state"])
    out["eval"] = official_evaluation(ou, model, x)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="work tree of ExplainableML/AVCA-GZSL (holding src/model.py and src/loss.py)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "methods" / "avgzslnet.pt")
    args = parser.parse_args()
    source = args.official / "src" / "model.py"
    if not source.is_file():
        parser.error(f"{source} not found: pass the official work tree (see this script's docstring)")
    data = record(args.official.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KB); official parameter count at the UCF cls config: "
          f"{data['param_count_ucf']:,}; small: {data['param_count_small']:,}; "
          f"losses { {k: round(float(v), 4) for k, v in data['losses'].items()} }")


if __name__ == "__main__":
    main()
