"""nn.Modules and the model registry. torch only: no argparse, no data, no I/O.

Every module of this package is imported here, and each registers its architectures with ``@register_model``
(models/registry.py): adding an architecture is adding a module (or a decorated factory to one)."""

import importlib as _importlib
import pkgutil as _pkgutil

from models.registry import ModelEntry, create_model, get_entry, list_models, make_config, register_model

for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    _importlib.import_module(f"{__name__}.{_module}")

__all__ = ["ModelEntry", "create_model", "get_entry", "list_models", "make_config", "register_model"]
