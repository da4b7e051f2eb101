"""Learn2PD's filter model, its checkpoints and where it is found (Bao et al., 2025, "Learning to Parallel").

The filter f_theta reads the confidences of the current block's positions (all of them,
committed or not, as the reference feeds them) and predicts, per position, whether the
model's current prediction already equals the token the sequence will finally hold. It is a
logistic regression over the block's confidences (``hidden_sizes=()``; hidden layers are
optional), trained with binary cross-entropy by :mod:`paradecode.bench.learn2pd_training`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn


__all__ = ["Learn2PDFilter", "FILTER_DIRNAME", "find_filter", "shipped_filter"]

FILTER_DIRNAME = "learn2pd_filter"  # saved next to the model: <model dir>/learn2pd_filter/


class Learn2PDFilter(nn.Module):
    """``(batch, block_length)`` confidences -> per-position logits of "already final"."""

    def __init__(self, block_length: int = 32, hidden_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        if block_length < 1 or any(h < 1 for h in hidden_sizes):
            raise ValueError(f"block_length and hidden sizes must be positive, got {block_length}, {list(hidden_sizes)}.")
        self.block_length = int(block_length)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        sizes = [self.block_length, *self.hidden_sizes, self.block_length]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        self.net = nn.Sequential(*layers)

    def forward(self, confidence: torch.Tensor) -> torch.Tensor:
        if confidence.shape[-1] != self.block_length:
            raise ValueError(
                f"this Learn2PD filter reads blocks of {self.block_length} confidences, got {confidence.shape[-1]}; "
                f"use block_length={self.block_length} or train a filter for your block length."
            )
        return self.net(confidence.float())

    @classmethod
    def rejecting(cls, block_length: int) -> "Learn2PDFilter":
        """A filter that accepts nothing (logit -inf-like everywhere): the no-filter fallback."""
        f = cls(block_length)
        with torch.no_grad():
            f.net[-1].weight.zero_()
            f.net[-1].bias.fill_(-100.0)
        return f.eval()

    def accept(self, confidence: torch.Tensor, threshold: float) -> torch.Tensor:
        """Bool mask of positions whose predicted probability of being final exceeds ``threshold``."""
        return torch.sigmoid(self(confidence)) > threshold

    @property
    def linear(self) -> Optional[nn.Linear]:
        """The filter's one layer when it has no hidden layer (as shipped), else None."""
        return self.net[0] if len(self.net) == 1 and self.net[0].bias is not None else None

    # ---- save / load ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, **metadata: Any) -> None:
        """Write ``config.json`` and ``model.safetensors`` (a few hundred bytes of weights, with
        their sha256 so that a damaged file is refused on loading)."""
        from ..models.checkpoint import SINGLE, save_safetensors

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        config = {"model_type": "learn2pd_filter", "block_length": self.block_length,
                  "hidden_sizes": self.hidden_sizes, **metadata}
        (path / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        save_safetensors({k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}, path / SINGLE)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "Learn2PDFilter":
        """Load a filter written by :meth:`save_pretrained`; every fault names the path."""
        from ..models.checkpoint import (
            SINGLE, as_path, build_on_meta, check_config_fields, check_state_dict, load_safetensors, read_config_json,
        )

        path = as_path(directory)
        if not (path / "config.json").is_file() or not (path / SINGLE).is_file():
            raise ValueError(
                f"{path} holds no Learn2PD filter (config.json + model.safetensors); train one with "
                f"scripts/train_learn2pd.py."
            )
        where = str(path / "config.json")
        config = read_config_json(path / "config.json")
        if config.get("model_type") != "learn2pd_filter":
            raise ValueError(f"{where} is not a Learn2PD filter config (model_type={config.get('model_type')!r}).")
        if "block_length" not in config:
            raise ValueError(f"{where} has no block_length; re-save the filter with save_pretrained.")
        config = check_config_fields(config, {"block_length": int, "hidden_sizes": list[int]}, where,
                                     positive=("block_length",))
        if any(h < 1 for h in config.get("hidden_sizes", ())):
            raise ValueError(f"{where}: field hidden_sizes must hold sizes >= 1, got {config['hidden_sizes']}.")
        state = load_safetensors(path / SINGLE)
        # shapes first, on the meta device: a wrong config allocates nothing
        build = lambda: cls(config["block_length"], config.get("hidden_sizes", ()))  # noqa: E731
        check_state_dict(build_on_meta(build, len(state), where, "Learn2PDFilter").state_dict(), state, str(path), "Learn2PDFilter")
        model = cls(config["block_length"], config.get("hidden_sizes", ()))
        model.load_state_dict({k: v.float() for k, v in state.items()})
        model.metadata = {k: v for k, v in config.items() if k not in ("model_type", "block_length", "hidden_sizes")}
        return model.to(device).eval()


def find_filter(model: Any) -> Optional[Path]:
    """The filter saved next to ``model`` (``<dir the model was loaded from>/learn2pd_filter``)."""
    config = getattr(model, "config", None)
    where = getattr(config, "name_or_path", None) or getattr(model, "name_or_path", None)
    if where and (Path(where) / FILTER_DIRNAME / "config.json").exists():
        return Path(where) / FILTER_DIRNAME
    return None


def shipped_filter(block_length: int) -> Optional[Path]:
    """A filter shipped with paradecode for this block length (next to a zoo model), or None.

    Models are tried best first, in ``paradecode.zoo.available()``'s order, so a newly shipped
    model's filter does not displace the default model's."""
    from .. import zoo

    for name in zoo.available():
        cand = zoo.model_dir(name) / FILTER_DIRNAME / "config.json"
        if cand.exists() and json.loads(cand.read_text()).get("block_length") == block_length:
            return cand.parent
    return None
