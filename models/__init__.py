"""nn.Modules and the model registry. torch only: no argparse, no data, no I/O.

Every module of this package is imported here, and each registers its architectures with ``@register_model``
(models/registry.py): adding an architecture is adding a module (or a decorated factory to one)."""

from contract.discovery import import_modules
from models.registry import ModelEntry, create_model, get_entry, list_models, make_config, register_model

import_modules(__name__)

__all__ = ["ModelEntry", "create_model", "get_entry", "list_models", "make_config", "register_model"]
