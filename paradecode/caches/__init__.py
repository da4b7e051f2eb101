"""Cache policies: which positions' keys/values a forward recomputes and which it reuses.

Policies register with :func:`paradecode.registry.register_cache`. The interface a model
calls is :class:`paradecode.caches.base.CachePolicy`.
"""

from .base import CachePolicy

__all__ = ["CachePolicy"]
