# Config validation and the helper functions every rule module uses (no rules in this file).

import copy
import difflib
import os
import re
from pathlib import Path

import yaml

from jsonschema import Draft202012Validator, validators
from snakemake.exceptions import WorkflowError

from data_splits.common import SPLIT_NAMES
from data_splits.devices import LOCK_DIR_ENV as GPU_LOCK_DIR_ENV
from model.config import model_section_problems
from model.methods import METHOD_MODULES, TEMPORAL_METHODS

SCHEMA = Path(workflow.current_basedir) / ".." / "schemas" / "config.schema.yaml"

# Benchmark key -> folder name of its lists under official.local_dir (docs/splits.md).
OFFICIAL_FOLDERS = {"demo": "demo", "ucf": "UCF", "vggsound": "VGGSound", "activitynet": "ActivityNet"}


# Sections the packages complete themselves (per-dataset presets, the "reference" quirk preset, sizes read
# from the data): the schema checks them and documents their defaults, but filling those defaults in here
# would override the presets, so jobs get them exactly as written. Every other key gets its default.
PASS_THROUGH = {
    ("model",),
    ("train",),
    ("evaluate",),
    ("extract", "audio"),
    ("extract", "video"),
    ("extract", "clip"),
    ("extract", "clap"),
    ("extract", "decode"),
    ("methods",),
}

# Training keys that belong to the run rather than to a method: every method takes them from the top-level
# train section (seeds above all, so that the comparison is over the same seeds).
RUN_TRAIN_KEYS = ("seed", "seeds", "device", "data_device", "num_threads", "progress", "deterministic",
                  "checkpoint_every", "eval_batch_size")


def fill_defaults(instance, schema, path=()):
    for key, sub in schema.get("properties", {}).items():
        if path + (key,) in PASS_THROUGH:
            instance.setdefault(key, {})
            continue
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            fill_defaults(instance[key], sub, path + (key,))


# JSON Schema counts 3.0 as an integer; the packages' checks (isinstance(..., int)) do not, so neither does
# this validator.
StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def cross_key_problems(cfg):
    """Rules between keys that the schema cannot express, checked here so that they fail before any job (the
    packages check them again when they read their section). One message per rule, naming the keys and the
    fix. `cfg` has passed the schema."""
    problems = model_section_problems(cfg["model"], cfg["dataset"])
    video = cfg["extract"]["video"]
    if video.get("preset", "paper") == "paper" and video.get("invert_colours"):
        problems.append(
            "config keys 'extract.video.preset' ('paper'"
            + ("" if "preset" in video else ", the default")
            + ") and 'extract.video.invert_colours' (true): the paper preset never inverts colours; set "
            "extract.video.preset to 'reference' to reproduce the released features' inversion, or remove "
            "invert_colours"
        )
    audio = cfg["extract"]["audio"]
    if audio.get("backend", "torch") == "tfhub" and audio.get("weights", "random") == "random":
        problems.append(
            "config keys 'extract.audio.backend' ('tfhub') and 'extract.audio.weights' ('random'): the tfhub "
            "backend has no random weights; set weights to a hub handle or SavedModel folder, or backend to "
            "'torch'"
        )
    if (
        audio.get("postprocess", "pca_quantized") == "pca_quantized"
        and audio.get("weights", "random") != "random"
        and audio.get("pca_params") is None
    ):
        problems.append(
            "config keys 'extract.audio.weights' and 'extract.audio.pca_params': pca_quantized features from "
            "real weights need the AudioSet PCA parameters; set pca_params to a path for "
            "vggish_pca_params.npz (downloaded there if missing; docs/extractors.md, \"Weights\"), or "
            "postprocess to 'raw'"
        )
    start, stop, _ = cfg["evaluate"].get("bias_grid", (0.0, 3.0, 0.2))
    if stop < start:
        problems.append(
            f"config key 'evaluate.bias_grid' ([start, stop, step]): stop {stop} is below start {start}; "
            "swap them"
        )
    if cfg["dataset"] == "demo" and cfg["features"]["source"] == "released":
        problems.append(
            "config keys 'dataset' ('demo') and 'features.source' ('released'): the demo generates its own videos "
            "and there are no released features for it; set dataset to ucf, vggsound or activitynet"
        )
    problems += method_section_problems(cfg)
    problems += feature_choice_problems(cfg)
    demo = cfg["demo"]
    if cfg["dataset"] == "demo" and demo["n_val_unseen"] + demo["n_test_unseen"] >= demo["n_classes"]:
        problems.append(
            f"config keys 'demo.n_classes' ({demo['n_classes']}), 'demo.n_val_unseen' "
            f"({demo['n_val_unseen']}) and 'demo.n_test_unseen' ({demo['n_test_unseen']}): no class is left "
            "to train on in stage 1; raise "
            "n_classes or lower the unseen counts"
        )
    return problems


