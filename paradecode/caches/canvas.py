"""Key/value caching over a diffusion canvas: the mechanism every dLLM cache policy shares.

A policy only decides, per step and row, which canvas positions are *recomputed* (fed to the
model as queries, their fresh keys/values written into the cache); every other position's
keys/values are reused from the cache. :class:`CanvasKVCache` does the rest:

* per layer it holds the keys/values of the whole canvas, ``(rows, kv_heads, L + 1, head_dim)``
  (RoPE already applied at the true positions, so a reused key is exactly the key computed
  when its position was last fed; slot ``L`` is a trash slot for padding, never attended);
* ``prepare`` turns the recomputed sets into a model request: the fed tokens, their true
  positions, and ``logits_range`` covering the fed positions of the strategy's window (its
  current block, or the whole canvas for strategies with ``needs_full_logits``), which come
  first in the feed;
* ``restore`` returns logits in the shape the strategy expects. A window position that was not
  recomputed this step reports the logits of the last forward that computed it (what a cache
  reuses is, by definition, the state of its last computation).

A step where every row recomputes everything is a plain full forward (the strategy's request
unchanged) that also fills the cache. Rows that must refresh while others do not (rows in
different blocks of a batch) are fed everything in the same forward, so each row follows the
policy exactly as it would alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..loop import Request
from .base import CachePolicy

__all__ = ["CanvasKVCache", "CanvasPlan"]


@dataclass
class CanvasPlan:
    """What a forward recomputes: ``fed`` (rows, L) bool over canvas columns."""

    fed: torch.Tensor


class CanvasKVCache(CachePolicy):
    """Base of the dLLM cache policies; subclasses implement :meth:`recompute`."""

    role = "model"
    #: True when a step may skip positions of the strategy's window (dKV); the last logits of
    #: the window are then kept to answer for the skipped positions.
    may_skip_window: bool = False

    def __init__(self, config: Any) -> None:
        self.config = config
        self._strategy: Any = None
        self._k: list[Optional[torch.Tensor]] = []
        self._v: list[Optional[torch.Tensor]] = []
        self._rows: Optional[torch.Tensor] = None  # request rows the buffers hold (CPU)
        self._logits: Optional[torch.Tensor] = None  # (R, W + 1, V) window logits
        self._logit_rows: Optional[torch.Tensor] = None
        self._stats: dict[str, float] = {}
        # per-forward scratch
        self._idx: Optional[torch.Tensor] = None  # (R, T) fed canvas columns, L = padding
        self._contig: Optional[tuple[int, int]] = None  # shared contiguous feed [s, e)
        self._key_mask: Optional[torch.Tensor] = None
        self._full = False
        self._L = 0

    # ---- wiring ------------------------------------------------------------------------------
    def attach(self, strategy: Any, state: Any) -> None:
        """Called by ``paradecode.sample`` before the loop: check the strategy is a dLLM one."""
        from ..samplers.base import BlockDiffusionStrategy

        if not isinstance(strategy, BlockDiffusionStrategy):
            raise ValueError(
                f"cache policy {self.name!r} works with diffusion-LM strategies (block decoding); "
                f"strategy {strategy.name!r} is not one. Pass cache=None."
            )
        self._strategy = strategy

    # ---- the policy's decision ---------------------------------------------------------------
    def recompute(self, state: Any, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), L) bool on the canvas device: positions fed this step.

        A row whose mask is all True refreshes its whole cache.
        """
        raise NotImplementedError

    def full_rows(self, state: Any, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows),) CPU bool: rows that refresh everything this step."""
        raise NotImplementedError

    # ---- loop side ---------------------------------------------------------------------------
    def prepare(self, request: Request, state: Any) -> Request:
        if self._strategy is None:
            raise ValueError(f"cache policy {self.name!r} was not attached to a strategy; use paradecode.sample(..., cache=...).")
        rows: torch.Tensor = state.memo["_rows"]
        x: torch.Tensor = request.inputs
        R, L = x.shape
        reps = R // len(rows)  # 2 with classifier-free guidance (cond rows, then uncond rows)
        self._L = L
        kwargs = dict(request.kwargs)
        am = kwargs.pop("attention_mask", None)
        positions = (
            (am.long().cumsum(-1) - 1).clamp_min(0)
            if am is not None
            else torch.arange(L, device=x.device).expand(R, L)
        )
        req_rows = rows.repeat(reps) + torch.arange(reps).repeat_interleave(len(rows)) * state.batch_size
        full = self.full_rows(state, rows)
        have = self._rows is not None and self._k and self._k[0] is not None and self._k[0].shape[2] == L + 1
        if have and not torch.equal(self._rows, req_rows):
            have = self._compact(req_rows)
        if not have:
            full = torch.ones_like(full)
        self._rows = req_rows
        window = self._window(state, rows, L, x.device)  # (len(rows), L) bool or None
        self._full = bool(full.all())
        if self._full:
            # A plain forward over the whole canvas fills the cache; the request is unchanged.
            self._idx, self._contig, self._key_mask = None, None, None
            kwargs.update(positions=positions, cache=self)
            if am is not None:
                kwargs["attention_mask"] = am
            self._window_state = (window, None, reps)
            self._record_stats(torch.ones(R, dtype=torch.float64), L)
            return Request(x, kwargs=kwargs, role=request.role, rows=request.rows, ends_step=request.ends_step)

        fed = self.recompute(state, rows)
        fed[full.to(fed.device)] = True
        fed = fed.repeat(reps, 1)
        if window is None:
            win = torch.ones_like(fed)
        else:
            win = window.repeat(reps, 1)
        idx, n_win, t_win, pad = self._order(fed, win, L)
        self._idx = idx
        feed_tokens = torch.where(idx < L, x.gather(1, idx.clamp(max=L - 1)), x[:, :1])
        feed_pos = torch.where(idx < L, positions.gather(1, idx.clamp(max=L - 1)), 0)
        self._contig = None
        if not pad and R >= 1:
            first = idx[:1]
            s = int(first[0, 0])
            if bool((idx == first).all()) and bool((first[0] == torch.arange(s, s + idx.shape[1], device=idx.device)).all()):
                self._contig = (s, s + idx.shape[1])
        key_valid = torch.ones(R, L + 1, dtype=torch.bool, device=x.device)
        key_valid[:, L] = False
        if am is not None:
            key_valid[:, :L] = am.bool()
        need_mask = pad or am is not None
        self._key_mask = key_valid[:, None, None, :] if need_mask else None
        self._window_state = (window, (idx[:, :t_win], n_win), reps)
        kwargs.pop("logits_range", None)
        kwargs.update(positions=feed_pos, cache=self, logits_range=(0, t_win))
        self._record_stats(fed.sum(-1).double() / L, L)
        return Request(feed_tokens, kwargs=kwargs, role=request.role, rows=request.rows, ends_step=request.ends_step)

    def restore(self, output: Any, request: Request) -> Any:
        window, fed_win, reps = self._window_state
        W = self._L if window is None else int(window[0].sum())
        if fed_win is None:
            # Full forward: the output is what the strategy asked for.
            if self._keeps_logits(window):
                self._store_logits(self._window_of(output, window, reps), W)
            return output
        idx_win, n_win = fed_win
        complete = bool((n_win == W).all())
        if complete and idx_win.shape[1] == W:
            if self._keeps_logits(window):
                self._store_logits(output, W)
            return output  # the window, fed in column order
        if self._logits is None or self._logits.shape[0] != output.shape[0] or self._logits.shape[1] != W + 1:
            raise RuntimeError(
                f"cache policy {self.name!r} skipped window positions without logits to reuse; "
                "this is a bug in the policy (its window must be fully fed at refresh steps)."
            )
        start = self._window_start(window, reps, idx_win.shape[0], idx_win.device)
        slot = idx_win - start[:, None]
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
            if kb is None or kb.shape != (k.shape[0], k.shape[1], L + 1, k.shape[3]) or kb.dtype != k.dtype:
                kb = k.new_zeros(k.shape[0], k.shape[1], L + 1, k.shape[3])
                vb = v.new_zeros(v.shape[0], v.shape[1], L + 1, v.shape[3])
                self._k[layer], self._v[layer] = kb, vb
            kb[:, :, :L] = k
            vb[:, :, :L] = v
            return k, v, attn_mask
        kb, vb = self._k[layer], self._v[layer]
        if self._contig is not None:
            s, e = self._contig
            kb[:, :, s:e] = k
            vb[:, :, s:e] = v
        else:
            index = self._idx[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
            kb.scatter_(2, index, k)
            vb.scatter_(2, index, v)
        if self._key_mask is None:
            return kb[:, :, :L], vb[:, :, :L], None
        return kb, vb, self._key_mask

    def end_forward(self) -> None:
        pass

    def stats(self) -> dict[str, float]:
        held = sum(t.numel() * t.element_size() for t in self._k + self._v if t is not None)
        if self._logits is not None:
            held += self._logits.numel() * self._logits.element_size()
        return {"cache_bytes": float(held), **self._stats}

    # ---- helpers -----------------------------------------------------------------------------
    def _record_stats(self, fed_fraction: torch.Tensor, L: int) -> None:
        self._stats = {"reuse_rate": float(1.0 - fed_fraction.mean())}

    def _window(self, state: Any, rows: torch.Tensor, L: int, device: torch.device) -> Optional[torch.Tensor]:
        """(len(rows), L) bool: each row's current block, or None for full-canvas strategies."""
        strat = self._strategy
        if strat.needs_full_logits:
            return None
        cols = strat.block_columns(state, rows)  # (R, bl) on device
        win = torch.zeros(len(rows), L, dtype=torch.bool, device=device)
        win.scatter_(1, cols, True)
        return win

    def _window_start(self, window: Optional[torch.Tensor], reps: int, rows: int, device: torch.device) -> torch.Tensor:
        """(rows,) first canvas column of each request row's window."""
        if window is None:
            return torch.zeros(rows, dtype=torch.long, device=device)
        return window.long().argmax(-1).repeat(reps)

    def _window_of(self, output: torch.Tensor, window: Optional[torch.Tensor], reps: int) -> torch.Tensor:
        """The window's logits from a full forward's output (block range or whole canvas)."""
        if window is None:
            return output
        W = int(window[0].sum())
        if output.shape[1] == W:
            return output
        start = window.long().argmax(-1).repeat(reps)
        cols = start[:, None] + torch.arange(W, device=output.device)[None, :]
        return output[torch.arange(output.shape[0], device=output.device)[:, None], cols]

    def _keeps_logits(self, window: Optional[torch.Tensor]) -> bool:
        return self.may_skip_window or window is None

    def _store_logits(self, window_logits: torch.Tensor, W: int) -> None:
        R, _, V = window_logits.shape
        if self._logits is None or self._logits.shape != (R, W + 1, V) or self._logits.dtype != window_logits.dtype:
            self._logits = window_logits.new_empty(R, W + 1, V)
        self._logits[:, :W] = window_logits

    def _order(self, fed: torch.Tensor, win: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        """Feed order: each row's fed window columns (ascending), then its other fed columns;
        rows padded with the trash column ``L``. Returns (idx, fed window count per row,
        width of the window part, whether any padding exists)."""
        a = fed & win
        b = fed & ~win
        col = torch.arange(L, device=fed.device).expand_as(fed)
        n_a, n_b = a.sum(-1), b.sum(-1)
        t_a, t_b = int(n_a.max()), int(n_b.max())
        key_a = torch.where(a, col, col + L)
        part_a = key_a.sort(-1).values[:, :t_a]
        part_a = torch.where(part_a < L, part_a, L)
        key_b = torch.where(b, col, col + L)
        part_b = key_b.sort(-1).values[:, :t_b]
        part_b = torch.where(part_b < L, part_b, L)
        idx = torch.cat([part_a, part_b], dim=1)
        pad = bool((n_a < t_a).any() or (n_b < t_b).any())
        return idx, n_a, t_a, pad

    def _compact(self, req_rows: torch.Tensor) -> bool:
        """Keep the buffers of rows still decoding; False when a row is new (refresh)."""
        old = self._rows.tolist()
        pos = {r: i for i, r in enumerate(old)}
        if any(int(r) not in pos for r in req_rows):
            return False
        keep = torch.tensor([pos[int(r)] for r in req_rows], device=self._k[0].device)
        self._k = [t.index_select(0, keep) if t is not None else None for t in self._k]
        self._v = [t.index_select(0, keep) if t is not None else None for t in self._v]
        if self._logits is not None:
            self._logits = self._logits.index_select(0, keep)
        return True
