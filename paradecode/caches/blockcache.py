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

One difference in forward counts, not in tokens: Fast-dLLM's cached loops test whether the
block still has masks only *after* each cached forward, so when a block's first (full)
forward already commits the whole block they still run one cached forward that commits
nothing. Here a block with no mask left ends at once (as in the no-cache loop): the same
tokens with one forward fewer for every such block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..interfaces import CanvasRequest
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
    exact_options = {"refresh_every": 1}
    feeds_suffix: bool = False
    split_refresh = True  # rows at a block's first step refresh alone; the others feed their block
    plans_ahead = True  # the feed follows from each row's block and step in it

    def full_rows(self, canvas: CanvasRequest) -> torch.Tensor:
        i = canvas.step_in_block
        every = self.config.refresh_every
        return (i == 0) if every is None else (i % every == 0)

    def recompute_range(self, canvas: CanvasRequest) -> Optional[list[tuple[int, int]]]:
        L, bl = canvas.length, canvas.block_length
        return [(s, L if self.feeds_suffix else s + bl) for s in canvas.block_start.tolist()]

    def recompute(self, canvas: CanvasRequest) -> torch.Tensor:
        cols = canvas.block_columns()
        c = torch.arange(canvas.length, device=cols.device)[None, :]
        if self.feeds_suffix:
            return c >= cols[:, :1]
        return (c >= cols[:, :1]) & (c <= cols[:, -1:])


class PrefixCache(_BlockCache):
    name = "prefix"
    description = "Fast-dLLM prefix cache: reuse prompt and finished blocks' K/V, recompute block and suffix"
    feeds_suffix = True
    graph_bucket = 128  # rows at different blocks (fed in the general order): a few shapes
    span_padding_under = 4  # a shared block + suffix span is padded by under 1/4 of its width

    def _span_bucket(self, x: torch.Tensor, width: int, block_length: int) -> int:
        """Block + suffix shrinks by one block per block, so each block feeds a new width (a new
        CUDA graph). The width is padded to a multiple of the block times the largest power of
        two that is at most width / (``span_padding_under`` blocks): nothing up to 8 blocks
        wide, under 1/4 of the width beyond. At block 32: gen 256 feeds its 8 widths as they
        are, gen 1024 16 widths with 5% of all fed columns padding. (A fixed multiple of 128,
        as before, fed gen 256's last block, 32 wide, as 128 columns: 4x its work.)"""
        if not self._bucket(x):
            return 0
        blocks = width // (self.span_padding_under * block_length)
        return block_length * (1 << max(blocks, 1).bit_length() - 1)


class DualCache(_BlockCache):
    name = "dual"
    description = "Fast-dLLM dual cache: reuse prefix and suffix K/V, recompute only the current block"
    feeds_suffix = False