def feature_choice_problems(cfg):
    """Each method's feature pair must be in the store: its streams extracted (released features are VGGish/C3D)."""
    from model.methods import FEATURE_SETS, default_features

    problems = []
    chosen = cfg["features"].get("methods", {})
    for name in chosen:
        if name not in cfg["models"]:
            problems.append(f"config key 'features.methods.{name}': {name} is not in 'models' "
                            f"({', '.join(cfg['models'])}); add it there or remove the key")
    streams = cfg["extract"].get("streams") or ["audio", "video"]
    for name in cfg["models"]:
        features = chosen.get(name) or default_features(name)
        if cfg["features"]["source"] == "released":
            if features != "vggish_c3d":
                problems.append(f"config keys 'features.source' ('released') and 'features.methods.{name}' "
                                f"({features}): released features are VGGish/C3D; set features.methods.{name} to "
                                "vggish_c3d or extract the features (features.source: extract)")
            continue
        missing = [g for g in FEATURE_SETS[features] if g not in streams]
        if missing:
            problems.append(f"config keys 'extract.streams' ({streams}) and 'features.methods.{name}' ({features}): "
                            f"{name} trains on {features} features, which need the streams {missing}; add them to "
                            f"extract.streams or set features.methods.{name}")
    return problems


def method_section_problems(cfg):
    """Each configured method's model section against its config (unknown keys, bad values), and sections of
    methods that are not in ``models``. Imports a method's module (and torch) only when it is configured."""
    problems = []
    for name in cfg.get("methods", {}):
        if name not in cfg["models"]:
            problems.append(
                f"config key 'methods.{name}': {name} is not in 'models' ({', '.join(cfg['models'])}); add it "
                "there or remove the section"
            )
    for name in cfg["models"]:
        if name == "tcaf":
            continue
        from model.methods import method_config

        from model.train_config import TrainConfig

        section = cfg.get("methods", {}).get(name, {})
        try:
            method_config(name, section.get("model", {}), dataset=cfg["dataset"], preset=cfg["preset"], dims={})
        except (ValueError, TypeError) as err:
            problems.append(f"config key 'methods.{name}.model': {err}")
        except ImportError as err:
            problems.append(f"config key 'models': {name} cannot be loaded ({err})")
        try:
            TrainConfig.from_dict(section.get("train", {}))
        except (ValueError, TypeError) as err:
            problems.append(f"config key 'methods.{name}.train': {err}")
    return problems


# Unknown keys that deserve more than "did you mean": settings of earlier versions, and why they are gone.
KEY_HINTS = {
    "extract.decode.fps": "no longer a setting: the decoder always resamples video to 25 fps, the rate C3D's "
    "features assume; remove it",
    "extract.decode.frames_per_clip": "no longer a setting: C3D always takes 16-frame clips; remove it",
    "extract.decode.sample_rate": "no longer a setting: the decoder always resamples audio to 16 kHz mono, "
    "the rate VGGish needs; remove it",
    "model.name": "the methods to train are listed in the top-level key 'models'; remove it",
    "model.method": "the methods to train are listed in the top-level key 'models'; remove it",
}


