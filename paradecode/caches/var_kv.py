"""The KV cache VAR generation runs with: every layer keeps the keys/values of all scales.

This is the official ``kv_caching`` (keys/values of each scale appended per layer). It follows
the :class:`~paradecode.caches.base.CachePolicy` interface, plus one VAR hook:
``after_attention(layer, q, scale)``, called by each attention layer once it has attended, which
is where a compressing policy (ScaleKV) drops entries. ``stats()`` reports the bytes held now
(``kv_bytes``) and the most held at any moment of the generation (``kv_peak_bytes``).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .base import CachePolicy

__all__ = ["VARKVCache"]


class VARKVCache(CachePolicy):
    """Full per-layer K/V cache across scales (no compression)."""

    families = ("var",)

    name = "var-full"
    description = "VAR's full KV cache across scales (the reference behaviour)."

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self._bytes = 0
        self.peak_bytes = 0
        self.positions: Optional[torch.Tensor] = None

    def caches_for(self, strategy: Any, models: dict[str, Any]) -> dict[str, Any]:
        """This cache for a one-model strategy; a fresh one per role for CoDe's two models."""
        if not getattr(strategy.config, "use_cache", True):
            raise ValueError("a VAR cache policy needs use_cache=True (the uncached reference recomputes every scale).")
        roles = tuple(strategy.roles)
        out = {}
        for i, role in enumerate(roles):
            cache = self if i == 0 else self.fresh()
            cache.prepare_for(models[role].var, strategy)
            out[role] = cache
        return out

    def fresh(self) -> "VARKVCache":
        """An empty cache with this one's settings (for another model role)."""
        return type(self)()

    def prepare_for(self, var: Any, strategy: Any = None) -> None:
        """Start a generation with ``var`` (a ``paradecode.vision.VAR``) for ``strategy``."""
        self.reset()

    # ---- model-side interface ------------------------------------------------------------------
    def begin_forward(self, positions: torch.Tensor) -> None:
        """``positions``: token indices (in the concatenated pyramid) fed in this forward."""
        self.positions = positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, attn_mask=None):
        if layer in self.k:
            self._bytes -= _nbytes(self.k[layer]) + _nbytes(self.v[layer])
            k = torch.cat((self.k[layer], k), dim=2)
            v = torch.cat((self.v[layer], v), dim=2)
        self.k[layer], self.v[layer] = k, v
        self._account(_nbytes(k) + _nbytes(v))
        return k, v, attn_mask

    def after_attention(self, layer: int, q: torch.Tensor, scale: float) -> None:
        """Hook after layer ``layer`` attended with queries ``q`` (B, H, l, hd); full cache: nothing."""

    def replace(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Swap a layer's entries for a compressed set (used by compressing subclasses)."""
        self._bytes -= _nbytes(self.k[layer]) + _nbytes(self.v[layer])
        self.k[layer], self.v[layer] = k, v
        self._account(_nbytes(k) + _nbytes(v))

    def _account(self, added: int) -> None:
        self._bytes += added
        self.peak_bytes = max(self.peak_bytes, self._bytes)

    # ---- reading ---------------------------------------------------------------------------------
    def length(self, layer: int) -> int:
        return 0 if layer not in self.k else int(self.k[layer].shape[2])

    @property
    def nbytes(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, float]:
        return {"kv_bytes": self._bytes, "kv_peak_bytes": self.peak_bytes}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
