"""Elastic-Cache (Nguyen-Tri, Ranjan and Shen, 2025, "Attention Is All You Need for KV Cache in
Diffusion LLMs"; reference: VILA-Lab/Elastic-Cache, ``generate_with_elastic_cache`` and the
``attention`` of its ``modeling_llada.py``).

The first forward of a generation computes the whole canvas and keeps, per layer, the
layer's input, queries, keys and values of every column. Each later forward feeds only

* the *tracked* columns: per layer, the ``track_num`` non-masked columns the fed masked
  window positions attended to most in the previous forward (summed over heads and those
  positions);
* the columns committed in the previous step (their embeddings changed);
* the masked columns of the strategy's window and the first ``window_length`` masked columns
  from the window's start (the sliding window; masked columns further right keep the
  keys/values of their last computation: "block caching" of far MASK tokens).

Layer by layer the fed rows' inputs are written into the layer's kept inputs. At each layer
the tracked rows' attention (over every key) is compared with their attention when they were
last computed (their kept queries against the keys before this forward's write): the cosine
similarity over heads, averaged over tracked rows and keys (the reference's
``F.cosine_similarity(..., dim=1).mean()``). When it falls below ``gamma`` at layer ``l``,
layers ``l + 1`` to the last recompute the whole canvas from the kept inputs (depth-aware
refresh); the logits of the fed rows are taken from the refreshed canvas.

Defaults are the reference's (``gamma=0.9``, ``track_num=1``, ``window_length=16``,
``block_caching=True``). ``gamma`` is a similarity threshold, as in the reference (the
similarity of non-negative attention rows lies in [0, 1]): above 1 the trigger fires at layer 0
of every forward (layers 1+ recompute the canvas), at 0 or below never. Even then the cache is
not exact: layer 0 is never refreshed, so the kept layer-1 inputs of unfed columns are those of
their last computation (the reference's ``x = self.x_cache``). ``refresh_every`` (not in the
reference, which runs one full forward per generation) adds a full forward every that many
forwards; 1 makes the cache exact. In a batch, rows share the refresh layer (the first at which
some row's similarity falls below ``gamma``); the reference decodes one sequence at a time.

On a shifted-logits model (Dream: a column's logits come from the output one column left),
the reference's Dream path (``dream/model/generation_utils_elastic.py``) feeds
``masked_position - 1``: the window masks' *predecessors* are the fed, refreshed rows whose
attention picks the tracked columns, and the masks themselves are refreshed only where they are
a predecessor too. Here likewise; a window mask whose predecessor is not a mask is still fed
(the canvas cache reads a column's logits through its feed slot) but as a query only
(:meth:`read_only`): its kept keys, values, inputs and queries stay those of its last
computation, as in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..interfaces import CanvasRequest, Request, to_device
from .layered import LayeredCanvasCache, gather_rows, scatter_rows


@dataclass
class ElasticCacheConfig:
    gamma: float = 0.9
    track_num: int = 1
    window_length: int = 16
    block_caching: bool = True
    refresh_every: Optional[int] = None

    def __post_init__(self) -> None:
        g = self.gamma
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(float(g)):
            raise ValueError(
                f"gamma must be a finite number (the attention-similarity threshold below which the "
                f"deeper layers refresh; > 1 refreshes every forward), got {g!r}."
            )
        for name, low in (("track_num", 1), ("window_length", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        r = self.refresh_every
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(
                f"refresh_every must be None (one full forward per generation, as the reference) or an "
                f"integer >= 1 (a full forward every that many forwards; 1 makes the cache exact), got {r!r}."
            )
        if not isinstance(self.block_caching, bool):
            raise ValueError(f"block_caching must be True or False, got {self.block_caching!r}.")


def _attention_probs(q: torch.Tensor, k: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(R, H, T, K) softmax attention of queries ``q`` (R, H, T, hd) over keys ``k`` (R, kv, K, hd)."""
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask[..., : scores.shape[-1]], float("-inf"))
    return scores.softmax(-1)


