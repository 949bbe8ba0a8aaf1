"""What the scripts that record the official AVCA-GZSL code's outputs share: the stand-ins for what this CPU-only
environment lacks, the in-process patches that read the official code's intermediate values, the stand-ins of
its data loaders and datasets, and the saving of a fixture. benchmarks/train_throughput.py runs the official
training loop with the same stand-ins.

The official files are never changed: everything here acts on the running process only.

Run a script from the repository root, against a work tree of the official code made outside the project::

    mkdir -p /tmp/official-avca-gzsl
    git -C <clone of ExplainableML/AVCA-GZSL> archive 2711aeb5d7257ece4c5464fa46d7849a4edf6470 src \\
        | tar -x -C /tmp/official-avca-gzsl
    .venv/bin/python benchmarks/official_fixtures/<method>.py --official /tmp/official-avca-gzsl

It writes ``tests/fixtures/methods/<method>.pt`` (``--out`` writes elsewhere).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "methods"
COMMIT = "2711aeb5d7257ece4c5464fa46d7849a4edf6470"


# ------------------------------------------------------------------------------------------- running the scripts


def fixture_args(doc: str, name: str, *, holding: str, default_official: Path | None = None) -> argparse.Namespace:
    """``--official`` (the work tree of the official code, checked to hold ``src/<holding>``) and ``--out``
    (default: the fixture ``name`` of the tests)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=default_official is None, default=default_official,
                        help=f"work tree of ExplainableML/AVCA-GZSL (holding src/{holding})")
    parser.add_argument("--out", type=Path, default=FIXTURES / f"{name}.pt")
    args = parser.parse_args()
    source = args.official / "src" / holding
    if not source.is_file():
        parser.error(f"{source} not found: pass the official work tree (see this script's docstring)")
    return args


def record_and_save(doc: str, name: str, *, holding: str, record: Callable[[Path], dict],
                    summary: Callable[[dict], str]) -> None:
    """A script's main: ``record(official work tree)``, saved, and a line of ``summary(data)``."""
    args = fixture_args(doc, name, holding=holding)
    data = record(args.official.resolve())
    save_fixture(data, args.out)
    print(summary(data))


def save_fixture(data: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB)")


def install_tensorboard_stub() -> None:
    """``src/utils.py`` imports ``SummaryWriter`` at import time and never uses it here; torch.utils.tensorboard
    needs tensorboard, which this environment may lack."""
    if importlib.util.find_spec("tensorboard") is None:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = None
        sys.modules["torch.utils.tensorboard"] = stub


