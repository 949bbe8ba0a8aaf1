"""The methods of the benchmark tables, found by name.

``get_method(name)`` imports the method's module lazily, so that asking for one method never imports the
others. Each module defines one :class:`model.methods.base.AveragedMethod` subclass (or, for TCAF, the
temporal model in ``model/tcaf.py``), its dataclass config and its per-dataset presets.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module (TCAF lives in model/tcaf.py, trained by model/train.py).
METHOD_MODULES: dict[str, str] = {
    "tcaf": "model.tcaf",
    "avca": "model.methods.avca",
    "cjme": "model.methods.cjme",
    "avgzslnet": "model.methods.avgzslnet",
    "devise": "model.methods.devise",
    "ale": "model.methods.devise",
    "sje": "model.methods.devise",
    "apn": "model.methods.apn",
    "attention_fusion": "model.methods.attention_fusion",
    "perceiver": "model.methods.perceiver",
}


def get_method_module(name: str) -> ModuleType:
    try:
        module = METHOD_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; the methods are {', '.join(METHOD_MODULES)}") from None
    return importlib.import_module(module)