def schema_problems(cfg, schema):
    """One line per schema violation, each naming its key (an unknown key by its own dotted name)."""
    problems = []
    for error in StrictValidator(schema).iter_errors(cfg):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        if error.validator == "additionalProperties":
            allowed = error.schema.get("properties", {})
            for key in sorted(set(error.instance) - set(allowed)):
                dotted = f"{where}.{key}" if where else key
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = KEY_HINTS.get(dotted) or (
                    f"did you mean '{close[0]}'?" if close else f"the keys here are {', '.join(allowed)}"
                )
                problems.append(f"  config key '{dotted}': unknown key; {hint}")
            continue
        message = error.message
        if error.validator == "type" and isinstance(error.instance, str):
            if re.fullmatch(r"[+-]?[0-9]+[eE][+-]?[0-9]+", error.instance):
                mantissa, exponent = error.instance.lower().split("e")
                message += f" (YAML reads {error.instance} as text; write {mantissa}.0e{exponent})"
            elif re.fullmatch(r"[+-]?[0-9.]+", error.instance):
                message += " (a quoted number is text; remove the quotes)"
        problems.append(f"  config key '{where or '<top level>'}': {message}")
    return sorted(problems)


def check_config(cfg):
    """Fail before any job runs, naming every offending key (jsonschema's own message names only one)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    problems = schema_problems(cfg, schema)
    if problems:
        listing = "\n".join(sorted(problems))
        raise WorkflowError(f"invalid config (keys and allowed values: workflow/schemas/config.schema.yaml):\n{listing}")
    fill_defaults(cfg, schema)
    problems = cross_key_problems(cfg)
    if problems:
        listing = "\n".join(f"  {problem}" for problem in problems)
        raise WorkflowError(f"invalid combination of config values:\n{listing}")
    if cfg["dataset"] == "demo":
        return
    # Checks the schema cannot express: folders that must exist on this machine before a run starts.
    released = cfg["features"]["source"] == "released"
    released_dir = cfg["features"]["released"]["dir"]
    if released and (not released_dir or not Path(released_dir).is_dir()):
        raise WorkflowError(
            f"config key 'features.released.dir': folder {released_dir!r} does not exist; set it to the unpacked "
            "release of the benchmark's features (docs/released.md), or features.source to 'extract'"
        )
    for key, folder in cfg["released_checkpoints"].items():
        if folder and not Path(folder).is_dir():
            raise WorkflowError(
                f"config key 'released_checkpoints.{key}': folder {folder!r} does not exist; set it to the "
                "unpacked official run folder (docs/released.md), or remove the key"
            )
    raw_dir = cfg["raw_videos"].get("dir")
    if not released and (not raw_dir or not Path(raw_dir).is_dir()):
        raise WorkflowError(
            f"config key 'raw_videos.dir': folder {raw_dir!r} does not exist; set it to the folder that holds "
            f"the {cfg['dataset']} videos (relative paths are relative to the working directory)"
        )
    local_dir = cfg["official"]["local_dir"]
    if local_dir:
        lists = Path(local_dir) / OFFICIAL_FOLDERS[cfg["dataset"]] / "class-split"
        if not lists.is_dir():
            raise WorkflowError(
                f"config key 'official.local_dir': {str(lists)!r} does not exist; point it at a copy of the "
                "benchmark lists (layout in docs/splits.md), or unset it to download the pinned lists"
            )
    elif not cfg["official"]["download"]:
        raise WorkflowError(
            "config keys 'official.local_dir' / 'official.download': no source for the benchmark lists; set "
            "local_dir to a local copy (docs/splits.md) or download: true"
        )
    annotations = cfg["raw_videos"].get("annotations")
    if not released and cfg["dataset"] == "activitynet" and (not annotations or not Path(annotations).is_file()):
        raise WorkflowError(
            f"config key 'raw_videos.annotations': {annotations!r} is not a file; ActivityNet needs the "
            "activity_net.v1-3.min.json annotations to cut videos into segments"
        )


check_config(config)

# Jobs inherit the environment (and cluster jobs parse this file again): the per-GPU slot locks with which
# concurrent jobs take different GPUs (data_splits/devices.py) then live in the configured folder.
if config.get("gpu_lock_dir"):
    os.environ[GPU_LOCK_DIR_ENV] = (
        config["gpu_lock_dir"] if config["gpu_lock_dir"].lower() in ("none", "off")
        else str(Path(config["gpu_lock_dir"]).expanduser().resolve())
    )

DATASET = config["dataset"]
SPLIT_KIND = config["split_kind"]
# extract: raw videos -> extraction rules; released: the import rule writes the same store (released.smk).
FEATURE_SOURCE = config["features"]["source"]
MODELS = config["models"]


wildcard_constraints:
    dataset="|".join(OFFICIAL_FOLDERS),
    split_kind="cls|main",
    model="|".join(METHOD_MODULES),


# ---------------------------------------------------------------------------------------------- paths


def is_demo():
    return DATASET == "demo"


def get_raw_dir():
    """The raw videos; the demo generates its own under results/demo (never a user folder: the demo rule
    declares it as a directory() output, which Snakemake deletes before regenerating)."""
    return "results/demo/videos" if is_demo() else config["raw_videos"]["dir"]


def get_official_provenance():
    """The file the official_lists rule writes last, as a pattern with the {dataset} wildcard. The lists
    (a copy of official.local_dir, or the download) are under results/official/<dataset>/<DS>/; scripts
    find that folder from this file's path."""
    return f"results/official/{{dataset}}/{OFFICIAL_FOLDERS[DATASET]}/provenance.json"


