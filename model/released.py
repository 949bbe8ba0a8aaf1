"""Evaluate the released checkpoints of the official TCAF code on this pipeline's features.

The official evaluation (``get_evaluation.py``, reference spec 7.3) takes two run folders made by the
official ``main.py``:

* stage A (stage 1): its ``*_score.pt`` holds the epoch with the best val HM, saved as
  ``{"epoch": best_epoch + 1, "model", "optimizer", "metric"}``;
* stage B (stage 2, ``--retrain_all``): ``checkpoints/*_ckpt_{i}.pt`` after every epoch ``i`` and the
  run's arguments (``args.yaml``, ``args.pkl``).

Model A picks the calibrated-stacking bias on ``stage_1_val``; model B, stage B's checkpoint of epoch
``epoch_A - 1`` (its last epoch when stage B trained ``best_epoch + 1`` epochs), is tested once on
``stage_2_test`` with that bias plus 1e-10/3. The architecture is read from stage B's arguments;
data loading, batching and metrics are this package's (``model.pipeline``, ``model.train``).
"""

from __future__ import annotations

import argparse
import copyreg
import datetime as dt
import io
import json
import logging
import pathlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from data_splits.common import atomic_write_text
from data_splits.io import read_class_embeddings
from model.config import REFERENCE_QUIRKS, TCAFConfig
from model.environment import library_versions
from model.official import config_from_official_args, load_official_checkpoint
from model.pipeline import (
    METRIC_KEYS,
    ExperimentConfig,
    _split_summary,  # same package: keeps the split summary identical to model.pipeline.evaluate's
    experiment_config,
    load_experiment,
    metrics_markdown,
)
from model.store_reader import open_store
from model.tcaf import TCAF
from model.train import evaluate as evaluate_split

log = logging.getLogger(__name__)

__all__ = [
    "OfficialRun",
    "evaluate_official_run",
    "find_stage_a_checkpoint",
    "find_stage_b_checkpoint",
    "locate_official_run",
    "official_args_file",
    "official_experiment_config",
    "read_official_args",
]

# The official model hard-codes the word-vector size of its W_proj (fastText, 300-d).
OFFICIAL_WORD_DIM = 300
# get_evaluation.py: beta* = (beta_audio + beta_video + beta_both + 1e-10) / 3 with three equal betas.
# The 1e-10 keeps a selected beta of 0 from reading as "no beta" (which would grid-search on test).
BETA_OFFSET = 1e-10 / 3
# Official dataset / split names -> this pipeline's, to refuse a checkpoint meant for other data.
_OFFICIAL_DATASETS = {"UCF": "ucf", "VGGSound": "vggsound", "ActivityNet": "activitynet"}
_OFFICIAL_SPLITS = {"cls_split": "cls", "main_split": "main"}


# ----------------------------------------------------------------------------------------------
# The run's arguments
# ----------------------------------------------------------------------------------------------

_PATH_CLASSES = {
    "PosixPath": pathlib.PurePosixPath,
    "PurePosixPath": pathlib.PurePosixPath,
    "WindowsPath": pathlib.PureWindowsPath,
    "PureWindowsPath": pathlib.PureWindowsPath,
    "Path": pathlib.PurePath,
    "PurePath": pathlib.PurePath,
}
# Everything an official args.pkl (a pickled argparse.Namespace of numbers, strings, booleans and
# paths) refers to. Paths become pure paths: a PosixPath cannot be instantiated on Windows, and
# nothing here touches the file system through them.
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("argparse", "Namespace"): argparse.Namespace,
    ("configargparse", "Namespace"): argparse.Namespace,  # re-exported argparse class
    # protocol 0/1 pickles of plain objects, under their Python 3 and (fix_imports) Python 2 names
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    **{(mod, name): cls for mod in ("pathlib", "pathlib._local") for name, cls in _PATH_CLASSES.items()},
}


class _ArgsUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names an argument namespace needs.

    A plain ``pickle.load`` runs whatever callable the file names (``os.system``, ...); an args file
    from the internet must not be able to do that.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which an argument file never needs") from None


