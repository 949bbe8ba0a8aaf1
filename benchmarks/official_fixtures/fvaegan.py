"""Record what the official f-VAEGAN-D2 of AVCA-GZSL computes, for tests/test_method_fvaegan.py.

Runs the official training script ``vae_gan_d2_xu_fsl.py`` (with ``src/model_gen.py`` and ``src/classifier_fsl.py``)
of ExplainableML/AVCA-GZSL at commit 2711aeb5d7257ece4c5464fa46d7849a4edf6470 on CPU, at small sizes, for two
epochs on small random inputs, and saves what a re-implementation must reproduce to
``tests/fixtures/methods/fvaegan.pt`` (about 60 KB).

Run from the repository root, against a work tree of the official code made outside the project::

    mkdir -p /tmp/official-fvaegan
    git -C <mirror of ExplainableML/AVCA-GZSL> archive 2711aeb5d7257ece4c5464fa46d7849a4edf6470 src \\
        vae_gan_d2_xu_fsl.py | tar -x -C /tmp/official-fvaegan
    .venv/bin/python benchmarks/official_fixtures/fvaegan.py --official /tmp/official-fvaegan

The official files are used unchanged. The script's module level reads the datasets and builds CUDA loaders, so
it is not imported: its statements are parsed (``ast``) and these are executed, unchanged, in a namespace this
script prepares: the network constructors, the input buffers and the four optimisers, the functions
``loss_fn``, ``generate_syn_feature``, ``calc_gradient_penalty`` and ``calc_gradient_penalty2``, and everything
from the unseen-index computation before the epoch loop to the end (the epoch loop with its training step, the
GZSL and ZSL classifiers and the model selection). What this process changes, and why:

* ``torch.Tensor.cuda`` returns the tensor itself (CPU only; the script calls ``.cuda()`` unconditionally), and
  ``opt.cuda`` is False (so the modules stay on the CPU);
* ``opt`` comes from the official ``src/args_gen.args_main`` with the UCF run's flags; the sizes that the
  official parser cannot take from a command line (``--encoder_layer_sizes`` / ``--decoder_layer_sizes`` are
  ``type=list``) and the other sizes are then set to SMALL below, ``nepoch`` to 2 and ``nepoch_classifier``
  to CLS_EPOCHS;
* the datasets and the loader are stand-ins with the attributes the loop reads (``all_data``,
  ``seen_class_ids``, ``unseen_class_ids``, ``map_embeddings_target``; a loader yielding one batch per epoch);
* ``print`` in that namespace records the state of the run when the loop prints (after the training step,
  after each classifier), and ``generate_syn_feature`` and ``src.classifier_fsl.CLASSIFIER`` are wrapped to
  record the global RNG state at their start, their outputs, and the classifier's per-epoch outputs.

Recorded (float32, CPU): the official initial state dicts of netG, netD, netD2 and Encoder; the inputs; per epoch
the RNG state at the start of the training step, every loss value of the critic and generator steps, the noise
and the VAE's mean/log-variance, the gradients (critics: of their step; generator and encoder: of theirs), the
networks after the step; the generated features, the GZSL classifier's class mapping, weights, per-epoch test
log-probabilities and accuracies, the ZSL classifier's accuracy; and the official parameter counts (the cls
config: resSize 128 + 4096, encoder [4224, 300], decoder [512, 4224]; and the main-features defaults).
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import COMMIT, FIXTURES, install_cpu_cuda  # the sibling module shared by these scripts

SCRIPT = "vae_gan_d2_xu_fsl.py"

SMALL = {"audio": 5, "video": 11, "word": 12, "latent": 7, "generator_hidden": 9, "encoder_hidden": 10,
         "critic_hidden": 13}
BATCH = 8
SEEN, UNSEEN = (2, 0, 3, 1), (4, 5)  # training rows come grouped by class in this order; unseen ids ascending
REAL_PER_CLASS, EVAL_PER_CLASS = 3, 2
SYN_NUM, CLS_EPOCHS, EPOCHS = 5, 4, 2
SEED, LOOP_SEED = 0, 1234

# Top-level statements of the official script executed before the evaluation set-up (by assigned / defined name).
SETUP_NAMES = {"netG", "netD", "netD2", "Encoder", "input_res", "input_att", "noise", "one", "mone",
               "input_res_unpair", "input_att_unpair", "optimizerD", "optimizerG", "optimizerE", "optimizerD2",
               "loss_fn", "generate_syn_feature", "calc_gradient_penalty", "calc_gradient_penalty2"}
FIRST_LOOP_STATEMENT = "unseen_class_ids_list"  # from this assignment to the end of the file
NETS = ("netG", "netD", "netD2", "Encoder")
# Values of the training step, read from the namespace when the loop prints after it.
STEP_VALUES = ("criticD_real", "criticD_fake", "criticD_real_v_unpair", "criticD_fake_v_unpair", "gradient_penalty",
               "gradient_penalty_v_unpair", "Wasserstein_D", "D_cost", "Wasserstein_D_v2", "D_cost_v2", "vae_loss",
               "criticG_fake", "criticG_fake2", "G_cost", "loss", "mean", "log_var", "eps", "recon_x", "fake", "noise")


def install_shims() -> None:
    install_cpu_cuda()


def official_opt(args_gen: types.ModuleType) -> argparse.Namespace:
    """The UCF run's flags through the official parser, then the small sizes."""
    opt = args_gen.args_main([
        "--root_dir", "avgzsl_benchmark_datasets/UCF", "--feature_extraction_method", "cls_features",
        "--input_size_audio", str(SMALL["audio"]), "--input_size_video", str(SMALL["video"]), "--epochs", "50",
        "--lr_scheduler", "--dataset_name", "UCF", "--zero_shot_split", "cls_split", "--lr", "0.001",
        "--n_batches", "500", "--syn_num", str(SYN_NUM)])
    res = SMALL["audio"] + SMALL["video"]
    opt.resSize, opt.attSize = res, SMALL["word"]
    opt.latent_size, opt.ndh = SMALL["latent"], SMALL["critic_hidden"]
    opt.decoder_layer_sizes = [SMALL["generator_hidden"], res]
    opt.encoder_layer_sizes = [res, SMALL["encoder_hidden"]]
    opt.nz = opt.latent_size  # the script's own line after parsing
    opt.batch_size = opt.bs = BATCH
    opt.nepoch, opt.nepoch_classifier = EPOCHS, CLS_EPOCHS
    opt.cuda = False
    return opt


