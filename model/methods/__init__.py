"""The methods of the benchmark tables, found by name.

``get_method_module(name)`` imports the method's module lazily, so that asking for one method never imports the
others. Each module defines one :class:`model.methods.base.AveragedMethod` subclass (or, for TCAF, the
temporal model in ``model/tcaf.py``), its dataclass config and its per-dataset presets.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry itself is torch-free: the workflow reads it when parsing
    from torch import nn

# The registry: name (as the config's `models` spells it) -> (module, how tables write it). TCAF lives in
# model/tcaf.py, trained by model/train.py. A new method is one module and one line here; the config schema's
# sections follow with `python -m model.methods.schema --write`.
METHODS: dict[str, tuple[str, str]] = {
    "tcaf": ("model.tcaf", "TCAF"),
    "avca": ("model.methods.avca", "AVCA"),
    "cjme": ("model.methods.cjme", "CJME"),
    "avgzslnet": ("model.methods.avgzslnet", "AVGZSLNet"),
    "devise": ("model.methods.devise", "DeViSE"),
    "ale": ("model.methods.devise", "ALE"),
    "sje": ("model.methods.devise", "SJE"),
    "apn": ("model.methods.apn", "APN"),
    "attention_fusion": ("model.methods.attention_fusion", "Attention Fusion"),
    "perceiver": ("model.methods.perceiver", "Perceiver"),
    "fvaegan": ("model.methods.fvaegan", "f-VAEGAN-D2"),
    "clipclap": ("model.methods.clipclap", "ClipClap-GZSL"),
    "mft": ("model.methods.mft", "MFT"),
}
METHOD_MODULES: dict[str, str] = {name: module for name, (module, _) in METHODS.items()}
METHOD_TITLES: dict[str, str] = {name: title for name, (_, title) in METHODS.items()}

# The feature pairs a method can train on: name -> (store group read as the audio input, as the video input),
# and how tables write it. ClipClap-GZSL and MFT are defined on CLIP/CLAP features, the others on VGGish/C3D
# (config key features.methods overrides it per method; docs/clip_clap.md).
FEATURE_SETS: dict[str, tuple[str, str]] = {"vggish_c3d": ("audio", "video"), "clip_clap": ("clap", "clip")}
FEATURE_TITLES: dict[str, str] = {"vggish_c3d": "VGGish + C3D", "clip_clap": "CLAP + CLIP"}
DEFAULT_FEATURES: dict[str, str] = {"clipclap": "clip_clap", "mft": "clip_clap"}


def default_features(name: str) -> str:
    return DEFAULT_FEATURES.get(name, "vggish_c3d")



def get_method_module(name: str) -> ModuleType:
    try:
        module = METHOD_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; the methods are {', '.join(METHOD_MODULES)}") from None
    return importlib.import_module(module)

# Methods trained on temporal sequences with TCAF's data path (model/train.py); the others on averaged
# features (model/methods/train.py).
TEMPORAL_METHODS = ("tcaf", "attention_fusion", "perceiver")


def method_config(name: str, model: Mapping[str, Any], *, dataset: str | None, preset: str,
                  dims: Mapping[str, Any]) -> Any:
    """A method's config dataclass: the user's ``model`` values over the ``reference`` quirks (when
    ``preset`` is "reference") over the dataset's preset over the defaults; ``dims`` (input sizes read from
    the data: audio_dim, video_dim, word_dim, audio_input_scale; a method takes those it uses) fill what the user
    left out. Each module implements ``make_config(name, model, dataset=,
    preset=, dims=)``."""
    return get_method_module(name).make_config(name, dict(model), dataset=dataset, preset=preset, dims=dict(dims))


def build_method(name: str, config: Any) -> nn.Module:
    """The method's network from its resolved config (each module implements ``build(name, config)``)."""
    return get_method_module(name).build(name, config)


def method_train_defaults(name: str, dataset: str | None) -> dict[str, Any]:
    """The training settings of the method's official code for ``dataset`` (module ``train_defaults``)."""
    return dict(get_method_module(name).train_defaults(name, dataset))


def config_from_dict(name: str, d: Mapping[str, Any]) -> Any:
    """Rebuild a resolved config from its checkpoint dict (module ``config_from_dict``)."""
    return get_method_module(name).config_from_dict(name, dict(d))
