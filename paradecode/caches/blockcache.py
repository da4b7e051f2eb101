"""Fast-dLLM block caches (Wu et al., 2025, "Fast-dLLM", ``generate_with_prefix_cache`` /
``generate_with_dual_cache``).

At a block's first step one full forward computes the keys/values of the whole canvas (and
serves that step). Later steps of the block:

* ``prefix``: feed the block and everything right of it; the prompt and finished blocks
  reuse the keys/values of the block's first forward.
* ``dual``: feed only the block; prefix *and* suffix reuse those keys/values, the block's
  fresh ones are written into the cache in place.

``refresh_every`` (not in the reference, which refreshes only at block boundaries) also
rebuilds the cache every that many steps inside a block; 1 makes the cache exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..registry import register_cache
from .canvas import CanvasKVCache


@dataclass
class BlockCacheConfig:
    refresh_every: Optional[int] = None

    def __post_init__(self) -> None:
        if self.refresh_every is not None and (not isinstance(self.refresh_every, int) or self.refresh_every < 1):
            raise ValueError(
                f"refresh_every must be None (refresh at block boundaries, as Fast-dLLM) or an integer >= 1, "
                f"got {self.refresh_every!r}."
            )


class _BlockCache(CanvasKVCache):
    Config = BlockCacheConfig
    feeds_suffix: bool = False

    def full_rows(self, state: Any, rows: torch.Tensor) -> torch.Tensor:
        i = state.step_in_block[rows]
        every = self.config.refresh_every
        return (i == 0) if every is None else (i % every == 0)

    def recompute_range(self, state: Any, rows: torch.Tensor) -> Optional[torch.Tensor]:
        bl = self._strategy.config.block_length
        start = state.origin + state.block[rows] * bl
        end = torch.full_like(start, state.x.shape[1]) if self.feeds_suffix else start + bl
        return torch.stack([start, end], dim=1)

    def recompute(self, state: Any, rows: torch.Tensor) -> torch.Tensor:
        cols = self._strategy.block_columns(state, rows)
        L = state.x.shape[1]
        c = torch.arange(L, device=cols.device)[None, :]
        if self.feeds_suffix:
            return c >= cols[:, :1]
        return (c >= cols[:, :1]) & (c <= cols[:, -1:])


@register_cache("prefix")
class PrefixCache(_BlockCache):
    description = "Fast-dLLM prefix cache: reuse prompt and finished blocks' K/V, recompute block and suffix"
    feeds_suffix = True
    graph_bucket = 128  # block + suffix shrinks by a block each block: 2 shapes at gen 256, 8 at 1024


@register_cache("dual")
class DualCache(_BlockCache):
    description = "Fast-dLLM dual cache: reuse prefix and suffix K/V, recompute only the current block"
    feeds_suffix = False
