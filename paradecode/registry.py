"""Name -> strategy / cache-policy class, and validation of user options against configs."""

from __future__ import annotations

import dataclasses
from typing import Callable, TypeVar

from .config import build_config  # noqa: F401  (re-exported: it lived here)

__all__ = ["register", "register_cache", "get_strategy_class", "build_config", "strategies", "cache_policies"]

_STRATEGIES: dict[str, type] = {}
_CACHES: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a strategy available as ``paradecode.sample(..., strategy=name)``."""

    def deco(cls: T) -> T:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise TypeError(f"strategy {name!r} needs a dataclass `Config`")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return deco


def register_cache(name: str) -> Callable[[T], T]:
    """Class decorator: make a cache policy available as ``paradecode.sample(..., cache=name)``."""

    def deco(cls: T) -> T:
        if name in _CACHES:
            raise ValueError(f"cache policy {name!r} is registered twice")
        cls.name = name
        _CACHES[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    # Importing the packages runs their @register decorators.
    from . import caches, samplers, speculative, vision  # noqa: F401


def strategies() -> dict[str, str]:
    """Registered strategy names with a one-line description each."""
    _load_builtins()
    return {n: c.description for n, c in sorted(_STRATEGIES.items())}


def cache_policies() -> dict[str, str]:
    """Registered cache-policy names with a one-line description each."""
    _load_builtins()
    return {n: c.description for n, c in sorted(_CACHES.items())}


def get_strategy_class(name: str) -> type:
    _load_builtins()
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {sorted(_STRATEGIES)}")
    return _STRATEGIES[name]


def get_cache_class(name: str) -> type:
    _load_builtins()
    if name not in _CACHES:
        valid = sorted(_CACHES) or "none registered yet"
        raise ValueError(f"unknown cache policy {name!r}; valid cache policies: {valid}")
    return _CACHES[name]
