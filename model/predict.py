"""Zero-shot prediction on new videos with class names of the user's choosing.

A trained model (``results/train/<dataset>/<split_kind>/<method>``, or its ``stage2/final.pt``), a folder of
videos and a list of class names in; per video the top-k classes with scores out (and, with ``windows=True``,
the top class of every time window along the video)::

    python -m model.predict --videos my_videos/ --classes names.txt \\
        --model results/train/demo/cls/tcaf --out results/predict/my_videos [--windows]

What it does (docs/predict.md):

1. **Features, exactly as at training time.** The model's training store (``results/features/<dataset>/
   features.zarr`` beside the run, or ``features_store=``) records how its features were made: extractor
   backends, presets, weights (source, sha256, or random with their seed), PCA file, output dtypes, decoding
   settings. The model reads one feature pair (its ``features``: ``vggish_c3d`` = the store's VGGish/C3D groups,
   ``clip_clap`` = its CLAP/CLIP groups); the same ``ExtractConfig`` is rebuilt from the attributes of those
   groups and run through
   ``extractors.extract.extract_shard``: in this process (the command line), or shard by shard by the workflow's
   ``predict_extract_shard`` jobs (``extract_features``), whose stores are assembled and handed in as
   ``features=``. A weight file that is missing or whose sha256 differs from the store's record is an error
   naming both; so is any other difference between the extractors that can be built here (or the store handed
   in) and the training store's record, except the ones that only depend on the device (memory layout, TF32,
   autocast, CLIP's fp16/fp32 precision, batch sizes), which are reported as warnings.
2. **Class vectors with the training run's text backend**: the backend and model file recorded in
   ``results/class_embeddings/<dataset>.json``, whose sha256 is checked; a ``clip_clap`` model's are ClipClap's
   (``<dataset>.clipclap.json``: CLIP and CLAP text encoders with the recorded prompt templates, each model
   file's sha256 checked). A name that is one of the dataset's
   classes (its class name or its readable name, compared case-insensitively) is embedded with the readable
   phrase the model was trained with; any other name is embedded as written.
3. **Ranking.** For every seed of the checkpoint: the method's own evaluation distances (TCAF and the
   temporal methods: ``model.train.compute_embeddings`` + ``model.metrics.class_distances``; the averaged
   methods: ``AveragedRecipe.distances``), plus that seed's stage-1 calibrated-stacking bias on the distances
   of SEEN classes (names that were training classes of the checkpoint, ``train_class_names``); new names are
   unseen. The calibrated distances are then **averaged over the seeds** (the ensemble of the trained models;
   with one seed this is that seed's ranking). ``calibrate=False`` leaves the bias out.
4. **Scores** = softmax over the negative averaged (calibrated) distances of all the given classes
   (temperature 1): they sum to 1 over the class list, and their order is the distances' order.
5. **Windows** (``windows=True``): the same scoring on each time window of a video: a run of
   ``round(window_s / 0.64)`` consecutive C3D clips (default 3 = 1.92 s, the shortest span on which the C3D and
   VGGish grids meet: 3 x 0.64 s = 2 x 0.96 s), moved by ``round(hop_s / 0.64)`` clips, with the VGGish windows
   aligned to it by the rule the training data path uses for cropped sequences (``model.batching``). Temporal
   methods take the window's two token sequences as they take a cropped video; averaged methods take their
   means, as they take a whole video's. ``clip_clap`` features have no such time axis (one CLIP frame and one
   10 s CLAP window per video): their models get no windows, and the outputs say so.

Bad input: an empty class list, an empty or duplicated name (after stripping, case-insensitively) or a name
that the text backend cannot embed is an error naming the class. A video that cannot be decoded does not stop
anything: it gets a row with its status and reason (``extractors.manifest`` / ``extractors.extract``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import datetime as dt
import html
import io
import itertools
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data_splits.common import atomic_write_text, resolve_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["PredictError", "WindowSettings", "WorkflowSettings", "check_class_names", "check_prediction_store",
           "default_class_embeddings", "demo_heldout_defaults", "extract_config_for", "extract_features",
           "feature_groups", "model_streams", "predict", "read_class_names", "video_manifest", "window_spans"]

# Extractor and decoding attributes whose value depends on where or how fast extraction runs, not on what it
# computes (up to float rounding): a difference is a warning. Every other difference from the training store is an
# error.
# CLIP's `precision` is one of them: `auto` resolves to fp16 on a GPU and fp32 on the CPU, as `clip.load` does.
DEVICE_DEPENDENT = frozenset({"memory_format", "autocast", "allow_tf32", "batch_size",
                              "clip_batch", "threads", "progress_every_s", "precision"})
# Weight files that may be given in place of the path a training store records (keyword -> its extractor).
WEIGHT_OPTIONS = {"audio_weights": "VGGish", "video_weights": "C3D", "pca_params": "VGGish PCA",
                  "clip_weights": "CLIP", "clap_weights": "CLAP"}
SEEN_COLOUR, UNSEEN_COLOUR = "#e8710a", "#1a73e8"  # bar colours of the HTML page
THUMB_WIDTH = 192
# Timeline colours, one per class of the list in turn; none close to the two bar colours above.
TIMELINE_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
                    "#393b79", "#637939", "#843c39", "#7b4173")
WINDOW_S, HOP_S = 1.92, 0.64  # default windows: 3 C3D clips (= 2 VGGish windows), moved by one clip


class PredictError(ValueError):
    """Input that prediction cannot use (class list, model folder, settings that differ from training)."""


# ----------------------------------------------------------------------------------------------------- classes


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line (UTF-8); blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    if not path.is_file():
        raise PredictError(f"class list {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def check_class_names(names: Sequence[str]) -> list[str]:
    """Stripped names; an empty list, an empty name or a duplicate (case-insensitive) is an error naming it."""
    if isinstance(names, str):
        raise PredictError("class names must be a list of names (or read them with read_class_names)")
    out = [" ".join(str(n).split()) for n in names]
    if not out:
        raise PredictError("the class list is empty: give at least one class name")
    first: dict[str, str] = {}
    for raw, name in zip(names, out, strict=True):
        if not name:
            raise PredictError(f"class name {raw!r} is empty after stripping whitespace")
        key = name.casefold()
        if key in first:
            same = "" if first[key] == name else f" (same as {first[key]!r} up to case)"
            raise PredictError(f"class name {name!r} is duplicated in the class list{same}; list each class once")
        first[key] = name
    return out


# ----------------------------------------------------------------------------------------------------- model


@dataclass
class TrainedModel:
    final_pt: Path
    method_dir: Path
    stage1_json: Path | None
    models: dict[int, torch.nn.Module]
    blob: dict[str, Any]
    exp: Any  # model.pipeline.ExperimentConfig
    biases: dict[int, float]

    @property
    def method(self) -> str:
        return self.exp.method

    @property
    def dataset(self) -> str | None:
        return self.blob.get("experiment", {}).get("dataset")

    @property
    def features(self) -> str:
        """The feature set the model was trained on (``vggish_c3d`` or ``clip_clap``)."""
        return self.exp.features

    @property
    def groups(self) -> tuple[str, str]:
        """The store groups of its audio and video inputs."""
        return feature_groups(self.features)


def feature_groups(features: str) -> tuple[str, str]:
    """The store groups a model of this feature set reads as its audio and video inputs."""
    from model.methods import FEATURE_SETS

    if features not in FEATURE_SETS:
        raise PredictError(f"feature set {features!r} is not one of {list(FEATURE_SETS)}")
    return FEATURE_SETS[features]


def model_streams(feature_sets: Sequence[str]) -> list[str]:
    """The store groups that models of these feature sets read (what prediction extracts; the extraction config
    puts them in store order)."""
    return list(dict.fromkeys(g for f in feature_sets for g in feature_groups(f)))


def load_trained_model(model: str | Path, device: torch.device) -> TrainedModel:
    """A method folder (``results/train/<ds>/<kind>/<method>``), its ``stage2`` folder, or ``final.pt``."""
    from model.pipeline import experiment_config, load_checkpoint

    p = Path(model)
    if p.is_dir():
        candidates = [p / "stage2" / "final.pt", p / "final.pt"]
        final = next((c for c in candidates if c.is_file()), None)
        if final is None:
            raise PredictError(f"model folder {p} has no stage2/final.pt; train it first (snakemake train_stage2) "
                               "or pass the checkpoint file")
    elif p.is_file():
        final = p
    else:
        raise PredictError(f"model {p} does not exist: give a trained method folder "
                           "(results/train/<dataset>/<split_kind>/<method>) or its stage2/final.pt")
    method_dir = final.parent.parent if final.parent.name == "stage2" else final.parent
    models, blob = load_checkpoint(final, device)
    exp = experiment_config(blob["experiment"])
    stage1 = method_dir / "stage1" / "stage1.json"
    stage1_json = stage1 if stage1.is_file() else None
    biases = {int(s): float(e["bias"]) for s, e in blob["models"].items()}
    if stage1_json is not None:  # the stage-1 record is the source of the bias; the checkpoint carries a copy
        recorded = {int(p["seed"]): float(p["bias"]) for p in json.loads(stage1_json.read_text())["per_seed"]}
        missing = sorted(set(models) - set(recorded))
        if missing:
            raise PredictError(f"{stage1_json} has no bias for seed(s) {missing} of {final}; rerun stage 1")
        biases = {s: recorded[s] for s in models}
    return TrainedModel(final, method_dir, stage1_json, models, blob, exp, biases)


def _results_root(tm: TrainedModel) -> Path | None:
    """``results/`` of a run whose method folder is ``results/train/<ds>/<kind>/<method>``."""
    parents = tm.method_dir.resolve().parents
    return parents[3] if len(parents) > 3 and parents[2].name == "train" else None


def find_training_store(tm: TrainedModel, features_store: str | Path | None = None) -> Path:
    if features_store is None:
        root = _results_root(tm)
        if root is None or not tm.dataset:
            raise PredictError(f"cannot tell where the training features of {tm.final_pt} are (not inside "
                               "results/train/<dataset>/<split_kind>/<method>); pass features_store= / --features-store")
        features_store = root / "features" / tm.dataset / "features.zarr"
    path = Path(features_store)
    if not path.exists():
        raise PredictError(f"training feature store {path} not found; pass the store the model was trained on "
                           "(features_store= / --features-store)")
    return path


def default_class_embeddings(folder: Path, dataset: str, features: str) -> Path:
    """The class vectors a run trained a model of ``features`` with: ``<dataset>.npz`` (the configured backend), or
    for CLIP/CLAP features ClipClap's ``<dataset>.clipclap.npz`` beside it, unless the configured backend is
    ``clipclap`` itself (then both kinds of method read ``<dataset>.npz``; workflow/rules/common.smk)."""
    configured = folder / f"{dataset}.npz"
    if features != "clip_clap":
        return configured
    own = folder / f"{dataset}.clipclap.npz"
    sidecar = configured.with_suffix(".json")
    if not own.is_file() and sidecar.is_file() and json.loads(sidecar.read_text()).get("backend") == "clipclap":
        return configured
    return own


def find_class_embeddings(tm: TrainedModel, class_embeddings: str | Path | None = None) -> Path:
    if class_embeddings is None:
        root = _results_root(tm)
        if root is None or not tm.dataset:
            raise PredictError(f"cannot tell where the class embeddings of {tm.final_pt} are; pass "
                               "class_embeddings= / --class-embeddings (results/class_embeddings/<dataset>.npz)")
        class_embeddings = default_class_embeddings(root / "class_embeddings", tm.dataset, tm.features)
    path = Path(class_embeddings)
    if path.suffix == ".json":
        path = path.with_suffix(".npz")
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise PredictError(f"class embeddings {path} (with its .json record) not found; pass the training run's "
                           "class_embeddings= / --class-embeddings")
    return path


# ------------------------------------------------------------------------------------------------ extraction


def _weights_spec(modality: str, record: dict[str, Any], override: str | Path | None, store: Path,
                  what: str = "weights") -> tuple[str, str | None]:
    """(spec for the extractor config, expected sha256) for a recorded weights/PCA file, checked here."""
    from extractors.weights import sha256_path

    source, expected = record.get("source"), record.get("sha256")
    if record.get("random"):
        return "random", None
    if source in (None, "identity"):
        return source, None
    path = Path(override) if override is not None else Path(source).expanduser()
    if not path.exists():
        if expected is None:  # a remote hub handle: nothing local to check
            return str(source), None
        raise PredictError(f"{modality} extractor {what} {path} not found: the training store {store} was extracted "
                           f"with {source} (sha256 {expected}); pass the file with --{modality}-{what.replace(' ', '-')}")
    if expected is not None:
        actual = sha256_path(path)
        if actual.lower() != str(expected).lower():
            raise PredictError(
                f"{modality} extractor {what}: {path} has sha256 {actual}, but the training store {store} was "
                f"extracted with {source} of sha256 {expected}; features made with other {what} would not match "
                "the model. Use the training run's file.")
    return str(path), expected


def extract_config_for(store_path: Path, attrs: dict[str, Any], device: str = "auto",
                       streams: Sequence[str] | None = None, **files: str | Path | None):
    """The ``ExtractConfig`` that reproduces the store's features of ``streams`` (default: every stream the store
    holds), with its weight files checked. ``files`` (keys of ``WEIGHT_OPTIONS``): a file to use in place of the
    path the store records; its sha256 must still be the recorded one."""
    from extractors.extract import ExtractConfig
    from extractors.store import store_streams

    unknown = sorted(set(files) - set(WEIGHT_OPTIONS))
    if unknown:
        raise TypeError(f"extract_config_for: unknown keyword(s) {unknown}; expected {list(WEIGHT_OPTIONS)}")
    streams = list(streams) if streams is not None else list(store_streams(attrs))
    for m in streams:
        if not isinstance(attrs.get(m), dict) or not isinstance(attrs[m].get("config"), dict):
            raise PredictError(f"training store {store_path} does not record its {m} extractor's settings "
                               f"(attribute {m}.config); was it imported from released features? Prediction needs "
                               "features extracted by this pipeline")
    if attrs.get("source", {}).get("kind") == "released":
        raise PredictError(f"training store {store_path} holds released features; their extractors cannot be run "
                           "here, so new videos cannot get matching features")
    sections: dict[str, Any] = {}
    for m in streams:
        section = dict(attrs[m]["config"])
        section["weights"], section["sha256"] = _weights_spec(m, attrs[m]["weights"], files.get(f"{m}_weights"),
                                                              store_path)
        if attrs[m]["weights"].get("random"):
            section["seed"] = attrs[m]["weights"]["seed"]
        pca = attrs[m].get("pca") if m == "audio" else None
        if pca and pca.get("source") not in (None, "identity"):
            section["pca_params"], section["pca_sha256"] = _weights_spec(m, pca, files.get("pca_params"), store_path,
                                                                         "pca params")
        sections[m] = section
    decode = dict(attrs.get("decode") or {})
    return ExtractConfig.from_dict({"dataset": attrs.get("dataset") or "demo", "device": device, "streams": streams,
                                    **sections, "decode": decode})


def _differences(recorded: Any, built: Any, where: str) -> list[tuple[str, Any, Any]]:
    if isinstance(recorded, dict) and isinstance(built, dict):
        out = []
        for k in sorted(set(recorded) | set(built)):
            out += _differences(recorded.get(k), built.get(k), f"{where}.{k}")
        return out
    if isinstance(recorded, list | tuple) and isinstance(built, list | tuple):
        recorded, built = list(recorded), list(built)
    return [] if recorded == built else [(where, recorded, built)]


def _sorted_differences(recorded: dict[str, Any], other: dict[str, Any], m: str, theirs: str
                        ) -> tuple[list[str], list[str]]:
    """(errors, warnings) between a modality's attributes in the training store and ``theirs``."""
    errors, warnings = [], []
    for key, want, got in _differences(recorded, other, m):
        leaf = key.rsplit(".", 1)[-1]
        if leaf in DEVICE_DEPENDENT:
            warnings.append(f"{key}: training store {want!r}, {theirs} {got!r} (depends on the device)")
        elif key.endswith(".weights.source") and (recorded.get("weights") or {}).get("sha256"):
            continue  # same bytes (sha256 compared on its own key) under another path
        elif key in (f"{m}.config.weights", f"{m}.config.sha256", f"{m}.config.pca_params",
                     f"{m}.config.pca_sha256", f"{m}.pca.source"):
            continue  # paths and pins of files whose sha256 is compared
        else:
            errors.append(f"{key}: training store {want!r}, {theirs} {got!r}")
    return errors, warnings