def make_inputs() -> dict:
    g = torch.Generator().manual_seed(SEED + 1)
    n_classes = len(SEEN) + len(UNSEEN)
    vectors = torch.randn(n_classes, SMALL["word"], generator=g)
    vectors = vectors / vectors.norm(dim=1, keepdim=True)

    def audio(n):
        return torch.rand(n, SMALL["audio"], generator=g) * 255

    def video(n):
        return torch.relu(torch.randn(n, SMALL["video"], generator=g)) * 3

    train_labels = torch.tensor([c for c in SEEN for _ in range(REAL_PER_CLASS)])
    eval_labels = torch.arange(n_classes).repeat_interleave(EVAL_PER_CLASS)
    batches = []
    for _ in range(EPOCHS):
        labels = torch.tensor(SEEN)[torch.randint(len(SEEN), (BATCH,), generator=g)]
        batches.append({"audio": audio(BATCH), "video": video(BATCH), "labels": labels, "word": vectors[labels]})
    return {"class_vectors": vectors, "seen": torch.tensor(SEEN), "unseen": torch.tensor(UNSEEN),
            "train_audio": audio(len(train_labels)), "train_video": video(len(train_labels)),
            "train_labels": train_labels, "eval_audio": audio(len(eval_labels)), "eval_video": video(len(eval_labels)),
            "eval_labels": eval_labels, "batches": batches}


class TrainingSet:
    def __init__(self, x: dict) -> None:
        self.all_data = {"audio": x["train_audio"], "video": x["train_video"], "target": x["train_labels"]}

    @property
    def seen_class_ids(self) -> np.ndarray:
        return np.asarray(SEEN)


