"""The interface between a cache policy, the step loop and a model.

A cache policy sits between the strategy and the model:

* ``prepare(request, state)`` (called by the loop) may shrink a strategy's request to the
  positions that must be recomputed this step, and attaches itself as ``cache=``;
* inside the model, ``begin_forward(positions)``, then per layer
  ``update(layer, k, v, attn_mask) -> (k, v, attn_mask)`` merges the fresh keys/values of
  the fed positions with the reused ones, then ``end_forward()``;
* ``restore(output, request)`` gives the strategy logits in the shape it asked for.

A cache changes speed and memory, never the strategy's API. ``stats()`` feeds the trace
(bytes held, reuse rate).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional

import torch

from ..loop import Request


class CachePolicy(ABC):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def prepare(self, request: Request, state: Any) -> Request:
        """Return the request to run (default: unchanged, with ``cache=self`` attached)."""
        request.kwargs["cache"] = self
        return request

    def restore(self, output: Any, request: Request) -> Any:
        """Map the model output back to what the strategy asked for (default: unchanged)."""
        return output

    def begin_forward(self, positions: torch.Tensor) -> None:
        """Called by the model before its first layer with the fed positions."""

    @abstractmethod
    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Merge the fed positions' keys/values (RoPE applied) with reused ones."""

    def end_forward(self) -> None:
        """Called by the model after its last layer."""

    def stats(self) -> dict[str, float]:
        """Per-step figures for the trace, e.g. ``{"cache_bytes": ..., "reuse_rate": ...}``."""
        return {}