def compare_extractor_attrs(store_path: Path, attrs: dict[str, Any], built: dict[str, Any]) -> list[str]:
    """Warnings for device-dependent differences; an error for any other difference from the store's record.
    ``built``: stream -> extractor (its ``attrs``)."""
    errors, warnings = [], []
    for m, extractor in built.items():
        e, w = _sorted_differences(attrs[m], extractor.attrs, m, "here")
        errors += e
        warnings += w
    if errors:
        raise PredictError(f"the extractors built here differ from those that made the training store {store_path}:\n  "
                           + "\n  ".join(errors))
    for w in warnings:
        log.warning("extractor setting differs from the training store: %s", w)
    return warnings


def check_prediction_store(pred_path: Path, pred_attrs: dict[str, Any], train_path: Path,
                           train_attrs: dict[str, Any], streams: Sequence[str] = ("audio", "video")) -> list[str]:
    """A store of new videos must have been extracted exactly like the model's training store, for the ``streams``
    the model reads: any difference is an error naming both stores, each key and both values; device-dependent
    ones are warnings."""
    errors, warnings = [], []
    for m in streams:
        if not isinstance(pred_attrs.get(m), dict):
            errors.append(f"{m}: the prediction store records no {m} extractor (it holds "
                          f"{list(pred_attrs.get('streams') or ['audio', 'video'])})")
            continue
        if not isinstance(train_attrs.get(m), dict):
            errors.append(f"{m}: the training store records no {m} extractor")
            continue
        e, w = _sorted_differences(train_attrs[m], pred_attrs[m], m, "prediction store")
        errors += e
        warnings += w
    for key, want, got in _differences(train_attrs.get("decode"), pred_attrs.get("decode"), "decode"):
        (warnings if key.rsplit(".", 1)[-1] in DEVICE_DEPENDENT else errors).append(
            f"{key}: training store {want!r}, prediction store {got!r}")
    if train_attrs.get("dataset") != pred_attrs.get("dataset"):
        errors.append(f"dataset: training store {train_attrs.get('dataset')!r}, prediction store "
                      f"{pred_attrs.get('dataset')!r}")
    if errors:
        raise PredictError(
            f"the features of the new videos ({pred_path}) were not extracted like the model's training features "
            f"({train_path}):\n  " + "\n  ".join(errors)
            + "\nExtract the videos again from the model's training store (delete the prediction store and rerun)")
    for w in warnings:
        log.warning("extraction setting differs from the training store: %s", w)
    return warnings