def install_einops_stub() -> None:
    """The official ``model_improvements.py`` (and ClipClap's model) import einops, which this environment may
    lack; the AVCA attention only splits and merges heads, the two ``rearrange`` patterns here."""
    try:
        importlib.import_module("einops")
    except ImportError:
        def rearrange(t, pattern, **sizes):
            if pattern == "b n (h d) -> b h n d":
                b, n, hd = t.shape
                return t.reshape(b, n, sizes["h"], hd // sizes["h"]).transpose(1, 2)
            if pattern == "b h n d -> b n (h d)":
                b, h, n, d = t.shape
                return t.transpose(1, 2).reshape(b, n, h * d)
            raise NotImplementedError(f"einops stand-in: pattern {pattern!r}")

        mod, layers, layers_torch = (types.ModuleType(n) for n in ("einops", "einops.layers", "einops.layers.torch"))
        mod.rearrange, mod.repeat, layers_torch.Rearrange = rearrange, None, None
        sys.modules.update({"einops": mod, "einops.layers": layers, "einops.layers.torch": layers_torch})


def install_reduce_lr_without_verbose() -> None:
    """``ReduceLROnPlateau`` accepting and dropping ``verbose``: the official constructors pass ``verbose=True``,
    which torch 2.11 removed. Installing it again leaves the first in place."""
    base = torch.optim.lr_scheduler.ReduceLROnPlateau
    if getattr(base, "_accepts_verbose_shim", False):
        return

    class ReduceLROnPlateau(base):
        _accepts_verbose_shim = True

        def __init__(self, *args, verbose=None, **kwargs):
            super().__init__(*args, **kwargs)

    torch.optim.lr_scheduler.ReduceLROnPlateau = ReduceLROnPlateau


def cuda_returns_self(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A ``Tensor.cuda`` for CPU-only runs: the official code calls ``.cuda()`` unconditionally (the CPU patch
    of reference-avca-code.md)."""
    return self


def install_cpu_cuda() -> None:
    """``torch.Tensor.cuda`` returns the tensor itself for the rest of the process."""
    torch.Tensor.cuda = cuda_returns_self


def import_official(root: Path, *modules: str) -> list[types.ModuleType]:
    """The official ``src.<module>`` modules, imported in the order given from the work tree ``root``."""
    install_tensorboard_stub()
    sys.path.insert(0, str(root))
    return [importlib.import_module(f"src.{m}") for m in modules]


def source_hashes(root: Path, *files: str) -> dict[str, str]:
    return {f: hashlib.sha256((root / "src" / f).read_bytes()).hexdigest() for f in files}


# ------------------------------------------------------------------------------------------- reading the values


def detached_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_buffers()}


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def hyper_parameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}


def adam_step(model: nn.Module) -> dict[str, Any]:
    """After the official backward: the gradients, the buffers, and the state after one
    ``optim.Adam(model.parameters(), lr=1e-3)`` step (main.py: every parameter, no weight decay)."""
    out = {"grads": gradients(model), "buffers_after_step": buffers(model)}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out["optimizer_hparams"] = hyper_parameters(optimizer)
    optimizer.step()
    out["state_after_step"] = detached_state(model)
    return out


@contextmanager
def on_return(*watched: tuple[CodeType, Callable[[FrameType, Any], None]]) -> Iterator[None]:
    """Call ``fn(frame, returned value)`` whenever a function with code ``code`` returns: how the official
    losses' locals are read without changing the official files."""

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "return":
            for code, fn in watched:
                if frame.f_code is code:
                    fn(frame, arg)

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)


def tensor_locals(frame: FrameType) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in frame.f_locals.items() if torch.is_tensor(v)}


@contextmanager
def patched(owner: Any, name: str, replacement: Callable[[Any], Any]) -> Iterator[Any]:
    """``owner.name`` replaced by ``replacement(original)`` for the duration; yields the original."""
    original = getattr(owner, name)
    setattr(owner, name, replacement(original))
    try:
        yield original
    finally:
        setattr(owner, name, original)


