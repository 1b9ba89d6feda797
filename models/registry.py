"""Model registry: ``@register_model`` factories, ``create_model(name)``, ``list_models()``.

Everything outside ``models/`` names architectures by string and goes through this registry, so a new
architecture is one decorated factory and nothing else changes (timm ``_factory.py`` pattern).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # task family: "image-classification", ...
    config_cls: type
    build: Callable[[Any], nn.Module]
    defaults: dict[str, Any]  # this entry's config values over the dataclass defaults


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str, config: type, defaults: dict[str, Any] | None = None) -> Callable:
    """Register ``fn(config) -> nn.Module`` under ``name`` with its config dataclass; ``defaults`` are this
    entry's values over the dataclass defaults (a variant of an architecture is a set of defaults)."""

    def wrap(fn: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, family, config, fn, dict(defaults or {}))
        return fn

    return wrap


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None


def make_config(name: str, **overrides: Any) -> Any:
    """Config dataclass for ``name``: dataclass defaults < the entry's defaults < ``overrides``."""
    entry = get_entry(name)
    known = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"{name}: unknown config field(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {**entry.defaults, **overrides}
    return entry.config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def create_model(name: str, config: Any = None, **overrides: Any) -> nn.Module:
    """Build a registered model from a config (or from its defaults plus ``overrides``)."""
    entry = get_entry(name)
    if config is None:
        config = make_config(name, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return entry.build(config)