def extraction_setup(store_path: Path, attrs: dict[str, Any], device: str = "auto",
                     streams: Sequence[str] | None = None, **files: str | Path | None):
    """(ExtractConfig, {stream: extractor}, warnings) that reproduce the training store's features of ``streams``
    (default: all the store holds); the weight files and the built extractors' attributes are checked against the
    store first."""
    from extractors.c3d import build_video_extractor
    from extractors.clap import build_clap_extractor
    from extractors.clip import build_image_extractor
    from extractors.vggish import build_audio_extractor

    cfg = extract_config_for(store_path, attrs, device, streams, **files)
    build = {"audio": build_audio_extractor, "video": build_video_extractor, "clip": build_image_extractor,
             "clap": build_clap_extractor}
    built = {m: build[m](getattr(cfg, m), cfg.device) for m in cfg.streams}
    warnings = compare_extractor_attrs(store_path, attrs, built)
    return cfg, built, warnings


def run_extraction(rows: Sequence[Any], out_store: str | Path, cfg, built: dict[str, Any]) -> dict[str, Any]:
    """``extractors.extract.extract_shard`` with the extractors ``extraction_setup`` built (not built twice)."""
    from extractors.extract import extract_shard

    return extract_shard(list(rows), out_store, cfg, audio_extractor=built.get("audio"),
                         video_extractor=built.get("video"), clip_extractor=built.get("clip"),
                         clap_extractor=built.get("clap"))


def video_manifest(videos_dir: str | Path, out_path: str | Path | None = None, workers: int = 1) -> list:
    """Manifest rows (``extractors.manifest``) of every video file under ``videos_dir``, the id of each being its
    path relative to the folder; written to ``out_path`` when given. A file that does not probe gets its
    status and reason, and is carried through extraction like the training data's."""
    from extractors.manifest import build_manifest

    videos_dir = Path(videos_dir)
    files = scan_videos(videos_dir)
    entries = [(f.relative_to(videos_dir).as_posix(), f, None, None, "") for f in files]
    return build_manifest(entries, out_path, workers=workers)


def resolve_training_store(model: str | Path, features_store: str | Path | None = None) -> Path:
    """The training store of a trained model (``features_store`` when given, else beside its run)."""
    import torch

    if features_store is not None:
        path = Path(features_store)
        if not path.exists():
            raise PredictError(f"training feature store {path} not found")
        return path
    return find_training_store(load_trained_model(model, torch.device("cpu")))


def extract_features(manifest_rows: Sequence[Any], out_store: str | Path, training_store: str | Path,
                     device: str = "auto", *, streams: Sequence[str] | None = None,
                     **files: str | Path | None) -> dict[str, Any]:
    """Features of ``manifest_rows`` into ``out_store`` with exactly the extractors of ``training_store``, through
    the training data's ``extractors.extract.extract_shard`` (one call per shard job of the workflow). ``streams``:
    the store groups to extract (the models' feature pairs, ``model_streams``; default: every group of the
    training store). ``files``: see ``extract_config_for``. Returns the summary plus the device-dependent
    ``extractor_warnings``."""
    from extractors.store import FeatureStore

    training_store = Path(training_store)
    attrs = FeatureStore(training_store).attrs
    missing = [m for m in streams or () if m not in (attrs.get("streams") or ("audio", "video"))]
    if missing:
        raise PredictError(f"training store {training_store} holds no {missing} features (it holds "
                           f"{list(attrs.get('streams') or ['audio', 'video'])}); the models to rank need them")
    cfg, built, warnings = extraction_setup(training_store, attrs, device, streams, **files)
    summary = run_extraction(manifest_rows, out_store, cfg, built)
    return {**summary, "extractor_warnings": warnings}


def scan_videos(videos_dir: str | Path) -> list[Path]:
    from data_splits.matching import DEFAULT_EXTENSIONS
    from extractors.manifest import scan_folder

    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise PredictError(f"video folder {videos_dir} does not exist")
    files = scan_folder(videos_dir, DEFAULT_EXTENSIONS)
    if not files:
        raise PredictError(f"no video files in {videos_dir} (extensions: {', '.join(DEFAULT_EXTENSIONS)})")
    return files


# --------------------------------------------------------------------------------------------------- embedding


@dataclass
class ClassEntry:
    name: str  # as the user wrote it (stripped)
    text: str  # what was embedded
    seen: bool  # a training class of the checkpoint: gets the calibration bias
    dataset_class: str | None  # the dataset's class it matched, if any


def match_classes(names: Sequence[str], tm: TrainedModel, emb) -> list[ClassEntry]:
    """Seen = the name (or its readable phrase) is a training class of the checkpoint, case-insensitively."""
    readable_of = dict(zip(emb.names, emb.readable_names, strict=True))
    lookup: dict[str, str] = {}
    for name, readable in readable_of.items():
        lookup.setdefault(readable.casefold(), name)
        lookup[name.casefold()] = name
    train = {str(n) for n in tm.blob.get("train_class_names") or []}
    unknown_train = sorted(train - set(readable_of))
    if unknown_train:
        log.warning("training classes %s are not in the class embeddings file; they are matched by name only",
                    unknown_train[:5])
        for n in unknown_train:
            lookup.setdefault(n.casefold(), n)
    out = []
    for name in names:
        cls = lookup.get(name.casefold())
        text = readable_of.get(cls, name) if cls is not None else name
        out.append(ClassEntry(name, text, cls in train, cls))
    return out


