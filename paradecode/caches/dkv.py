"""dKV-Cache (Ma et al., 2025, "dKV-Cache: The Cache for Diffusion Language Models").

Keys/values of a token are cached with a delay: a token decoded at step t is still
recomputed at step t + 1 (its keys/values now see it decoded) and reused from step t + 2.

* ``dkv-decode`` (horseee/dKV-Cache ``llada_dkv_cache_decode``): per block, steps 0 and 1 and
  every step divisible by ``cache_reloading_step`` are full forwards that rebuild the cache;
  other steps recompute every position still masked two steps ago (all masks, in every block,
  plus the tokens decoded in the previous step) and reuse the rest (prompt, older tokens).
* ``dkv-greedy`` (``llada_dkv_cache_greedy``): aggressive caching with a short lifespan. The
  cache (of every position, masked ones included) is rebuilt every ``cache_reloading_step``
  steps of a block; in between only the tokens decoded in the previous step, the candidates
  of this step and ``window_size`` nearby masked positions are recomputed. The reference
  knows the next step's positions in advance (it only supports random remasking, whose order
  is drawn up front); a policy that serves every strategy cannot, so the candidates are all
  masked positions of the current block (a superset), and the window is the nearest
  ``window_size`` masked positions right of the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..interfaces import CanvasRequest
from .canvas import CanvasKVCache


def _recent_or_masked(canvas: CanvasRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, L) masks: positions still masked, and tokens committed in the previous step."""
    return canvas.masked(), canvas.committed_at == canvas.step - 1


def _check_interval(value: int, name: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (1 = refresh every step), got {value!r}.")


@dataclass
class DKVDecodeConfig:
    cache_reloading_step: int = 4

    def __post_init__(self) -> None:
        _check_interval(self.cache_reloading_step, "cache_reloading_step")


class DKVDecode(CanvasKVCache):
    name = "dkv-decode"
    description = "dKV-Cache-Decode: delayed caching of decoded tokens' K/V, full reload every cache_reloading_step steps"
    Config = DKVDecodeConfig
    exact_options = {"cache_reloading_step": 1}
    may_skip_window = True
    graph_bucket = 64
    plans_ahead = True  # the feed follows from the request's canvas, step and commits

    def full_rows(self, canvas: CanvasRequest) -> torch.Tensor:
        i = canvas.step_in_block
        return (i <= 1) | (i % self.config.cache_reloading_step == 0)

    def recompute(self, canvas: CanvasRequest) -> torch.Tensor:
        masked, recent = _recent_or_masked(canvas)
        return masked | recent


@dataclass
class DKVGreedyConfig:
    cache_reloading_step: int = 2
    window_size: int = 4

    def __post_init__(self) -> None:
        _check_interval(self.cache_reloading_step, "cache_reloading_step")
        if not isinstance(self.window_size, int) or self.window_size < 0:
            raise ValueError(f"window_size must be an integer >= 0, got {self.window_size!r}.")


class DKVGreedy(CanvasKVCache):
    name = "dkv-greedy"
    description = "dKV-Cache-Greedy: cache every position, recompute only the block's candidates, recent tokens and a window"
    Config = DKVGreedyConfig
    exact_options = {"cache_reloading_step": 1}
    may_skip_window = True
    graph_bucket = 64
    plans_ahead = True  # the feed follows from the request's canvas, step and commits

    def full_rows(self, canvas: CanvasRequest) -> torch.Tensor:
        return canvas.step_in_block % self.config.cache_reloading_step == 0

    def recompute(self, canvas: CanvasRequest) -> torch.Tensor:
        masked, recent = _recent_or_masked(canvas)
        cols = canvas.block_columns()
        block = torch.zeros_like(masked).scatter_(1, cols, True)
        fed = recent | (masked & block)
        if self.config.window_size:
            right = masked & (torch.arange(masked.shape[1], device=masked.device)[None, :] > cols[:, -1:])
            rank = right.long().cumsum(-1)
            fed |= right & (rank <= self.config.window_size)
        return fed
