"""CUDA graphs for the fixed-shape cached forwards of a diffusion LM.

A cached step (dual cache: the 32 block tokens against a preallocated cache) moves ~15 GB
of weights in ~5 ms on an H100, but an eager forward launches ~1,600 kernels, and launching
them from Python takes longer than running them. :class:`CUDAGraphModel` captures each
distinct cached forward once (per cache-buffer address, fed shape and logits range) and
replays it, so the step runs at the speed of its kernels. Full forwards, forwards with key
masks (padded batches) and CPU models run eagerly, unchanged.

    graphed = CUDAGraphModel(model)
    paradecode.sample(graphed, prompt_ids, "lowconf", cache="dual", ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

__all__ = ["CUDAGraphModel"]


@dataclass
class _Captured:
    graph: Any
    ids: torch.Tensor
    pos: torch.Tensor
    idx: torch.Tensor
    out: torch.Tensor


class CUDAGraphModel(nn.Module):
    """Wraps a cache-capable model (``LLaDAModel``); same call, same results.

    Args:
        model: the model to wrap.
        max_graphs: cap on captured graphs (each holds its own activations); beyond it,
            forwards with a new shape run eagerly.
        capture_after: a shape is captured once it has run this many times eagerly, so
            shapes that never repeat (dKV's shrinking masked set) are not captured in vain.
    """

    supports_cache = True

    def __init__(self, model: nn.Module, max_graphs: int = 64, capture_after: int = 1) -> None:
        super().__init__()
        if not getattr(model, "supports_cache", False):
            raise ValueError("CUDAGraphModel wraps a model that takes cache policies (paradecode's LLaDAModel).")
        self.model = model
        self.config = getattr(model, "config", None)
        self.max_graphs = max_graphs
        self.capture_after = capture_after
        self._seen: dict[tuple, int] = {}
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = None
        self._cache_token: Optional[int] = None
        self.captures = 0
        self.replays = 0

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def mask_token_id(self) -> Optional[int]:
        return getattr(self.model, "mask_token_id", None)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
        logits_range: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        sig = None
        if cache is not None and input_ids.is_cuda and attention_mask is None and positions is not None:
            sig = getattr(cache, "graph_signature", lambda: None)()
        if sig is None:
            return self.model(input_ids, positions=positions, cache=cache, attention_mask=attention_mask,
                              logits_range=logits_range)
        if self._cache_token != sig[-1]:  # another cache or reallocated buffers: old graphs are stale
            self._graphs.clear()  # frees their memory pool; new captures take a new pool
            self._pool = None
            self._seen.clear()
            self._cache_token = sig[-1]
        key = (sig, tuple(input_ids.shape), logits_range)
        entry = self._graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0)
            if len(self._graphs) >= self.max_graphs or seen < self.capture_after:
                self._seen[key] = seen + 1
                return self.model(input_ids, positions=positions, cache=cache, logits_range=logits_range)
            return self._capture(key, input_ids, positions, cache, logits_range)
        entry.ids.copy_(input_ids)
        entry.pos.copy_(positions)
        entry.idx.copy_(cache.graph_index())
        cache.bind_index(entry.idx)
        entry.graph.replay()
        self.replays += 1
        return entry.out

    def _capture(self, key: tuple, input_ids, positions, cache, logits_range) -> torch.Tensor:
        ids, pos, idx = input_ids.clone(), positions.clone(), cache.graph_index().clone()
        cache.bind_index(idx)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (cuBLAS workspaces); rewrites the same K/V
            self.model(ids, positions=pos, cache=cache, logits_range=logits_range)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.model(ids, positions=pos, cache=cache, logits_range=logits_range)
        graph.replay()
        self._graphs[key] = _Captured(graph, ids, pos, idx, out)
        self.captures += 1
        return out
