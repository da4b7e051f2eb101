"""A Hugging Face Llama-architecture causal LM as speculative decoding calls it.

:class:`CausalLM` runs our own Llama forward (:class:`~paradecode.models.llama.LlamaLM`, on the
Hugging Face model's own weights) against a :class:`~paradecode.caches.static_kv.StaticKVCache`:
``lm(input_ids, cache=, num_logits=) -> logits``, the position ids coming from the cache's
per-row lengths. On a GPU (``graphs=True``) each forward shape that repeats — the draft's
one- and two-token steps, the target's k + 1 token verification — is captured once as a
CUDA graph and replayed; the cache's lengths live in device tensors, so a replay serves any
row lengths. On a CPU, or with ``graphs=False``, the same forward runs eagerly.

The wrapper of a model (and its caches and graphs) is kept on the model object
(:meth:`CausalLM.of`), so repeated ``paradecode.sample`` calls reuse them.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import nn

from ..caches.static_kv import StaticKVCache
from ..models.graphs import capture_graph
from ..models.llama import LlamaLM

__all__ = ["CausalLM", "vocab_size", "greedy_decode", "COMPILE_MODES", "check_compile_mode"]

_STASH = "_paradecode_causal_lm"


LENGTH_BUCKET = 64


def bucket_length(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`LENGTH_BUCKET`: the length of kept caches and
    buffers, so that nearby requests share them (and the graphs recorded on them)."""
    return -(-n // LENGTH_BUCKET) * LENGTH_BUCKET


def vocab_size(model: nn.Module) -> int:
    """Rows of the LM head: the size of the distribution the model predicts."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


class CausalLM:
    """``(input_ids, cache=, num_logits=) -> logits (B, num_logits, out_size)``.

    Args:
        hf_model: a Llama-architecture ``AutoModelForCausalLM`` (see
            :func:`paradecode.models.llama.check_supported`).
        keep_ids: VocabTrim's kept token ids: the head covers only those (logits in that order).
        graphs: replay repeated CUDA forwards as graphs (ignored on a CPU).
        max_graphs: cap on captured shapes; past it, new shapes run eagerly.
        fuse_projections: joined q/k/v and gate/up matmuls, one RoPE call and copy-free GQA
            (:class:`~paradecode.models.llama.LlamaLM`; rebinds ``hf_model``'s projection weights
            as views of the joined ones, no extra memory).
        compile_mode: ``torch.compile`` mode of the forwards that are captured as graphs
            (``"default"`` or ``"max-autotune-no-cudagraphs"``; None: eager kernels). A whole
            forward compiled at once lets the compiler fuse across the elementwise kernels'
            boundaries (and, with max-autotune, pick its own matmul kernels with the elementwise
            work folded in); at batch 1 a forward is launch-bound, so fewer kernels is the point.
            Each captured shape compiles once (minutes on a GPU, not counted in a replay).
        attention: ``"sdpa"`` or ``"triton"`` (RoPE, the cache write and attention in one kernel
            per layer; needs ``fuse_projections`` and a CUDA GPU): see
            :func:`~paradecode.models.llama.check_attention`.
    """

    def __init__(self, hf_model: nn.Module, keep_ids: Optional[torch.Tensor] = None, graphs: bool = True,
                 max_graphs: int = 32, fuse_projections: bool = False, compile_mode: Optional[str] = None,
                 compile_backend: str = "inductor", attention: str = "sdpa") -> None:
        self.lm = LlamaLM(hf_model, keep_ids, fuse_projections=fuse_projections, attention=attention)
        self.compile_mode = check_compile_mode(compile_mode)
        self._compile_backend = compile_backend
        self._compiled: dict[str, Any] = {}
        self.hf_model = hf_model
        self._source = hf_model.lm_head.weight.data_ptr()  # a copied or moved model gets a new wrapper
        self.config = hf_model.config
        self.vocab_size = self.lm.vocab_size
        self.keep_ids = self.lm.keep_ids
        self.graphs = graphs
        self.max_graphs = max_graphs
        self._caches: dict[tuple, StaticKVCache] = {}
        self._workspaces: dict[tuple, Any] = {}
        self._seen: dict[tuple, int] = {}
        self._graphs: dict[tuple, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._pool: Any = None
        self.captures = 0
        self.replays = 0
        self.graph_error: Optional[str] = None

    @classmethod
    def of(cls, hf_model: nn.Module, keep_ids: Optional[torch.Tensor] = None,
           fuse_projections: bool = False, compile_mode: Optional[str] = None, attention: str = "sdpa") -> "CausalLM":
        """The wrapper kept on ``hf_model`` for these ``keep_ids``, ``fuse_projections``,
        ``compile_mode`` and ``attention`` (made on first use), so caches and captured graphs survive from one
        ``sample`` call to the next. A copy of the model (``copy.deepcopy``) or a model moved to
        another device gets a fresh one; so does a fused wrapper whose joined weights went stale
        (the model was moved)."""
        stash = hf_model.__dict__.setdefault(_STASH, {})
        key = (None if keep_ids is None else hash(keep_ids.cpu().numpy().tobytes()), bool(fuse_projections), compile_mode,
               attention)
        lm = stash.get(key)
        stale = lm is None or lm.hf_model is not hf_model or lm._source != hf_model.lm_head.weight.data_ptr()
        stale = stale or (fuse_projections and not lm.lm.fused)
        if stale or (keep_ids is not None and not torch.equal(lm.keep_ids.cpu(), keep_ids.cpu())):
            lm = stash[key] = cls(hf_model, keep_ids, fuse_projections=fuse_projections, compile_mode=compile_mode,
                                  attention=attention)
        return lm

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def out_size(self) -> int:
        return self.lm.out_size

    def cache(self, batch: int, max_len: int, role: str = "") -> StaticKVCache:
        """An empty cache of ``batch`` rows for ``role`` (one model may be both target and draft),
        reused across calls so graphs captured on it stay valid. Lengths are rounded up to a
        multiple of 64 so nearby requests share one cache."""
        max_len = bucket_length(max_len)
        key = (role, batch, max_len)
        with torch.inference_mode(False):  # plain tensors: resettable in and out of inference mode
            cache = self._caches.get(key)
            if cache is None:
                cache = self._caches[key] = StaticKVCache.for_model(self.lm, batch, max_len)
            cache.length.zero_()
            cache.start.zero_()
        return cache

    def workspace(self, key: tuple, make: Any) -> Any:
        """Device buffers kept with this wrapper under ``key`` (``make()`` on first use), so a
        strategy's graphs recorded on them replay in later generations; the four most recently
        used are kept."""
        item = self._workspaces.pop(key, None)
        if item is None:
            with torch.inference_mode(False):
                item = make()
        self._workspaces[key] = item
        while len(self._workspaces) > 4:
            self._workspaces.pop(next(iter(self._workspaces)))
        return item

    def warmed(self, cache: StaticKVCache, tokens: int, num_logits: int) -> bool:
        """Whether a forward of this shape on ``cache`` has run as a graph: compiled, autotuned
        and captured, so recording it inside a larger graph compiles and tunes nothing."""
        return (id(cache), tokens, num_logits) in self._graphs

    def inline(self, input_ids: torch.Tensor, cache: StaticKVCache, num_logits: int = 1) -> torch.Tensor:
        """The forward a capture records, run directly: inside a larger graph being recorded
        (:mod:`.step_graph`) its kernels join that graph."""
        T = input_ids.shape[1]
        return self._captured_forward()(input_ids, cache.positions(T), cache, num_logits)

    def _graphable(self, input_ids: torch.Tensor) -> bool:
        return self.graphs and input_ids.is_cuda and self.graph_error is None

    def _captured_forward(self) -> Any:
        """The forward a capture records: the model's current path (:meth:`LlamaLM.path`),
        compiled whole when ``compile_mode`` is set (no dynamic shapes: one compile per captured
        shape; a break in the graph raises, so the capture falls back to eager with a warning).
        The eager path (a CPU, a shape's first occurrence) never compiles."""
        fwd = self.lm.path()
        if self.compile_mode is None:
            return fwd
        name = fwd.__name__
        if name not in self._compiled:
            self._compiled[name] = torch.compile(fwd, mode=None if self.compile_mode == "default" else self.compile_mode,
                                                 dynamic=False, fullgraph=True, backend=self._compile_backend)
        return self._compiled[name]

    def __call__(self, input_ids: torch.Tensor, cache: StaticKVCache, num_logits: int = 1) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > cache.max_len:
            raise ValueError(f"a forward of {T} tokens does not fit a cache of {cache.max_len} slots.")
        if not self._graphable(input_ids):
            return self.lm(input_ids, cache.positions(T), cache, num_logits)
        key = (id(cache), T, num_logits)
        entry = self._graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
            if seen < 1 or len(self._graphs) >= self.max_graphs:  # capture shapes that repeat
                return self.lm(input_ids, cache.positions(T), cache, num_logits)
            ids = input_ids.clone()
            if self._pool is None and input_ids.is_cuda:
                self._pool = torch.cuda.graph_pool_handle()
            try:
                fwd = self._captured_forward()
                graph, out = _capture(lambda: fwd(ids, cache.positions(T), cache, num_logits), self._pool)
            except RuntimeError as err:  # never capture again; the eager forward gives the same result
                self.graph_error = f"{type(err).__name__}: {err}"
                warnings.warn(f"CUDA graph capture failed, running eagerly: {self.graph_error}", RuntimeWarning)
                return self.lm(input_ids, cache.positions(T), cache, num_logits)
            self._graphs[key] = (graph, ids, out)
            self.captures += 1
            return out.clone()  # capture_graph ran it once
        graph, ids, out = entry
        ids.copy_(input_ids)
        graph.replay()
        self.replays += 1
        return out.clone()  # the next replay overwrites ``out``


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: Optional[str]) -> Optional[str]:
    """``mode`` if it is one of :data:`COMPILE_MODES` or None; a clear error otherwise (the
    modes that capture CUDA graphs themselves would capture inside our capture)."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(
            f"compile_mode must be None or one of {COMPILE_MODES}, got {mode!r}; speculative decoding captures its "
            "own CUDA graphs, so torch.compile's graph-capturing modes ('reduce-overhead', 'max-autotune') do not apply."
        )
    return mode


def _capture(fn: Any, pool: Any) -> tuple[Any, Any]:
    """The capture this module uses (a seam: tests replace it with an eager stand-in)."""
    return capture_graph(fn, pool)


def greedy_decode(lm: CausalLM, prompt_ids: torch.Tensor, max_new_tokens: int, cuda_graphs: bool = True) -> torch.Tensor:
    """The target alone: greedy decoding of ``prompt_ids`` (B, P; no padding), one token per
    forward, with the same static cache and graphs as speculative decoding and no host sync
    until the end (no EOS stop: exactly ``max_new_tokens`` tokens). Returns (B, max_new_tokens).
    """
    B, P = prompt_ids.shape
    lm.graphs = cuda_graphs
    cache = lm.cache(B, P + max_new_tokens + 1)
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=prompt_ids.device)
    with torch.inference_mode():
        ids = prompt_ids
        for i in range(max_new_tokens):
            nxt = lm(ids, cache=cache, num_logits=1)[:, -1].argmax(-1)
            cache.advance(ids.shape[1])
            out[:, i] = nxt
            ids = nxt[:, None]
    return out
