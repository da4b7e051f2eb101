"""CUDA graphs for the fixed-shape forwards of a diffusion LM, padded batches included.

A cached step (dual cache: the 32 block tokens against a preallocated cache) moves ~15 GB
of weights in ~5 ms on an H100, but an eager forward launches ~1,600 kernels, and launching
them from Python takes longer than running them. :class:`CUDAGraphModel` captures each
distinct forward once and replays it, so the step runs at the speed of its kernels. The graph
covers the model's body (``hidden_states``); the LM head on the requested logits window runs
eagerly, so a window that moves from block to block reuses the same graph.

Graphs are keyed by the forward's shapes (batch size included: each batch size is its own
bucket) and by the cache buffers they write. Everything a forward reads that changes between
steps is a static graph input copied in before a replay: token ids, positions, the cache's fed
columns, and for padded batches (left-padded ragged prompts) the attention mask or the cache's
key-padding mask. The wrapper lends caches its :class:`KVBufferStore`, so successive
``sample()`` calls of the same shapes write the same K/V buffers and replay the graphs the
first call captured instead of capturing anew. CPU models run eagerly, unchanged.

Shifted-logits models (``DreamModel``: column i read from the output at i - 1) are served the
same way: the cache's ``logits_from`` (which fed row gives each requested column's logits) goes
to the eager head, and the cache's write index (its query-only predecessor rows sent to the
trash slot) is a static input of the graph like the fed columns.

    graphed = CUDAGraphModel(model)
    paradecode.sample(graphed, prompt_ids, "lowconf", cache="dual", ...)

One generation at a time per wrapper: graphs and lent buffers are shared state.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional

import torch
from torch import nn

from .attention import graph_capture
from .wrapper import ModelWrapper

__all__ = ["CUDAGraphModel", "KVBufferStore", "capture_graph", "graph_key"]


def capture_graph(fn: Any, pool: Any = None) -> tuple[Any, Any]:
    """Capture ``fn()`` as a CUDA graph and run it once; returns ``(graph, output)``.

    ``fn`` runs once on a side stream first (cuBLAS workspaces, lazy allocations), then is
    captured into ``pool``; the capture itself executes nothing, hence the replay. ``fn`` must
    read its inputs from tensors that stay allocated (copy new inputs into them, then
    ``graph.replay()``), and a forward that writes a cache must write the same values when it
    runs twice (the warm-up and the replay both write).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    graph.replay()
    return graph, out


_STORES = itertools.count(1)


class KVBufferStore:
    """K/V buffers kept across caches, one per (layer, k|v) within an allocation group
    (shape, dtype, device).

    A cache asks ``zeros(key, shape, like)`` where it would allocate; the same request gives
    back the same tensor (zeroed only when first made), with a token naming its group that
    graphs captured on it are keyed by. The token is the same for every cache served from the
    same buffers, which is what lets a later generation replay an earlier one's graphs.
    Only the ``max_groups`` most recently used groups are kept (default 1: as much memory as
    one cache held before, while generations of one shape in a row share it); ``on_evict``
    hears the token of a dropped group, whose graphs must go with it. Tokens are never reused.
    """

    def __init__(self, max_groups: int = 1, on_evict: Optional[Callable[[tuple], None]] = None) -> None:
        if not isinstance(max_groups, int) or max_groups < 1:
            raise ValueError(f"max_groups must be an integer >= 1, got {max_groups!r}.")
        self.max_groups = max_groups
        self.on_evict = on_evict
        self._groups: OrderedDict[tuple, tuple[tuple, dict[Any, torch.Tensor]]] = OrderedDict()
        self._id = next(_STORES)
        self._count = itertools.count()

    def zeros(self, key: Any, shape: tuple, like: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        group = (tuple(shape), like.dtype, str(like.device))
        entry = self._groups.get(group)
        if entry is None:
            entry = self._groups[group] = (("store", self._id, next(self._count)), {})
            self._evict()
        self._groups.move_to_end(group)
        token, buffers = entry
        buf = buffers.get(key)
        if buf is None:
            buf = buffers[key] = like.new_zeros(shape)
        return buf, token

    def find(self, fits: Callable[[tuple], bool]) -> Optional[tuple[list, list, tuple]]:
        """(k buffers, v buffers, token) of every layer, 0 up, of the most recent group whose
        shape ``fits`` and holds both for each layer; None when there is none."""
        for group in reversed(self._groups):
            token, buffers = self._groups[group]
            if not fits(group[0]):
                continue
            n = 1 + max((k[0] for k in buffers), default=-1)
            ks = [buffers.get((i, "k")) for i in range(n)]
            vs = [buffers.get((i, "v")) for i in range(n)]
            if n and all(t is not None for t in ks + vs):
                self._groups.move_to_end(group)
                return ks, vs, token
        return None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, bufs in self._groups.values() for t in bufs.values())

    def clear(self) -> None:
        while self._groups:
            self._drop_oldest()

    def _evict(self) -> None:
        while len(self._groups) > self.max_groups:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, (token, _) = self._groups.popitem(last=False)
        if self.on_evict is not None:
            self.on_evict(token)


