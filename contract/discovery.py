"""How every layer finds its families: each module of a package is imported, and registers itself on import in
its layer's registry (models/registry.py, training/registry.py, export/spec.py, service/registry.py)."""

from __future__ import annotations

import importlib
import pkgutil


def import_modules(package: str) -> list[str]:
    """Import every public module of ``package`` (its names not starting with "_"), in name order."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
