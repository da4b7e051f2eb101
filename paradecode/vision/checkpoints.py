"""Saving and loading the vision models: HF-style directories and the official ``.pth`` files."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import check_value, type_hints
from ..models.checkpoint import (
    as_path,
    build_on_meta,
    check_directory,
    check_state_dict,
    load_safetensors,
    load_state_dict_from_dir,
    read_config_json,
    save_state_dict_to_dir,
)

__all__ = ["ConfigDict", "read_state_dict", "save_module", "load_module", "check_keys"]


class ConfigDict:
    """Mixin for the config dataclasses: ``to_dict`` / ``from_dict`` (unknown fields and wrong
    types raise)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: Optional[str] = None) -> Any:
        """``where`` (e.g. the config.json path) goes first in the messages."""
        where = where or cls.__name__
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
        hints = type_hints(cls)
        checked = {k: check_value(k, v, hints.get(k, Any), where, kind="field") for k, v in d.items()}
        try:
            return cls(**checked)
        except ZeroDivisionError as e:  # a size of 0 met in __post_init__
            raise ValueError(f"{where}: {cls.__name__} fields divide by zero ({e}); sizes must be >= 1.") from None
        except ValueError as e:  # __post_init__'s own checks: say which file they are about
            raise ValueError(f"{where}: {e}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from an official ``.pth`` (``torch.save``), a ``.safetensors`` file or a directory."""
    p = as_path(path, "path")
    if p.is_dir():
        return load_state_dict_from_dir(p)
    if not p.exists():
        raise ValueError(f"checkpoint {p} does not exist; check the path (or download the file there).")
    if p.suffix == ".safetensors":
        return load_safetensors(p)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises RuntimeError, UnpicklingError, EOFError ... for a bad file
        raise ValueError(
            f"{p} is not a readable torch checkpoint ({type(e).__name__}: {str(e)[:200]}): it is truncated or "
            f"not a .pth state dict; download it again."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{p} does not hold a state dict (got {type(obj).__name__}).")
    odd = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise ValueError(f"{p} holds entries that are not named tensors: {odd[:6]}; is it a model state dict?")
    return obj


def check_keys(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise ``ValueError`` naming missing, unexpected or wrongly-shaped entries."""
    check_state_dict(model.state_dict(), state, where, f"{type(model).__name__}({getattr(model, 'config', '')})")


def save_module(module: nn.Module, config: dict[str, Any], directory: str | os.PathLike, dtype: Optional[torch.dtype]) -> None:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = module.state_dict()
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    save_state_dict_to_dir(state, path)


def load_module(cls: type, config_cls: type, directory: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """A model from a directory written by :func:`save_module`; every fault names the path."""
    path = check_directory(directory)
    config_file = path / "config.json"
    try:
        config = config_cls.from_dict(read_config_json(config_file), where=str(config_file))
    except TypeError as e:  # a field of the wrong type: a fault in the file, not in the call
        raise ValueError(f"{e} Fix config.json or re-save the model.") from None
    state = load_state_dict_from_dir(path)
    # shapes first, on the meta device: a wrong config allocates nothing
    check_keys(build_on_meta(lambda: cls(config), len(state), str(config_file), cls.__name__), state, str(path))
    model = cls(config)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
