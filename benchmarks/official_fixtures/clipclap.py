"""Record what the official ClipClap-GZSL computes, for tests/test_method_clipclap.py.

Builds the official ``ClipClap_model`` (``src/clipclap_model.py`` of dkurzend/ClipClap-GZSL at commit
56b8e1b920622c06aaac2b265470d0892c9f8b42) on CPU with a fixed seed, runs the official ``train_step``
(``src/train.py``) for one batch of small random inputs and the official evaluation pass
(``src/utils.evaluate_dataset_baseline``), and saves everything a re-implementation must reproduce to
``tests/fixtures/methods/clipclap.pt``.

Run it from the repository root against a work tree of the official code made outside the project::

    mkdir -p /tmp/official-clipclap-gzsl
    git -C <clone of dkurzend/ClipClap-GZSL> archive 56b8e1b920622c06aaac2b265470d0892c9f8b42 src \\
        | tar -x -C /tmp/official-clipclap-gzsl
    .venv/bin/python benchmarks/official_fixtures/clipclap.py --official /tmp/official-clipclap-gzsl

The official files are used unchanged. What this script changes in its own process, and why:

* ``ReduceLROnPlateau`` drops the ``verbose`` argument, which torch 2.11 no longer accepts (never stepped here);
* ``einops`` is replaced by a stand-in when it is not installed (the model imports it, never calls it);
* the sizes the official model hard-codes (512 for the width of O_enc / W_enc and the input of O_proj / W_proj,
  1536 / 1024 / 512 for the inputs) are replaced by wrapping the official ``EmbeddingNet.__init__`` while the
  model is built (the nets are still built in the official order from the same RNG stream), and so is the
  hard-coded dropout 0.1 of O_enc / W_enc in the runs without dropout. The main run shrinks the inputs too;
  the runs of the other ``--modality`` / ``--word_embeddings`` / ``--embeddings_batch_norm`` settings keep the
  official 1024-d audio, 512-d video and 1536-d class vectors, because the official forward slices the class
  vector at the hard-coded 512. The parameter counts are taken from unshrunk models.
* ``train_step``'s loader, tensorboard writer and statistics logger are stand-ins holding one batch.

Recorded (float32, CPU): the initial official state dict and the inputs; in train mode without dropout, the
official forward outputs, every loss term (read from the locals of ``compute_loss``), the gradients, the state
after the ``optimizer_gen`` step (Adam, lr 7e-5, weight decay 1e-5) and after the train-mode ``get_embeddings``
that ``train_step`` runs after each step; in eval mode, the evaluation distance matrix (the first ``torch.cdist``
of ``get_best_evaluation``) and the official S/U/HM/ZSL. A run with the official dropouts (0.1) from a fixed RNG
seed records the losses, theta_o and the BN statistics after the same step, to check that a re-implementation
draws its dropout masks in the official order. A run trained on planted classes (60 official steps at lr 1e-2,
five seen and three unseen classes) records its state, the evaluation distances and the official S/U/HM/ZSL and
best beta, which are not trivial there. The other settings' runs record their losses, outputs, state
keys and evaluation distances from the same seed.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # the sibling module: saving and the process-local patches these scripts share
    buffers,
    detached_state,
    gradients,
    hyper_parameters,
    install_einops_stub,
    install_reduce_lr_without_verbose,
    install_tensorboard_stub,
    on_return,
    recorded_outputs,
    save_fixture,
    tensor_locals,
)

COMMIT = "56b8e1b920622c06aaac2b265470d0892c9f8b42"
REPO = Path(__file__).resolve().parents[2]
# Small sizes: every width differs from the others so that a wiring mistake changes a shape.
SMALL = {"audio": 10, "video": 6, "clip_text": 5, "clap_text": 9, "embed": 12, "decoder_hidden": 14, "out": 8}
FULL_INPUTS = {"audio": 1024, "video": 512, "clip_text": 512, "clap_text": 1024}
BATCH, N_CLASSES, N_SEEN, N_EVAL = 8, 5, 3, 10
SEED, DROPOUT_SEED = 0, 1234
LR = 7e-5  # the UCF run's
# The trained run: planted classes (some unseen), official steps on all training samples at once, then the
# official evaluation, so that its S, U, HM, ZSL and best beta are not trivial.
TRAINED = {"classes": 8, "seen": 5, "per_class": 6, "eval_per_class": 4, "steps": 60, "lr": 1e-2, "seed": 7}
# (--modality, --word_embeddings, --embeddings_batch_norm) of the other recorded settings
VARIANTS = (("audio", "both", True), ("video", "both", True), ("both", "clip", True), ("both", "wavcaps", True),
            ("both", "both", False))


def install_shims() -> None:
    install_reduce_lr_without_verbose()
    install_einops_stub()


def params_model(*, modality: str, word_embeddings: str, batch_norm: bool, small: bool, dropout: float,
                 lr: float = LR) -> dict:
    """The official ``get_model_params`` dict of config/clipclap.yaml with the README's flags."""
    return {"dim_out": SMALL["out"] if small else 64, "decoder_hidden_size": SMALL["decoder_hidden"] if small else 512,
            "dropout_decoder": dropout, "additional_dropout": dropout, "reg_loss": True, "cross_entropy_loss": True,
            "encoder_hidden_size": 512, "dropout_encoder": 0.3, "rec_loss": True, "lr_scheduler": True,
            "modality": modality, "word_embeddings": word_embeddings, "embeddings_batch_norm": batch_norm,
            "lr": lr, "optimizer": "adam"}


