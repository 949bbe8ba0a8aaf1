"""The two-stage TCAF protocol as three functions the workflow calls (reference spec 1, 7.3).

1. ``train_stage1``: train on ``stage_1_train``, evaluate HM on ``stage_1_val`` after every epoch,
   keep the epoch with the best HM and its calibrated-stacking bias (one model per seed).
2. ``train_stage2``: a fresh model with the same seed (so the same initialisation) trained on
   ``stage_2_train`` (= train + val) for ``best_epoch + 1`` epochs; the last epoch is final.
3. ``evaluate``: the stage-2 model of each seed on ``stage_2_test`` (test seen + test unseen),
   **once**, with the bias chosen in stage 1. Mean and std over seeds.

``cfg`` is the experiment configuration as a mapping (the workflow's YAML): sections ``model``
(:class:`model.config.TCAFConfig` fields), ``train`` (:class:`model.train_config.TrainConfig`) and
``evaluate`` (:class:`model.train_config.EvalConfig`), plus optional top-level ``dataset`` (selects the
paper's per-dataset hyper-parameters as defaults under the user's values), ``split_kind`` and
``preset`` ("paper", the default, or "reference": every ``REFERENCE_QUIRKS`` switch on unless set
explicitly). Other top-level sections are ignored. Input sizes (audio/video/word dimensions,
audio scaling) default to what the data holds.

Outputs: per stage one checkpoint file holding the model of every seed, ``history.csv`` (one row
per seed and epoch), and JSON/Markdown summaries. Resumable training checkpoints go to
``checkpoint_dir`` (default ``<out_dir>/checkpoints``); keep that outside the workflow's declared
outputs so a rerun after a crash resumes instead of starting over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_splits.common import atomic_torch_save, atomic_write_text, resolve_device
from data_splits.io import read_class_embeddings, read_classes
from model.config import DATASET_PRESETS, REFERENCE_QUIRKS, TCAFConfig, apply_preset
from model.environment import configure_determinism, configure_precision, library_versions, seed_everything
from model.methods import (
    METHOD_TITLES,
    TEMPORAL_METHODS,
    build_method,
    config_from_dict,
    get_method_module,
    method_config,
    method_train_defaults,
)
from model.packing import SplitData, build_split, load_class_vectors
from model.store_reader import StoreArrays, open_store
from model.tcaf import TCAF
from model.train import TemporalRecipe, run_stage, runtime_record, write_csv_atomic
from model.train_config import TRAIN_PRESETS, TRAIN_REFERENCE_QUIRKS, EvalConfig, TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "avgzsl.tcaf/1"
METRIC_KEYS = ("S", "U", "HM", "ZSL")

__all__ = [
    "ExperimentConfig",
    "evaluate",
    "experiment_config",
    "load_checkpoint",
    "load_experiment",
    "train_stage1",
    "train_stage2",
]


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class ExperimentConfig:
    model: Any  # TCAFConfig, or the method's own config dataclass (model/methods/)
    train: TrainConfig
    evaluate: EvalConfig
    dataset: str | None = None
    split_kind: str | None = None
    preset: str = "paper"
    method: str = "tcaf"
    features: str = "vggish_c3d"  # the store groups trained on (model.methods.FEATURE_SETS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "features": self.features,
            "model": model_config_dict(self.model),
            "train": self.train.to_dict(),
            "evaluate": dataclasses.asdict(self.evaluate),
            "dataset": self.dataset,
            "split_kind": self.split_kind,
            "preset": self.preset,
        }


def experiment_config(cfg: Mapping[str, Any] | ExperimentConfig, store: StoreArrays | None = None,
                      word_dim: int | None = None) -> ExperimentConfig:
    """Resolve presets and data-derived sizes into dataclass configs.

    Precedence: values in ``cfg`` > quirk preset > dataset preset > dataclass defaults; input sizes
    not given in ``cfg.model`` come from the data (``store`` values, class-vector ``word_dim``).
    """
    if isinstance(cfg, ExperimentConfig):
        return cfg
    dataset = cfg.get("dataset")
    preset = cfg.get("preset") or "paper"
    method = cfg.get("method") or "tcaf"
    get_method_module(method)  # an unknown name fails here, naming the methods
    model = dict(cfg.get("model") or {})
    train = dict(cfg.get("train") or {})
    own_train = TRAIN_PRESETS.get(dataset, {}) if method == "tcaf" else method_train_defaults(method, dataset)
    d = {
        "model": {**DATASET_PRESETS.get(dataset, {}), **model} if method == "tcaf" else model,
        "train": {**own_train, **train},
    }
    d = apply_preset(d, preset)
    if method != "tcaf":  # TCAF's model quirks are TCAF's; a method's own quirks come from its module
        d["model"] = dict(model)
    for dotted in TRAIN_REFERENCE_QUIRKS:  # the training-side quirks, if config.py does not list them
        if dotted not in REFERENCE_QUIRKS:
            d["train"].setdefault(dotted.split(".", 1)[1], preset == "reference")
    m = d["model"]
    if store is not None:
        m.setdefault("audio_dim", int(store.audio[0].shape[1]))
        m.setdefault("video_dim", int(store.video[0].shape[1]))
        # Quantised VGGish bytes are scaled by 1/255 in the model; raw float embeddings are not.
        # Averaged codes (released AVCA features) are floats on the same 0..255 scale: the store says so.
        groups = getattr(store, "groups", ("audio", "video"))  # which store groups the audio/video inputs are
        scale = (store.attrs.get(groups[0]) or {}).get("value_scale")
        m.setdefault("audio_input_scale", float(scale) if scale else 255.0 if store.audio[0].dtype == np.uint8 else 1.0)
    if word_dim is not None:
        if "word_dim" in model and int(model["word_dim"]) != word_dim:
            raise ValueError(f"model.word_dim is {model['word_dim']} but the class embeddings have {word_dim} "
                             "dimensions; remove model.word_dim (it defaults to the data) or rebuild them")
        m.setdefault("word_dim", word_dim)
    if method == "tcaf":
        model_cfg = TCAFConfig.from_dict(m)
    else:
        # Input sizes read from the data are defaults; the user's values and the method's presets come first.
        dims = {k: m.pop(k) for k in ("audio_dim", "video_dim", "word_dim", "audio_input_scale") if k in m
                and k not in model}
        model_cfg = method_config(method, m, dataset=dataset, preset=preset, dims=dims)
    return ExperimentConfig(
        model=model_cfg,
        train=TrainConfig.from_dict(d["train"]),
        evaluate=EvalConfig.from_dict(cfg.get("evaluate")),
        dataset=dataset,
        split_kind=cfg.get("split_kind"),
        preset=preset,
        method=method,
        features=experiment_features(cfg),
    )


def experiment_features(cfg: Mapping[str, Any] | ExperimentConfig) -> str:
    """The feature pair of an experiment: its ``features`` key, else its method's default."""
    if isinstance(cfg, ExperimentConfig):
        return cfg.features
    from model.methods import FEATURE_SETS, default_features

    features = cfg.get("features") or default_features(cfg.get("method") or "tcaf")
    if features not in FEATURE_SETS:
        raise ValueError(f"features {features!r} is not one of {list(FEATURE_SETS)} (config key features.methods)")
    return features


