"""A fixed-shape KV cache for causal LMs with a length per row.

Buffers are preallocated to ``(batch, kv_heads, max_len, head_dim)`` per layer. Row ``r`` holds
``length[r]`` written slots, of which the first ``start[r]`` are left padding. A forward of
``m`` tokens writes slots ``length[r] .. length[r] + m - 1`` of each row, and its query ``i``
attends to slots ``start[r] .. length[r] + i``. Everything lives in device tensors, so a
forward of a given ``m`` has one shape whatever the rows' lengths are (a CUDA graph replays
it), and rolling rejected drafts back is a length update (:meth:`advance`): the stale slots
are masked until they are overwritten. No copy, no host sync.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..models.decode_attention import rope_cache_attention
from ..models.llada import _KERNELS

__all__ = ["StaticKVCache"]


class StaticKVCache:
    """Implements :class:`~paradecode.interfaces.LayerKV` (``update(layer, k, v, mask)``)."""

    def __init__(
        self, layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int,
        dtype: torch.dtype, device: torch.device,
    ) -> None:
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.max_len = max_len
        self.length = torch.zeros(batch, dtype=torch.long, device=device)
        self.start = torch.zeros(batch, dtype=torch.long, device=device)
        self._slots = torch.arange(max_len, device=device)
        self._rows = torch.arange(batch, device=device)[:, None, None]
        self._heads = torch.arange(kv_heads, device=device)[None, :, None]
        self._index: Optional[tuple[torch.Tensor, ...]] = None
        self._mask: Optional[torch.Tensor] = None

    @classmethod
    def for_model(cls, model, batch: int, max_len: int) -> "StaticKVCache":
        """A cache shaped for a :class:`~paradecode.models.llama.LlamaLM`."""
        return cls(len(model.layers), batch, model.n_kv, max_len, model.head_dim, model.dtype, model.device)

    def row(self, r: int) -> "StaticKVCache":
        """Row ``r`` as a cache of one row: views of its buffers, length and start (what a forward
        on it writes lands in this cache), e.g. to fill a row with a new prompt while the other
        rows keep theirs."""
        view = object.__new__(StaticKVCache)
        view.k = [t[r : r + 1] for t in self.k]
        view.v = [t[r : r + 1] for t in self.v]
        view.max_len = self.max_len
        view.length, view.start = self.length[r : r + 1], self.start[r : r + 1]
        view._slots, view._rows, view._heads = self._slots, self._rows[:1], self._heads
        view._index = view._mask = None
        return view

    def copy_rows(self, rows: "list[int]", src: "StaticKVCache", slots: int) -> None:
        """Rows ``rows`` take the first ``slots`` key/value slots of every layer from ``src``'s
        rows 0, 1, ... (one multi-tensor copy), e.g. prompts filled in a kept cache, whose forward
        can be a captured graph where a forward on these rows could not."""
        dst = [t[r, :, :slots] for t in self.k + self.v for r in rows]
        torch._foreach_copy_(dst, [t[i, :, :slots] for t in src.k + src.v for i in range(len(rows))])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def positions(self, m: int) -> torch.Tensor:
        """(batch, m) position ids of the next ``m`` tokens (padding excluded)."""
        return (self.length - self.start)[:, None] + torch.arange(m, device=self.length.device)

    def advance(self, n: "torch.Tensor | int") -> None:
        """Keep ``n`` (batch,) more slots per row (a rollback is keeping fewer than were written)."""
        self.length += n

    def set_length(self, length: torch.Tensor) -> None:
        self.length.copy_(length)

    # ---- model side (LayerKV) --------------------------------------------------------------
    def begin_forward(self, positions: torch.Tensor, build_mask: bool = True) -> None:
        """Write index and key mask of this forward, built once for all layers (not needed, so
        not built, when every layer calls :meth:`attend`: ``build_mask=False``)."""
        if not build_mask:
            self._index = self._mask = None
            return
        m = positions.shape[1]
        q_slot = self.length[:, None] + torch.arange(m, device=self.length.device)  # (B, m)
        self._index = (self._rows, self._heads, q_slot[:, None, :])  # element [b, h, i] -> slot q_slot[b, i]
        s, q = self._slots[None, None, :], q_slot[:, :, None]
        # A padding query attends to itself only (finite values in slots nobody else reads).
        mask = ((s >= self.start[:, None, None]) & (s <= q)) | (s == q)  # (B, m, max_len)
        self._mask = mask[:, None]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        # One kernel for both under compile_elementwise (paradecode.models.llada.write_kv).
        _KERNELS["write_kv"](self.k[layer], self.v[layer], self._index, k, v)
        return self.k[layer], self.v[layer], self._mask

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor, n_heads: int, scale: float) -> torch.Tensor:
        """RoPE, this layer's write and attention over the cache in one Triton kernel
        (:func:`~paradecode.models.decode_attention.rope_cache_attention`): q/k/v before RoPE,
        float32 cos/sin; returns (B, T, n_heads * head_dim). Use it instead of :meth:`update`."""
        kc, vc = self.k[layer], self.v[layer]
        return rope_cache_attention(q, k, v, cos, sin, kc, vc, self.length, self.start, n_heads, kc.shape[1],
                                    kc.shape[3], scale)

    def end_forward(self) -> None:
        pass
