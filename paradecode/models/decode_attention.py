"""One Triton kernel per layer for a causal LM's decode step against a static KV cache.

At batch 1 a draft or verify forward is launch-bound: each layer runs RoPE on q and k, writes
k and v into the cache, then attends, and each of those kernels takes 2-7 us on a handful of
rows while the device idles between them. :func:`rope_cache_attention` does all three in one
kernel: it rotates the new keys and writes them and the new values into the cache, rotates
the queries, and attends (online softmax) over the row's cached slots and the new keys.

The semantics are :class:`~paradecode.caches.static_kv.StaticKVCache`'s: row ``b``'s new
tokens take slots ``length[b] ..``, query ``t`` attends to slots ``start[b] .. length[b] + t``
(a left-padding query, before ``start[b]``, to itself only). The new keys are attended from
registers, never read back from the cache, so no program reads what another writes. Grouped
queries share their key/value head's program (the FlashDecoding layout): ``rep * T`` query
rows per key/value head, in blocks of ``BLOCK_M``.

The arithmetic follows the unfused path: RoPE in float32 rounded to the cache's dtype, scores
and the softmax in float32, probabilities rounded to the value dtype before ``P @ V``. Results
agree with it to rounding, not bit for bit. Triton runs it on a CUDA GPU; on a CPU it runs only
under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests check it.
"""

from __future__ import annotations

import os
import torch

__all__ = ["rope_cache_attention", "reference_rope_cache_attention", "triton_available", "check_available"]