class EvaluationSet:
    """The attributes of the official dataset classes that the loop reads (fresh arrays, as their properties)."""

    def __init__(self, x: dict) -> None:
        self.vectors = x["class_vectors"]
        self.all_data = {"audio": x["eval_audio"], "video": x["eval_video"], "target": x["eval_labels"]}

    @property
    def classes(self) -> np.ndarray:
        return np.sort(np.concatenate((self.seen_class_ids, self.unseen_class_ids)))

    @property
    def seen_class_ids(self) -> np.ndarray:
        return np.asarray(sorted(SEEN))

    @property
    def unseen_class_ids(self) -> np.ndarray:
        return np.asarray(UNSEEN)

    @property
    def map_embeddings_target(self):
        ordered = sorted(int(c) for c in self.classes)  # rows of the text matrix indexed by class id
        return self.vectors[ordered], {c: i for i, c in enumerate(ordered)}


class Loader:
    """One batch per epoch, in the official (data, target) layout; records the RNG state when an epoch starts."""

    def __init__(self, x: dict, log: dict) -> None:
        self.batches, self.log, self.epoch = x["batches"], log, 0

    def __iter__(self):
        b = self.batches[self.epoch]
        self.log.setdefault("rng_epoch_start", []).append(torch.get_rng_state())
        self.epoch += 1
        data = {"positive": {"audio": b["audio"], "video": b["video"], "text": b["word"]}}
        return iter([(data, {"positive": b["labels"]})])