def _load_args_pickle(path: Path) -> dict[str, Any]:
    try:
        ns = _ArgsUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: refusing to load it ({err}); an official args.pkl holds only an argparse.Namespace. "
            "Use the run's args.yaml instead, or recreate args.pkl from a trusted source"
        ) from err
    if isinstance(ns, argparse.Namespace):
        ns = vars(ns)
    if not isinstance(ns, dict):
        raise TypeError(f"{path}: expected a pickled argparse.Namespace, got {type(ns).__name__}")
    # As the official args.yaml writer does: paths as POSIX strings.
    return {str(k): (v.as_posix() if isinstance(v, pathlib.PurePath) else v) for k, v in ns.items()}


def official_args_file(run_dir: str | Path) -> Path | None:
    """The file holding an official run's arguments: ``args.yaml``, else ``args.pkl``; None when neither is."""
    return next((p for p in (Path(run_dir) / "args.yaml", Path(run_dir) / "args.pkl") if p.is_file()), None)


def read_official_args(run_dir: str | Path) -> tuple[dict[str, Any], Path]:
    """The arguments of an official run and the file they came from (``args.yaml``, else ``args.pkl``)."""
    path = official_args_file(run_dir)
    if path is None:
        raise FileNotFoundError(
            f"{run_dir}: neither args.yaml nor args.pkl found; pass the folder of an official run (made by main.py)"
        )
    if path.suffix == ".pkl":
        return _load_args_pickle(path), path
    try:
        args = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not readable as plain YAML ({err})") from err
    if isinstance(args, dict):
        return args, path
    raise ValueError(f"{path}: expected a mapping of argument names to values, got {type(args).__name__}")


# ----------------------------------------------------------------------------------------------
# The checkpoint files
# ----------------------------------------------------------------------------------------------


def find_stage_a_checkpoint(stage_a: str | Path) -> Path:
    """The one ``*_score.pt`` of a stage-1 run: the file itself, or found in the folder or its ``checkpoints/``."""
    stage_a = Path(stage_a)
    if stage_a.is_file():
        return stage_a
    if not stage_a.is_dir():
        raise FileNotFoundError(f"stage-A run folder {stage_a} does not exist")
    # Official runs write it into the run folder; copies are sometimes kept beside the per-epoch ones.
    found = sorted({*stage_a.glob("*_score.pt"), *(stage_a / "checkpoints").glob("*_score.pt")})
    if len(found) != 1:
        listed = [str(p.relative_to(stage_a)) for p in found] or [p.name for p in sorted(stage_a.glob("*.pt"))]
        raise ValueError(
            f"stage-A run {stage_a}: expected exactly one '*_score.pt' (the best-HM stage-1 model) in the folder "
            f"or its checkpoints/, found {len(found)}: {listed}. Keep only the one to evaluate, or pass its path "
            "as stage_a"
        )
    return found[0]


def find_stage_b_checkpoint(stage_b: str | Path, epoch_a: int) -> Path:
    """Stage B's ``checkpoints/*_ckpt_{epoch_a - 1}.pt``, the model the official evaluation tests."""
    ckpt_dir = Path(stage_b) / "checkpoints"
    pattern = f"*_ckpt_{epoch_a - 1}.pt"
    found = sorted(ckpt_dir.glob(pattern))
    if len(found) > 1:  # official runs save "score" checkpoints only; prefer them if others are there
        found = [p for p in found if p.name.endswith(f"_score_ckpt_{epoch_a - 1}.pt")] or found
    if len(found) != 1:
        present = sorted(p.name for p in ckpt_dir.glob("*_ckpt_*.pt"))
        raise FileNotFoundError(
            f"stage-B run {stage_b}: expected one checkpoint matching {ckpt_dir / pattern} (stage A's best epoch "
            f"{epoch_a - 1}, stage B's last when it trained {epoch_a} epochs), found {len(found)}; checkpoints "
            f"present: {present or 'none'}. Stage B must be the --retrain_all run for this stage A, trained with "
            "--save_checkpoints"
        )
    return found[0]


def _load_checkpoint_dict(path: Path) -> dict[str, Any]:
    try:
        # Official checkpoints hold tensors, numbers and a metric name: no code to unpickle.
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file it refuses or cannot read
        raise ValueError(f"{path}: not loadable as an official TCAF checkpoint with weights_only=True ({err})") from err
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), Mapping) or "epoch" not in blob:
        keys = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: expected an official checkpoint dict with 'epoch' and 'model', got {keys}")
    return blob