def input_sizes(sizes: dict[str, int], modality: str, word_embeddings: str) -> tuple[int, int]:
    """(O_enc input, W_enc input) of a setting, for the given input sizes."""
    text = sizes["clip_text"] + sizes["clap_text"]
    if modality == "audio":
        return sizes["audio"], sizes["clap_text"]
    if modality == "video":
        return sizes["video"], sizes["clip_text"]
    return sizes["audio"] + sizes["video"], {"both": text, "clip": sizes["clip_text"],
                                             "wavcaps": sizes["clap_text"]}[word_embeddings]


def build_official(cm: types.ModuleType, *, modality: str = "both", word_embeddings: str = "both",
                   batch_norm: bool = True, small_inputs: bool = True, small: bool = True,
                   dropout: float | None = None, lr: float = LR) -> nn.Module:
    """The official model from the current RNG state. ``small``: SMALL widths (and SMALL inputs when
    ``small_inputs``); ``dropout``: every net's rate (None: the official ones, 0.1 everywhere)."""
    pm = params_model(modality=modality, word_embeddings=word_embeddings, batch_norm=batch_norm, small=small,
                      dropout=0.1 if dropout is None else dropout, lr=lr)
    if not small:
        return cm.ClipClap_model(pm, input_size_audio=1024, input_size_video=512)
    official_in = input_sizes(FULL_INPUTS, modality, word_embeddings)
    ours_in = input_sizes(SMALL if small_inputs else FULL_INPUTS, modality, word_embeddings)
    embed, out = SMALL["embed"], SMALL["out"]
    # (official input, official output) -> ours, net by net in the official constructor order
    roles = iter([((official_in[0], 512), (ours_in[0], embed)), ((official_in[1], 512), (ours_in[1], embed)),
                  ((512, out), (embed, out)), ((out, 512), (out, embed)), ((512, out), (embed, out)),
                  ((out, 512), (out, embed))])
    init, rate = cm.EmbeddingNet.__init__, dropout

    def embedding_net(self, input_size, output_size, dropout, use_bn, hidden_size=-1):
        (o_in, o_out), (i, o) = next(roles)
        assert (input_size, output_size) == (o_in, o_out), f"official sizes changed: {(input_size, output_size)}"
        init(self, i, o, dropout if rate is None else rate, use_bn, hidden_size=hidden_size)

    cm.EmbeddingNet.__init__ = embedding_net
    try:
        model = cm.ClipClap_model(pm, input_size_audio=0, input_size_video=0)
    finally:
        cm.EmbeddingNet.__init__ = init
    assert next(roles, None) is None, "the official constructor built another number of EmbeddingNets"
    return model