@contextmanager
def recorded_outputs(owner: Any, name: str) -> Iterator[list[torch.Tensor]]:
    """Every tensor ``owner.name(...)`` returns meanwhile, detached copies in call order."""
    calls: list[torch.Tensor] = []

    def recording(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def call(*args: Any, **kwargs: Any) -> torch.Tensor:
            out = original(*args, **kwargs)
            calls.append(out.detach().clone())
            return out

        return call

    with patched(owner, name, recording):
        yield calls


def build_shrunk(module: types.ModuleType, class_name: str, build: Callable[[], nn.Module],
                 small: dict[str, int]) -> tuple[nn.Module, list[tuple[int, int | None, int]]]:
    """``build()`` with the size the official CJME / AVGZSLNet hard-code (300: the word vectors, the hidden layer
    of the word network f_t, AVGZSLNet's decoder output) shrunk to ``small["word"]`` / ``small["word_hidden"]``,
    by wrapping the official embedding net ``module.<class_name>`` while the model is built: the modules are
    still built in the official order from the same RNG stream. Also the (input, hidden, output) sizes built."""
    official_net = getattr(module, class_name)
    built: list[tuple[int, int | None, int]] = []

    def embedding_net(input_size, output_size, dropout, use_bn, hidden_size=None):
        if input_size == 300:  # f_t: word vectors (300) -> hidden 300 -> 64, both hard-coded
            assert hidden_size == 300, f"expected f_t's hard-coded hidden 300, got {hidden_size}"
            input_size, hidden_size = small["word"], small["word_hidden"]
        if output_size == 300:  # AVGZSLNet's decoder: 64 -> hidden -> word vectors (300, hard-coded)
            output_size = small["word"]
        built.append((input_size, hidden_size, output_size))
        # The official __init__ calls super(<class>, self): the module name must be the class again.
        setattr(module, class_name, official_net)
        try:
            return official_net(input_size, output_size, dropout, use_bn, hidden_size=hidden_size)
        finally:
            setattr(module, class_name, embedding_net)

    with patched(module, class_name, lambda _: embedding_net):
        model = build()
    return model, built


# -------------------------------------------------------------------------------- inputs and data stand-ins


def make_inputs(small: dict[str, int], *, batch: int, n_classes: int, n_eval: int, seed: int,
                eval_labels: bool) -> dict[str, torch.Tensor]:
    """Positives, their negatives (another class each) and an evaluation set, on the scales of the cls
    features: audio 0..255 (averaged uint8 VGGish), video >= 0 (C3D fc7 after ReLU), unit word vectors; the
    evaluation labels cover every class."""
    g = torch.Generator().manual_seed(seed + 1)
    classes = torch.randn(n_classes, small["word"], generator=g)
    classes = classes / classes.norm(dim=1, keepdim=True)
    labels = torch.randint(0, n_classes, (batch,), generator=g)
    neg_labels = (labels + torch.randint(1, n_classes, (batch,), generator=g)) % n_classes

    def audio(n):
        return torch.rand(n, small["audio"], generator=g) * 255

    def video(n):
        return torch.relu(torch.randn(n, small["video"], generator=g)) * 3

    x = {"audio": audio(batch), "video": video(batch), "labels": labels, "word": classes[labels],
         "neg_audio": audio(batch), "neg_video": video(batch), "neg_labels": neg_labels,
         "neg_word": classes[neg_labels], "class_vectors": classes,
         "eval_audio": audio(n_eval), "eval_video": video(n_eval)}
    if eval_labels:
        x["eval_labels"] = torch.arange(n_eval) % n_classes
    return x


def eval_dataset(audio: torch.Tensor, video: torch.Tensor, class_vectors: torch.Tensor, targets: torch.Tensor, *,
                 seen: Any, unseen: Any, all_ids: Any) -> types.SimpleNamespace:
    """What the official ``evaluate_dataset`` / ``evaluate_dataset_baseline`` and ``get_best_evaluation`` read
    from a dataset."""
    return types.SimpleNamespace(
        all_data={"audio": audio, "video": video, "text": class_vectors, "target": targets},
        targets=targets, seen_class_ids=seen, unseen_class_ids=unseen, all_class_ids=all_ids)


class _ZSL:
    def __init__(self, class_vectors: torch.Tensor, class_ids: list[int]) -> None:
        # The real dataset's map_embeddings_target calls .cuda(); the same pair, on the CPU.
        self.map_embeddings_target = (class_vectors, {c: i for i, c in enumerate(class_ids)})


class Loader:
    """One batch in the layout of the official ContrastiveDataset + DataLoader, with the dataset attribute that
    ``train_step`` reads."""

    def __init__(self, batch: dict, class_vectors: torch.Tensor, class_ids: list[int]) -> None:
        self.batch = batch
        self.dataset = types.SimpleNamespace(zsl_dataset=_ZSL(class_vectors, class_ids))

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        b = self.batch
        side = {"audio": b["audio"].clone(), "video": b["video"].clone(), "text": b["text"].clone()}
        data = {"positive": side, "negative": {k: v.clone() for k, v in side.items()}}
        yield data, {"positive": b["targets"].clone(), "negative": b["targets"].clone()}


class Stats:
    """The statistics logger ``train_step`` updates."""

    def update(self, row) -> None:
        pass


# -------------------------------------------------------------------------------------- the official evaluation


def official_evaluation(ou: types.ModuleType, model: nn.Module, x: dict[str, torch.Tensor], *, cjme: bool,
                        n_classes: int, n_seen: int) -> tuple[dict[str, torch.Tensor], dict, tuple]:
    """The official ``evaluate_dataset`` (eval mode) of CJME / AVGZSLNet over class ids 0..C-1 (the first
    ``n_seen`` seen), all of them in the split, so the distance matrices have no filler columns. Returns the
    matrix of each mode ("audio", "video", "both": the first argument of the first ``torch.argmin`` in that
    mode's ``get_best_evaluation``; beta = 0 adds nothing to it), the S/U/HM/ZSL of each mode, and the
    eval-mode forward outputs on the evaluation set."""
    mode: list[str] = []
    firsts: dict[str, torch.Tensor] = {}

    def best_evaluation(original):
        def call(*args, **kwargs):
            mode.append(kwargs["mode"])
            return original(*args, **kwargs)

        return call

    def argmin(original):
        def call(t, *args, **kwargs):
            firsts.setdefault(mode[-1], t.detach().clone())
            return original(t, *args, **kwargs)

        return call

    dataset = eval_dataset(x["eval_audio"], x["eval_video"], x["class_vectors"], x["eval_labels"],
                           seen=np.arange(n_seen), unseen=np.arange(n_seen, n_classes), all_ids=np.arange(n_classes))
    with patched(ou, "get_best_evaluation", best_evaluation), patched(torch, "argmin", argmin), torch.no_grad():
        result = ou.evaluate_dataset(dataset, model, "cpu", "L2Loss",
                                     args=argparse.Namespace(cjme=cjme, z_score_inputs=False))
    assert mode == ["audio", "video", "both"], mode
    metrics = {m: {k: float(v) for k, v in r.items() if k != "recall"} for m, r in result.items()}
    model.eval()
    with torch.no_grad():
        out = model(x["eval_audio"], x["eval_video"], x["class_vectors"],
                    x["eval_audio"], x["eval_video"], x["class_vectors"])
    return firsts, metrics, out


def baseline_evaluation(ou: types.ModuleType, model: nn.Module, ev: dict[str, torch.Tensor],
                        class_vectors: torch.Tensor, *, class_ids: list[int], unseen_ids: list[int],
                        args: argparse.Namespace, **flags: bool) -> dict:
    """The official ``evaluate_dataset_baseline`` (``flags``: the method's, e.g. ``apn=True``) over the
    benchmark ids ``class_ids``; the distance matrix it hands to calibrated stacking is recorded from its
    ``torch.cdist`` calls (one per beta, all equal)."""
    seen_ids = [c for c in class_ids if c not in unseen_ids]
    dataset = eval_dataset(ev["audio"], ev["video"], class_vectors, ev["targets"], seen=seen_ids, unseen=unseen_ids,
                           all_ids=list(range(max(class_ids) + 1)))
    with recorded_outputs(torch, "cdist") as calls, torch.no_grad():
        result = ou.evaluate_dataset_baseline(dataset, model, "cpu", "L2Loss", **flags, args=args)
    assert all(torch.equal(c, calls[0]) for c in calls), "the distance matrix changed between betas"
    return {
        "audio": ev["audio"], "video": ev["video"], "targets": ev["targets"], "labels": ev["labels"],
        "seen_ids": torch.tensor(seen_ids), "unseen_ids": torch.tensor(unseen_ids), "distances": calls[0],
        "result": {k: {m: v[m] for m in ("seen", "unseen", "hm", "zsl", "beta")} for k, v in result.items()},
    }