def get_dataset_inputs(wildcards):
    """Inputs standing for the raw data: the demo's generated files, nothing for user-provided datasets
    (raw videos are immutable; listing ~100k of them as inputs would make every DAG build stat them all)."""
    return {"demo": "results/demo/demo.json"} if is_demo() else {}


def get_model_inputs(wildcards):
    """What training and evaluation read: the features (via the store's sidecar table, see extract.smk),
    the splits and the class embeddings."""
    splits = f"results/splits/{wildcards.dataset}/{wildcards.split_kind}"
    return {
        "features": f"results/features/{wildcards.dataset}/features.tsv",
        "classes": f"{splits}/classes.tsv",
        "seen_unseen": f"{splits}/seen_unseen.json",
        "splits": [f"{splits}/{name}.csv" for name in SPLIT_NAMES],
        # evaluate_released has no model wildcard: the released checkpoints are TCAF's
        "class_embeddings": get_class_embeddings_path(
            wildcards.dataset, get_method_features(getattr(wildcards, "model", "tcaf"))
        ),
    }


def get_method_features(name):
    """The feature pair a method trains on: features.methods.<name>, else the method's default."""
    from model.methods import default_features

    return config["features"].get("methods", {}).get(name) or default_features(name)


def get_class_embeddings_path(dataset, features):
    """CLIP/CLAP features are trained with ClipClap's class vectors (the clipclap backend, with the class_embeddings
    section's clip_*/clap_* keys): a second file beside the configured backend's, unless that backend is clipclap."""
    if features == "clip_clap" and config["class_embeddings"]["backend"] != "clipclap":
        return f"results/class_embeddings/{dataset}.clipclap.npz"
    return f"results/class_embeddings/{dataset}.npz"


def get_class_embedding_files(wildcards):
    """The model files of the clip / clap / clipclap backends that exist, so that a new file reruns the job.

    A missing one is no input: the job downloads it (CLIP, when online) or fails naming where to get it.
    """
    section = config["class_embeddings"]
    keys = ("clip_weights", "clap_weights", "clap_vocab", "names_csv")
    paths = [section.get(k) for k in keys]
    return [p for p in paths if p and p != "random" and os.path.isfile(p)]


def get_classes_tsv(wildcards):
    # Class ids come from all_class.txt, the same for both split kinds: one embedding file per dataset.
    return f"results/splits/{wildcards.dataset}/{SPLIT_KIND}/classes.tsv"


def get_n_shards():
    return config["extract"]["shards"]


def get_stage_dir(stage):
    return f"results/{stage}/{DATASET}/{SPLIT_KIND}"


def released_checkpoints_set():
    return all(config["released_checkpoints"].get(k) for k in ("stage_a", "stage_b"))


def get_final_outputs():
    report_dir = get_stage_dir("report")
    evaluate_dir = get_stage_dir("evaluate")
    released = [f"{evaluate_dir}/released/metrics.json"] if released_checkpoints_set() else []
    per_model = [
        path
        for model in MODELS
        for path in (
            f"{evaluate_dir}/{model}/metrics.json",
            f"{evaluate_dir}/{model}/metrics.md",
            f"{report_dir}/{model}/training_curves.png",
            *([f"{report_dir}/{model}/tsne.png"] if model in TEMPORAL_METHODS else []),
        )
    ]
    # PREDICT (predict.smk): each predict.model's predictions once predict.videos and predict.classes are known
    # (for the demo: its held-out videos and class list); none otherwise.
    return released + per_model + [
        f"{report_dir}/results.tsv",
        f"{report_dir}/results.md",
        f"{report_dir}/results.png",
        f"results/splits/{DATASET}/{SPLIT_KIND}/coverage.md",
    ] + PREDICT.final_outputs()