def make_inputs(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    """Unit-norm embeddings as the CLIP / CLAP extractors give them; class vectors [CLIP text | CLAP text], each
    part unit-norm; the evaluation labels cover every class."""
    g = torch.Generator().manual_seed(seed)

    def unit(*shape):
        x = torch.randn(*shape, generator=g)
        return x / x.norm(dim=-1, keepdim=True)

    classes = torch.cat([unit(N_CLASSES, sizes["clip_text"]), unit(N_CLASSES, sizes["clap_text"])], dim=1)
    labels = torch.randint(0, N_SEEN, (BATCH,), generator=g)  # training positives: seen classes
    return {"audio": unit(BATCH, sizes["audio"]), "video": unit(BATCH, sizes["video"]), "labels": labels,
            "class_vectors": classes[:N_SEEN], "all_class_vectors": classes,
            "eval_audio": unit(N_EVAL, sizes["audio"]), "eval_video": unit(N_EVAL, sizes["video"]),
            "eval_labels": torch.arange(N_EVAL) % N_CLASSES}


def planted_inputs(seed: int) -> dict[str, torch.Tensor]:
    """TRAINED["classes"] classes whose audio and video are fixed linear maps of the class vector plus noise (so a
    learned map generalises to the unseen ones); the first TRAINED["seen"] are the training classes."""
    g = torch.Generator().manual_seed(seed)
    n, text = TRAINED["classes"], SMALL["clip_text"] + SMALL["clap_text"]

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True)

    classes = torch.cat([unit(torch.randn(n, SMALL["clip_text"], generator=g)),
                         unit(torch.randn(n, SMALL["clap_text"], generator=g))], dim=1)
    maps = {m: torch.randn(SMALL[m], text, generator=g) for m in ("audio", "video")}

    def samples(labels: torch.Tensor, m: str) -> torch.Tensor:
        return unit(classes[labels] @ maps[m].t() + 0.3 * torch.randn(len(labels), SMALL[m], generator=g))

    labels = torch.arange(TRAINED["seen"]).repeat(TRAINED["per_class"])
    eval_labels = torch.arange(n).repeat(TRAINED["eval_per_class"])
    return {"audio": samples(labels, "audio"), "video": samples(labels, "video"), "labels": labels,
            "class_vectors": classes[:TRAINED["seen"]], "all_class_vectors": classes,
            "eval_audio": samples(eval_labels, "audio"), "eval_video": samples(eval_labels, "video"),
            "eval_labels": eval_labels}


class _Writer:
    def add_scalar(self, *args, **kwargs) -> None:
        pass


class _Stats:
    def update(self, row) -> None:
        pass


class Loader:
    """One batch in the layout of the official ContrastiveDataset + DefaultCollator (averaged features: one step
    per video), with the dataset attribute ``train_step`` and ``val_step`` read."""

    def __init__(self, audio, video, text, targets, class_vectors, class_ids) -> None:
        self.batch = (audio, video, text, targets)
        zsl = types.SimpleNamespace(map_embeddings_target=(class_vectors, {c: i for i, c in enumerate(class_ids)}))
        self.dataset = types.SimpleNamespace(zsl_dataset=zsl)

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        audio, video, text, targets = (t.clone() for t in self.batch)
        B = len(audio)
        side = {"audio": audio, "video": video, "text": text, "audio_mask": torch.ones(B, 1),
                "video_mask": torch.ones(B, 1), "timestep": {"audio": np.zeros((B, 1)), "video": np.zeros((B, 1))},
                "url": [str(i) for i in range(B)]}
        yield {"positive": side, "negative": dict(side)}, {"positive": targets, "negative": targets.clone()}


