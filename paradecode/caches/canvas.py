"""Key/value caching over a diffusion canvas: the mechanism every dLLM cache policy shares.

A policy only decides, per step and row, which canvas positions are *recomputed* (fed to the
model as queries, their fresh keys/values written into the cache); every other position's
keys/values are reused from the cache. :class:`CanvasKVCache` does the rest:

* per layer it holds the keys/values of the whole canvas, ``(rows, kv_heads, L + 1, head_dim)``
  (RoPE already applied at the true positions, so a reused key is exactly the key computed
  when its position was last fed; slot ``L`` is a trash slot for padding, never attended);
* :meth:`CanvasKVCache.forward` plans the feed from the step's
  :class:`~paradecode.interfaces.CanvasRequest` (the policy never sees a strategy or its
  state): the fed tokens, their true positions, and ``logits_range`` covering the fed
  positions of the request's window (each row's block, or the whole canvas), which come first
  in the feed; it then returns logits in the shape the request asked for. A window position that was not
  recomputed this step reports the logits of the last forward that computed it (what a cache
  reuses is, by definition, the state of its last computation).

A step where every row recomputes everything is a plain full forward (the strategy's request
unchanged) that also fills the cache. Rows that must refresh while others do not (rows in
different blocks of a batch) are fed everything in the same forward, so each row follows the
policy exactly as it would alone. A policy with ``split_refresh`` instead runs such a step as two
forwards: every row fed what the policy feeds it at a partial step, then the refreshing rows
alone over the whole canvas; the width of the first is the block's, not the canvas's (rows
that finish blocks at different steps, as under threshold rules, refresh at nearly every step).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional

import torch

from ..interfaces import CanvasRequest, Request, device_arange, staged_call, to_device
from ..models.decode_attention import CANVAS_MAX_TOKENS, canvas_attention, triton_available
from ..models.elementwise_triton import copy_rows_triton
from .base import CachePolicy

__all__ = ["CanvasKVCache", "CanvasPlan"]

_ALLOCATIONS = itertools.count(1)  # a process-unique token per cache-buffer allocation


@dataclass
class CanvasPlan:
    """What a forward recomputes: ``fed`` (rows, L) bool over canvas columns."""

    fed: torch.Tensor


class CanvasKVCache(CachePolicy):
    """Base of the dLLM cache policies; subclasses implement :meth:`recompute`."""

    families = ("dllm",)
    #: True when a step may skip positions of the strategy's window (dKV); the last logits of
    #: the window are then kept to answer for the skipped positions.
    may_skip_window: bool = False
    #: On CUDA, pad the fed positions of a partial step to a multiple of this many (0: no
    #: padding), with the window part padded to the whole window, so that policies whose fed
    #: set shrinks step by step or block by block (dKV, prefix) repeat a few shapes that CUDA
    #: graphs can replay instead of capturing a new one each time.
    graph_bucket: int = 0
    #: When some rows refresh and others do not, run the others' partial feed for every row and
    #: then one forward of the refreshing rows alone, instead of feeding every row the whole
    #: canvas (a policy whose window is fully fed at every partial step: Fast-dLLM's caches).
    split_refresh: bool = False
    #: Whether :meth:`prepare` is a function of the request alone (its :meth:`full_rows` and
    #: :meth:`recompute` keep no state), so a step may plan its successor's feed before it knows
    #: that successor will run (:meth:`stage_forward`). Off unless a policy says so: a policy
    #: that counts its plans would count one never run.
    plans_ahead: bool = False

    def __init__(self, config: Any) -> None:
        self.config = config
        self._k: list[Optional[torch.Tensor]] = []
        self._v: list[Optional[torch.Tensor]] = []
        self._rows: Optional[torch.Tensor] = None  # request rows the buffers hold (CPU)
        self._row_ids: list[int] = []  # the same, as Python ints
        self._logits: Optional[torch.Tensor] = None  # (R, W + 1, V) window logits
        self._wide = False  # the window is wider than a block: partial steps fill it from kept logits
        self._logit_rows: Optional[torch.Tensor] = None
        self._stats: dict[str, float] = {}
        self._held: Optional[tuple] = None  # (buffers' key, bytes held) for stats()
        # per-forward scratch
        self._idx: Optional[torch.Tensor] = None  # (R, T) fed canvas columns, L = padding
        self._contig: Optional[tuple[int, int]] = None  # shared contiguous feed [s, e)
        self._span: Optional[tuple[int, int]] = None  # that range's slots in the window (kept logits), also when padded or graphed
        self._key_mask: Optional[torch.Tensor] = None
        self._full = False
        self._L = 0
        self._R = 0
        self._token: Any = 0  # changes whenever the K/V buffers are (re)allocated
        self._store: Any = None  # optional K/V buffer store lent by a CUDA-graph wrapper
        self._shift = 0  # the model's logits_shift (Dream: 1, column i read from the output at i - 1)
        self._write: Optional[torch.Tensor] = None  # _idx with query-only columns sent to the trash slot
        self._refresh: Optional[tuple] = None  # (rows, Request, idx, key mask) a split step refreshes after its partial forward
        self._refresh_buffers: Optional[dict] = None  # during that refresh forward: its rows' own K/V buffers

    # ---- the policy's decision ---------------------------------------------------------------
    def recompute(self, canvas: CanvasRequest) -> torch.Tensor:
        """(len(rows), L) bool on the canvas device: positions fed this step."""
        raise NotImplementedError

    def recompute_range(self, canvas: CanvasRequest) -> Optional[list[tuple[int, int]]]:
        """Optional fast path: per row, ``(start, end)`` when each row's fed set is one column
        range (Python ints, known on the host: no device sync, no host op to test them)."""
        return None

    def full_rows(self, canvas: CanvasRequest) -> torch.Tensor:
        """(len(rows),) CPU bool: rows that refresh everything this step."""
        raise NotImplementedError

    def read_only(self, canvas: CanvasRequest) -> Optional[torch.Tensor]:
        """Optional (len(rows), L) bool: fed columns (a subset of :meth:`recompute`'s) that are
        queries only, their fresh keys/values not kept. On a shifted-logits model a window
        column's logits come from its predecessor, so a policy that refreshes the predecessor
        need not refresh the column itself (Elastic-Cache's Dream path). None: every fed
        column is kept."""
        return None

    # ---- loop side ---------------------------------------------------------------------------
    def forward(self, model: Any, request: Request) -> Any:
        """Run the step's forward with this cache: plan the feed, call the model, and give
        back logits in the shape the request asked for."""
        return self._planned_forward(model, request)()

    def stage_forward(self, model: Any, request: Request) -> Callable[[], Any]:
        """:meth:`forward` in two halves (``ModelCaller.stage_forward``): the feed is planned
        now (and a model with its own ``stage_forward``, a graph wrapper, queues its inputs);
        the returned call runs it. Only for policies whose plan is a function of the request
        (``plans_ahead``): planning a forward that never runs must change nothing the next
        plan reads. Policies that count forwards in their plan plan it at the call."""
        if not self.plans_ahead:
            return partial(self.forward, model, request)
        return self._planned_forward(model, request)

    def _planned_forward(self, model: Any, request: Request) -> Callable[[], Any]:
        """The feed of ``request`` planned, and the call that runs it. The figures of the last
        forward run stay the ones :meth:`stats` reports until this one runs."""
        if request.canvas is None:
            raise ValueError(f"cache policy {self.name!r} needs a diffusion-LM canvas request; pass cache=None.")
        shift, kept = self._shift, self._stats
        try:
            self._shift = int(getattr(model, "logits_shift", 0))
            feed = self.prepare(request)
            planned = (self._shift, self._stats)
        finally:  # the last forward run keeps its figures until this one runs, even if planning fails
            self._shift, self._stats = shift, kept
        forward = staged_call(model, feed.inputs, **feed.kwargs)

        def run() -> Any:
            self._shift, self._stats = planned
            out = self.restore(forward(), feed)
            if self._refresh is not None:
                out = self._run_refresh(model, out)
            return out

        return run

    def prepare(self, request: Request) -> Request:
        """The request to run: the fed positions only, with ``cache=self`` attached."""
        canvas = request.canvas
        rows = canvas.rows
        x: torch.Tensor = request.inputs
        R, L = x.shape
        self._R = R
        reps = canvas.reps  # 2 with classifier-free guidance (cond rows, then uncond rows)
        self._L = L
        kwargs = dict(request.kwargs)
        am = kwargs.pop("attention_mask", None)
        kwargs.pop("positions", None)
        positions = canvas.positions
        if reps == 1:
            req_rows = rows
        else:
            req_rows = rows.repeat(reps) + torch.arange(reps).repeat_interleave(len(rows)) * canvas.batch_size
        # The plan's tests run on Python values read once from the small host tensors (rows,
        # refreshing rows, block starts): a step inside a block costs no host op per test.
        full = self.full_rows(canvas)
        refresh = full.tolist()
        row_ids = req_rows.tolist()
        have = bool(self._k) and self._k[0] is not None and self._k[0].shape[2] == L + 1
        if self._rows is None or not have:
            have = False
        elif self._row_ids != row_ids:
            have = self._compact(req_rows)
        if not have:
            full, refresh = torch.ones_like(full), [True] * len(refresh)
        self._rows, self._row_ids = req_rows, row_ids
        # The request's window: each row's current block, or the whole canvas.
        W = canvas.window_size
        win_start = canvas.window_start.repeat(reps) if reps > 1 else canvas.window_start
        self._W, self._reps, self._win_start = W, reps, win_start
        # A window wider than the block (a rule that reads beyond it: the canvas from the first
        # block on) is not fed whole at partial steps: its other columns keep their last logits.
        self._wide = W > canvas.block_length
        self._full = all(refresh)
        self._idx, self._contig, self._span, self._key_mask, self._write = None, None, None, None, None
        self._refresh = None
        if not self._full and any(refresh) and self._split_pays(canvas, refresh, W, L):
            self._refresh = self._refresh_request(x, positions, am, full.repeat(reps), win_start, W, L)
            # the partial forward plans every row as not refreshing
            full, refresh = torch.zeros_like(full), [False] * len(refresh)
        if self._full:
            # A plain forward over the whole canvas fills the cache; the request is unchanged.
            kwargs.update(positions=positions, cache=self)
            if am is not None:
                kwargs["attention_mask"] = am
            self._stats = {"reuse_rate": 0.0}
            return Request(x, kwargs=kwargs, rows=request.rows)

        bucket = self._bucket(x)
        # A shifted-logits model also needs each window column's predecessor fed: no range fast path.
        ranges = None if any(refresh) or self._shift else self.recompute_range(canvas)
        spans = None if ranges is None else [(min(a, L), min(b, L)) for a, b in ranges]  # LLaDA2: the canvas up to the block
        if spans is not None and spans == spans[:1] * len(spans):
            s, e = spans[0]
            ws = canvas.window_start.tolist()[0]
            if self._wide and ws <= s and e <= ws + W:  # the fed columns, inside the window
                t_win, complete = e - s, e - s == W
            elif s == ws and e >= ws + W:
                t_win, complete = W, True
            else:
                ranges = None
            if ranges is not None:
                idx = device_arange(s, e, x.device).expand(R, e - s)
                self._contig, self._span = (s, e), (s - ws, e - ws)
                span_bucket = self._span_bucket(x, e - s, canvas.block_length)
                if span_bucket and (e - s) % span_bucket:  # pad to the trash slot (gathered feed, scattered writes)
                    pad = idx.new_full((R, span_bucket - (e - s) % span_bucket), L)
                    idx, self._contig = torch.cat([idx, pad], dim=1), None
                self._complete, self._t_win = complete, t_win
                self._stats = {"reuse_rate": 1.0 - (e - s) / L}
        else:
            ranges = None
        if ranges is None:
            fed = self.recompute(canvas)[:, :L]
            fed |= to_device(full, fed.device)[:, None]  # rows fed whole (a boolean-mask write would sync)
            fed = fed.repeat(reps, 1)
            col = torch.arange(L, device=x.device)[None, :]
            ws = to_device(win_start, x.device)[:, None]
            win = (col >= ws) & (col < ws + W)
            extra = None
            if self._shift:
                # The predecessors of fed window columns are fed as queries only: their outputs
                # give the shifted logits; their cached keys/values stay as the policy left them.
                extra = torch.zeros_like(fed)
                extra[:, : L - self._shift] = (fed & win)[:, self._shift :] & ~fed[:, : L - self._shift]
                fed = fed | extra
            ro = self.read_only(canvas)
            if ro is not None:
                ro = ro[:, :L].to(fed.device) & ~to_device(full, fed.device)[:, None]
                extra = ro.repeat(reps, 1) if extra is None else extra | ro.repeat(reps, 1)
            # one read of the device for the plan: the widest row of each part, whether every
            # window column is fed, and the reuse rate
            n_win = (fed & win).sum(-1)
            plan = [n_win.max(), (fed & ~win).sum(-1).max(), (n_win == W).all(), fed.sum().double() / fed.numel()]
            most_win, most_other, complete, fed_share = torch.stack([v.double() for v in plan]).tolist()
            idx, t_win = self._order(fed, win, L, (int(most_win), int(most_other)),
                                     W if bucket and not self._wide else 0, bucket)
            if extra is not None:
                read_only = extra.gather(1, idx.clamp(max=L - 1)) & (idx < L)
                self._write = torch.where(read_only, L, idx)
            self._complete, self._t_win = bool(complete), t_win
            self._stats = {"reuse_rate": 1.0 - fed_share}
        # Padding of the feed needs no key mask: padded queries write the trash slot L, which
        # the keys (sliced to :L) leave out. Only real padding of the canvas (left-padded
        # prompts) does; the mask then also hides the trash slot.
        if am is not None:
            self._key_mask = _padding_key_mask(am, L)
        if self._refresh is not None:
            if not (self._complete and self._t_win == W):
                raise RuntimeError(f"cache policy {self.name!r} sets split_refresh but skips window positions at a partial step.")
            n_full = len(self._refresh[0])
            self._stats = {"reuse_rate": (1.0 - n_full / R) * self._stats["reuse_rate"]}
        self._idx = idx
        if self._contig is not None:
            s, e = self._contig
            feed_tokens, feed_pos = x[:, s:e], positions[:, s:e]
        else:
            safe = idx.clamp(max=L - 1)
            feed_tokens = torch.where(idx < L, x.gather(1, safe), x[:, :1])
            feed_pos = torch.where(idx < L, positions.gather(1, safe), 0)
        kwargs.pop("logits_range", None)
        kwargs.update(positions=feed_pos, cache=self, logits_range=(0, self._t_win))
        if self._shift:
            kwargs["logits_from"] = self._predecessors(idx, L)
        return Request(feed_tokens, kwargs=kwargs, rows=request.rows)

    def restore(self, output: Any, request: Request) -> Any:
        W = self._W
        if self._full:
            # Full forward: the output is what the strategy asked for.
            if self.may_skip_window or self._wide:
                self._store_logits(self._window_of(output), W)
            return output
        if self._complete and self._t_win == W:
            if self.may_skip_window or self._wide:
                self._store_logits(output, W)
            return output  # the window, fed in column order
        if self._logits is None or self._logits.shape[0] != output.shape[0] or self._logits.shape[1] != W + 1:
            raise RuntimeError(
                f"cache policy {self.name!r} skipped window positions without logits to reuse; "
                "this is a bug in the policy (its window must be fully fed at refresh steps)."
            )
        if self._span is not None:  # one column range inside a wide window: its slots a..b - 1
            a, b = self._span
            self._logits[:, a:b] = output
            return self._logits[:, :W]
        idx_win = self._idx[:, : self._t_win]
        slot = idx_win - to_device(self._win_start, idx_win.device)[:, None]
        slot = torch.where((idx_win < self._L) & (slot >= 0) & (slot < W), slot, W)
        V = output.shape[-1]
        self._logits.scatter_(1, slot[:, :, None].expand(-1, -1, V), output.to(self._logits.dtype))
        return self._logits[:, :W]

    # ---- model side --------------------------------------------------------------------------
    def begin_forward(self, positions: torch.Tensor) -> None:
        pass

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        L = self._L
        if len(self._k) <= layer:
            self._k.extend([None] * (layer + 1 - len(self._k)))
            self._v.extend([None] * (layer + 1 - len(self._v)))
        if self._full:
            kb, vb = self._k[layer], self._v[layer]
            shape = (k.shape[0], k.shape[1], L + 1, k.shape[3])
            if kb is None or kb.shape != shape or kb.dtype != k.dtype or kb.device != k.device:
                kb, vb = self._allocate(layer, shape, k), self._allocate(layer, (*shape[:3], v.shape[3]), v, "v")
                self._k[layer], self._v[layer] = kb, vb
            _write_rows(kb[:, :, :L], k)
            _write_rows(vb[:, :, :L], v)
            return k, v, attn_mask
        if self._refresh_buffers is not None:
            return self._refresh_update(layer, k, v)
        kb, vb = self._k[layer], self._v[layer]
        if self._contig is not None:
            s, e = self._contig
            _write_rows(kb[:, :, s:e], k)
            _write_rows(vb[:, :, s:e], v)
        else:
            write = self._idx if self._write is None else self._write
            _write_rows(kb, k, write)
            _write_rows(vb, v, write)
        if self._key_mask is None:
            return kb[:, :, :L], vb[:, :, :L], None
        return kb, vb, self._key_mask

    def end_forward(self) -> None:
        pass

    def can_attend(self, layer: int, T: int) -> bool:
        """Whether :meth:`attend` serves this layer's forward: a partial step (fed tokens against
        kept buffers) written by this class's own :meth:`update`, at most
        :data:`~paradecode.models.decode_attention.CANVAS_MAX_TOKENS` fed per row, where Triton runs."""
        if self._full or self._refresh_buffers is not None or self._idx is None or T > CANVAS_MAX_TOKENS:
            return False
        if getattr(self, "layer_hooks", False) or type(self).update is not CanvasKVCache.update:
            return False
        kb = self._k[layer] if layer < len(self._k) else None
        return kb is not None and triton_available(kb.device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor, n_heads: int, scale: float) -> torch.Tensor:
        """What :meth:`update` and attention over the canvas do, in Triton kernels
        (:func:`~paradecode.models.decode_attention.canvas_attention`): q/k/v before RoPE (B, T, .),
        float32 cos/sin; returns (B, T, n_heads * head_dim). Only where :meth:`can_attend`."""
        kb, vb = self._k[layer], self._v[layer]
        write = self._idx if self._write is None else self._write
        return canvas_attention(q, k, v, cos, sin, kb, vb, write, self._key_mask, n_heads, kb.shape[1], kb.shape[3], scale)

    # ---- CUDA graphs (paradecode.models.graphs.CUDAGraphModel) ----------------------------------
    def graph_signature(self) -> Optional[tuple]:
        """A key under which this forward can be captured and replayed as a CUDA graph, or None.

        Forwards without key masks qualify (fixed shapes, static buffers): partial ones, and
        refreshes into existing buffers. The allocation token of the buffers is part of the
        key: a graph never outlives its buffers.
        """
        if self._refresh_buffers is not None:
            return None  # a split step's refresh of a few rows: eager (its row count varies step by step)
        if self._full and (not self._k or self._k[0] is None) and self._store is not None:
            self._adopt_store_buffers()
        if not self._k or self._k[0] is None:
            return None
        if self._full:
            # A refresh writes every column of buffers that already exist for this canvas and
            # these rows (a first forward or a new row set allocates them: eager).
            if any(t is None or t.shape[0] != self._R or t.shape[2] != self._L + 1 for t in self._k):
                return None
            return (type(self).__name__, "full", self._token)
        if self._idx is None:
            return None
        masked = None if self._key_mask is None else tuple(self._key_mask.shape)
        # A separate write index (query-only rows, e.g. a shifted model's predecessors) is a
        # static input of its own: graphs with and without one are not interchangeable.
        return (type(self).__name__, tuple(self._idx.shape), masked, self._write is not None, self._token)

    def graph_index(self) -> Optional[torch.Tensor]:
        """The (rows, T) fed columns this forward writes into the cache (None: a refresh)."""
        return self._idx

    def graph_write_index(self) -> Optional[torch.Tensor]:
        """The (rows, T) columns the fed rows' keys/values are written to when some are query
        only (sent to the trash slot ``L``); None: each fed row writes its own column."""
        return self._write

    def bind_index(self, idx: torch.Tensor, write: Optional[torch.Tensor] = None) -> None:
        """Read the fed columns from ``idx`` and the write index from ``write`` (a captured
        graph's static tensors) from now on."""
        self._idx, self._contig, self._write = idx, None, write

    def graph_key_mask(self) -> Optional[torch.Tensor]:
        """The key-padding mask a partial forward of a padded batch attends with (None: no padding)."""
        return self._key_mask if not self._full else None

    def bind_key_mask(self, mask: torch.Tensor) -> None:
        """Attend with ``mask`` (a captured graph's static tensor) in this forward."""
        self._key_mask = mask

    def use_buffer_store(self, store: Any) -> None:
        """Take K/V buffers from ``store`` (``zeros(key, shape, like) -> (tensor, token)``), so that
        successive caches of the same shapes share buffers and a graph wrapper's graphs captured
        on one generation replay in the next. Buffers already held are kept until reallocated."""
        self._store = store

    def stats(self) -> dict[str, float]:
        # The loop asks after every step; the bytes change only when buffers are (re)allocated
        # (a new allocation token, or new window logits), so they are summed then, not per step.
        logits = self._logits
        key = (self._token, self._R, len(self._k), None if logits is None else (id(logits), tuple(logits.shape)))
        if self._held is None or self._held[0] != key:
            held = sum(t.numel() * t.element_size() for t in self._k + self._v if t is not None)
            if logits is not None:
                held += logits.numel() * logits.element_size()
            self._held = (key, held)
        return {"cache_bytes": float(self._held[1]), **self._stats}

    # ---- split refresh (rows that refresh while others do not) --------------------------------------
    #: A split step runs when its two forwards feed at most this share of the mixed step's
    #: tokens (rows x canvas): the second forward has a fixed cost of its own (launches).
    split_max_share: float = 0.8

    def _split_pays(self, canvas: CanvasRequest, refresh: list[bool], W: int, L: int) -> bool:
        """Whether a step where some rows refresh runs as two forwards (see ``split_refresh``):
        the policy opts in, its partial steps need no kept window logits (``may_skip_window``, a
        window that is the whole canvas) nor a shifted model's predecessors, its partial feed
        is known on the host (``recompute_range``), and the split feeds fewer tokens: the partial
        forward is as wide as its widest row (prefix: the block + suffix of the row in the
        earliest block), plus the refreshing rows' canvas."""
        if not self.split_refresh or self.may_skip_window or W > canvas.block_length or self._shift:
            return False
        ranges = self.recompute_range(canvas)
        if ranges is None:
            return False
        width = max(min(b, L) - min(a, L) for a, b in ranges)
        n, n_full = len(refresh), sum(refresh)
        return n * width + n_full * L <= self.split_max_share * n * L

    def _refresh_request(self, x: torch.Tensor, positions: torch.Tensor, am: Optional[torch.Tensor],
                         full: torch.Tensor, win_start: torch.Tensor, W: int, L: int) -> tuple:
        """(feed rows on the device, Request, fed columns, key mask) of the refresh forward: the
        refreshing rows' whole canvas, fed as a mixed step feeds them (window columns first, so
        only the window's logits are computed)."""
        sub = torch.nonzero(full).flatten()  # CPU: positions of the refreshing rows in the feed
        dev = to_device(sub, x.device)
        col = torch.arange(L, device=x.device)[None, :]
        ws = to_device(win_start[sub], x.device)[:, None]
        win = (col >= ws) & (col < ws + W)
        # every column fed: a row's window part is its window inside the canvas (host values)
        in_win = [min(w + W, L) - min(w, L) for w in win_start[sub].tolist()]
        fed = torch.ones(len(sub), L, dtype=torch.bool, device=x.device)
        idx, t_win = self._order(fed, win, L, (max(in_win), L - min(in_win)))
        tokens, pos = x[dev].gather(1, idx), positions[dev].gather(1, idx)
        key_mask = None if am is None else _padding_key_mask(am[dev], L)
        kwargs = {"positions": pos, "cache": self, "logits_range": (0, t_win)}
        return dev, Request(tokens, kwargs=kwargs), idx, key_mask

    def _run_refresh(self, model: Any, out: torch.Tensor) -> torch.Tensor:
        """The refresh forward of a split step: its rows' window logits replace theirs in ``out``
        (the partial forward's) and their K/V buffers are rewritten whole."""
        rows, feed, idx, key_mask = self._refresh
        self._refresh = None
        self._refresh_buffers = {"rows": rows, "idx": idx, "key_mask": key_mask}
        try:
            logits = model(feed.inputs, **feed.kwargs)
        finally:
            self._refresh_buffers = None
        return out.index_copy(0, rows, logits.to(out.dtype))

    def _refresh_update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple:
        """``update`` in a split step's refresh forward: its rows' keys/values in buffers of their
        own (canvas order, trash slot last), copied into the cache's rows; attention as in a mixed step."""
        r = self._refresh_buffers
        L, idx = self._L, r["idx"]
        kb, vb = self._k[layer], self._v[layer]
        kr = k.new_zeros(k.shape[0], k.shape[1], L + 1, k.shape[3])
        vr = v.new_zeros(v.shape[0], v.shape[1], L + 1, v.shape[3])
        kr.scatter_(2, idx[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3]), k)
        vr.scatter_(2, idx[:, None, :, None].expand(-1, v.shape[1], -1, v.shape[3]), v)
        kb.index_copy_(0, r["rows"], kr)
        vb.index_copy_(0, r["rows"], vr)
        if r["key_mask"] is None:
            return kr[:, :, :L], vr[:, :, :L], None
        return kr, vr, r["key_mask"]

    # ---- helpers -----------------------------------------------------------------------------
    def _allocate(self, layer: int, shape: tuple, like: torch.Tensor, which: str = "k") -> torch.Tensor:
        """A zeroed K/V buffer for ``layer`` (the store's, when one is lent) and the new allocation token."""
        if self._store is None:
            if which == "k":
                self._token = next(_ALLOCATIONS)
            return like.new_zeros(shape)
        buf, token = self._store.zeros((layer, which), tuple(shape), like)
        if which == "k":
            self._token = token
        return buf

    def _adopt_store_buffers(self) -> None:
        """A first refresh with a lent store: take its buffers for this canvas (same rows and
        length) when an earlier cache left them, so that this refresh replays a graph too."""
        found = self._store.find(lambda shape: shape[0] == self._R and shape[2] == self._L + 1)
        if found is not None:
            self._k, self._v, self._token = found

    def _bucket(self, x: torch.Tensor) -> int:
        """Padding multiple for this forward: only on CUDA, where graphs can use it."""
        return self.graph_bucket if x.is_cuda else 0

    def _span_bucket(self, x: torch.Tensor, width: int, block_length: int) -> int:
        """Padding multiple of a feed that is one contiguous span of ``width`` columns in every
        row (the block, or block and suffix); :meth:`_bucket` unless a policy knows better."""
        return self._bucket(x)

    def _window_of(self, output: torch.Tensor) -> torch.Tensor:
        """The window's logits from a full forward's output (block range or whole canvas)."""
        W = self._W
        if output.shape[1] == W:
            return output
        cols = to_device(self._win_start, output.device)[:, None] + torch.arange(W, device=output.device)[None, :]
        return output[torch.arange(output.shape[0], device=output.device)[:, None], cols]

    def _store_logits(self, window_logits: torch.Tensor, W: int) -> None:
        R, _, V = window_logits.shape
        if self._logits is None or self._logits.shape != (R, W + 1, V) or self._logits.dtype != window_logits.dtype:
            self._logits = window_logits.new_empty(R, W + 1, V)
        self._logits[:, :W] = window_logits

    def _predecessors(self, idx: torch.Tensor, L: int) -> torch.Tensor:
        """(R, t_win) feed index of the column ``shift`` left of each fed window column (a
        shifted-logits model reads a column's prediction there); column 0 keeps its own."""
        R, T = idx.shape
        here = torch.arange(T, device=idx.device).expand(R, T)
        where = torch.zeros(R, L + 1, dtype=torch.long, device=idx.device).scatter_(1, idx, here)
        win = idx[:, : self._t_win]
        prev = (win - self._shift).clamp(0, L)
        return torch.where(win >= self._shift, where.gather(1, prev), here[:, : self._t_win])

    def _order(
        self, fed: torch.Tensor, win: torch.Tensor, L: int, most: tuple[int, int], window_width: int = 0,
        bucket: int = 0,
    ) -> tuple[torch.Tensor, int]:
        """Feed order: each row's fed window columns (ascending), then its other fed columns;
        rows padded with the trash column ``L``. ``most``: the most fed columns of a row inside
        and outside the window (read by the caller, in its one read of the device).
        ``window_width`` pads the window part to a fixed width and ``bucket`` the total to a
        multiple, so that the fed shapes repeat (CUDA graphs). Returns (idx, width of the window part)."""
        col = torch.arange(L, device=fed.device).expand_as(fed)
        t_a = max(most[0], window_width)
        t_b = most[1]
        if bucket:
            t_b = -(-(t_a + t_b) // bucket) * bucket - t_a

        def part(sel: torch.Tensor, width: int) -> torch.Tensor:
            cols = torch.where(sel, col, col + L).sort(-1).values[:, : min(width, L)]
            cols = torch.where(cols < L, cols, L)
            if width > cols.shape[1]:
                cols = torch.cat([cols, cols.new_full((cols.shape[0], width - cols.shape[1]), L)], dim=1)
            return cols

        return torch.cat([part(fed & win, t_a), part(fed & ~win, t_b)], dim=1), t_a

    def _compact(self, req_rows: torch.Tensor) -> bool:
        """Keep the buffers of rows still decoding; False when a row is new (refresh)."""
        pos = {r: i for i, r in enumerate(self._row_ids)}
        rows = req_rows.tolist()
        if any(r not in pos for r in rows):
            return False
        keep = to_device(torch.tensor([pos[r] for r in rows]), self._k[0].device)

        def kept(layer: int, t: Optional[torch.Tensor], which: str) -> Optional[torch.Tensor]:
            if t is None:
                return None
            out = self._allocate(layer, (len(keep), *t.shape[1:]), t, which)
            if out.data_ptr() == t.data_ptr():  # a store hands back the same buffer for a reorder
                return out.copy_(t.index_select(0, keep))
            return torch.index_select(t, 0, keep, out=out)

        self._k = [kept(i, t, "k") for i, t in enumerate(self._k)]
        self._v = [kept(i, t, "v") for i, t in enumerate(self._v)]
        if self._logits is not None:
            self._logits = self._logits.index_select(0, keep)
        return True


def _row_kernel_runs(t: torch.Tensor) -> bool:
    """Whether :func:`_write_rows` uses the Triton copy: on a GPU (tests force it under the interpreter)."""
    return t.is_cuda


def _write_rows(dst: torch.Tensor, src: torch.Tensor, index: Optional[torch.Tensor] = None) -> None:
    """``dst.copy_(src)`` for a forward's keys or values into the cache, or with ``index`` (rows,
    fed) the scatter of each fed position's row to its canvas slot: a transposing copy (heads
    interleaved in ``src``, apart in ``dst``), which the Triton kernel does at the copy rate and
    PyTorch's copy at ~1/3 of it, its scatter slower still, indexing per element
    (:func:`~paradecode.models.elementwise_triton.copy_rows_triton`)."""
    if _row_kernel_runs(dst) and copy_rows_triton(dst, src, index):
        return
    if index is None:
        dst.copy_(src)
    else:
        dst.scatter_(2, index[:, None, :, None].expand(-1, src.shape[1], -1, src.shape[3]), src)


def _padding_key_mask(am: torch.Tensor, L: int) -> torch.Tensor:
    """(rows, 1, 1, L + 1) keys a query may attend: the canvas's real (unpadded) positions, never
    the trash slot L that padded queries write."""
    key_valid = torch.zeros(am.shape[0], L + 1, dtype=torch.bool, device=am.device)
    key_valid[:, :L] = am.bool()
    return key_valid[:, None, None, :]