def get_model_metrics(wildcards):
    """The comparison's inputs: every configured method's test metrics, in the order of 'models'."""
    return [f"results/evaluate/{wildcards.dataset}/{wildcards.split_kind}/{m}/metrics.json" for m in MODELS]


# ---------------------------------------------------------------------------------------------- params
# Each job gets exactly the config subtree it depends on as params, so that Snakemake's params rerun
# trigger reruns a stage (and, by mtime, what follows) when, and only when, its own settings change.


def get_manifest_params():
    return {
        "dataset": DATASET,
        "split_kind": SPLIT_KIND,
        "raw_dir": get_raw_dir(),
        "raw_videos": config["raw_videos"],
        "manifest": config["manifest"],
    }


def get_official_params():
    # The demo's lists are generated by the demo rule; a user's local_dir is ignored for it.
    return {**config["official"], "local_dir": "results/demo/official"} if is_demo() else config["official"]


def get_coverage_inputs(wildcards):
    """The manifest tells missing raw files from failed extractions; released features have no manifest."""
    inputs = {"features": f"results/features/{wildcards.dataset}/features.tsv"}
    if FEATURE_SOURCE == "extract":
        inputs["manifest"] = f"results/manifest/{wildcards.dataset}.tsv"
    return inputs


def get_import_split_files(wildcards):
    return [f"results/splits/{wildcards.dataset}/{SPLIT_KIND}/{split}.csv" for split in SPLIT_NAMES]


def get_released_params():
    return {"dataset": DATASET, **config["features"]["released"]}


def get_released_files(wildcards):
    """Every released file the import reads: a changed or added file reruns the import."""
    from extractors.released import ReleasedFeaturesError, released_files

    released = config["features"]["released"]
    try:
        return [str(p) for p in released_files(released["dir"], DATASET, released["layout"])]
    except ReleasedFeaturesError as err:
        raise WorkflowError(str(err)) from None


def get_released_checkpoint_files(wildcards):
    """The files of the released run folders that the evaluation reads first (the stage-A score checkpoint,
    stage B's arguments), so that replacing them reruns it; the job itself checks the folders in full."""
    from model.released import find_stage_a_checkpoint, official_args_file

    files = {}
    stage_a, stage_b = (config["released_checkpoints"].get(k) for k in ("stage_a", "stage_b"))
    if stage_a:
        try:
            files["stage_a_checkpoint"] = str(find_stage_a_checkpoint(stage_a))
        except (FileNotFoundError, ValueError):
            pass  # none or several: the job stops with the message that names them and the fix
    if stage_b:
        args = official_args_file(stage_b)
        if args is not None:
            files["stage_b_args"] = str(args)
    return files


DEFAULT_STREAMS = ["audio", "video"]
STREAM_SECTIONS = ("audio", "video", "clip", "clap")


def get_extract_streams():
    return list(config["extract"].get("streams") or DEFAULT_STREAMS)


def get_extract_params():
    # The shard count is not a parameter of a shard's content: it is in the file name already. Sections of
    # extractors that do not run are none either, and the default streams are left out, so that a store extracted
    # before streams existed keeps its parameters (no rerun).
    streams = get_extract_streams()
    params = {key: value for key, value in config["extract"].items()
              if key != "shards" and not (key in STREAM_SECTIONS and key not in streams)}
    if streams == DEFAULT_STREAMS:
        params.pop("streams", None)
    return params


def get_features_param(name):
    # Only a non-default choice is a parameter: runs from before the choice existed keep their parameters, while
    # switching a method's features either way reruns it.
    features = get_method_features(name)
    return {} if features == "vggish_c3d" else {"features": features}


def get_tcaf_experiment_params():
    params = {key: config[key] for key in ("dataset", "split_kind", "preset", "evaluate")}
    return {**params, "method": "tcaf", "model": config["model"], "train": config["train"],
            **get_features_param("tcaf")}


