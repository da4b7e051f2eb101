"""Name -> strategy / cache-policy class, resolved lazily from "module:Class" strings.

The registry imports no plugin at import time (so the package has no import cycle and
``import paradecode`` stays cheap); a name's module is imported the first time it is asked
for. Third-party code adds its own with :func:`register` / :func:`register_cache`.
"""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar, Union

from .config import build_config

__all__ = ["register", "register_cache", "get_strategy_class", "get_cache_class", "build_config",
           "strategies", "cache_policies"]

_STRATEGIES: dict[str, Union[str, type]] = {
    "lowconf": "paradecode.samplers.lowconf:LowConfidence",
    "threshold": "paradecode.samplers.threshold:ConfidenceThreshold",
    "prophet": "paradecode.samplers.prophet:Prophet",
    "credit": "paradecode.samplers.credit:CreditDecoding",
    "localleap": "paradecode.samplers.localleap:LocalLeap",
    "learn2pd": "paradecode.samplers.learn2pd:Learn2PD",
    "eb": "paradecode.samplers.eb:EntropyBounded",
    "dparallel": "paradecode.samplers.dparallel:EntropyThreshold",
    "editing": "paradecode.samplers.editing:Editing",
    "wino": "paradecode.samplers.wino:WINO",
    "speculative": "paradecode.speculative.strategy:SpeculativeDecoding",
    "var": "paradecode.vision.generate:VARStrategy",
    "code": "paradecode.vision.code:CoDeStrategy",
}
_CACHES: dict[str, Union[str, type]] = {
    "prefix": "paradecode.caches.blockcache:PrefixCache",
    "dual": "paradecode.caches.blockcache:DualCache",
    "dkv-decode": "paradecode.caches.dkv:DKVDecode",
    "dkv-greedy": "paradecode.caches.dkv:DKVGreedy",
    "scalekv": "paradecode.caches.scalekv:ScaleKV",
    "elastic": "paradecode.caches.elastic:ElasticCache",
    "dllm-cache": "paradecode.caches.dllm_cache:DLLMCache",
}

T = TypeVar("T", bound=type)


def _adder(table: dict, kind: str) -> Callable[[str], Callable[[T], T]]:
    def register_as(name: str) -> Callable[[T], T]:
        def deco(cls: T) -> T:
            if name in table and table[name] is not cls:
                raise ValueError(f"{kind} {name!r} is registered twice")
            cls.name = name
            table[name] = cls
            return cls

        return deco

    return register_as


register = _adder(_STRATEGIES, "strategy")
register.__doc__ = "Class decorator: make a strategy available as ``paradecode.sample(..., strategy=name)``."
register_cache = _adder(_CACHES, "cache policy")
register_cache.__doc__ = "Class decorator: make a cache policy available as ``paradecode.sample(..., cache=name)``."


def _resolve(table: dict, name: str, kind: str) -> type:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind} names: {sorted(table)}")
    entry = table[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        table[name] = entry
    return entry


def get_strategy_class(name: str) -> type:
    return _resolve(_STRATEGIES, name, "strategy")


def get_cache_class(name: str) -> type:
    return _resolve(_CACHES, name, "cache policy")


def strategies() -> dict[str, str]:
    """Registered strategy names with a one-line description each."""
    return {n: get_strategy_class(n).description for n in sorted(_STRATEGIES)}


def cache_policies() -> dict[str, str]:
    """Registered cache-policy names with a one-line description each."""
    return {n: get_cache_class(n).description for n in sorted(_CACHES)}