def graph_key(
    input_shape: tuple, cache_signature: Optional[tuple], has_cache: bool, mask_shape: Optional[tuple]
) -> Optional[tuple]:
    """The key a forward is captured under, or None when it must run eagerly.

    A forward without a cache is keyed by its input shape and the shape of its attention mask
    (None: unpadded); a cached one additionally by the cache's ``graph_signature()`` (its fed
    columns' shape, its key-mask shape and its buffers' allocation), and runs eagerly when the
    cache gives none.
    """
    if not has_cache:
        return ("full", tuple(input_shape), mask_shape)
    if cache_signature is None:
        return None
    return (cache_signature, tuple(input_shape), mask_shape)


@dataclass
class _Captured:
    graph: Any
    ids: torch.Tensor
    pos: torch.Tensor
    mask: Optional[torch.Tensor]  # attention mask (padded batch, full forwards)
    idx: Optional[torch.Tensor]  # the cache's fed columns (partial forwards)
    key_mask: Optional[torch.Tensor]  # the cache's key-padding mask (padded batch, partial forwards)
    write: Optional[torch.Tensor]  # where the fed rows' keys/values go, when not all to their columns
    out: torch.Tensor  # the captured body's output (hidden states of the fed positions)


class CUDAGraphModel(ModelWrapper):
    """Wraps a cache-capable model with ``hidden_states``/``logits_of`` (``LLaDAModel``,
    ``DreamModel``); same call, same results.

    Args:
        model: the model to wrap.
        max_graphs: cap on captured graphs (each holds its own activations); beyond it,
            forwards with a new shape run eagerly.
        capture_after: a shape is captured once it has run this many times eagerly, so
            shapes that never repeat (dKV's shrinking masked set) are not captured in vain.
        reuse_buffers: lend caches this wrapper's :class:`KVBufferStore`, so that graphs
            outlive one ``sample()`` call. Off: each cache allocates its own buffers and its
            graphs are dropped with them.
        kv_groups: how many K/V buffer shapes the store keeps (see :class:`KVBufferStore`);
            raise it to keep graphs of several batch sizes or canvas lengths at once.
        full_shapes: how many no-cache forward shapes keep their graphs (least recently used
            dropped first): batches of ragged prompts each pad to their own length, and each
            graph holds its output activations.
    """

    def __init__(self, model: nn.Module, max_graphs: int = 64, capture_after: int = 1,
                 reuse_buffers: bool = True, kv_groups: int = 1, full_shapes: int = 4) -> None:
        if not (getattr(model, "supports_cache", False) and hasattr(model, "hidden_states") and hasattr(model, "logits_of")):
            raise ValueError(
                "CUDAGraphModel wraps a model that takes cache policies and splits its forward into "
                "hidden_states + logits_of (paradecode's LLaDAModel, DreamModel)."
            )
        super().__init__(model)
        self.max_graphs = max_graphs
        self.full_shapes = full_shapes
        self.capture_after = capture_after
        self.store: Optional[KVBufferStore] = (
            KVBufferStore(max_groups=kv_groups, on_evict=self._drop_token) if reuse_buffers else None
        )
        self._seen: dict[tuple, int] = {}
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()  # least recently used first
        # memory pools of the captured graphs: "full" (no-cache forwards), "cached" (forwards on
        # the store's buffers) and "private" (on a cache's own buffers, dropped with them)
        self._pools: dict[str, Any] = {}
        self._private_token: Any = None
        self.captures = 0
        self.replays = 0

    def release(self) -> None:
        """Drop every graph and lent buffer (their memory returns to PyTorch's allocator)."""
        if self.store is not None:
            self.store.clear()
        self._graphs.clear()
        self._seen.clear()
        self._pools.clear()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
        logits_range: Optional[tuple[int, int]] = None,
        logits_from: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return self.stage_forward(input_ids, positions, cache, attention_mask, logits_range, logits_from)()

    def stage_forward(
        self,
        input_ids: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
        logits_range: Optional[tuple[int, int]] = None,
        logits_from: Optional[torch.Tensor] = None,
    ) -> Callable[[], torch.Tensor]:
        """:meth:`forward` in two halves: a replay's input copies are queued now (stream-ordered
        after the device work already queued), the returned call launches the graph and the
        head. A step that waits for its read plans its successor this way (``ModelCaller.stage_forward``),
        so after the read only the launch is left. Forwards that run eagerly or capture are
        done entirely by the returned call. Nothing may replay this key's graph in between."""
        head = {} if logits_from is None else {"logits_from": logits_from}  # only shifted models take it
        if cache is not None and self.store is not None and getattr(cache, "_store", False) is None:
            use = getattr(cache, "use_buffer_store", None)
            if use is not None and self._graphable(input_ids):
                use(self.store)
        key = self._key(input_ids, positions, cache, attention_mask)
        if key is None:
            return partial(self.model, input_ids, positions=positions, cache=cache, attention_mask=attention_mask,
                           logits_range=logits_range, **head)
        positions = self._positions(input_ids, positions, cache, attention_mask)
        entry = self._graphs.get(key)
        if entry is None:
            return partial(self._first_sight, key, input_ids, positions, cache, attention_mask, logits_range, head)
        entry.ids.copy_(input_ids)
        entry.pos.copy_(positions)
        if entry.mask is not None:
            entry.mask.copy_(attention_mask)
        if entry.idx is not None:
            entry.idx.copy_(cache.graph_index())
            if entry.write is not None:
                entry.write.copy_(cache.graph_write_index())
        if entry.key_mask is not None:
            entry.key_mask.copy_(cache.graph_key_mask())

        def replay() -> torch.Tensor:
            if key in self._graphs:
                self._graphs.move_to_end(key)
            if entry.idx is not None:
                cache.bind_index(entry.idx, entry.write)
            if entry.key_mask is not None:
                cache.bind_key_mask(entry.key_mask)
            entry.graph.replay()
            self.replays += 1
            return self.model.logits_of(entry.out, logits_range, **head)  # eager: the window may move between steps

        return replay

    def _first_sight(self, key, input_ids, positions, cache, attention_mask, logits_range, head) -> torch.Tensor:
        """A key without a graph: run eagerly (counting sightings) or capture it now."""
        seen = self._seen.get(key, 0)
        if len(self._graphs) >= self.max_graphs or seen < self.capture_after:
            self._seen[key] = seen + 1
            return self.model(input_ids, positions=positions, cache=cache, attention_mask=attention_mask,
                              logits_range=logits_range, **head)
        entry = self._capture(key, input_ids, positions, cache, attention_mask)
        return self.model.logits_of(entry.out, logits_range, **head)

    # ---- keys -----------------------------------------------------------------------------
    def _graphable(self, input_ids: torch.Tensor) -> bool:
        """Whether forwards on this input can be captured (CUDA tensors only)."""
        return input_ids.is_cuda

    def _positions(self, input_ids, positions, cache, attention_mask) -> torch.Tensor:
        if positions is not None:
            return positions
        default = getattr(self.model, "default_positions", None)
        if default is not None:
            return default(input_ids, attention_mask, cache)
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)

    def _key(self, input_ids, positions, cache, attention_mask) -> Optional[tuple]:
        if not self._graphable(input_ids):
            return None
        if attention_mask is not None and positions is None and not hasattr(self.model, "default_positions"):
            return None  # the model derives padded positions itself: leave it eager
        mask_shape = None if attention_mask is None else tuple(attention_mask.shape)
        if cache is None:
            return graph_key(input_ids.shape, None, False, mask_shape)
        if positions is None:
            return None
        sig = getattr(cache, "graph_signature", lambda: None)()
        if sig is not None and not (isinstance(sig[-1], tuple) and sig[-1][:1] == ("store",)):
            self._drop_private(sig[-1])
        return graph_key(input_ids.shape, sig, True, mask_shape)

    def _drop_token(self, token: tuple) -> None:
        """The store dropped the buffers of ``token``: drop the graphs that write them."""
        stale = lambda k: k[0] != "full" and k[0][-1] == token  # noqa: E731
        for k in [k for k in self._graphs if stale(k)]:
            del self._graphs[k]
        self._seen = {k: n for k, n in self._seen.items() if not stale(k)}
        if not any(_on_store(k) for k in self._graphs):
            self._pools.pop("cached", None)  # no graph left in it: its memory can go

    def _drop_private(self, token: Any) -> None:
        """A cache's own buffers were (re)allocated: graphs on older private buffers are stale."""
        if self._private_token == token:
            return
        for k in [k for k in self._graphs if k[0] != "full" and not _on_store(k)]:
            del self._graphs[k]
        self._seen = {k: n for k, n in self._seen.items() if k[0] == "full" or _on_store(k)}
        self._pools.pop("private", None)  # the dropped graphs' memory goes with their pool
        self._private_token = token

    # ---- capture --------------------------------------------------------------------------
    def _capture(self, key: tuple, input_ids, positions, cache, attention_mask) -> _Captured:
        """Capture the model's body (``hidden_states``) for this key; the LM head stays eager."""
        ids, pos = input_ids.clone(), positions.clone()
        mask = attention_mask.clone() if attention_mask is not None else None
        idx = key_mask = write = None
        if cache is not None:
            idx = cache.graph_index()
            if idx is not None:
                idx = idx.clone()
                write = getattr(cache, "graph_write_index", lambda: None)()
                write = write.clone() if write is not None else None
                cache.bind_index(idx, write)
            key_mask = getattr(cache, "graph_key_mask", lambda: None)()
            if key_mask is not None:
                key_mask = key_mask.clone()
                cache.bind_key_mask(key_mask)
        kind = "full" if key[0] == "full" else ("cached" if _on_store(key) else "private")
        graph, out = self._record(self.model.hidden_states, (ids, pos, cache, mask), kind)
        entry = _Captured(graph, ids, pos, mask, idx, key_mask, write, out)
        self._graphs[key] = entry
        self.captures += 1
        if kind == "full":
            full = [k for k in self._graphs if k[0] == "full"]
            for k in full[: max(0, len(full) - self.full_shapes)]:
                del self._graphs[k]
                self._seen.pop(k, None)
        return entry

    def _record(self, body: Callable[..., torch.Tensor], args: tuple, pool_name: str) -> tuple[Any, torch.Tensor]:
        """Capture ``body(*args)`` (static tensors only) as a CUDA graph, replay it once, and
        return (graph, output). Tests stand in a recorder that re-runs the body on replay."""
        if pool_name not in self._pools:
            self._pools[pool_name] = torch.cuda.graph_pool_handle()
        with graph_capture():  # the graph's own SDPA choice (set_graph_attention_backends), if any
            return capture_graph(lambda: body(*args), self._pools[pool_name])


def _on_store(key: tuple) -> bool:
    sig = key[0]
    return isinstance(sig, tuple) and bool(sig) and isinstance(sig[-1], tuple) and sig[-1][:1] == ("store",)