class ElasticCache(LayeredCanvasCache):
    name = "elastic"
    description = ("Elastic-Cache: attention-drift-triggered, depth-aware KV refresh with tracked "
                   "most-attended tokens and a sliding window of masked tokens")
    Config = ElasticCacheConfig
    exact_options = {"refresh_every": 1}
    may_skip_window = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._fresh = False
        self._since_full = 0
        self._query_only: Optional[torch.Tensor] = None

    # ---- the feed -------------------------------------------------------------------------------
    def _window(self, masked: torch.Tensor, window_start: torch.Tensor, window_size: int) -> torch.Tensor:
        """(rows, L) masked columns the step queries: the strategy's window and the sliding window
        of the first ``window_length`` masks from its start (every mask without block caching)."""
        col = torch.arange(masked.shape[1], device=masked.device)[None, :]
        ws = to_device(window_start, masked.device)[:, None]
        after = masked & (col >= ws)
        out = after & (col < ws + window_size)
        if self.config.block_caching:
            return out | (after & (after.long().cumsum(-1) <= self.config.window_length))
        return out | masked

    def _queries(self, window: torch.Tensor) -> torch.Tensor:
        """The rows whose outputs give the window's logits: the window itself, or on a
        shifted-logits model (Dream) each window column's predecessor, as the reference's Dream
        path feeds ``masked_position - 1`` and tracks with those rows' attention."""
        s = self._shift
        if not s:
            return window
        out = torch.zeros_like(window)
        out[:, :-s] = window[:, s:]
        return out

    def full_rows(self, canvas: CanvasRequest) -> torch.Tensor:
        every = self.config.refresh_every  # None: only the first forward (no cache yet), as the reference
        due = every is not None and self._since_full + 1 >= every
        return torch.full((len(canvas.rows),), due, dtype=torch.bool)

    def recompute(self, canvas: CanvasRequest) -> torch.Tensor:
        masked = canvas.masked()
        n, L = masked.shape
        window = self._window(masked, canvas.window_start, canvas.window_size)
        fed = self._queries(window) | (canvas.committed_at == canvas.step - 1)
        tracked = self._row_state.get("tracked")
        if tracked is not None:
            fed |= tracked.view(-1, n, tracked.shape[1]).any(0)[:, :L].to(fed.device)
        # On a shifted model the window columns are fed for their logits' sake (read from their
        # predecessors); those the policy does not refresh are queries only (read_only).
        self._query_only = window & ~fed if self._shift else None
        return fed | window

    def read_only(self, canvas: CanvasRequest) -> Optional[torch.Tensor]:
        return self._query_only

    def prepare(self, request: Request) -> Request:
        canvas = request.canvas
        self._fresh = False
        out = super().prepare(request)
        R, L = self._R, self._L
        x0 = self.layer_tensor("x", 0)
        if self._full or self._fresh or x0 is None or x0.shape[:2] != (R, L + 1):
            if not self._full:
                raise RuntimeError("elastic cache lost its kept inputs without a full forward; this is a bug.")
            self.reset_state()
        masked = canvas.masked().repeat(canvas.reps, 1)
        self._masked = masked
        self._window_queries = self._queries(self._window(masked, self._win_start, canvas.window_size))
        self._positions = canvas.positions
        am = canvas.attention_mask
        self._mask = self._key_mask if self._key_mask is not None else (
            am.bool()[:, None, None, :] if am is not None else None)
        self._refresh_from = 0 if self._full else 1 << 30
        self._since_full = 0 if self._full else self._since_full + 1
        self._new_tracked = torch.zeros(R, L, dtype=torch.bool, device=masked.device)
        self._k_before = None
        if not self._full:
            tracked = self._row_state["tracked"]
            safe, real = self._idx.clamp(max=L - 1), self._idx < L
            self._slot_window = self._window_queries.gather(1, safe) & real
            self._slot_tracked = tracked.gather(1, safe) & real
            self._fed_rows = float(real.sum()) / R
        return out

    def _compact(self, req_rows: torch.Tensor) -> bool:
        kept = super()._compact(req_rows)
        self._fresh = not kept
        return kept

    # ---- layer hooks ----------------------------------------------------------------------------
    def layer_input(self, layer: int, x: torch.Tensor, block: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        L = self._L
        xs = self.layer_tensor("x", layer)
        if xs is None:
            xs = x.new_zeros(x.shape[0], L + 1, x.shape[2])
            self.set_layer_tensor("x", layer, xs)
        if self._full or layer > self._refresh_from:  # x is the whole canvas
            xs[:, :L] = x
            self.count_rows(layer, L)
            return x, None
        scatter_rows(xs, self.kept_index(), x)
        if layer == self._refresh_from:  # the first refreshed layer: the whole canvas from kept inputs
            self.count_rows(layer, L)
            return xs[:, :L], self._positions
        self.count_rows(layer, self._fed_rows)
        return x, None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor]):
        if self._full:
            return super().update(layer, k, v, attn_mask)
        L = self._L
        kb, vb = self._k[layer], self._v[layer]
        if layer >= self._refresh_from:
            kb[:, :, :L] = k
            vb[:, :, :L] = v
            return k, v, self._mask[..., :L] if self._mask is not None else None
        if layer < len(self._k) - 1:  # the drift test needs the keys before this forward's write
            self._k_before = kb[:, :, :L].clone()
        return super().update(layer, k, v, attn_mask)

    def layer_queries(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        L = self._L
        qs = self.layer_tensor("q", layer)
        if qs is None:
            qs = q.new_zeros(q.shape[0], q.shape[1], L + 1, q.shape[3])
            self.set_layer_tensor("q", layer, qs)
        if self._full or layer >= self._refresh_from:
            qs[:, :, :L] = q
            cols = self._window_queries.any(0).nonzero()[:, 0]  # only these rows' attention is read
            probs = _attention_probs(q[:, :, cols], k, self._mask)[..., :L]
            weight = self._window_queries[:, cols]
        else:
            probs = _attention_probs(q, k, self._mask)[..., :L]  # (R, H, T, L)
            idx4 = self._idx[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[3])
            if self._k_before is not None:
                self._drift_test(layer, probs, qs.gather(2, idx4))
            qs.scatter_(2, self.kept_index()[:, None, :, None].expand_as(idx4), q)
            weight = self._slot_window
        # per layer, the column the fed masked window rows attend to most, masks excluded
        mass = (probs.sum(1) * weight[:, :, None].to(probs.dtype)).sum(1)
        mass = mass.masked_fill(self._masked, 0.0)
        top = mass.topk(min(self.config.track_num, L), dim=-1).indices
        self._new_tracked.scatter_(1, top, True)

    def _drift_test(self, layer: int, probs: torch.Tensor, past_q: torch.Tensor) -> None:
        """Refresh layers ``layer + 1`` on when the tracked rows' attention moved too much."""
        past = _attention_probs(past_q, self._k_before, self._mask)[..., :self._L]
        self._k_before = None
        sim = F.cosine_similarity(past, probs, dim=1)  # (R, T, L): over heads, as the reference
        sel = self._slot_tracked
        per_row = sim.masked_fill(~sel[:, :, None], 0.0).sum((1, 2)) / (sel.sum(1) * sim.shape[-1]).clamp_min(1)
        if bool((sel.any(1) & (per_row < self.config.gamma)).any()):
            self._refresh_from = layer + 1

    def layer_output(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if not self._full and layer == len(self._k) - 1 and self._refresh_from <= layer:
            return gather_rows(x, self._idx.clamp(max=self._L - 1))  # back to the fed rows
        return x

    def end_forward(self) -> None:
        super().end_forward()
        self._stats["refresh_layer"] = float(min(self._refresh_from, len(self._k)))
        self._row_state["tracked"] = self._new_tracked
