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

from ..caches.base import CachePolicy

__all__ = ["VARKVCache"]


class VARKVCache(CachePolicy):
    """Full per-layer K/V cache across scales (no compression)."""

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

    def attach(self, strategy: Any, state: Any) -> None:
        """Called by ``paradecode.sample`` before the loop: become the generation's cache."""
        if not hasattr(state, "cache") or not hasattr(state, "vae"):
            raise ValueError(f"the {type(self).__name__} cache works with the VAR strategies only.")
        if state.cache is None:
            raise ValueError("a VAR cache policy needs use_cache=True (the uncached reference recomputes every scale).")
        self.reset()
        state.cache = self

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
