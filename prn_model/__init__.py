"""PRN: the Prototypical Residual Network for few-shot industrial anomaly detection.

The model-zoo helpers are importable from here; they load on first use, so importing one
submodule (say ``prn_model.backbones``) does not pull in the training stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from anomgen import __version__  # one distribution, one version (setup.cfg reads it there)

_LAZY_EXPORTS = {
    "create_model": "prn_model.zoo",
    "get_entry": "prn_model.zoo",
    "list_models": "prn_model.zoo",
    "load_model": "prn_model.zoo",
    "train_config": "prn_model.zoo",
}

__all__ = ["__version__", *sorted(_LAZY_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'prn_model' has no attribute {name!r}")