@dataclass(frozen=True)
class OfficialRun:
    """The files of an official stage A / stage B pair and what the evaluation takes from them."""

    stage_a: Path  # the *_score.pt file (model A)
    stage_b: Path  # stage B's *_ckpt_{epoch_a - 1}.pt (model B)
    args_file: Path  # stage B's args.yaml or args.pkl
    args: dict[str, Any]
    epoch_a: int  # epoch stored in model A's file: best_epoch + 1
    state_a: Mapping[str, torch.Tensor]
    state_b: Mapping[str, torch.Tensor]


def locate_official_run(stage_a: str | Path, stage_b: str | Path) -> OfficialRun:
    """Find and load model A, model B and stage B's arguments; clear errors for every missing piece."""
    stage_b = Path(stage_b)
    if not stage_b.is_dir():
        raise FileNotFoundError(f"stage-B run folder {stage_b} does not exist")
    args, args_file = read_official_args(stage_b)
    if not args.get("retrain_all"):
        raise ValueError(
            f"{args_file}: retrain_all is {args.get('retrain_all')!r}, so this run trained on stage_1_train only; "
            "is this the stage-2 run? stage_b must be the folder of the run trained with --retrain_all"
        )
    a_dir = Path(stage_a) if Path(stage_a).is_dir() else Path(stage_a).parent
    if official_args_file(a_dir) is not None:
        a_args, a_file = read_official_args(a_dir)
        if a_args.get("retrain_all"):
            raise ValueError(
                f"{a_file}: retrain_all is true, so stage_a is a stage-2 run (it trained on the val split it would "
                "choose the bias on); are stage_a and stage_b swapped?"
            )
    path_a = find_stage_a_checkpoint(stage_a)
    blob_a = _load_checkpoint_dict(path_a)
    epoch_a = blob_a["epoch"]
    if not isinstance(epoch_a, int) or isinstance(epoch_a, bool) or epoch_a < 1:
        raise ValueError(f"{path_a}: stored epoch {epoch_a!r} is not a positive integer (best_epoch + 1)")
    path_b = find_stage_b_checkpoint(stage_b, epoch_a)
    blob_b = _load_checkpoint_dict(path_b)
    if blob_b["epoch"] != epoch_a:  # the official writer stores epoch i + 1 in *_ckpt_{i}.pt
        raise ValueError(f"{path_b}: stored epoch {blob_b['epoch']!r} does not match its name (expected {epoch_a}); "
                         "the file was renamed or comes from another run")
    return OfficialRun(path_a, path_b, args_file, args, epoch_a, blob_a["model"], blob_b["model"])


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


def _check_args_supported(args: Mapping[str, Any], args_file: Path) -> None:
    if args.get("z_score_inputs"):
        raise ValueError(f"{args_file}: z_score_inputs is true; the official evaluation then standardises every "
                         "input tensor per batch, which this evaluation does not reproduce")
    if args.get("distance_fn", "L2Loss") != "L2Loss":
        raise ValueError(f"{args_file}: distance_fn {args['distance_fn']!r} makes the official evaluation square the "
                         "distances before calibrated stacking; only L2Loss is supported")


def _eval_window(args: Mapping[str, Any], args_file: Path) -> dict[str, Any]:
    """Train-section keys for the evaluation window the official run's batch_seqlen_test* settings give."""
    out: dict[str, Any] = {}
    mode = args.get("batch_seqlen_test")
    if mode is not None:
        if mode not in ("max", "fixed"):
            raise ValueError(f"{args_file}: batch_seqlen_test {mode!r} is not 'max' or 'fixed'")
        out["seq_mode"] = mode
        if mode == "fixed":
            if args.get("batch_seqlen_test_trim", "center") != "center":
                raise ValueError(f"{args_file}: batch_seqlen_test_trim {args['batch_seqlen_test_trim']!r} crops test "
                                 "videos at random; only 'center' is supported")
            if args.get("batch_seqlen_test_maxlen") is not None:
                out["eval_max_len"] = int(args["batch_seqlen_test_maxlen"])
    return out