def prompt_backend_config(meta: dict[str, Any], emb_path: Path):
    """The ``EmbeddingConfig`` of a clip / clap / clipclap class-vector file from its sidecar: the model files
    (each checked against its recorded sha256 when the names are embedded) and the prompt template set whose
    templates are the recorded ones. Random weights use seed 0, the backend's default."""
    from data_splits.class_embeddings import TEMPLATE_SETS, TEMPLATES, EmbeddingConfig

    sidecar = emb_path.with_suffix(".json")
    files, shas = meta.get("model_path"), meta.get("model_sha256") or {}
    if not isinstance(files, dict) or not files:
        raise PredictError(f"{sidecar} records no model files of its {meta['backend']} backend (model_path)")
    recorded = meta.get("templates") or {}
    which = next((name for name in TEMPLATE_SETS
                  if recorded and all(list(TEMPLATES[part][name]) == list(t) for part, t in recorded.items())), None)
    if which is None:
        raise PredictError(f"{sidecar}: the recorded prompt templates are none of the sets {list(TEMPLATE_SETS)}; "
                           "rebuild the class embeddings with this version")
    keys = {"clip_weights": "clip_sha256", "clap_weights": "clap_sha256", "clap_vocab": "clap_vocab_sha256"}
    return EmbeddingConfig(backend=meta["backend"], templates=which, hash_model=False,
                           **{k: files[k] for k in keys if k in files},
                           **{keys[k]: shas.get(k) for k in keys if k in files})


def embed_classes(entries: Sequence[ClassEntry], emb_path: Path, emb) -> tuple[np.ndarray, dict[str, Any]]:
    """Vectors with the training run's backend; its model file(s) must have the recorded sha256."""
    from data_splits.class_embeddings import (
        PROMPT_BACKENDS,
        EmbeddingConfig,
        EmbeddingError,
        embed_class_names,
        file_sha256,
        model_path,
    )

    meta = emb.meta or {}
    if not meta.get("backend"):
        raise PredictError(f"{emb_path.with_suffix('.json')} does not record the text backend")
    recorded = meta.get("model_sha256")
    if meta["backend"] in PROMPT_BACKENDS:
        cfg = prompt_backend_config(meta, emb_path)
        path = meta.get("model_path")
    else:
        cfg = EmbeddingConfig(backend=meta["backend"], path=meta.get("model_path"), sha256=None, hash_model=False)
        try:
            path = model_path(cfg)
        except EmbeddingError as err:
            raise PredictError(f"the class embeddings of the training run ({emb_path}) were made with the "
                               f"{cfg.backend} model {meta.get('model_path')}, which is not available here: {err}"
                               ) from err
        if recorded:
            actual = file_sha256(path)
            if actual != recorded:
                raise PredictError(f"text model {path} has sha256 {actual}, but the training run's class embeddings "
                                   f"({emb_path.with_suffix('.json')}) were made with sha256 {recorded}")
    texts = [e.text for e in entries]
    try:
        # the prompt backends' template set is the one recorded; `dataset` only picks a default
        vectors = embed_class_names(texts, cfg, meta.get("dataset"))
    except EmbeddingError as err:
        raise PredictError(f"cannot embed the class names with the training run's {cfg.backend} backend ({path}): "
                           f"{err}") from err
    bad = [e.name for e, v in zip(entries, vectors, strict=True) if not np.all(np.isfinite(v))]
    if bad:
        raise PredictError(f"class name(s) {bad} could not be embedded (non-finite vector)")
    # How far the re-embedded dataset classes are from the vectors the model was trained with.
    row = {n: i for i, n in enumerate(emb.names)}
    dev = [float(np.abs(v - emb.vectors[row[e.dataset_class]]).max())
           for e, v in zip(entries, vectors, strict=True) if e.dataset_class in row]
    info = {"backend": cfg.backend, "model_path": path if isinstance(path, dict) else str(path),
            "model_sha256": recorded,
            "max_abs_difference_to_training_vectors": max(dev) if dev else None}
    if dev and max(dev) > 1e-3:
        log.warning("re-embedded dataset classes differ from the training vectors by up to %.2e", max(dev))
    return np.asarray(vectors, dtype=np.float32), info


# ----------------------------------------------------------------------------------------------------- scoring


def seed_distances(tm: TrainedModel, audio: Sequence[np.ndarray], video: Sequence[np.ndarray],
                   class_vectors: np.ndarray, seen: np.ndarray, device: torch.device) -> dict[int, torch.Tensor]:
    """[N, C] distances (uncalibrated) of every video to every class, per seed, as the method evaluates."""

    from model.methods import TEMPORAL_METHODS
    from model.metrics import class_distances
    from model.packing import split_from_sequences
    from model.train import compute_embeddings

    train = tm.exp.train
    split = split_from_sequences("predict", audio, video, np.zeros(len(audio), dtype=np.int64), class_vectors,
                                 ~np.asarray(seen, dtype=bool), device=device, video_dtype=train.video_dtype,
                                 data_device=train.data_device)
    out = {}
    for seed, net in sorted(tm.models.items()):
        if tm.method in TEMPORAL_METHODS:
            emb, cls = compute_embeddings(net, split, device, train.window(), train.eval_batch_size)
            out[seed] = class_distances(emb, cls).double().cpu()
        else:
            from model.methods.train import AveragedRecipe

            out[seed] = AveragedRecipe(device).distances(net, split, train.eval_batch_size).double().cpu()
    return out


def combine_seeds(per_seed: dict[int, torch.Tensor], biases: dict[int, float], seen: np.ndarray,
                  calibrate: bool) -> torch.Tensor:
    """Mean over seeds of ``D_seed + bias_seed * [class seen]`` (no bias with ``calibrate=False``)."""
    import torch

    mask = torch.as_tensor(np.asarray(seen, dtype=bool), dtype=torch.float64)
    parts = [d + (biases[s] * mask if calibrate else 0.0) for s, d in sorted(per_seed.items())]
    return torch.stack(parts).mean(0)


def scores_from_distances(distances: torch.Tensor) -> torch.Tensor:
    """Softmax over the negative distances (temperature 1), per video."""
    import torch

    return torch.softmax(-distances, dim=-1)


