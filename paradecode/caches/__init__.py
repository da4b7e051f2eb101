"""Cache policies: which positions' keys/values a forward recomputes and which it reuses.

Policies register with :func:`paradecode.registry.register_cache`. The interface a model
calls is :class:`paradecode.caches.base.CachePolicy`; the dLLM policies share
:class:`paradecode.caches.canvas.CanvasKVCache`.
"""

from . import blockcache, dkv  # noqa: F401  (registers dkv-decode, dkv-greedy, prefix, dual)
from .base import CachePolicy
from .canvas import CanvasKVCache

__all__ = ["CachePolicy", "CanvasKVCache"]