def official_experiment_config(args: Mapping[str, Any], cfg: Mapping[str, Any] | None = None, *,
                               args_file: str | Path = "args") -> ExperimentConfig:
    """The experiment config for evaluating an official run with arguments ``args``.

    The architecture and the evaluation window come from ``args``; from ``cfg`` (the workflow's
    experiment mapping) the preset (default "reference"), the ``train`` section (device, batch size,
    data-loading quirks), ``evaluate`` (the bias grid), ``dataset`` and ``split_kind``. Of ``cfg.model``
    only explicitly set reference-quirk switches are used: its sizes describe models trained here.
    """
    args_file = Path(args_file)
    cfg = dict(cfg or {})
    _check_args_supported(args, args_file)
    args = dict(args)
    if args.get("input_size") is not None:  # as the official main.py / get_evaluation.py do
        args["input_size_audio"] = args["input_size_video"] = args["input_size"]
    for key in ("input_size_audio", "input_size_video"):
        if args.get(key) is None:
            raise ValueError(f"{args_file}: {key} is not set; the model's input sizes cannot be known")
    preset = cfg.get("preset") or "reference"
    quirk_keys = {d.split(".", 1)[1] for d in REFERENCE_QUIRKS if d.startswith("model.")}
    given = dict(cfg.get("model") or {})
    ignored = sorted(set(given) - quirk_keys)
    if ignored:
        log.info("model settings %s are ignored: the released run's arguments define the architecture", ignored)
    model: TCAFConfig = config_from_official_args(
        args, reference=preset == "reference", **{k: v for k, v in given.items() if k in quirk_keys}
    )

    dataset, split_kind = cfg.get("dataset"), cfg.get("split_kind")
    theirs = _OFFICIAL_DATASETS.get(str(args.get("dataset_name")))
    if dataset in _OFFICIAL_DATASETS.values() and theirs is not None and theirs != dataset:
        raise ValueError(f"{args_file}: the released run was trained on dataset_name={args['dataset_name']!r}, "
                         f"but the features are for dataset {dataset!r}; pass the {dataset} checkpoints")
    their_split = _OFFICIAL_SPLITS.get(str(args.get("zero_shot_split")))
    if split_kind in _OFFICIAL_SPLITS.values() and their_split is not None and their_split != split_kind:
        raise ValueError(f"{args_file}: the released run used zero_shot_split={args['zero_shot_split']!r}, "
                         f"but the splits are the {split_kind!r} kind; pass checkpoints of the {split_kind}_split")

    exp = {
        "dataset": dataset,
        "split_kind": split_kind,
        "preset": preset,
        "model": model.to_dict(),  # complete: presets fill nothing in
        "train": {**(cfg.get("train") or {}), **_eval_window(args, args_file)},
        "evaluate": cfg.get("evaluate"),
    }
    return experiment_config(exp)


def _check_data_sizes(exp: ExperimentConfig, features_store: Path, class_embeddings: Path, args_file: Path) -> None:
    store = open_store(features_store)
    audio, video = store.audio[0], store.video[0]
    have = (int(audio.shape[1]), int(video.shape[1]))
    want = (exp.model.audio_dim, exp.model.video_dim)
    if have != want:
        raise ValueError(
            f"{features_store} holds audio/video features of size {have[0]}/{have[1]}, but the released model "
            f"({args_file}: input_size_audio/input_size_video) takes {want[0]}/{want[1]}; evaluate it on features "
            "of the extractors it was trained with (VGGish 128 / C3D fc7 4096 for the cls features)"
        )
    # The official model always divides audio by 255: right for VGGish bytes, and for float copies of them
    # that the store marks with value_scale 255 (imported released features).
    scale = (store.attrs.get("audio") or {}).get("value_scale")
    if np.dtype(audio.dtype) != np.uint8 and scale != 255:
        log.warning("%s: audio features are %s without value_scale 255, not quantised VGGish codes; the released "
                    "model divides audio by 255 as in training, so these inputs differ from what it saw",
                    features_store, audio.dtype)
    word_dim = int(read_class_embeddings(class_embeddings).vectors.shape[1])
    if word_dim != OFFICIAL_WORD_DIM:
        raise ValueError(
            f"{class_embeddings} has {word_dim}-d class vectors; the released model's W_proj takes "
            f"{OFFICIAL_WORD_DIM}-d fastText vectors (class_embeddings backend fasttext)"
        )


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def _percent(r: Any) -> dict[str, float]:
    return {k: 100 * getattr(r, k) for k in METRIC_KEYS}


