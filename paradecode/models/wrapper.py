"""One place that passes a diffusion LM's protocol through a wrapper of its forward.

Strategies and caches read a model's ``config``, ``device``, ``mask_token_id``,
``logits_shift`` (Dream: 1), ``supports_pair_mask`` (WINO), ``supports_layer_hooks``
(layer-adaptive caches) and ``generation_defaults``. A wrapper that only changes how the forward
runs (CUDA graphs, a benchmark's timer, a test's recorder) must answer them as the model does, or
a cache would plan the feed for the wrong model.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

__all__ = ["ModelWrapper"]


class ModelWrapper(nn.Module):
    """Base for a wrapper of ``model``'s forward: the protocol's attributes are ``model``'s.
    Subclasses define ``forward``."""

    supports_cache = True

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def mask_token_id(self) -> Optional[int]:
        return getattr(self.model, "mask_token_id", None)

    @property
    def logits_shift(self) -> int:
        """Columns the model's logits are shifted by (caches feed each column's predecessor when 1)."""
        return int(getattr(self.model, "logits_shift", 0))

    @property
    def supports_pair_mask(self) -> bool:
        """Whether the model takes a per-query attention mask (WINO's shadow-block forward)."""
        return bool(getattr(self.model, "supports_pair_mask", False))

    @property
    def supports_layer_hooks(self) -> bool:
        """Whether the model has the per-layer hooks a layer-adaptive cache decides through."""
        return bool(getattr(self.model, "supports_layer_hooks", False))

    @property
    def generation_defaults(self) -> Optional[dict]:
        """The model's canvas defaults (``sample`` reads them from the model it is given)."""
        return getattr(self.model, "generation_defaults", None)