def official_train_step(cm, tr, model: nn.Module, x: dict) -> dict:
    """One batch of the official ``train_step``: forward outputs, the locals of ``compute_loss``, the gradients
    and state at the optimiser step, and the state after ``train_step`` (its train-mode ``get_embeddings``)."""
    rec: dict = {}
    step = model.optimizer_gen.step

    def recording_step(*args, **kwargs):
        rec["grads"] = gradients(model)
        out = step(*args, **kwargs)
        rec["state_after_step"] = detached_state(model)
        return out

    model.optimizer_gen.step = recording_step
    class_ids = list(range(N_SEEN))
    loader = Loader(x["audio"], x["video"], x["class_vectors"][x["labels"]], x["labels"], x["class_vectors"],
                    class_ids)
    args = argparse.Namespace(z_score_inputs=False, cross_entropy_loss=True)
    forward = model.forward

    def recording_forward(*a, **kw):  # the first call is optimize_params' (get_embeddings does not call it)
        outputs = forward(*a, **kw)
        rec.setdefault("forward", {k: v.detach().clone() for k, v in outputs.items()})
        return outputs

    model.forward = recording_forward
    with on_return((cm.ClipClap_model.compute_loss.__code__,
                    lambda frame, _: rec.setdefault("locals", tensor_locals(frame)))):
        tr.train_step(loader, model, None, None, 0, 1, _Writer(), "cpu", [], _Stats(), args)
    del model.optimizer_gen.step, model.forward
    rec["state_after_train_step"] = detached_state(model)
    return rec


def official_evaluation(ut, model: nn.Module, x: dict, n_seen: int = N_SEEN) -> dict:
    """The official ``evaluate_dataset_baseline`` over class ids 0..C-1 (the first ``n_seen`` seen): the distance
    matrix it hands to calibrated stacking (its ``torch.cdist``, the same for every beta) and its result."""
    n_classes = len(x["all_class_vectors"])
    dataset = types.SimpleNamespace(all_data={"text": x["all_class_vectors"].numpy()},
                                    seen_class_ids=np.arange(n_seen), unseen_class_ids=np.arange(n_seen, n_classes),
                                    all_class_ids=np.arange(n_classes), all_class_names=[], dataset_name="fixture")
    loader = Loader(x["eval_audio"], x["eval_video"], x["all_class_vectors"][x["eval_labels"]], x["eval_labels"],
                    x["all_class_vectors"], list(range(n_classes)))
    with recorded_outputs(torch, "cdist") as calls, torch.no_grad():
        result = ut.evaluate_dataset_baseline((dataset, loader), model, "cpu", "L2Loss",
                                              args=argparse.Namespace(z_score_inputs=False))
    assert all(torch.equal(c, calls[0]) for c in calls), "the distance matrix changed between betas"
    return {"distances": calls[0], "result": {m: result["both"][m] for m in ("seen", "unseen", "hm", "zsl", "beta")}}