# ----------------------------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class WindowSettings:
    """Time windows along a video, on the C3D clip grid (0.64 s) with the VGGish windows (0.96 s) aligned to them.

    The default, 3 clips (1.92 s), is the shortest span on which both grids meet (3 x 0.64 s = 2 x 0.96 s), so a
    window holds 2 whole VGGish windows; the hop defaults to one clip, the finest step the features allow."""

    window_s: float = WINDOW_S
    hop_s: float = HOP_S

    def __post_init__(self) -> None:
        for key in ("window_s", "hop_s"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise PredictError(f"{key} must be a positive number of seconds, got {v!r}")

    @property
    def video_clips(self) -> int:
        from model.batching import VIDEO_RATE_S

        return max(1, round(self.window_s / VIDEO_RATE_S))

    @property
    def hop_clips(self) -> int:
        from model.batching import VIDEO_RATE_S

        return max(1, round(self.hop_s / VIDEO_RATE_S))

    @property
    def audio_windows(self) -> int:
        from model.batching import AUDIO_RATE_S, VIDEO_RATE_S

        return max(1, round(self.video_clips * VIDEO_RATE_S / AUDIO_RATE_S))

    def describe(self) -> dict[str, Any]:
        from model.batching import AUDIO_RATE_S, VIDEO_RATE_S

        return {"video_clips": self.video_clips, "audio_windows": self.audio_windows, "hop_clips": self.hop_clips,
                "window_s": self.video_clips * VIDEO_RATE_S, "audio_window_s": self.audio_windows * AUDIO_RATE_S,
                "hop_s": self.hop_clips * VIDEO_RATE_S,
                "rule": "video clips [s, s + video_clips) for s = 0, hop, 2 hop, ... (and one more window ending at "
                        "the last clip); VGGish windows [a, a + audio_windows) with a = min(n_audio - audio_windows, "
                        "round(s * 0.64 / 0.96)), as the training data path aligns audio to a cropped video; a "
                        "shorter video has one window of all its features. Temporal methods take the window's "
                        "token sequences, averaged methods their means"}


@dataclass(frozen=True)
class Span:
    """One window: C3D rows [v0, v1) and VGGish rows [a0, a1) of a video."""

    v0: int
    v1: int
    a0: int
    a1: int

    def times(self) -> dict[str, float]:
        from model.batching import AUDIO_RATE_S, VIDEO_RATE_S

        return {"start_s": round(self.v0 * VIDEO_RATE_S, 4), "end_s": round(self.v1 * VIDEO_RATE_S, 4),
                "audio_start_s": round(self.a0 * AUDIO_RATE_S, 4), "audio_end_s": round(self.a1 * AUDIO_RATE_S, 4)}


def window_spans(n_video: int, n_audio: int, settings: WindowSettings) -> list[Span]:
    """The windows of a video with ``n_video`` C3D rows and ``n_audio`` VGGish rows (both > 0)."""
    from model.batching import AUDIO_RATE_S, VIDEO_RATE_S

    if n_video <= 0 or n_audio <= 0:
        raise ValueError(f"a video with {n_video} video and {n_audio} audio rows has no windows")
    lv, la = min(settings.video_clips, n_video), min(settings.audio_windows, n_audio)
    last = n_video - lv
    starts = list(range(0, last + 1, settings.hop_clips))
    if starts[-1] != last:
        starts.append(last)  # the end of the video gets a window even when the hop steps over it
    spans = []
    for s in starts:
        a = max(0, min(n_audio - la, round(s * VIDEO_RATE_S / AUDIO_RATE_S)))
        spans.append(Span(s, s + lv, a, a + la))
    return spans


def score_windows(tm: TrainedModel, audio: Sequence[np.ndarray], video: Sequence[np.ndarray],
                  class_vectors: np.ndarray, seen: np.ndarray, device: torch.device, calibrate: bool,
                  settings: WindowSettings) -> tuple[list[list[Span]], list[torch.Tensor]]:
    """Per video its windows and their [n_windows, C] seed-averaged (calibrated) distances, scored exactly as whole
    videos are (``seed_distances`` + ``combine_seeds``) on the windows' feature rows."""
    spans = [window_spans(len(v), len(a), settings) for a, v in zip(audio, video, strict=True)]
    wa = [a[sp.a0:sp.a1] for a, sps in zip(audio, spans, strict=True) for sp in sps]
    wv = [v[sp.v0:sp.v1] for v, sps in zip(video, spans, strict=True) for sp in sps]
    if not wa:
        return spans, []
    distances = combine_seeds(seed_distances(tm, wa, wv, class_vectors, seen, device), tm.biases, seen, calibrate)
    out, i = [], 0
    for sps in spans:
        out.append(distances[i:i + len(sps)])
        i += len(sps)
    return spans, out


# ----------------------------------------------------------------------------------------------------- outputs


def thumbnail(path: str | Path, width: int = THUMB_WIDTH) -> str | None:
    """A JPEG data URI of a frame a third into the video (PyAV), or None when no frame decodes."""
    import av
    from PIL import Image

    try:
        with av.open(str(path)) as container:
            streams = [s for s in container.streams.video
                       if not (s.disposition & av.stream.Disposition.attached_pic)]
            if not streams:
                return None
            stream = streams[0]
            duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                        else (container.duration or 0) / av.time_base)
            target = duration / 3
            image = None
            for frame in container.decode(stream):
                image = frame.to_image()
                if frame.time is None or frame.time >= target:
                    break
            if image is None:
                return None
    except Exception as err:  # noqa: BLE001 - any decoding failure just means no thumbnail
        log.info("no thumbnail for %s: %s", path, err)
        return None
    height = max(1, round(image.height * width / image.width))
    image = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


CSV_COLUMNS = ("video_id", "path", "status", "reason", "rank", "class", "score", "distance", "seen")


