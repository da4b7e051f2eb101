"""Cache policies: which positions' keys/values a forward recomputes and which it reuses.

The registry finds policies by name (``paradecode.cache_policies()``). The interface is
:class:`paradecode.caches.base.CachePolicy`; the dLLM policies share
:class:`paradecode.caches.canvas.CanvasKVCache`, the VAR ones :class:`paradecode.caches.var_kv.VARKVCache`.
"""

from .base import CachePolicy
from .canvas import CanvasKVCache
from .var_kv import VARKVCache

__all__ = ["CachePolicy", "CanvasKVCache", "VARKVCache"]
