"""Saving and loading the vision models: HF-style directories and the official ``.pth`` files."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..models.checkpoint import load_state_dict_from_dir, save_state_dict_to_dir

__all__ = ["ConfigDict", "read_state_dict", "save_module", "load_module", "check_keys"]


class ConfigDict:
    """Mixin for the config dataclasses: ``to_dict`` / ``from_dict`` (unknown fields raise)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from an official ``.pth`` (``torch.save``), a ``.safetensors`` file or a directory."""
    p = Path(path)
    if p.is_dir():
        return load_state_dict_from_dir(p)
    if not p.exists():
        raise ValueError(f"checkpoint {p} does not exist.")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    obj = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{p} does not hold a state dict (got {type(obj).__name__}).")
    return obj


def check_keys(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise ``ValueError`` naming missing, unexpected or wrongly-shaped entries."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(
            f"{where} does not match {type(model).__name__}({getattr(model, 'config', '')}): "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}, wrong shapes "
            f"{[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in shapes[:8]]}."
        )


def save_module(module: nn.Module, config: dict[str, Any], directory: str | os.PathLike, dtype: Optional[torch.dtype]) -> None:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = module.state_dict()
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    save_state_dict_to_dir(state, path)


def load_module(cls: type, config_cls: type, directory: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    path = Path(directory)
    if not (path / "config.json").exists():
        raise ValueError(f"{path} has no config.json; is it a checkpoint directory written by save_pretrained?")
    config = config_cls.from_dict(json.loads((path / "config.json").read_text()))
    model = cls(config)
    state = load_state_dict_from_dir(path)
    check_keys(model, state, str(path))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