def write_csv(path: Path, videos: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for v in videos:
        if not v["top_k"]:
            w.writerow([v["video_id"], v["path"], v["status"], v["reason"], "", "", "", "", ""])
        for r in v["top_k"]:
            w.writerow([v["video_id"], v["path"], v["status"], v["reason"], r["rank"], r["class"],
                        repr(r["score"]), repr(r["distance"]), "seen" if r["seen"] else "unseen"])
    atomic_write_text(path, buf.getvalue())


WINDOW_COLUMNS = ("video_id", "window", "start_s", "end_s", "audio_start_s", "audio_end_s", "class", "score",
                  "distance", "seen")


def write_windows_csv(path: Path, videos: list[dict[str, Any]]) -> None:
    """One row per window of every scored video: its time span and its top class."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(WINDOW_COLUMNS)
    for v in videos:
        for win in v.get("windows") or []:
            w.writerow([v["video_id"], win["window"], win["start_s"], win["end_s"], win["audio_start_s"],
                        win["audio_end_s"], win["class"], repr(win["score"]), repr(win["distance"]),
                        "seen" if win["seen"] else "unseen"])
    atomic_write_text(path, buf.getvalue())


_CSS = f"""
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;background:#f4f5f7;color:#202124}}
h1{{font-size:22px;margin:0 0 6px}}p.meta{{margin:2px 0;color:#5f6368;font-size:13px}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:-1px;border-radius:2px}}
.grid{{display:flex;flex-wrap:wrap;gap:16px;margin-top:16px}}
.card{{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.2);width:460px;padding:12px;display:flex;flex-wrap:wrap;gap:12px}}
.card img,.card .nothumb{{width:{THUMB_WIDTH}px;flex:none;border-radius:4px;align-self:flex-start}}
.card .nothumb{{height:108px;background:#dadce0;color:#5f6368;display:flex;align-items:center;justify-content:center;font-size:12px}}
.info{{flex:1;min-width:0}}.vid{{font-weight:600;font-size:13px;word-break:break-all;margin-bottom:6px}}
.status{{display:inline-block;font-size:12px;padding:1px 6px;border-radius:3px;background:#fce8e6;color:#a50e0e}}
.reason{{font-size:12px;color:#5f6368;margin-top:6px;word-break:break-word}}
.row{{font-size:12px;margin:3px 0}}.row .lab{{display:flex;justify-content:space-between;gap:6px}}
.row .lab .n{{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}}.row .lab span:last-child{{flex:none;white-space:nowrap}}
.track{{background:#eceff1;height:10px;border-radius:2px;overflow:hidden}}.bar{{height:10px}}
.seen{{background:{SEEN_COLOUR}}}.unseen{{background:{UNSEEN_COLOUR}}}
.tl{{flex-basis:100%;font-size:11px;color:#5f6368}}
.strip{{position:relative;height:16px;background:#eceff1;border-radius:2px;overflow:hidden;margin:2px 0}}
.cell{{position:absolute;top:0;height:16px;box-shadow:inset -1px 0 #fff}}
.axis{{display:flex;justify-content:space-between}}
.keys span.sw{{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px;vertical-align:-1px;border-radius:2px}}
"""


def class_colours(names: Sequence[str]) -> dict[str, str]:
    """Timeline colour of each class, by its place in the class list."""
    return {n: TIMELINE_COLOURS[i % len(TIMELINE_COLOURS)] for i, n in enumerate(names)}


def _timeline(windows: list[dict[str, Any]], colours: dict[str, str]) -> str:
    """Top class per window as a strip of cells; overlapping windows split their overlap at the midpoint between
    their centres, so each moment shows the window centred nearest to it."""
    e = html.escape
    total = max(w["end_s"] for w in windows)
    centres = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    bounds = [windows[0]["start_s"], *[(a + b) / 2 for a, b in itertools.pairwise(centres)], windows[-1]["end_s"]]
    cells = "".join(
        f'<div class="cell" style="left:{100 * lo / total:.3f}%;width:{100 * (hi - lo) / total:.3f}%;'
        f'background:{colours[w["class"]]}" title="{w["start_s"]:.2f}-{w["end_s"]:.2f} s: {e(w["class"])} '
        f'({100 * w["score"]:.1f}%)"></div>'
        for w, (lo, hi) in zip(windows, itertools.pairwise(bounds), strict=True))
    shown = list(dict.fromkeys(w["class"] for w in windows))
    keys = "".join(f'<span class="sw" style="background:{colours[c]}"></span>{e(c)}' for c in shown)
    return (f'<div class="tl">top class per {windows[0]["end_s"] - windows[0]["start_s"]:.2f} s window '
            f'({len(windows)} windows)<div class="strip">{cells}</div>'
            f'<div class="axis"><span>0 s</span><span>{total:.2f} s</span></div><div class="keys">{keys}</div></div>')


def render_html(result: dict[str, Any], thumbs: dict[str, str | None], bars: int = 5) -> str:
    e = html.escape
    colours = class_colours([c["name"] for c in result["classes"]])
    cards = []
    for v in result["videos"]:
        thumb = thumbs.get(v["video_id"])
        img = (f'<img src="{thumb}" alt="frame of {e(v["video_id"])}">' if thumb
               else '<div class="nothumb">no frame</div>')
        if v["top_k"]:
            body = "".join(
                f'<div class="row"><div class="lab"><span class="n" title="{e(r["class"])}">{r["rank"]}. '
                f'{e(r["class"])}</span><span>{100 * r["score"]:.1f}% · {"seen" if r["seen"] else "unseen"}</span></div>'
                f'<div class="track"><div class="bar {"seen" if r["seen"] else "unseen"}" '
                f'style="width:{max(1.0, 100 * r["score"]):.1f}%"></div></div></div>'
                for r in v["top_k"][:bars])
            if v["reason"]:
                body += f'<div class="reason">{e(v["reason"])}</div>'
        else:
            body = f'<span class="status">{e(v["status"])}</span><div class="reason">{e(v["reason"])}</div>'
        timeline = _timeline(v["windows"], colours) if v.get("windows") else ""
        cards.append(f'<div class="card">{img}<div class="info"><div class="vid">{e(v["video_id"])}</div>{body}'
                     f"</div>{timeline}</div>")
    warn = ('<p class="meta"><b>Features from RANDOM-WEIGHT extractors</b>: these predictions test the pipeline, '
            "not a method.</p>") if result.get("random_weight_features") else ""
    windows = ""
    if (result.get("windows") or {}).get("skipped"):
        windows = f'<p class="meta">{e(result["windows"]["skipped"])}.</p>'
    elif result.get("windows"):
        w = result["windows"]
        windows = (f'<p class="meta">Timelines: the top class of each window of {w["video_clips"]} C3D clips '
                   f'({w["window_s"]:.2f} s) and {w["audio_windows"]} VGGish windows, every {w["hop_s"]:.2f} s.</p>')
    n_ok = sum(v["status"] == "ok" and bool(v["top_k"]) for v in result["videos"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Predictions: {e(result['videos_dir'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>Zero-shot predictions: {e(Path(result['videos_dir']).name)} ({e(result['method'])})</h1>"
        f'<p class="meta">{len(result["videos"])} videos ({n_ok} scored), {len(result["classes"])} classes; model '
        f"{e(result['method'])} ({e(str(result['model']))}) on {e(result.get('features') or 'vggish_c3d')} "
        f"features, seeds {result['seeds']}; calibrated stacking "
        f"{'on' if result['calibrate'] else 'off'}. Score: {e(result['score'])}.</p>{warn}{windows}"
        f'<p class="meta legend">bars:<span class="seen"></span>seen (a training class)'
        f'<span class="unseen"></span>unseen (new name)</p>'
        f'<div class="grid">{"".join(cards)}</div></body></html>\n'
    )


# ----------------------------------------------------------------------------------------------------- predict


def _per_class(entries: Sequence[ClassEntry], values: torch.Tensor, row: int) -> dict[str, float]:
    return {e.name: float(values[row, c]) for c, e in enumerate(entries)}


def predict(videos_dir: str | Path, class_names: Sequence[str] | str | Path, model: str | Path,
            out_dir: str | Path, *, calibrate: bool = True, top_k: int = 5, device: str = "auto",
            features_store: str | Path | None = None, class_embeddings: str | Path | None = None,
            audio_weights: str | Path | None = None, video_weights: str | Path | None = None,
            pca_params: str | Path | None = None, clip_weights: str | Path | None = None,
            clap_weights: str | Path | None = None, thumbnails: bool = True, features: str | Path | None = None,
            windows: bool = False, window_s: float = WINDOW_S, hop_s: float = HOP_S) -> dict[str, Any]:
    """Rank ``class_names`` for every video file of ``videos_dir`` with a trained model; writes
    ``predictions.csv``, ``predictions.json``, ``predictions.html`` (and ``windows.csv`` with ``windows=True``) to
    ``out_dir`` and returns the JSON's content. ``class_names``: a list, or the path of a names file.

    The model reads the feature pair it was trained on (``vggish_c3d``: the VGGish/C3D groups; ``clip_clap``: CLAP
    and CLIP, ranked with ClipClap's class vectors). ``features``: a store of the folder's videos already extracted
    (the workflow's sharded extraction); it must have been extracted like the model's training store, for that
    pair. Without it the pair is extracted here, in one process, into ``out_dir/features.zarr``.

    Windows need features with a time axis on the C3D/VGGish grids; a ``clip_clap`` model gets none (ClipClap and
    MFT embed one CLIP frame and one 10 s CLAP window per video): ``windows.csv`` then holds its header only and
    ``predictions.json`` says why (``windows.skipped``)."""
    import torch

    from data_splits.io import read_class_embeddings
    from extractors.store import FeatureStore

    if not (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0):
        raise PredictError(f"top_k must be a positive integer, got {top_k!r}")
    window_settings = WindowSettings(window_s, hop_s) if windows else None
    names = check_class_names(read_class_names(class_names) if isinstance(class_names, str | Path) else class_names)
    videos_dir = Path(videos_dir)
    if features is None:
        scan_videos(videos_dir)  # fails early on an empty or missing folder
    torch_device = resolve_device(device, "device")
    tm = load_trained_model(model, torch_device)
    store_path = find_training_store(tm, features_store)
    train_store = FeatureStore(store_path)
    emb_path = find_class_embeddings(tm, class_embeddings)
    emb = read_class_embeddings(emb_path)
    if tm.dataset and emb.meta.get("dataset") not in (None, tm.dataset):
        raise PredictError(f"{emb_path} is for dataset {emb.meta.get('dataset')!r}, the model for {tm.dataset!r}")
    emb_backend = (emb.meta or {}).get("backend")
    if tm.features == "clip_clap" and emb_backend != "clipclap":
        raise PredictError(f"{tm.method} was trained on CLIP/CLAP features, which are ranked with ClipClap's class "
                           f"vectors (the clipclap backend), but {emb_path} was made with {emb_backend!r}; pass the "
                           "run's results/class_embeddings/<dataset>.clipclap.npz (class_embeddings= / "
                           "--class-embeddings)")
    entries = match_classes(names, tm, emb)
    groups = tm.groups  # the store groups of the model's audio and video inputs
    windows_skipped = None
    if window_settings is not None and tm.features != "vggish_c3d":
        windows_skipped = (f"no time windows: {tm.method} ranks {tm.features} features, one CLIP frame and one 10 s "
                           "CLAP window per video (ClipClap and MFT pool each video), so there is no time axis to "
                           "cut windows from")
        log.warning("%s", windows_skipped)
        window_settings = None

    # Everything that can fail on the inputs is checked before the long part (extraction).
    out_dir = Path(out_dir)
    summary: dict[str, Any] = {}
    if features is None:
        files = {"audio_weights": audio_weights, "video_weights": video_weights, "pca_params": pca_params,
                 "clip_weights": clip_weights, "clap_weights": clap_weights}
        cfg, built, warnings = extraction_setup(store_path, train_store.attrs, device, model_streams([tm.features]),
                                                **files)
        vectors, emb_info = embed_classes(entries, emb_path, emb)
        out_dir.mkdir(parents=True, exist_ok=True)
        features = out_dir / "features.zarr"
        summary = run_extraction(video_manifest(videos_dir), features, cfg, built)
        store = FeatureStore(features)
    else:
        features = Path(features)
        store = FeatureStore(features)
        warnings = check_prediction_store(features, store.attrs, store_path, train_store.attrs, groups)
        vectors, emb_info = embed_classes(entries, emb_path, emb)
        out_dir.mkdir(parents=True, exist_ok=True)
    seen = np.array([e.seen for e in entries], dtype=bool)
    table = {r["video_id"]: r for r in store.table}
    ids = sorted(store.video_ids)

    scored, audio, video = [], [], []
    for vid in ids:
        row = table[vid]
        if row["status"] == "ok" and all((row.get(f"n_{g}") or 0) > 0 for g in groups):
            scored.append(vid)
            audio.append(np.asarray(store.get(groups[0], vid)))
            video.append(np.asarray(store.get(groups[1], vid)))
    distances = torch.zeros(0, len(entries), dtype=torch.float64)
    if scored:
        distances = combine_seeds(seed_distances(tm, audio, video, vectors, seen, torch_device), tm.biases, seen,
                                  calibrate)
    scores = scores_from_distances(distances)
    k = min(top_k, len(entries))
    by_window: dict[str, list[dict[str, Any]]] = {}
    if window_settings is not None and scored:
        spans, win_d = score_windows(tm, audio, video, vectors, seen, torch_device, calibrate, window_settings)
        for vid, sps, d in zip(scored, spans, win_d, strict=True):
            sc = scores_from_distances(d)
            best = torch.argmin(d, dim=1).tolist()  # the first of equal distances, as the stable ranking
            by_window[vid] = [{"window": w, **sp.times(), "class": entries[c].name, "score": float(sc[w, c]),
                               "distance": float(d[w, c]), "seen": bool(seen[c])}
                              for w, (sp, c) in enumerate(zip(sps, best, strict=True))]

    by_video = {}
    for j, vid in enumerate(scored):
        order = torch.argsort(distances[j], stable=True)
        by_video[vid] = [{"rank": r + 1, "class": entries[c].name, "score": float(scores[j, c]),
                          "distance": float(distances[j, c]), "seen": bool(seen[c])}
                         for r, c in enumerate(order[:k].tolist())]
    videos, pos = [], {v: j for j, v in enumerate(scored)}
    for vid in ids:
        row = table[vid]
        status, reason = row["status"], row["reason"] or ""
        if status == "ok" and vid not in by_video:
            status, reason = "too_short", (reason + "; " if reason else "") + (
                f"no features ({row.get(f'n_{groups[0]}')} {groups[0]} and {row.get(f'n_{groups[1]}')} "
                f"{groups[1]} rows)")
        videos.append({"video_id": vid, "path": str(row.get("path") or ""), "status": status, "reason": reason,
                       "top_k": by_video.get(vid, []),
                       "scores": _per_class(entries, scores, pos[vid]) if vid in by_video else None,
                       "distances": _per_class(entries, distances, pos[vid]) if vid in by_video else None,
                       **({"windows": by_window.get(vid)} if window_settings is not None or windows_skipped
                          else {})})

    statuses = Counter(v["status"] for v in videos)
    extraction = {"videos": len(videos), "statuses": dict(sorted(statuses.items())),
                  "shards": int(store.attrs.get("shards", 1)),
                  **{k_: v for k_, v in summary.items() if k_ in ("clips", "seconds")}}
    result = {
        "videos_dir": str(videos_dir),
        "model": str(tm.final_pt),
        "method": tm.method,
        "dataset": tm.dataset,
        "features": tm.features,
        "feature_groups": {"audio": groups[0], "video": groups[1]},
        "seeds": sorted(tm.models),
        "seed_combination": "mean over seeds of the calibrated distances D_seed + bias_seed * [class seen]",
        "calibrate": bool(calibrate),
        "bias": {str(s): b for s, b in sorted(tm.biases.items())},
        "bias_source": str(tm.stage1_json) if tm.stage1_json else f"{tm.final_pt} (per-seed bias)",
        "score": "softmax over the negative (seed-averaged, calibrated) distances to all the given classes, "
                 "temperature 1",
        "top_k": k,
        "windows": window_settings.describe() if window_settings is not None else (
            {"skipped": windows_skipped} if windows_skipped else None),
        "classes": [dataclasses.asdict(e) for e in entries],
        "class_embeddings": {"file": str(emb_path), **emb_info},
        "training_store": str(store_path),
        "features_store": str(features),
        "random_weight_features": any(bool(train_store.attrs.get(g, {}).get("weights", {}).get("random"))
                                      for g in groups),
        "extractor_warnings": warnings,
        "extraction": extraction,
        "device": str(torch_device),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "videos": videos,
    }
    write_csv(out_dir / "predictions.csv", videos)
    if window_settings is not None or windows_skipped:
        write_windows_csv(out_dir / "windows.csv", videos)
    atomic_write_text(out_dir / "predictions.json", json.dumps(result, indent=1, allow_nan=False) + "\n")
    thumbs = {v["video_id"]: thumbnail(v["path"]) if thumbnails and v["path"] else None for v in videos}
    atomic_write_text(out_dir / "predictions.html", render_html(result, thumbs))
    log.info("predictions for %d videos (%d scored) in %s", len(videos), len(scored), out_dir)
    return result


# ------------------------------------------------------------------------------------------------ workflow


LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The demo rule's held-out videos (one of them broken) and class list (with names never trained on).
DEMO_HELDOUT = {"videos": "results/demo/heldout/videos", "classes": "results/demo/heldout/classes.txt"}


def demo_heldout_defaults(demo_outputs: set[str]) -> dict[str, str]:
    """The ``predict`` defaults for the demo: its held-out set, when the demo rule's outputs include it."""
    return {**DEMO_HELDOUT, "name": "heldout"} if set(DEMO_HELDOUT.values()) <= set(demo_outputs) else {}


@dataclass
class WorkflowSettings:
    """What the predict rules (workflow/rules/predict.smk) read from the config's ``predict`` section.

    ``defaults`` fill keys the config leaves unset (the demo's held-out videos and class list); a folder or file
    named by the config itself must exist when the DAG is built, a default is an output of another rule."""

    predict: dict[str, Any]
    dataset: str
    split_kind: str
    models: list[str]
    extract_shards: int = 1
    defaults: dict[str, Any] = field(default_factory=dict)
    # This run's methods: the feature set each trains on (features.methods) and the class vectors it reads.
    features: dict[str, str] = field(default_factory=dict)
    class_embeddings: dict[str, str] = field(default_factory=dict)

    def _get(self, key: str) -> Any:
        value = self.predict.get(key)
        return self.defaults.get(key) if value is None else value

    @property
    def videos(self) -> str | None:
        return self._get("videos")

    @property
    def classes(self) -> str | None:
        return self._get("classes")

    @property
    def enabled(self) -> bool:
        """Both the videos and the class list are known: the predictions are part of the default target."""
        return bool(self.videos and self.classes)

    @property
    def name(self) -> str:
        """results/predict/<name>/: predict.name, or the videos folder's name ("unset" without videos); the
        defaults' name only goes with the defaults' videos."""
        name = self.predict.get("name") or (self.defaults.get("name") if not self.predict.get("videos") else None)
        name = name or ((Path(self.videos).name or "videos") if self.videos else "unset")
        if not LABEL.fullmatch(name):
            raise PredictError(f"config key 'predict.name': {name!r} is not a usable folder name (letters, digits, "
                               "'_', '.', '-'); set predict.name")
        return name

    @property
    def out_dir(self) -> str:
        return f"results/predict/{self.name}"

    @property
    def n_shards(self) -> int:
        return int(self._get("shards") or self.extract_shards)

    @property
    def windows(self) -> dict[str, Any]:
        """Keyword arguments of ``predict`` for the windows."""
        on = bool(self._get("windows"))
        ws = WindowSettings(self._get("window_s") or WINDOW_S, self._get("hop_s") or HOP_S)
        return {"windows": on, "window_s": ws.window_s, "hop_s": ws.hop_s}

    @property
    def model_paths(self) -> dict[str, str]:
        """Output label -> model: a method of ``models`` -> this run's method folder (label: the method); anything
        else is a trained method folder or final.pt (label: the method folder's name)."""
        from model.methods import METHOD_MODULES

        given = self._get("model") or [self.models[0]]
        given = [given] if isinstance(given, str) else list(given)
        out: dict[str, str] = {}
        for model in given:
            if model in METHOD_MODULES:
                if model not in self.models:
                    raise PredictError(f"config key 'predict.model': {model!r} is not one of this run's models "
                                       f"{self.models}; add it to 'models' or give the path of a trained method folder")
                label, path = model, f"results/train/{self.dataset}/{self.split_kind}/{model}"
            else:
                p = Path(model)
                folder = p.parent.parent if p.suffix == ".pt" and p.parent.name == "stage2" else (
                    p.parent if p.suffix == ".pt" else p)
                label, path = folder.name, model
            if not LABEL.fullmatch(label or ""):
                raise PredictError(f"config key 'predict.model': cannot name an output folder after {model!r}")
            if label in out:
                raise PredictError(f"config key 'predict.model': two models would write to {self.out_dir}/{label}/ "
                                   f"({out[label]!r} and {model!r}); list each method once")
            out[label] = path
        return out

    def is_this_runs(self, path: str) -> bool:
        return path.startswith(f"results/train/{self.dataset}/{self.split_kind}/")

    def model_features(self, label: str) -> str | None:
        """The feature set of one of this run's models of ``predict.model``; None for another run's model (its
        checkpoint says)."""
        return self.features.get(label) if self.is_this_runs(self.model_paths[label]) else None

    @property
    def streams(self) -> list[str] | None:
        """The store groups the extraction shards extract: those of the models' feature pairs when they are all
        this run's, else None (every group of the training store)."""
        sets = [self.model_features(label) for label in self.model_paths]
        return None if None in sets else model_streams(sets)

    def class_embeddings_of(self, label: str) -> str | None:
        """The class vectors one of this run's models was trained with; None for another run's model (found beside
        it)."""
        if self.model_features(label) is None:
            return None
        return self.class_embeddings.get(label, f"results/class_embeddings/{self.dataset}.npz")

    @property
    def reference_model(self) -> str:
        """The model whose training store the extraction copies: the first of ``predict.model``. The ranking job of
        every other model checks that its own training store matches."""
        return next(iter(self.model_paths.values()))

    @property
    def training_store(self) -> str | None:
        """This run's training store when the reference model is this run's; else found from the model."""
        return (f"results/features/{self.dataset}/features.zarr" if self.is_this_runs(self.reference_model)
                else None)

    def _check_keys(self) -> None:
        missing = [f"predict.{key}" for key in ("videos", "classes") if not self._get(key)]
        if missing:
            raise PredictError(
                f"rule predict needs the config key(s) {', '.join(missing)}: a folder of videos and a text file "
                "with one class name per line, e.g. snakemake --cores 2 predict --config "
                "'predict={videos: my_videos, classes: names.txt}' (docs/predict.md)")
        if self.predict.get("videos") and not Path(self.predict["videos"]).is_dir():
            raise PredictError(f"config key 'predict.videos': folder {self.predict['videos']!r} does not exist")
        if self.predict.get("classes") and not Path(self.predict["classes"]).is_file():
            raise PredictError(f"config key 'predict.classes': file {self.predict['classes']!r} does not exist")

    def manifest_inputs(self) -> dict[str, str]:
        self._check_keys()
        return {"videos": self.videos}

    def shard_inputs(self) -> dict[str, str]:
        inputs = {"manifest": f"{self.out_dir}/manifest.tsv"}
        if self.training_store:  # this run's store: Snakemake builds it first; retraining does not re-extract
            inputs["training_features"] = f"results/features/{self.dataset}/features.tsv"
            return inputs
        model = self.reference_model  # another run's model, whose checkpoint tells where its store is
        inputs["final"] = model if model.endswith(".pt") else f"{model}/stage2/final.pt"
        return inputs

    def rank_inputs(self, label: str) -> dict[str, str]:
        """The ranking job's inputs for one model of ``predict.model``."""
        self._check_keys()
        model = self.model_paths[label]
        inputs = {"features": f"{self.out_dir}/features.tsv", "classes": self.classes}
        if model.endswith(".pt"):
            return inputs | {"final": model}
        inputs["final"] = f"{model}/stage2/final.pt"
        if self.is_this_runs(model):  # this run's model: Snakemake builds what it reads
            inputs |= {"stage1": f"{model}/stage1/stage1.json",
                       "training_features": f"results/features/{self.dataset}/features.tsv",
                       "class_embeddings": self.class_embeddings_of(label)
                       or f"results/class_embeddings/{self.dataset}.npz"}
        return inputs

    def outputs(self, label: str) -> dict[str, str]:
        out = {f"{key}": f"{self.out_dir}/{label}/predictions.{key}" for key in ("csv", "json", "html")}
        if self.windows["windows"]:
            out["windows"] = f"{self.out_dir}/{label}/windows.csv"
        return out

    def final_outputs(self) -> list[str]:
        """Every model's prediction files; none while the videos or the class list are unknown."""
        if not self.enabled:
            return []
        self._check_keys()
        return [path for label in self.model_paths for path in self.outputs(label).values()]

    def target_inputs(self) -> list[str]:
        """The inputs of ``snakemake predict``: an error naming the keys when they are not set."""
        self._check_keys()
        return self.final_outputs()


# --------------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", required=True, help="folder of video files (searched recursively)")
    p.add_argument("--classes", required=True, help="text file: one class name per line")
    p.add_argument("--model", required=True,
                   help="trained method folder results/train/<dataset>/<split_kind>/<method>, or its stage2/final.pt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-calibration", action="store_true", help="leave out the calibrated-stacking bias")
    p.add_argument("--top-k", type=int, default=5, help="classes listed per video (default 5)")
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:<i>")
    p.add_argument("--features-store", help="the training store (default: results/features/<dataset>/features.zarr "
                                            "of the model's run)")
    p.add_argument("--class-embeddings", help="the training run's class embeddings .npz (default: beside the run)")
    p.add_argument("--audio-weights", help="VGGish weight file, when not at the path the training store records")
    p.add_argument("--video-weights", help="C3D weight file, when not at the path the training store records")
    p.add_argument("--audio-pca-params", dest="pca_params", help="VGGish PCA file, when not where recorded")
    p.add_argument("--clip-weights", help="CLIP ViT-B-32.pt, when not at the path the training store records")
    p.add_argument("--clap-weights", help="WavCaps HTSAT_BERT_zero_shot.pt, when not at the path the training store "
                                          "records")
    p.add_argument("--windows", action="store_true", help="also score every time window of each video (windows.csv, "
                                                          "timelines on the HTML page)")
    p.add_argument("--window-s", type=float, default=WINDOW_S,
                   help=f"window length in seconds, rounded to whole 0.64 s C3D clips (default {WINDOW_S})")
    p.add_argument("--hop-s", type=float, default=HOP_S,
                   help=f"step between windows in seconds, rounded to whole clips (default {HOP_S})")
    p.add_argument("--features", help="a store of the folder's videos extracted already (like the training store); "
                                      "default: extract them here into --out/features.zarr")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        result = predict(args.videos, Path(args.classes), args.model, args.out, calibrate=not args.no_calibration,
                         top_k=args.top_k, device=args.device, features_store=args.features_store,
                         class_embeddings=args.class_embeddings, audio_weights=args.audio_weights,
                         video_weights=args.video_weights, pca_params=args.pca_params,
                         clip_weights=args.clip_weights, clap_weights=args.clap_weights, features=args.features,
                         windows=args.windows, window_s=args.window_s, hop_s=args.hop_s)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for v in result["videos"]:
        best = v["top_k"][0] if v["top_k"] else None
        print(f"{v['video_id']}\t{v['status']}\t" + (f"{best['class']} ({best['score']:.3f})" if best else v["reason"]))
    print(f"wrote {Path(args.out) / 'predictions.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