def get_experiment_params(wildcards):
    """What one method's training and evaluation depend on: its model and train sections, the evaluation
    section and the keys that select presets (model/pipeline.py experiment_config). A method's params hold
    only its own sections, so changing one method's settings reruns that method only."""
    if wildcards.model == "tcaf":
        return get_tcaf_experiment_params()
    params = {key: config[key] for key in ("dataset", "split_kind", "preset", "evaluate")}
    section = config.get("methods", {}).get(wildcards.model, {})
    run_train = {k: v for k, v in config["train"].items() if k in RUN_TRAIN_KEYS}
    return {**params, "method": wildcards.model, "model": section.get("model", {}),
            "train": {**run_train, **section.get("train", {})}, **get_features_param(wildcards.model)}


# ---------------------------------------------------------------------------------------------- weights
# Weight files named in the config, for weights.smk (random weights and TF-Hub handles are no files).


def is_hub_handle(spec):
    # tensorflow_hub resolves URLs itself (and caches them); only local paths are weight files of the workflow.
    return "://" in spec


def get_weight_files():
    """{name: {kind, path, sha256, config_key, sha_key, is_dir}} for every configured weight file."""
    audio, video = config["extract"]["audio"], config["extract"]["video"]
    files = {}
    if FEATURE_SOURCE == "released":  # nothing is extracted
        return files
    if "audio" not in get_extract_streams():
        audio = {"weights": "random", "postprocess": "none"}
    if "video" not in get_extract_streams():
        video = {"weights": "random"}
    spec = audio.get("weights", "random")
    if spec != "random" and not is_hub_handle(spec):
        tfhub = audio.get("backend", "torch") == "tfhub"
        files["vggish"] = {
            "kind": "vggish_savedmodel" if tfhub else "vggish_torch",
            "path": spec,
            "sha256": audio.get("sha256"),
            "config_key": "extract.audio.weights",
            "sha_key": "extract.audio.sha256",
            "is_dir": tfhub,
        }
    pca = audio.get("pca_params")
    if audio.get("postprocess", "pca_quantized") == "pca_quantized" and pca not in (None, "identity"):
        files["vggish_pca"] = {
            "kind": "vggish_pca",
            "path": pca,
            "sha256": audio.get("pca_sha256"),
            "config_key": "extract.audio.pca_params",
            "sha_key": "extract.audio.pca_sha256",
            "is_dir": False,
        }
    spec = video.get("weights", "random")
    if spec != "random":
        files["c3d"] = {
            "kind": "c3d",
            "path": spec,
            "sha256": video.get("sha256"),
            "config_key": "extract.video.weights",
            "sha_key": "extract.video.sha256",
            "is_dir": False,
        }
    # CLIP / CLAP (docs/clip_clap.md "Weights"): only when their stream runs.
    for stream, name in (("clip", "clip_vit_b32"), ("clap", "wavcaps_htsat_bert")):
        section = config["extract"].get(stream) or {}
        spec = section.get("weights", "random")
        if stream in get_extract_streams() and spec != "random":
            files[name] = {
                "kind": name,
                "path": spec,
                "sha256": section.get("sha256"),
                "config_key": f"extract.{stream}.weights",
                "sha_key": f"extract.{stream}.sha256",
                "is_dir": False,
            }
    return files


WEIGHT_FILES = get_weight_files()


def get_weight_records(wildcards):
    """Inputs of the extraction jobs: the verified record of each weight file (none with random weights)."""
    return [f"results/weights/{wildcards.dataset}/{name}.json" for name in WEIGHT_FILES]


def get_weight_file(wildcards):
    if wildcards.name not in WEIGHT_FILES:
        raise WorkflowError(
            f"weights: {wildcards.name!r} is not a weight file in this config (configured: {sorted(WEIGHT_FILES)}; "
            "random weights need no file)"
        )
    return WEIGHT_FILES[wildcards.name]["path"]


def get_fetch_params(name):
    spec = WEIGHT_FILES[name]
    opts = config["weights"]
    return {
        **spec,
        "name": name,
        "url": {"c3d": opts["c3d_url"], "vggish_pca": opts["pca_url"]}.get(name),
        "savedmodel": opts["vggish_savedmodel"]
        or os.path.join(os.path.dirname(spec["path"]) or ".", "vggish_savedmodel"),
        "savedmodel_sha256": opts["vggish_savedmodel_sha256"],
    }
