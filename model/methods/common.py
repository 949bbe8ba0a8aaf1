"""What the methods' config dataclasses and their registry functions (``make_config``, ``build``,
``train_defaults``, ``config_from_dict``; see ``model/methods/__init__.py``) have in common.

Torch-free, like the registry: TCAF's config (``model/config.py``) builds on it, and the workflow reads the
configs while it parses, before any job imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Self, TypeVar

from data_splits.common import check_keys

# The averaged methods' quirk presets: "paper" switches every reference quirk off, "reference" on.
QUIRK_PRESETS = ("paper", "reference")
# Sizes read from the data that fill what the user's model section leaves out. audio_input_scale is not
# among them: the averaged methods take the audio on its 0..255 scale, as the official code.
DATA_SIZES = ("audio_dim", "video_dim", "word_dim")

# The training protocol of the AVCA-GZSL benchmark's main.py and cls run scripts, as TrainConfig keys, the same
# on every dataset: Adam (lr 1e-3, no weight decay) on what the method's build_optimizer returns;
# ReduceLROnPlateau("max", patience 3, factor 0.1) stepped with the val HM each epoch; 50 epochs of 500
# class-balanced batches of 256; seed 42. The averaged methods' TRAIN_DEFAULTS start from it.
BENCHMARK_TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "weight_decay": 0.0, "lr_scheduler": True, "scheduler_patience": 3, "scheduler_factor": 0.1,
    "epochs": 50, "batches_per_epoch": 500, "batch_size": 256, "seed": 42,
}

C = TypeVar("C")


class MethodConfig:
    """``from_dict`` / ``to_dict`` of a method's config dataclass.

    A plain class, not a dataclass: it adds no field, so the config schema derived from the fields
    (``model/methods/schema.py``) is the method's own.
    """

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Self:
        """Build from a YAML mapping (the method's config section); unknown keys are an error."""
        return cls(**check_keys(cls, d, "model"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FieldChecks:
    """The checks of a config's ``__post_init__``: a failed one raises ``ValueError("<owner>.<key>: <msg>")``.

    ``owner`` defaults to the config's class; a config that others extend names itself, so that its own
    checks keep its name in a subclass (TCAF's checks of a Perceiver config say ``TCAFConfig``).
    """

    def __init__(self, cfg: Any, owner: str | None = None) -> None:
        self.cfg = cfg
        self.owner = owner or type(cfg).__name__

    def __call__(self, ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ValueError(f"{self.owner}.{key}: {msg}")

    def positive_ints(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self.cfg, key)
            self(isinstance(value, int) and value > 0, key, f"must be a positive integer, got {value!r}")

    def dropouts(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self.cfg, key)
            self(0.0 <= value < 1.0, key, f"must be in [0, 1), got {value}")


def check_quirk_preset(preset: str) -> None:
    if preset not in QUIRK_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {QUIRK_PRESETS}")


def check_dataset(dataset: str | None, presets: Mapping[str, Any], what: str) -> None:
    """``what`` names the presets in the message ("an AVCA preset"); None is no dataset (the defaults)."""
    if dataset is not None and dataset not in presets:
        raise ValueError(f"unknown dataset {dataset!r} for {what}; use one of {sorted(presets)}")


def model_quirks(quirks: Iterable[str]) -> list[str]:
    """The config fields among quirks named ``"<config section>.<key>"``: the keys of section ``model``."""
    return [d.split(".", 1)[1] for d in quirks if d.startswith("model.")]


def layered_config(cls: type[C], model: Mapping[str, Any], *, dataset: str | None, preset: str,
                   dims: Mapping[str, Any], presets: Mapping[str, Mapping[str, Any]], quirks: Iterable[str],
                   base: Mapping[str, Any] | None = None) -> C:
    """``model`` values > the ``quirks`` (all on under preset "reference", off otherwise) > the dataset's preset
    (none for a dataset without one) > ``base`` > the defaults; ``dims`` (sizes read from the data) fill the
    sizes ``model`` leaves out."""
    sizes = {k: dims[k] for k in DATA_SIZES if k in dims}
    switches = dict.fromkeys(quirks, preset == "reference")
    return cls.from_dict({**(base or {}), **presets.get(dataset or "", {}), **switches, **sizes, **model})


class AveragedMethodAPI(Generic[C]):
    """The registry's functions, and ``dataset_config``, of a module that holds one averaged method.

    A module binds them to its names (``make_config = API.make_config``, ...). ``build`` is called with the
    config when the network is built, so the module may create this before it defines the network class.
    """

    def __init__(self, name: str, config: type[C], build: Callable[[C | None], Any], *,
                 presets: Mapping[str, Mapping[str, Any]], quirks: Iterable[str], train_defaults: Mapping[str, Any],
                 presets_named: str, check_name: Callable[[str], None] | None = None) -> None:
        self.name, self.config, self._build = name, config, build
        self.presets, self.quirks, self._train_defaults = presets, list(quirks), train_defaults
        self.presets_named = presets_named  # "an AVCA preset": the presets as an unknown dataset's error names them
        self.check_name = check_name or self._check_name

    def _check_name(self, name: str) -> None:
        if name != self.name:
            raise ValueError(f"model.methods.{self.name} holds the method '{self.name}', not {name!r}")

    def dataset_config(self, dataset: str | None = None, *, preset: str = "paper", **overrides: Any) -> C:
        """The official configuration for ``dataset`` ("ucf" | "vggsound" | "activitynet"; None = the defaults),
        with every quirk off ("paper") or on ("reference": the official numbers); ``overrides`` win over both."""
        check_dataset(dataset, self.presets, self.presets_named)
        return self.make_config(self.name, overrides, dataset=dataset, preset=preset, dims={})

    def make_config(self, name: str, model: Mapping[str, Any], *, dataset: str | None, preset: str,
                    dims: Mapping[str, Any]) -> C:
        """``model`` values > reference quirks (preset "reference") > dataset preset > defaults; ``dims`` (sizes
        read from the data) fill the sizes ``model`` leaves out. Datasets without a preset use the defaults."""
        self.check_name(name)
        check_quirk_preset(preset)
        model = check_keys(self.config, model, "model")
        return layered_config(self.config, model, dataset=dataset, preset=preset, dims=dims, presets=self.presets,
                              quirks=self.quirks)

    def build(self, name: str, cfg: C | None = None) -> Any:
        """The network for ``cfg`` (default: the UCF defaults with the quirks off)."""
        self.check_name(name)
        return self._build(cfg)

    def train_defaults(self, name: str, dataset: str | None) -> dict[str, Any]:
        """The official training protocol (the same on every dataset)."""
        self.check_name(name)
        return dict(self._train_defaults)

    def config_from_dict(self, name: str, d: Mapping[str, Any]) -> C:
        self.check_name(name)
        return self.config.from_dict(d)


def preset_config(cls: type[C], presets: Mapping[str, Mapping[str, Any]], dataset: str,
                  overrides: Mapping[str, Any]) -> C:
    """``dataset_config`` of TCAF and of the temporal baselines, which take its presets: a dataset is required."""
    if dataset not in presets:
        raise ValueError(f"unknown dataset {dataset!r} for a model preset; use one of {sorted(presets)}")
    return cls.from_dict({**presets[dataset], **overrides})


class TemporalMethodAPI(Generic[C]):
    """The registry's functions of a temporal baseline built from TCAF's parts: TCAF's data path and training
    settings, TCAF's reference quirks under preset "reference"."""

    def __init__(self, config: type[C], build: Callable[[C], Any], *,
                 presets: Mapping[str, Mapping[str, Any]]) -> None:
        self.config, self._build, self.presets = config, build, presets

    def make_config(self, name: str, model: Mapping[str, Any], *, dataset: str | None, preset: str,
                    dims: Mapping[str, Any]) -> C:
        from model.config import apply_preset  # model.config builds on this module

        known = {f.name for f in dataclasses.fields(self.config)}
        d = {**self.presets.get(dataset, {}), **{k: v for k, v in dims.items() if k in known}, **model}
        return self.config.from_dict(apply_preset({"model": d}, preset)["model"])

    def build(self, name: str, config: C) -> Any:
        return self._build(config)

    def train_defaults(self, name: str, dataset: str | None) -> dict[str, Any]:
        from model.train_config import TRAIN_PRESETS

        return dict(TRAIN_PRESETS.get(dataset, {}))  # the paper trains the baselines as TCAF

    def config_from_dict(self, name: str, d: Mapping[str, Any]) -> C:
        return self.config.from_dict(dict(d))