def model_config_dict(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def build_model(exp: ExperimentConfig) -> torch.nn.Module:
    """The network of the experiment's method, freshly initialised (seed the RNGs first)."""
    return TCAF(exp.model) if exp.method == "tcaf" else build_method(exp.method, exp.model)


def recipe_for(exp: ExperimentConfig, device: torch.device) -> Any:
    """How ``run_stage`` trains and evaluates the method: TCAF's temporal path (None) or the averaged one."""
    if exp.method in TEMPORAL_METHODS:
        return None
    from model.methods.train import AveragedRecipe

    return AveragedRecipe(device)


# ----------------------------------------------------------------------------------------------
# Shared loading
# ----------------------------------------------------------------------------------------------


@dataclass
class Experiment:
    exp: ExperimentConfig
    device: torch.device
    splits: dict[str, SplitData]
    random_weights: bool
    feature_attrs: dict[str, Any]


def load_experiment(features_store: str | Path, splits_dir: str | Path, class_embeddings: str | Path,
                    cfg: Mapping[str, Any] | ExperimentConfig, splits: tuple[str, ...]) -> Experiment:
    """Resolve the config against the data and preload ``splits`` (names from ``model.packing.SPLITS``)."""
    features = experiment_features(cfg)
    # The default pair is open_store's default: stand-ins for it (tests) need not know the keyword.
    store = open_store(features_store) if features == "vggish_c3d" else open_store(features_store, features=features)
    word_dim = read_class_embeddings(class_embeddings).vectors.shape[1]
    exp = experiment_config(cfg, store=store, word_dim=word_dim)
    # Before the device is resolved, hence before CUDA is initialised: cuBLAS reads its workspace setting once.
    configure_determinism(exp.train.deterministic)
    configure_precision(exp.train.allow_tf32)
    device = resolve_device(exp.train.device, "train.device")  # before any data is read; the job's GPU
    if exp.train.num_threads > 0:
        torch.set_num_threads(exp.train.num_threads)
    classes = read_classes(Path(splits_dir) / "classes.tsv")
    vectors = load_class_vectors(class_embeddings, classes, permutation_quirk=exp.train.class_vector_permutation)
    loaded = {
        name: build_split(store, splits_dir, name, vectors, classes, device=device,
                          video_dtype=exp.train.video_dtype, data_device=exp.train.data_device)
        for name in splits
    }
    for s in loaded.values():
        log.info("%s: %d videos, %d classes (%d unseen), %.1f MiB on %s; %d listed videos dropped", s.name,
                 len(s), s.n_classes, int(s.unseen.sum()), s.nbytes() / 2**20, s.data_device, len(s.dropped))
    groups = getattr(store, "groups", ("audio", "video"))
    attrs = {m: store.attrs.get(g, {}) for m, g in zip(("audio", "video"), groups, strict=True)}
    attrs["source"] = feature_source(store.attrs)
    return Experiment(exp, device, loaded, store.random_weights, attrs)


def feature_source(store_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Where a store's features came from: extracted by this pipeline, or imported from a release."""
    return dict(store_attrs.get("source") or {"kind": "extract"})


def describe_feature_source(source: Mapping[str, Any]) -> str:
    if source.get("kind") == "released":
        what = "TCAF's temporal" if source.get("layout") == "tcaf" else "AVCA's averaged"
        return f"released features ({what} C3D/VGGish files from {source.get('dir')})"
    return "features extracted by this pipeline"


def _split_summary(s: SplitData) -> dict[str, Any]:
    n_unseen_videos = int(s.unseen.cpu()[s.labels_cpu].sum())
    return {"videos": len(s), "seen_videos": len(s) - n_unseen_videos, "unseen_videos": n_unseen_videos,
            "classes": s.n_classes, "unseen_classes": int(s.unseen.sum()), "dropped": len(s.dropped)}


def _checkpoint_blob(ctx: Experiment, stage: str, models: dict[str, dict[str, Any]], train_split: SplitData) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "method": ctx.exp.method,
        "model_config": model_config_dict(ctx.exp.model),
        "experiment": ctx.exp.to_dict(),
        "train_class_ids": train_split.class_ids,
        "train_class_names": train_split.class_names,
        "random_weight_features": ctx.random_weights,
        "runtime": runtime_record(ctx.exp.train, ctx.device),
        "versions": library_versions(ctx.device),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "models": models,
    }


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[int, TCAF], dict[str, Any]]:
    """Models (one per seed, eval mode) and metadata of a ``best.pt`` / ``final.pt`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; run the training stage first")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format {blob.get('format')!r})")
    method = blob.get("method", "tcaf")
    cfg = TCAFConfig.from_dict(blob["model_config"]) if method == "tcaf" else config_from_dict(method, blob["model_config"])
    models = {}
    for seed, entry in blob["models"].items():
        net = TCAF(cfg) if method == "tcaf" else build_method(method, cfg)
        net.load_state_dict(entry["state_dict"])
        models[int(seed)] = net.to(device).eval()
    return models, blob


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# ----------------------------------------------------------------------------------------------
# Stage 1, stage 2, test
# ----------------------------------------------------------------------------------------------


def resume_dir(out_dir: str | Path, inputs: Iterable[str | Path], params: Mapping[str, Any]) -> Path:
    """Where a workflow job keeps its resumable training state.

    Outside the declared outputs (Snakemake deletes those before a job) and keyed by the inputs' sizes and
    mtimes and the params, so a rerun after a crash resumes, while a rerun on re-extracted features or a
    changed config starts afresh. The caller removes it after success, so a forced rerun trains again.
    """
    key = hashlib.sha256(repr(sorted(params.items())).encode())
    for path in sorted(str(p) for p in inputs):
        st = Path(path).stat()
        key.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return Path(out_dir) / "resume" / key.hexdigest()[:16]


def train_stage1(features_store: str | Path, splits_dir: str | Path, class_embeddings: str | Path,
                 cfg: Mapping[str, Any] | ExperimentConfig, out_dir: str | Path, *,
                 checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """Stage 1 for every seed. Writes ``best.pt``, ``history.csv``, ``stage1.json``; returns the JSON."""
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    ctx = load_experiment(features_store, splits_dir, class_embeddings, cfg, ("stage_1_train", "stage_1_val"))
    exp, train, val = ctx.exp, ctx.splits["stage_1_train"], ctx.splits["stage_1_val"]
    if not bool(val.unseen.any()):
        raise ValueError(f"{splits_dir}: stage_1_val has no unseen class; HM (and model selection) needs both")
    fingerprint = {"method": exp.method, "model": model_config_dict(exp.model), "evaluate": dataclasses.asdict(exp.evaluate),
                   "data": [str(features_store), str(splits_dir), str(class_embeddings)]}
    rows: list[dict[str, Any]] = []
    per_seed, models = [], {}
    for seed in exp.train.seed_list:
        seed_everything(seed, exp.train.deterministic)
        net = build_model(exp).to(ctx.device)
        done = list(rows)
        res = run_stage(
            net, train, val, exp.train, seed=seed, epochs=exp.train.epochs, device=ctx.device, eval_cfg=exp.evaluate,
            stage="stage1", checkpoint=ckpt_dir / f"stage1_seed{seed}.pt", fingerprint=fingerprint,
            on_epoch=lambda h, done=done: write_csv_atomic(out_dir / "history.csv", done + h),
            recipe=recipe_for(exp, ctx.device),
        )
        rows += res.history
        models[str(seed)] = {"state_dict": res.best_state, "epoch": res.best_epoch, "bias": res.best["bias"],
                             "val": res.best}
        per_seed.append({"seed": seed, "best_epoch": res.best_epoch, "stage2_epochs": res.best_epoch + 1,
                         "bias": res.best["bias"], "val": {k: res.best[k] for k in METRIC_KEYS}})
    write_csv_atomic(out_dir / "history.csv", rows)
    atomic_torch_save(_checkpoint_blob(ctx, "stage1", models, train), out_dir / "best.pt")
    summary = {
        "dataset": exp.dataset,
        "split_kind": exp.split_kind,
        "preset": exp.preset,
        "seeds": exp.train.seed_list,
        # keyed by seed (as a string): each seed picks its own epoch and bias
        "best_epoch": {str(p["seed"]): p["best_epoch"] for p in per_seed},
        "best_bias": {str(p["seed"]): p["bias"] for p in per_seed},
        "val_mean": {k: _mean_std([p["val"][k] for p in per_seed])[0] for k in METRIC_KEYS},
        "per_seed": per_seed,
        "units": "fractions in [0, 1]",
        "splits": {s.name: _split_summary(s) for s in (train, val)},
        "random_weight_features": ctx.random_weights,
        "feature_source": ctx.feature_attrs["source"],
        "experiment": exp.to_dict(),
        "device": str(ctx.device),
        "runtime": runtime_record(exp.train, ctx.device),
        "versions": library_versions(ctx.device),
    }
    _write_json(out_dir / "stage1.json", summary)
    return summary


def train_stage2(features_store: str | Path, splits_dir: str | Path, class_embeddings: str | Path,
                 cfg: Mapping[str, Any] | ExperimentConfig, stage1_json: str | Path, out_dir: str | Path, *,
                 checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """Stage 2 for every seed of stage 1: ``best_epoch + 1`` epochs on train + val. Writes ``final.pt``,
    ``history.csv`` and ``stage2.json``; returns the JSON.

    As in the reference, the stage-1 val split is still evaluated after each epoch (the model now trains
    on it), because its HM drives the LR scheduler; the numbers are logged but select nothing.
    """
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    s1 = json.loads(Path(stage1_json).read_text())
    ctx = load_experiment(features_store, splits_dir, class_embeddings, cfg, ("stage_2_train", "stage_1_val"))
    exp, train, val = ctx.exp, ctx.splits["stage_2_train"], ctx.splits["stage_1_val"]
    by_seed = {int(p["seed"]): p for p in s1["per_seed"]}
    missing = [s for s in exp.train.seed_list if s not in by_seed]
    if missing:
        raise ValueError(f"{stage1_json} has no stage-1 result for seed(s) {missing}; rerun stage 1 with these seeds")
    fingerprint = {"method": exp.method, "model": model_config_dict(exp.model), "evaluate": dataclasses.asdict(exp.evaluate),
                   "data": [str(features_store), str(splits_dir), str(class_embeddings)]}
    rows: list[dict[str, Any]] = []
    models, per_seed = {}, []
    for seed in exp.train.seed_list:
        epochs = int(by_seed[seed]["stage2_epochs"])
        seed_everything(seed, exp.train.deterministic)  # same seed -> same initialisation as stage 1
        net = build_model(exp).to(ctx.device)
        done = list(rows)
        res = run_stage(
            net, train, val, exp.train, seed=seed, epochs=epochs, device=ctx.device, eval_cfg=exp.evaluate,
            stage="stage2", checkpoint=ckpt_dir / f"stage2_seed{seed}.pt", fingerprint=fingerprint,
            on_epoch=lambda h, done=done: write_csv_atomic(out_dir / "history.csv", done + h),
            recipe=recipe_for(exp, ctx.device),
        )
        rows += res.history
        models[str(seed)] = {"state_dict": res.last_state, "epoch": epochs - 1, "bias": by_seed[seed]["bias"]}
        per_seed.append({"seed": seed, "epochs": epochs, "bias": by_seed[seed]["bias"]})
    write_csv_atomic(out_dir / "history.csv", rows)
    atomic_torch_save(_checkpoint_blob(ctx, "stage2", models, train), out_dir / "final.pt")
    summary = {"dataset": exp.dataset, "split_kind": exp.split_kind, "preset": exp.preset, "per_seed": per_seed,
               "splits": {"stage_2_train": _split_summary(train)}, "random_weight_features": ctx.random_weights,
               "feature_source": ctx.feature_attrs["source"],
               "device": str(ctx.device), "runtime": runtime_record(exp.train, ctx.device),
               "versions": library_versions(ctx.device)}
    _write_json(out_dir / "stage2.json", summary)
    return summary


def evaluate(features_store: str | Path, splits_dir: str | Path, class_embeddings: str | Path,
             cfg: Mapping[str, Any] | ExperimentConfig, stage1_json: str | Path, final_checkpoint: str | Path,
             out_dir: str | Path) -> dict[str, Any]:
    """Test every stage-2 model once with its stage-1 bias. Writes ``metrics.json`` and ``metrics.md``.

    Metrics in the outputs are percentages (as in the paper's tables).
    """
    out_dir = Path(out_dir)
    s1 = json.loads(Path(stage1_json).read_text())
    bias_of = {int(p["seed"]): float(p["bias"]) for p in s1["per_seed"]}
    epoch_of = {int(p["seed"]): int(p["best_epoch"]) for p in s1["per_seed"]}
    ctx = load_experiment(features_store, splits_dir, class_embeddings, cfg, ("stage_2_test",))
    test = ctx.splits["stage_2_test"]
    models, blob = load_checkpoint(final_checkpoint, ctx.device)
    recipe = recipe_for(ctx.exp, ctx.device) or TemporalRecipe()
    per_seed = []
    for seed, net in sorted(models.items()):
        if seed not in bias_of:
            raise ValueError(f"{stage1_json} has no bias for seed {seed} of {final_checkpoint}; rerun stage 1")
        r = recipe.evaluate(net, test, ctx.device, ctx.exp.train, bias=bias_of[seed])
        per_seed.append({"seed": seed, **{k: 100 * getattr(r, k) for k in METRIC_KEYS}, "bias": r.bias,
                         "best_epoch": epoch_of[seed]})
    stats = {k: _mean_std([p[k] for p in per_seed]) for k in (*METRIC_KEYS, "bias")}
    metrics = {
        "method": ctx.exp.method,
        "dataset": ctx.exp.dataset or blob["experiment"].get("dataset"),
        "split_kind": ctx.exp.split_kind,
        "preset": ctx.exp.preset,
        "features": ctx.exp.features,
        "random_weight_features": ctx.random_weights,
        **{k: stats[k][0] for k in (*METRIC_KEYS, "bias")},
        "std": {k: stats[k][1] for k in METRIC_KEYS},
        "n_seeds": len(per_seed),
        "per_seed": per_seed,
        "units": "percent (mean class accuracy); bias in embedding-distance units",
        "test": _split_summary(test),
        "feature_source": ctx.feature_attrs["source"],
        "feature_extractors": ctx.feature_attrs,
        "checkpoint": str(final_checkpoint),
        "device": str(ctx.device),
        # how the tested models were trained (None: a checkpoint from before this record) and evaluated
        "training_runtime": blob.get("runtime"),
        "runtime": {"device": str(ctx.device), "deterministic": ctx.exp.train.deterministic,
                    "allow_tf32": bool(ctx.exp.train.allow_tf32 and ctx.device.type == "cuda")},
        "versions": library_versions(ctx.device),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    _write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "metrics.md", metrics_markdown(metrics))
    return metrics


def metrics_markdown(m: Mapping[str, Any]) -> str:
    """The test metrics as a Markdown table (mean ± std over seeds, then one row per seed)."""
    name = METHOD_TITLES.get(m.get("method", "tcaf"), m.get("method"))
    lines = [(f"# {name} test results: {m.get('dataset') or '?'} ({m.get('split_kind') or '?'} split, "
             f"{m.get('preset')} preset)"), ""]
    if m.get("random_weight_features"):
        lines += [("> **WARNING: features come from RANDOM-WEIGHT extractors** (store attribute "
                  "`weights.random: true`). These numbers test the pipeline, not the method; they are not "
                  "comparable with published results."), ""]
    n = m["n_seeds"]
    pm = (lambda k: f"{m[k]:.2f} ± {m['std'][k]:.2f}") if n > 1 else (lambda k: f"{m[k]:.2f}")
    lines += ["| seeds | S | U | HM | ZSL | bias |", "|---|---|---|---|---|---|",
              f"| {n} | {pm('S')} | {pm('U')} | {pm('HM')} | {pm('ZSL')} | {m['bias']:.2f} |", ""]
    if n > 1:
        lines += ["| seed | S | U | HM | ZSL | bias | best epoch |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {p['seed']} | {p['S']:.2f} | {p['U']:.2f} | {p['HM']:.2f} | {p['ZSL']:.2f} | {p['bias']:.2f} "
                  f"| {p['best_epoch']} |" for p in m["per_seed"]]
        lines.append("")
    t = m["test"]
    lines += [(f"Mean class accuracy in %. Test set: {t['seen_videos']} seen / {t['unseen_videos']} unseen videos, "
              f"{t['classes'] - t['unseen_classes']} seen / {t['unseen_classes']} unseen classes "
              f"({t['dropped']} listed videos without features). Device: {m['device']}."), ""]
    if m.get("feature_source"):
        lines += [f"Features: {describe_feature_source(m['feature_source'])}.", ""]
    return "\n".join(lines)