def record(official: Path) -> dict:
    install_shims()
    install_tensorboard_stub()
    sys.path.insert(0, str(official))
    import importlib

    cm, ut, tr = (importlib.import_module(f"src.{m}") for m in ("clipclap_model", "utils", "train"))
    torch.set_num_threads(1)
    x = make_inputs(SMALL, SEED)
    out: dict = {"commit": COMMIT, "small": dict(SMALL), "inputs": x, "seed": SEED, "lr": LR}

    out["param_counts"] = {}
    for modality in ("both", "audio", "video"):
        torch.manual_seed(SEED)
        out["param_counts"][modality] = sum(p.numel() for p in build_official(cm, modality=modality, small=False)
                                            .parameters())

    # --- no dropout: forward, losses, gradients, the optimiser step, the post-step pass, the evaluation
    torch.manual_seed(SEED)
    model = build_official(cm, dropout=0.0)
    out["state_init"] = detached_state(model)
    out["optimizer_hparams"] = hyper_parameters(model.optimizer_gen)
    step = official_train_step(cm, tr, model, x)
    loss_locals = step.pop("locals")
    out["losses"] = {"ce": loss_locals["l_ce"], "reg": loss_locals["l_reg"], "rec": loss_locals["l_rec"],
                     "total": loss_locals["loss_total"], "scores": loss_locals["scores"],
                     "class_embeddings": loss_locals["embedding_cross_entropy"]}
    out.update(step)
    out["state"] = out["state_after_train_step"]  # the official state dict the loader tests read
    model.eval()
    out["evaluation"] = official_evaluation(ut, model, x)

    # --- trained on planted classes: an evaluation whose metrics and best beta are not trivial
    xt = planted_inputs(TRAINED["seed"])
    torch.manual_seed(SEED)
    model = build_official(cm, dropout=0.0, lr=TRAINED["lr"])
    loader = Loader(xt["audio"], xt["video"], xt["class_vectors"][xt["labels"]], xt["labels"], xt["class_vectors"],
                    list(range(TRAINED["seen"])))
    args = argparse.Namespace(z_score_inputs=False, cross_entropy_loss=True)
    for _ in range(TRAINED["steps"]):
        tr.train_step(loader, model, None, None, 0, 1, _Writer(), "cpu", [], _Stats(), args)
    model.eval()
    out["trained"] = {"inputs": xt, **TRAINED, "state": detached_state(model),
                      **official_evaluation(ut, model, xt, TRAINED["seen"])}

    # --- the official dropouts from a fixed RNG seed: the masks must be drawn in the official order
    torch.manual_seed(SEED)
    model = build_official(cm)
    torch.manual_seed(DROPOUT_SEED)
    step = official_train_step(cm, tr, model, x)
    out["dropout_run"] = {"seed": DROPOUT_SEED, "total": step["locals"]["loss_total"],
                          "ce": step["locals"]["l_ce"], "theta_o": step["forward"]["theta_o"],
                          "buffers_after_step": {k: v for k, v in step["state_after_step"].items() if "running" in k},
                          "buffers_after_train_step": buffers(model)}

    # --- the other settings, on inputs of the official sizes
    xf = make_inputs(FULL_INPUTS, SEED + 1)
    out["full_inputs"] = xf
    out["variants"] = {}
    for modality, word_embeddings, batch_norm in VARIANTS:
        torch.manual_seed(SEED)
        model = build_official(cm, modality=modality, word_embeddings=word_embeddings, batch_norm=batch_norm,
                               small_inputs=False, dropout=0.0)
        keys = list(model.state_dict())
        step = official_train_step(cm, tr, model, xf)
        model.eval()
        out["variants"][f"{modality}/{word_embeddings}/{'bn' if batch_norm else 'nobn'}"] = {
            "state_keys": keys, "total": step["locals"]["loss_total"], "ce": step["locals"]["l_ce"],
            "reg": step["locals"]["l_reg"], "rec": step["locals"]["l_rec"],
            "forward": {k: step["forward"][k] for k in ("theta_o", "theta_w", "rho_o", "rho_w", "w")},
            "distances": official_evaluation(ut, model, xf)["distances"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="work tree of dkurzend/ClipClap-GZSL (holding src/clipclap_model.py)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "methods" / "clipclap.pt")
    args = parser.parse_args()
    if not (args.official / "src" / "clipclap_model.py").is_file():
        parser.error(f"{args.official}/src/clipclap_model.py not found: pass the official work tree (see --help)")
    data = record(args.official.resolve())
    save_fixture(data, args.out)
    ev = data["trained"]["result"]
    print(f"losses {float(data['losses']['total']):.6f}; official params {data['param_counts']}; "
          f"trained: S {ev['seen']:.3f} U {ev['unseen']:.3f} HM {ev['hm']:.3f} ZSL {ev['zsl']:.3f} at beta "
          f"{ev['beta']:.3f}; {len(data['variants'])} other settings")


if __name__ == "__main__":
    main()