def evaluate_official_run(features_store: str | Path, splits_dir: str | Path, class_embeddings: str | Path,
                          stage_a: str | Path, stage_b: str | Path, out_dir: str | Path,
                          cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The official evaluation of a released stage-A / stage-B pair. Writes ``metrics.json``, ``metrics.md``.

    ``cfg`` is the experiment mapping (see :func:`official_experiment_config`). Metrics are percentages;
    the JSON has the keys of ``model.pipeline.evaluate`` plus ``checkpoint_source``, ``stage_a``,
    ``stage_b``, ``official_args`` and ``val`` (model A on stage_1_val at the bias it chose).
    """
    features_store, class_embeddings, out_dir = Path(features_store), Path(class_embeddings), Path(out_dir)
    run = locate_official_run(stage_a, stage_b)
    log.info("model A: %s (stage-1 epoch %d); model B: %s; arguments: %s", run.stage_a, run.epoch_a - 1,
             run.stage_b, run.args_file)
    exp = official_experiment_config(run.args, cfg, args_file=run.args_file)
    _check_data_sizes(exp, features_store, class_embeddings, run.args_file)
    ctx = load_experiment(features_store, splits_dir, class_embeddings, exp, ("stage_1_val", "stage_2_test"))
    val, test = ctx.splits["stage_1_val"], ctx.splits["stage_2_test"]
    if not bool(val.unseen.any()):
        raise ValueError(f"{splits_dir}: stage_1_val has no unseen class; the bias search needs seen and unseen")

    nets = {}
    for name, state, path in (("A", run.state_a, run.stage_a), ("B", run.state_b, run.stage_b)):
        try:
            nets[name] = load_official_checkpoint(TCAF(exp.model), state).to(ctx.device).eval()
        except ValueError as err:
            raise ValueError(f"{path} (model {name}) does not fit the architecture in {run.args_file}: {err}") from err
    win, bs = exp.train.window(), exp.train.eval_batch_size
    r_val = evaluate_split(nets["A"], val, ctx.device, win, batch_size=bs, grid=exp.evaluate.grid())
    beta = r_val.bias + BETA_OFFSET
    r_test = evaluate_split(nets["B"], test, ctx.device, win, batch_size=bs, bias=beta)
    log.info("val (model A): HM %.4f at bias %.2f; test (model B): S %.4f U %.4f HM %.4f ZSL %.4f",
             r_val.HM, r_val.bias, r_test.S, r_test.U, r_test.HM, r_test.ZSL)

    seed = run.args.get("seed")
    per_seed = [{"seed": seed, **_percent(r_test), "bias": r_test.bias, "best_epoch": run.epoch_a - 1}]
    official_dataset = run.args.get("dataset_name")
    metrics = {
        "dataset": exp.dataset or _OFFICIAL_DATASETS.get(str(official_dataset), official_dataset),
        "split_kind": exp.split_kind or _OFFICIAL_SPLITS.get(str(run.args.get("zero_shot_split"))),
        "preset": exp.preset,
        "random_weight_features": ctx.random_weights,
        **_percent(r_test),
        "bias": r_test.bias,
        "std": dict.fromkeys(METRIC_KEYS, 0.0),
        "n_seeds": 1,
        "per_seed": per_seed,
        "units": "percent (mean class accuracy); bias in embedding-distance units",
        "test": _split_summary(test),
        **({"feature_source": ctx.feature_attrs["source"]} if "source" in ctx.feature_attrs else {}),
        "feature_extractors": ctx.feature_attrs,
        "checkpoint": str(run.stage_b),
        "checkpoint_source": "released",
        "stage_a": str(run.stage_a),
        "stage_b": str(run.stage_b),
        "official_args": str(run.args_file),
        "val": {**_percent(r_val), "bias": r_val.bias, "split": _split_summary(val)},
        "device": str(ctx.device),
        "versions": library_versions(),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(out_dir / "metrics.md", released_markdown(metrics))
    return metrics


def released_markdown(m: Mapping[str, Any]) -> str:
    """``model.pipeline.metrics_markdown`` with a note, under the title, on where the models came from."""
    title, _, rest = metrics_markdown(m).partition("\n")
    v = m["val"]
    note = (f"**Released checkpoints of the official TCAF code, not trained by this pipeline.** "
            f"Model A `{m['stage_a']}` (stage 1, epoch {m['per_seed'][0]['best_epoch']}) chose the bias "
            f"{v['bias']:.2f} on stage_1_val (S {v['S']:.2f}, U {v['U']:.2f}, HM {v['HM']:.2f}, ZSL {v['ZSL']:.2f}); "
            f"model B `{m['stage_b']}` (stage 2) was tested once with that bias + 1e-10/3.")
    return f"{title}\n\n{note}\n{rest}"