try:  # an optional dependency: CPU builds of torch come without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None
    tl = None


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: Triton on a CUDA GPU, or its interpreter on a CPU."""
    if triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _interpreted())


def check_available(device: torch.device) -> None:
    """A clear error where :func:`rope_cache_attention` cannot run."""
    if triton is None:
        raise RuntimeError("attention='triton' needs the triton package (it comes with CUDA builds of torch: "
                           "pip install triton); or leave attention at 'sdpa'.")
    if not triton_available(device):
        raise RuntimeError(f"attention='triton' runs on a CUDA GPU (on a CPU only under TRITON_INTERPRET=1, for "
                           f"tests); the model is on {device}. Leave attention at 'sdpa' there.")


if triton is not None:

    @triton.jit
    def _softmax_block(q, kb, vb, valid, m_i, l_i, acc, scale):
        """One block of keys folded into the running (max, sum, weighted values)."""
        s = tl.dot(q, tl.trans(kb)) * scale
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb)
        return m_new, l_i, acc

    @triton.jit
    def _rope_cache_attention_kernel(
        Q, K, V, q_row, k_row, v_row, COS, SIN, KC, VC, LEN, START, OUT,
        T, S, scale,
        H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, REP: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
    ):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        mb = tl.program_id(2)
        length = tl.load(LEN + b)
        start = tl.load(START + b)
        d = tl.arange(0, D)
        partner = (d + D // 2) % D  # rotate-half: element d pairs with d +- D/2
        sign = tl.where(d < D // 2, -1.0, 1.0)

        # The new keys (rotated) and values: into the cache (by the first query block only) and kept.
        tn = tl.arange(0, BLOCK_T)
        t_ok = tn < T
        row_t = (b * T + tn)[:, None]
        cos_t = tl.load(COS + row_t * D + d[None, :], mask=t_ok[:, None], other=0.0)
        sin_t = tl.load(SIN + row_t * D + d[None, :], mask=t_ok[:, None], other=0.0)
        k_at = K + row_t * k_row + kvh * D
        k_new = tl.load(k_at + d[None, :], mask=t_ok[:, None], other=0.0).to(tl.float32)
        k_swap = tl.load(k_at + partner[None, :], mask=t_ok[:, None], other=0.0).to(tl.float32)
        k_new = (k_new * cos_t + k_swap * sign[None, :] * sin_t).to(KC.dtype.element_ty)
        v_new = tl.load(V + row_t * v_row + kvh * D + d[None, :], mask=t_ok[:, None], other=0.0)
        slot_t = length + tn
        at = ((b * HKV + kvh) * S + slot_t)[:, None] * D + d[None, :]
        write = (tn < tl.where(mb == 0, T, 0))[:, None] & (d[None, :] < D)
        tl.store(KC + at, k_new, mask=write)
        tl.store(VC + at, v_new.to(VC.dtype.element_ty), mask=write)

        # This block's query rows: row r is head kvh * REP + r // T at token r % T.
        r = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        r_ok = r < REP * T
        head = kvh * REP + r // T
        t = r % T
        row_q = (b * T + t)[:, None]
        cos_q = tl.load(COS + row_q * D + d[None, :], mask=r_ok[:, None], other=0.0)
        sin_q = tl.load(SIN + row_q * D + d[None, :], mask=r_ok[:, None], other=0.0)
        q_at = Q + row_q * q_row + head[:, None] * D
        q = tl.load(q_at + d[None, :], mask=r_ok[:, None], other=0.0).to(tl.float32)
        q_swap = tl.load(q_at + partner[None, :], mask=r_ok[:, None], other=0.0).to(tl.float32)
        q = (q * cos_q + q_swap * sign[None, :] * sin_q).to(KC.dtype.element_ty)
        q_slot = length + t

        m_i = tl.full((BLOCK_M,), -1.0e30, tl.float32)  # finite: a fully masked block adds nothing
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        # Cached slots [start, length): every query of this forward sees them all.
        base = (b * HKV + kvh) * S
        lo = (start // BLOCK_N) * BLOCK_N
        for n0 in range(lo, length, BLOCK_N):
            s_idx = n0 + tl.arange(0, BLOCK_N)
            s_ok = (s_idx >= start) & (s_idx < length)
            at_n = (base + s_idx)[:, None] * D + d[None, :]
            kb = tl.load(KC + at_n, mask=s_ok[:, None], other=0.0)
            vb = tl.load(VC + at_n, mask=s_ok[:, None], other=0.0)
            valid = s_ok[None, :] & (q_slot[:, None] >= 0)
            m_i, l_i, acc = _softmax_block(q, kb, vb, valid, m_i, l_i, acc, scale)
        # The new keys, causally: slot s_t is seen by queries at or after it (and from start on).
        valid = t_ok[None, :] & (
            ((slot_t[None, :] >= start) & (slot_t[None, :] <= q_slot[:, None])) | (slot_t[None, :] == q_slot[:, None])
        )
        m_i, l_i, acc = _softmax_block(q, k_new, v_new.to(KC.dtype.element_ty), valid, m_i, l_i, acc, scale)

        out = acc / l_i[:, None]
        o_at = OUT + row_q * (H * D) + head[:, None] * D + d[None, :]
        tl.store(o_at, out.to(OUT.dtype.element_ty), mask=r_ok[:, None])


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def rope_cache_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor, start: torch.Tensor,
    n_heads: int, n_kv: int, head_dim: int, scale: float, block_n: int = 64,
) -> torch.Tensor:
    """Attention output (B, T, n_heads * head_dim) of one layer's new tokens, the cache updated.

    ``q`` (B, T, n_heads * head_dim), ``k`` and ``v`` (B, T, n_kv * head_dim): the projections
    before RoPE (views into a joined q/k/v output are fine: only the last dimension must be
    contiguous). ``cos`` / ``sin`` (B, 1, T, head_dim) float32. ``k_cache`` / ``v_cache``
    (B, n_kv, S, head_dim) contiguous; ``length`` / ``start`` (B,) the cache's slots written
    before this forward and its left padding (the new tokens go to ``length[b] ..``).
    """
    B, T, _ = q.shape
    S = k_cache.shape[2]
    rep = n_heads // n_kv
    if head_dim & (head_dim - 1) or head_dim < 16:
        raise ValueError(f"attention='triton' needs a power-of-two head_dim >= 16, got {head_dim}; use attention='sdpa'.")
    for name, x, width in (("q", q, n_heads), ("k", k, n_kv), ("v", v, n_kv)):
        if x.shape != (B, T, width * head_dim) or x.stride(-1) != 1 or x.stride(0) != T * x.stride(1):
            raise ValueError(f"{name} must be (B, T, {width} * {head_dim}) with rows of one stride, "
                             f"got {tuple(x.shape)} strides {x.stride()}.")
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        if c.shape != (B, n_kv, S, head_dim) or not c.is_contiguous():
            raise ValueError(f"{name} must be a contiguous (B, {n_kv}, S, {head_dim}) buffer, got {tuple(c.shape)}.")
    cos = cos.reshape(B, T, head_dim).float().contiguous()
    sin = sin.reshape(B, T, head_dim).float().contiguous()
    out = torch.empty(B, T, n_heads * head_dim, dtype=q.dtype, device=q.device)
    rows = rep * T
    block_m = min(64, max(16, _pow2(rows)))
    grid = (B, n_kv, triton.cdiv(rows, block_m))
    _rope_cache_attention_kernel[grid](
        q, k, v, q.stride(1), k.stride(1), v.stride(1), cos, sin, k_cache, v_cache, length, start, out,
        T, S, scale, H=n_heads, HKV=n_kv, D=head_dim, REP=rep,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_T=max(16, _pow2(T)),
    )
    return out


def reference_rope_cache_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor, start: torch.Tensor,
    n_heads: int, n_kv: int, head_dim: int, scale: float,
) -> torch.Tensor:
    """What :func:`rope_cache_attention` computes, in plain PyTorch (RoPE in float32, the cache
    written at ``length ..``, SDPA over :class:`StaticKVCache`'s key mask): the tests' yardstick."""
    from .llada import apply_rope

    B, T, _ = q.shape
    S = k_cache.shape[2]
    qh = apply_rope(q.reshape(B, T, n_heads, head_dim).transpose(1, 2), cos, sin)
    kh = apply_rope(k.reshape(B, T, n_kv, head_dim).transpose(1, 2), cos, sin)
    vh = v.reshape(B, T, n_kv, head_dim).transpose(1, 2)
    slots = length[:, None] + torch.arange(T, device=q.device)
    rows = torch.arange(B, device=q.device)[:, None, None]
    heads = torch.arange(n_kv, device=q.device)[None, :, None]
    k_cache[rows, heads, slots[:, None, :]] = kh.to(k_cache.dtype)
    v_cache[rows, heads, slots[:, None, :]] = vh.to(v_cache.dtype)
    s = torch.arange(S, device=q.device)[None, None, :]
    qs = slots[:, :, None]
    mask = ((s >= start[:, None, None]) & (s <= qs)) | (s == qs)
    rep = n_heads // n_kv
    kr = k_cache.repeat_interleave(rep, dim=1)
    vr = v_cache.repeat_interleave(rep, dim=1)
    a = torch.nn.functional.scaled_dot_product_attention(qh, kr, vr, attn_mask=mask[:, None], scale=scale)
    return a.transpose(1, 2).reshape(B, T, n_heads * head_dim)
