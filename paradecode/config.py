"""Building a config dataclass from user options, with every option checked at the door."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["build_config"]


def build_config(config_cls: type, owner: str, options: dict[str, Any]) -> Any:
    """Instantiate ``config_cls`` from ``options``; unknown names raise ``ValueError`` listing
    the valid ones. Value checks live in each config's ``__post_init__``; a ``validate()``
    method, when the config has one, refuses combinations that would have no effect."""
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{owner} got unknown option(s) {unknown}; valid options: {sorted(fields)}")
    config = config_cls(**options)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config