def selected_statements(source: str) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(set-up statements, the evaluation set-up and epoch loop) of the official script."""
    tree = ast.parse(source)
    setup, loop, in_loop = [], [], False
    for node in tree.body:
        names = set()
        if isinstance(node, ast.FunctionDef):
            names = {node.name}
        elif isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
        if FIRST_LOOP_STATEMENT in names:
            in_loop = True
        if in_loop:
            loop.append(node)
        elif names & SETUP_NAMES:
            setup.append(node)
    found = {n for node in setup for n in ({node.name} if isinstance(node, ast.FunctionDef) else
                                           {t.id for t in node.targets})}
    assert found == SETUP_NAMES, f"official statements not found: {SETUP_NAMES - found}"
    assert loop and isinstance(loop[-1], ast.Expr), "the official script's layout changed"
    return setup, loop


def snapshot_nets(ns: dict) -> dict:
    return {n: {k: v.detach().clone() for k, v in ns[n].state_dict().items()} for n in NETS}


def grads(ns: dict) -> dict:
    return {n: {k: p.grad.detach().clone() for k, p in ns[n].named_parameters() if p.grad is not None} for n in NETS}


def record(official: Path) -> dict:
    install_shims()
    sys.path.insert(0, str(official))
    from src import args_gen, classifier_fsl, model_gen  # the official modules (the work tree is on sys.path)

    torch.set_num_threads(1)
    x = make_inputs()
    out: dict = {"commit": COMMIT, "small": dict(SMALL), "batch": BATCH, "syn_num": SYN_NUM,
                 "classifier_epochs": CLS_EPOCHS, "inputs": x}

    # Parameter counts of the official networks: the cls sizes, and the defaults (main features, 512 + 512).
    def count(res: int) -> int:
        o = argparse.Namespace(resSize=res, attSize=300, ndh=512)
        nets = (model_gen.Decoder([512, res], 300, 300), model_gen.MLP_CRITIC(o), model_gen.MLP_CRITIC_V(o),
                model_gen.Encoder([res, 300], 300, 300))
        return sum(p.numel() for net in nets for p in net.parameters())

    out["param_count_ucf"], out["param_count_main"] = count(128 + 4096), count(512 + 512)

    opt = official_opt(args_gen)
    setup, loop = selected_statements((official / SCRIPT).read_text())
    log: dict = {"epochs": []}
    src_pkg = types.ModuleType("src")
    src_pkg.model_gen, src_pkg.classifier_fsl = model_gen, classifier_fsl
    ns: dict = {"__name__": "official_fvaegan", "torch": torch, "nn": nn, "F": torch.nn.functional,
                "optim": torch.optim, "autograd": torch.autograd, "np": np, "copy": copy, "src": src_pkg, "opt": opt}

    torch.manual_seed(SEED)
    exec(compile(ast.Module(setup, type_ignores=[]), SCRIPT, "exec"), ns)  # noqa: S102  (the official statements)
    out["state_init"] = snapshot_nets(ns)
    out["optimizer_hparams"] = {k: v for k, v in ns["optimizerG"].param_groups[0].items() if k != "params"}

    def official_print(*args, **kwargs):
        text = str(args[0]) if args else ""
        if re.match(r"\[\d+/\d+\] Wasserstein", text):  # after the training step of an epoch
            log["epochs"].append({"values": {k: ns[k].detach().clone() for k in STEP_VALUES},
                                  "grads": grads(ns), "state_after": snapshot_nets(ns)})
        elif text.startswith("GZSL acc_all"):
            log["epochs"][-1]["gzsl"] = {"acc_all": float(args[1]), "acc_base": float(args[3]),
                                         "acc_novel": float(args[5])}
        elif text.startswith("ZSL novel"):
            log["epochs"][-1]["zsl_acc"] = float(args[1])

    generate = ns["generate_syn_feature"]

    def generate_syn_feature(*args, **kwargs):
        rng = torch.get_rng_state()
        feats, labels = generate(*args, **kwargs)
        log.setdefault("generated", []).append({"rng": rng, "features": feats.clone(), "labels": labels.clone()})
        return feats, labels

    class RecordingClassifier(classifier_fsl.CLASSIFIER):
        def __init__(self, train_x, train_y, mapping, *args, **kwargs):
            self.rec = {"rng": torch.get_rng_state(), "train_x": train_x.clone(), "train_y": train_y.clone(),
                        "mapping": dict(mapping), "log_probs": [], "accs": []}
            super().__init__(train_x, train_y, mapping, *args, **kwargs)
            self.rec["weight"] = self.model.fc.weight.detach().clone()
            self.rec["bias"] = self.model.fc.bias.detach().clone()
            log.setdefault("classifiers", []).append(self.rec)

        def val_gfsl(self, test_x, *args, **kwargs):
            with torch.no_grad():
                self.rec["log_probs"].append(self.model(test_x).clone())
            accs = super().val_gfsl(test_x, *args, **kwargs)
            self.rec["accs"].append(tuple(float(a) for a in accs))
            return accs

    ns.update(print=official_print, generate_syn_feature=generate_syn_feature,
              training_dataset=TrainingSet(x), evaluation_dataset=EvaluationSet(x), training_dataloader=Loader(x, log))
    classifier_fsl.CLASSIFIER = RecordingClassifier
    try:
        torch.manual_seed(LOOP_SEED)
        exec(compile(ast.Module(loop, type_ignores=[]), SCRIPT, "exec"), ns)  # noqa: S102
    finally:
        classifier_fsl.CLASSIFIER = RecordingClassifier.__bases__[0]
    assert len(log["epochs"]) == EPOCHS and len(log["classifiers"]) == 2 * EPOCHS, "the official loop ran otherwise"
    for e, epoch in enumerate(log["epochs"]):
        epoch["rng_start"] = log["rng_epoch_start"][e]
        epoch["generated"] = log["generated"][e]
        gzsl, zsl = log["classifiers"][2 * e], log["classifiers"][2 * e + 1]
        epoch["classifier"] = gzsl
        epoch["zsl_classifier"] = {"mapping": zsl["mapping"], "accs": zsl["accs"]}
    out["epochs"] = log["epochs"]
    out["best"] = {"epoch": int(ns["best_epoch"]), "gzsl": float(ns["best_acc_gzsl"]), "zsl": float(ns["best_acc_zsl"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help=f"work tree of ExplainableML/AVCA-GZSL (holding {SCRIPT} and src/)")
    parser.add_argument("--out", type=Path, default=FIXTURES / "fvaegan.pt")
    args = parser.parse_args()
    if not (args.official / SCRIPT).is_file() or not (args.official / "src" / "model_gen.py").is_file():
        parser.error(f"{args.official} lacks {SCRIPT} or src/model_gen.py: pass the official work tree (see the "
                     "docstring)")
    data = record(args.official.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); official parameter counts: cls "
          f"{data['param_count_ucf']:,}, main features {data['param_count_main']:,}")


if __name__ == "__main__":
    main()
