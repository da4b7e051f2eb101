"""CUDA graphs for the fixed-shape cached forwards of a diffusion LM.

A cached step (dual cache: the 32 block tokens against a preallocated cache) moves ~15 GB
of weights in ~5 ms on an H100, but an eager forward launches ~1,600 kernels, and launching
them from Python takes longer than running them. :class:`CUDAGraphModel` captures each
distinct forward once (a full forward per shape; a cached one per cache allocation and fed
shape) and replays it, so the step runs at the speed of its kernels. The graph covers the
model's body (``hidden_states``); the LM head on the requested logits window runs eagerly, so
a window that moves from block to block reuses the same graph. Forwards with key masks
(padded batches) and CPU models run eagerly, unchanged.

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
    idx: Optional[torch.Tensor]
    out: torch.Tensor  # the captured body's output (hidden states of the fed positions)


class CUDAGraphModel(nn.Module):
    """Wraps a cache-capable model with ``hidden_states``/``lm_head`` (``LLaDAModel``); same
    call, same results.

    Args:
        model: the model to wrap.
        max_graphs: cap on captured graphs (each holds its own activations); beyond it,
            forwards with a new shape run eagerly.
        capture_after: a shape is captured once it has run this many times eagerly, so
            shapes that never repeat (dKV's shrinking masked set) are not captured in vain.
    """

    supports_cache = True

    @property
    def supports_pair_mask(self) -> bool:
        """A per-query attention mask runs eagerly (never captured): as the wrapped model does."""
        return bool(getattr(self.model, "supports_pair_mask", False))

    def __init__(self, model: nn.Module, max_graphs: int = 64, capture_after: int = 1) -> None:
        super().__init__()
        if not (getattr(model, "supports_cache", False) and hasattr(model, "hidden_states") and hasattr(model, "lm_head")):
            raise ValueError(
                "CUDAGraphModel wraps a model that takes cache policies and splits its forward into "
                "hidden_states + lm_head (paradecode's LLaDAModel)."
            )
        self.model = model
        self.config = getattr(model, "config", None)
        self.max_graphs = max_graphs
        self.capture_after = capture_after
        self._seen: dict[tuple, int] = {}
        self._graphs: dict[tuple, _Captured] = {}
        # memory pools of the captured graphs: "full" (no-cache forwards) and "cached" (one
        # per cache allocation, dropped with the graphs of that allocation)
        self._pools: dict[str, Any] = {}
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
        key = self._graph_key(input_ids, positions, cache, attention_mask)
        if key is None:
            return self.model(input_ids, positions=positions, cache=cache, attention_mask=attention_mask,
                              logits_range=logits_range)
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        entry = self._graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0)
            if len(self._graphs) >= self.max_graphs or seen < self.capture_after:
                self._seen[key] = seen + 1
                return self.model(input_ids, positions=positions, cache=cache, logits_range=logits_range)
            entry = self._capture(key, input_ids, positions, cache)
        else:
            entry.ids.copy_(input_ids)
            entry.pos.copy_(positions)
            if entry.idx is not None:
                entry.idx.copy_(cache.graph_index())
                cache.bind_index(entry.idx)
            entry.graph.replay()
            self.replays += 1
        hidden = entry.out if logits_range is None else entry.out[:, logits_range[0] : logits_range[1]]
        return self.model.lm_head(hidden)  # eager: the logits window may move between steps

    def _graph_key(self, input_ids, positions, cache, attention_mask) -> Optional[tuple]:
        """The key a forward is captured under, or None when it must run eagerly."""
        if not input_ids.is_cuda or attention_mask is not None:
            return None
        if cache is None:
            return ("full", tuple(input_ids.shape))
        if positions is None:
            return None
        sig = getattr(cache, "graph_signature", lambda: None)()
        if sig is None:
            return None
        if self._cache_token != sig[-1]:  # another cache or reallocated buffers: old graphs are stale
            for k in [k for k in self._graphs if k[0] != "full"]:
                del self._graphs[k]
            self._seen = {k: n for k, n in self._seen.items() if k[0] == "full"}
            self._pools.pop("cached", None)  # the dropped graphs' memory goes with their pool
            self._cache_token = sig[-1]
        return (sig, tuple(input_ids.shape))

    def _capture(self, key: tuple, input_ids, positions, cache) -> _Captured:
        """Capture the model's body (``hidden_states``) for this key; the LM head stays eager."""
        ids, pos = input_ids.clone(), positions.clone()
        idx = cache.graph_index() if cache is not None else None
        if idx is not None:
            idx = idx.clone()
            cache.bind_index(idx)
        kind = "full" if key[0] == "full" else "cached"
        if kind not in self._pools:
            self._pools[kind] = torch.cuda.graph_pool_handle()
        pool = self._pools[kind]
        body = self.model.hidden_states
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (cuBLAS workspaces, compiled kernels); same cache writes
            body(ids, pos, cache)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out = body(ids, pos, cache)
        graph.replay()
        entry = _Captured(graph, ids, pos, idx, out)
        self._graphs[key] = entry
        self.captures += 1
        return entry
