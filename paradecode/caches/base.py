"""The interface between a cache policy, the loop's model caller and a model.

* A policy declares the model ``families`` it serves (``"dllm"``, ``"var"``) and gives a cache
  per model role of a strategy (:meth:`CachePolicy.caches_for`); ``paradecode.sample`` refuses
  a policy whose families do not include the strategy's, naming both.
* The loop's caller runs every forward of a role that has a cache through
  ``cache.forward(model, request)``: a canvas cache plans a smaller feed from the request's
  :class:`~paradecode.interfaces.CanvasRequest`, a VAR cache passes itself as ``cache=``.
* Inside the model, each attention layer calls the layer-level protocol
  ``update(layer, k, v, mask) -> (k, v, mask)`` (:class:`~paradecode.interfaces.LayerKV`),
  bracketed by ``begin_forward(positions)`` / ``end_forward()``.

A cache changes speed and memory, never the strategy's API. ``stats()`` feeds the trace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional

import torch

from ..interfaces import Request


class CachePolicy(ABC):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ()
    #: Options under which the cache recomputes everything it would reuse, so decoding equals
    #: decoding without it (tests/test_contract.py checks every strategy x policy with them).
    exact_options: ClassVar[dict[str, Any]] = {}

    def caches_for(self, strategy: Any, models: dict[str, Any]) -> dict[str, Any]:
        """A cache per model role of ``strategy`` (default: this object, for role ``"model"``)."""
        if tuple(strategy.roles) != ("model",):
            raise ValueError(
                f"cache policy {self.name!r} serves one model, but strategy {strategy.name!r} calls "
                f"{list(strategy.roles)}; pass cache=None."
            )
        return {"model": self}

    def forward(self, model: Any, request: Request) -> Any:
        """Run one forward of ``model`` with this cache (default: pass it as ``cache=``)."""
        return model(request.inputs, cache=self, **request.kwargs)

    def begin_forward(self, positions: torch.Tensor) -> None:
        """Called by the model before its first layer with the fed positions."""

    @abstractmethod
    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Merge the fed positions' keys/values (RoPE applied) with kept ones; return what to
        attend to and the key mask."""

    def end_forward(self) -> None:
        """Called by the model after its last layer."""

    def stats(self) -> dict[str, float]:
        """Per-step figures for the trace, e.g. ``{"cache_bytes": ..., "reuse_rate": ...}``."""
        return {}
