"""Triton kernels that do a cached layer's RoPE, KV write and attention in one pass.

* :func:`rope_cache_attention`: a causal LM's decode or verify step against a static KV cache
  (speculative decoding's ``attention="triton"``), one kernel per layer;
* :func:`canvas_attention`: a dLLM cache's partial step, the fed tokens against the whole canvas
  (``model.use_attention_kernel("triton")``), split over the canvas and combined: two kernels.

At batch 1 a draft or verify forward is launch-bound: each layer runs RoPE on q and k, writes
k and v into the cache, then attends, and each of those kernels takes 2-7 us on a handful of
rows while the device idles between them. :func:`rope_cache_attention` does all three in one
kernel: it rotates the new keys and writes them and the new values into the cache, rotates
the queries, and attends (online softmax) over the row's cached slots and the new keys.

:func:`rope_cache_attention` follows :class:`~paradecode.caches.static_kv.StaticKVCache`: row ``b``'s new
tokens take slots ``length[b] ..``, query ``t`` attends to slots ``start[b] .. length[b] + t``
(a left-padding query, before ``start[b]``, to itself only). The new keys are attended from
registers, never read back from the cache, so no program reads what another writes. Grouped
queries share their key/value head's program (the FlashDecoding layout): ``rep * T`` query
rows per key/value head, in blocks of ``BLOCK_M``. :func:`canvas_attention` follows
:class:`~paradecode.caches.canvas.CanvasKVCache` (bidirectional, a write index per fed token,
the trash slot) and likewise never reads a slot written in the same call.

The arithmetic follows the unfused path: RoPE in float32 rounded to the cache's dtype, scores
and the softmax in float32, probabilities rounded to the value dtype before ``P @ V``. Results
agree with it to rounding, not bit for bit. Triton runs it on a CUDA GPU; on a CPU it runs only
under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests check it.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch

__all__ = ["ATTENTION_KERNELS", "CANVAS_MAX_TOKENS", "CACHE_MAX_TOKENS", "CACHE_SPLIT_SLOTS", "rope_cache_attention",
           "rope_cache_splits", "canvas_attention", "multiprocessors", "triton_available", "check_available"]

try:  # an optional dependency: CPU builds of torch come without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None
    tl = None


ATTENTION_KERNELS = ("sdpa", "triton")
"""How a cached layer attends: PyTorch's RoPE, cache write and SDPA, or these Triton kernels."""


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: Triton on a CUDA GPU, or its interpreter on a CPU."""
    if triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _interpreted())


def check_available(device: torch.device) -> None:
    """A clear error where the kernels cannot run."""
    if triton is None:
        raise RuntimeError("the Triton attention kernels need the triton package (CUDA builds of torch bring it; "
                           "pip install triton); or keep the SDPA path (attention='sdpa').")
    if not triton_available(device):
        raise RuntimeError(f"the Triton attention kernels run on a CUDA GPU (on a CPU only under TRITON_INTERPRET=1, "
                           f"for tests); the model is on {device}. Keep the SDPA path there (attention='sdpa').")


if triton is not None:

    @triton.jit
    def _softmax_block(q, kb, vb, valid, m_i, l_i, acc, scale):
        """One block of keys folded into the running (max, sum, weighted values)."""
        s = (tl.dot(q, tl.trans(kb)) * scale).to(tl.float32)  # torch.compile may pass ``scale`` as float64
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb)
        return m_new, l_i, acc

    @triton.jit
    def _rotated(X, sb, st, head, rows_b, rows_t, ok, COS, SIN, T, D: tl.constexpr):
        """Rows (b, t) of heads ``head`` (vectors of one length) of X, RoPE-rotated in float32."""
        d = tl.arange(0, D)
        at = X + rows_b[:, None] * sb + rows_t[:, None] * st + head[:, None] * D
        x = tl.load(at + d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        swap = tl.load(at + ((d + D // 2) % D)[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        cs = (rows_b * T + rows_t)[:, None] * D + d[None, :]
        cos = tl.load(COS + cs, mask=ok[:, None], other=0.0)
        sin = tl.load(SIN + cs, mask=ok[:, None], other=0.0)
        return x * cos + swap * tl.where(d < D // 2, -1.0, 1.0)[None, :] * sin

    @triton.jit
    def _rope_cache_attention_kernel(
        Q, K, V, q_row, k_row, v_row, COS, SIN, KC, VC, LEN, START, OUT, PM, PL, PACC,
        T, S, scale, split_len,
        H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, REP: tl.constexpr, NQB: tl.constexpr,
        NSPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
    ):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        mb = tl.program_id(2) // NSPLIT
        sp = tl.program_id(2) % NSPLIT  # this program's share of the cache's slots
        length = tl.load(LEN + b)
        start = tl.load(START + b)
        d = tl.arange(0, D)

        # The new keys (rotated) and values: into the cache (by the first query block only) and kept.
        tn = tl.arange(0, BLOCK_T)
        t_ok = tn < T
        bt = tl.zeros((BLOCK_T,), tl.int32) + b
        k_new = _rotated(K, T * k_row, k_row, bt * 0 + kvh, bt, tn, t_ok, COS, SIN, T, D).to(KC.dtype.element_ty)
        v_new = tl.load(V + (b * T + tn)[:, None] * v_row + kvh * D + d[None, :], mask=t_ok[:, None], other=0.0)
        slot_t = length + tn
        at = ((b * HKV + kvh) * S + slot_t)[:, None] * D + d[None, :]
        write = (tn < tl.where((mb == 0) & (sp == 0), T, 0))[:, None] & (d[None, :] < D)
        tl.store(KC + at, k_new, mask=write)
        tl.store(VC + at, v_new.to(VC.dtype.element_ty), mask=write)

        # This block's query rows: row r is head kvh * REP + r // T at token r % T.
        r = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        r_ok = r < REP * T
        head = kvh * REP + r // T
        t = r % T
        br = tl.zeros((BLOCK_M,), tl.int32) + b
        q = _rotated(Q, T * q_row, q_row, head, br, t, r_ok, COS, SIN, T, D).to(KC.dtype.element_ty)
        q_slot = length + t

        m_i = tl.full((BLOCK_M,), -1.0e30, tl.float32)  # finite: a fully masked block adds nothing
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        # Cached slots [start, length): every query of this forward sees them all. This split
        # takes those in [sp * split_len, (sp + 1) * split_len) (split_len: whole key blocks).
        base = (b * HKV + kvh) * S
        lo = tl.maximum((start // BLOCK_N) * BLOCK_N, sp * split_len)
        hi = tl.minimum(length, sp * split_len + split_len)
        for n0 in range(lo, hi, BLOCK_N):
            s_idx = n0 + tl.arange(0, BLOCK_N)
            s_ok = (s_idx >= start) & (s_idx < length)
            at_n = (base + s_idx)[:, None] * D + d[None, :]
            kb = tl.load(KC + at_n, mask=s_ok[:, None], other=0.0)
            vb = tl.load(VC + at_n, mask=s_ok[:, None], other=0.0)
            valid = s_ok[None, :] & (q_slot[:, None] >= 0)
            m_i, l_i, acc = _softmax_block(q, kb, vb, valid, m_i, l_i, acc, scale)
        # The new keys, causally (by split 0): slot s_t is seen by queries at or after it (and from start on).
        valid = (t_ok & (sp == 0))[None, :] & (
            ((slot_t[None, :] >= start) & (slot_t[None, :] <= q_slot[:, None])) | (slot_t[None, :] == q_slot[:, None])
        )
        m_i, l_i, acc = _softmax_block(q, k_new, v_new.to(KC.dtype.element_ty), valid, m_i, l_i, acc, scale)

        if NSPLIT == 1:
            out = acc / l_i[:, None]
            o_at = OUT + (b * T + t)[:, None] * (H * D) + head[:, None] * D + d[None, :]
            tl.store(o_at, out.to(OUT.dtype.element_ty), mask=r_ok[:, None])
        else:  # partial sums, merged by _combine_splits
            part = ((b * HKV + kvh) * NSPLIT + sp) * (NQB * BLOCK_M) + r
            tl.store(PM + part, m_i)
            tl.store(PL + part, l_i)
            tl.store(PACC + part[:, None] * D + d[None, :], acc)


    @triton.jit
    def _canvas_attention_partial(
        Q, K, V, q_sb, q_st, k_sb, k_st, v_sb, v_st, COS, SIN, KC, VC, WIDX, KVALID,
        PM, PL, PACC, T, L, scale, split_len,
        HKV: tl.constexpr, D: tl.constexpr, REP: tl.constexpr, NQB: tl.constexpr, NSPLIT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, HAS_MASK: tl.constexpr,
    ):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        qb = tl.program_id(2) // NSPLIT
        sp = tl.program_id(2) % NSPLIT
        d = tl.arange(0, D)
        S = L + 1  # slots per row and head: the canvas and the trash slot
        base = (b * HKV + kvh) * S

        # The new keys (rotated) and values: written at their slots by one program, kept by all.
        tn = tl.arange(0, BLOCK_T)
        t_ok = tn < T
        bt = tl.zeros((BLOCK_T,), tl.int32) + b
        widx = tl.load(WIDX + b * T + tn, mask=t_ok, other=-1)
        k_new = _rotated(K, k_sb, k_st, bt * 0 + kvh, bt, tn, t_ok, COS, SIN, T, D).to(KC.dtype.element_ty)
        v_new = tl.load(V + b * v_sb + tn[:, None] * v_st + kvh * D + d[None, :], mask=t_ok[:, None], other=0.0)
        v_new = v_new.to(VC.dtype.element_ty)
        at = (base + widx)[:, None] * D + d[None, :]
        write = (tn < tl.where(tl.program_id(2) == 0, T, 0))[:, None] & (d[None, :] < D)
        tl.store(KC + at, k_new, mask=write)
        tl.store(VC + at, v_new, mask=write)

        # This block's query rows: row r is head kvh * REP + r // T at token r % T.
        r = qb * BLOCK_M + tl.arange(0, BLOCK_M)
        r_ok = r < REP * T
        br = tl.zeros((BLOCK_M,), tl.int32) + b
        q = _rotated(Q, q_sb, q_st, kvh * REP + r // T, br, r % T, r_ok, COS, SIN, T, D).to(KC.dtype.element_ty)

        m_i = tl.full((BLOCK_M,), -1.0e30, tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        # Kept slots of this split: every canvas slot but the ones written now (read from registers).
        lo = sp * split_len
        hi = tl.minimum(lo + split_len, L)
        for n0 in range(lo, hi, BLOCK_N):
            s_idx = n0 + tl.arange(0, BLOCK_N)
            fresh = tl.sum((s_idx[:, None] == widx[None, :]).to(tl.int32), 1) > 0
            s_ok = (s_idx < hi) & ~fresh
            if HAS_MASK:
                s_ok &= tl.load(KVALID + b * S + s_idx, mask=s_idx < hi, other=0) != 0
            at_n = (base + s_idx)[:, None] * D + d[None, :]
            kb = tl.load(KC + at_n, mask=s_ok[:, None], other=0.0)
            vb = tl.load(VC + at_n, mask=s_ok[:, None], other=0.0)
            m_i, l_i, acc = _softmax_block(q, kb, vb, s_ok[None, :] & r_ok[:, None], m_i, l_i, acc, scale)
        # The new keys, once (split 0): those written to a canvas slot a query may see.
        new_ok = t_ok & (widx < L) & (widx >= 0) & (sp == 0)
        if HAS_MASK:
            new_ok &= tl.load(KVALID + b * S + widx, mask=t_ok & (widx >= 0), other=0) != 0
        m_i, l_i, acc = _softmax_block(q, k_new, v_new, new_ok[None, :] & r_ok[:, None], m_i, l_i, acc, scale)

        part = ((b * HKV + kvh) * NSPLIT + sp) * (NQB * BLOCK_M) + r
        tl.store(PM + part, m_i)
        tl.store(PL + part, l_i)
        tl.store(PACC + part[:, None] * D + d[None, :], acc)

    @triton.jit
    def _combine_splits(
        PM, PL, PACC, OUT, T,
        H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, REP: tl.constexpr, NQB: tl.constexpr,
        NSPLIT: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        qb = tl.program_id(2)
        d = tl.arange(0, D)
        r = qb * BLOCK_M + tl.arange(0, BLOCK_M)
        r_ok = r < REP * T
        m = tl.full((BLOCK_M,), -1.0e30, tl.float32)
        for sp in range(NSPLIT):
            part = ((b * HKV + kvh) * NSPLIT + sp) * (NQB * BLOCK_M) + r
            m = tl.maximum(m, tl.load(PM + part))
        l_sum = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        for sp in range(NSPLIT):
            part = ((b * HKV + kvh) * NSPLIT + sp) * (NQB * BLOCK_M) + r
            w = tl.exp(tl.load(PM + part) - m)
            l_sum += tl.load(PL + part) * w
            acc += tl.load(PACC + part[:, None] * D + d[None, :]) * w[:, None]
        out = acc / tl.where(l_sum > 0, l_sum, 1.0)[:, None]
        head = kvh * REP + r // T
        o_at = OUT + (b * T + r % T)[:, None] * (H * D) + head[:, None] * D + d[None, :]
        tl.store(o_at, out.to(OUT.dtype.element_ty), mask=r_ok[:, None])


def tile_width_ok(n: int) -> bool:
    """Whether a kernel can hold ``n`` columns (a head_dim) as one ``tl.arange`` block: a power of two >= 16."""
    return n >= 16 and not n & (n - 1)


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _check(q, k, v, k_cache, v_cache, B: int, T: int, S: int, n_heads: int, n_kv: int, head_dim: int) -> None:
    """Clear errors for the layouts the kernels index by hand."""
    if not tile_width_ok(head_dim):
        raise ValueError(f"attention='triton' needs a power-of-two head_dim >= 16, got {head_dim}; use attention='sdpa'.")
    for name, x, width in (("q", q, n_heads), ("k", k, n_kv), ("v", v, n_kv)):
        if x.shape != (B, T, width * head_dim) or x.stride(-1) != 1 or x.stride(0) != T * x.stride(1):
            raise ValueError(f"{name} must be (B, T, {width} * {head_dim}) with rows of one stride, "
                             f"got {tuple(x.shape)} strides {x.stride()}.")
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        if c.shape != (B, n_kv, S, head_dim) or not c.is_contiguous():
            raise ValueError(f"{name} must be a contiguous (B, {n_kv}, S, {head_dim}) buffer, got {tuple(c.shape)}.")


def _launch_layout(cos: torch.Tensor, sin: torch.Tensor, B: int, T: int, head_dim: int,
                   rep: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(cos, sin) as the kernels index them, (B, T, head_dim) float32; the query block (the
    ``rep * T`` query rows of a key/value head, 16 to 64 at a time) and the new-token block."""
    cos = cos.reshape(B, T, head_dim).float().contiguous()
    sin = sin.reshape(B, T, head_dim).float().contiguous()
    return cos, sin, _query_block(rep * T), max(16, _pow2(T))


def _query_block(rows: int) -> int:
    """Query rows per program: a key/value head's ``rep * T`` rows, 16 to 64 at a time."""
    return min(64, max(16, _pow2(rows)))


CACHE_MAX_TOKENS = 64  # new tokens per row rope_cache_attention keeps in registers (a step's k + 1)


def rope_cache_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor, start: torch.Tensor,
    n_heads: int, n_kv: int, head_dim: int, scale: float, block_n: int = 64, n_split: Optional[int] = None,
) -> torch.Tensor:
    """Attention output (B, T, n_heads * head_dim) of one layer's new tokens, the cache updated.

    ``q`` (B, T, n_heads * head_dim), ``k`` and ``v`` (B, T, n_kv * head_dim): the projections
    before RoPE (views into a joined q/k/v output are fine: only the last dimension must be
    contiguous). ``cos`` / ``sin`` (B, 1, T, head_dim) float32. ``k_cache`` / ``v_cache``
    (B, n_kv, S, head_dim) contiguous; ``length`` / ``start`` (B,) the cache's slots written
    before this forward and its left padding (the new tokens go to ``length[b] ..``).
    ``n_split``: programs per query block, each over a share of the cache's slots, merged by a
    second kernel (FlashDecoding); None: :func:`_cache_split_count`, by the cache's capacity
    ``S`` (not its length, so a captured graph stays right as the cache fills).
    """
    B, T, _ = q.shape
    S = k_cache.shape[2]
    rep = n_heads // n_kv
    if T > CACHE_MAX_TOKENS:  # its block of new tokens would be T wide: a 3,900-token prompt took minutes to compile
        raise ValueError(f"rope_cache_attention takes at most {CACHE_MAX_TOKENS} new tokens per row, got {T}; "
                         "feed a prompt through the SDPA path (LlamaLM does).")
    _check(q, k, v, k_cache, v_cache, B, T, S, n_heads, n_kv, head_dim)
    cos, sin, block_m, block_t = _launch_layout(cos, sin, B, T, head_dim, rep)
    out = torch.empty(B, T, n_heads * head_dim, dtype=q.dtype, device=q.device)
    nqb = triton.cdiv(rep * T, block_m)
    splits, split_len = _split_layout(S, block_n, n_split, _cache_split_count(B * n_kv * nqb, S, q.device))
    pm = pl = pacc = out  # one split writes the output itself
    if splits > 1:
        f32 = dict(dtype=torch.float32, device=q.device)
        pm = torch.empty(B, n_kv, splits, nqb * block_m, **f32)
        pl = torch.empty_like(pm)
        pacc = torch.empty(B, n_kv, splits, nqb * block_m, head_dim, **f32)
    _rope_cache_attention_kernel[(B, n_kv, nqb * splits)](
        q, k, v, q.stride(1), k.stride(1), v.stride(1), cos, sin, k_cache, v_cache, length, start, out,
        pm, pl, pacc, T, S, scale, split_len, H=n_heads, HKV=n_kv, D=head_dim, REP=rep, NQB=nqb, NSPLIT=splits,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_T=block_t,
    )
    if splits > 1:
        _combine_splits[(B, n_kv, nqb)](
            pm, pl, pacc, out, T, H=n_heads, HKV=n_kv, D=head_dim, REP=rep, NQB=nqb, NSPLIT=splits, BLOCK_M=block_m,
        )
    return out


CANVAS_MAX_TOKENS = 64  # fed tokens per row the canvas kernel keeps in registers


@functools.lru_cache(maxsize=None)
def multiprocessors(device: torch.device) -> int:
    """SMs of ``device``, which the kernels size their grids by (8 on a CPU: the interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


def _split_count(programs: int, slots: int, block_n: int, device: torch.device) -> int:
    """Key splits per program so that the grid fills the GPU about once (FlashDecoding). On an
    H200 (``benchmarks/results/decode_attention_2026-12-03_h200.txt``) about one program per SM
    beat about two at every dual-cache shape: LLaDA-8B batch 1, 4 splits 11.9 us per layer vs 6
    splits 14.5; batch 8, one split 37.7 vs two 45.7."""
    return max(1, min(triton.cdiv(slots, block_n), multiprocessors(device) // programs))


def _split_layout(slots: int, block_n: int, n_split: Optional[int], default: int) -> tuple[int, int]:
    """(splits, slots per split) of ``slots`` keys in whole blocks of ``block_n``: ``n_split``
    (checked) or ``default`` shares, fewer where rounding to whole blocks leaves one empty."""
    if n_split is not None and (not isinstance(n_split, int) or n_split < 1):
        raise ValueError(f"n_split must be a positive int (or None to size it by the keys), got {n_split!r}.")
    split_len = triton.cdiv(triton.cdiv(slots, n_split or default), block_n) * block_n
    return triton.cdiv(slots, split_len), split_len


CACHE_SPLIT_SLOTS = 256
"""Fewest cache slots per split of :func:`rope_cache_attention`: a short cache (the speculative
benchmark's 192 slots) keeps one program per query block and no second kernel. On an H200
(``benchmarks/results/decode_attention_2026-12-03_h200_long-cache.txt``), at 4,000 cached slots
and batch 1, 16 splits of 256 slots beat 8 of 512 (10.3 vs 12.0 us per layer for the 1B draft,
16.2 vs 17.6 for the 8B verify; one program 52.1 / 73.5); at 100 cached slots a split costs
~1 us (4.1 vs 5.1)."""


def _cache_split_count(programs: int, slots: int, device: torch.device) -> int:
    """Splits of a static cache's slots: one program per query block reads the whole cache, so
    at batch 1 eight key/value heads leave most SMs idle once the cache is long (a 4k-token
    prompt); splits of at least :data:`CACHE_SPLIT_SLOTS` slots fill the GPU about once."""
    return max(1, min(slots // CACHE_SPLIT_SLOTS, multiprocessors(device) // programs))


def rope_cache_splits(B: int, T: int, n_heads: int, n_kv: int, slots: int, device: torch.device,
                      block_n: int = 64) -> int:
    """How many programs :func:`rope_cache_attention` splits each query block's slots over, by default."""
    rep = n_heads // n_kv
    programs = B * n_kv * triton.cdiv(rep * T, _query_block(rep * T))
    return _split_layout(slots, block_n, None, _cache_split_count(programs, slots, device))[0]


def _canvas_key_block(block_m: int) -> int:
    """Keys per block of the canvas kernel: 32 beside a full 64-row query block (Dream-7B's seven
    query heads per key/value head: 14.5 vs 15.5 us per layer at batch 1, 25.2 vs 31.2 at batch
    8 on an H200, same file), else 64 (LLaDA-8B, 32-row blocks: 11.9 vs 12.9 us)."""
    return 32 if block_m >= 64 else 64


def canvas_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, write_idx: torch.Tensor, key_valid: Optional[torch.Tensor],
    n_heads: int, n_kv: int, head_dim: int, scale: float, block_n: Optional[int] = None, n_split: Optional[int] = None,
) -> torch.Tensor:
    """A dLLM cache's partial step in two kernels: RoPE on the fed tokens' q and k, their k/v
    written at ``write_idx``, and bidirectional attention over the whole canvas (kept slots from
    the cache, the fed ones from registers), split over the canvas (FlashDecoding) and combined.

    ``q`` (B, T, n_heads * head_dim), ``k`` / ``v`` (B, T, n_kv * head_dim): projections before
    RoPE, rows of one stride, T <= :data:`CANVAS_MAX_TOKENS`. ``cos`` / ``sin`` (B, 1, T, head_dim)
    float32. ``k_cache`` / ``v_cache`` (B, n_kv, L + 1, head_dim) contiguous, slot L the trash slot
    (:class:`~paradecode.caches.canvas.CanvasKVCache`); ``write_idx`` (B, T) the slot of each fed
    token (L: not kept, and not attended); ``key_valid`` (B, L + 1) bool or None (every canvas
    slot). ``block_n`` / ``n_split``: keys per block and splits over the canvas (None: what
    :func:`_canvas_key_block` and :func:`_split_count` pick). Returns (B, T, n_heads * head_dim).
    """
    B, T, _ = q.shape
    S = k_cache.shape[2]
    L = S - 1
    rep = n_heads // n_kv
    if T > CANVAS_MAX_TOKENS:
        raise ValueError(f"canvas_attention keeps at most {CANVAS_MAX_TOKENS} fed tokens per row, got {T}.")
    _check(q, k, v, k_cache, v_cache, B, T, S, n_heads, n_kv, head_dim)
    if write_idx.shape != (B, T):
        raise ValueError(f"write_idx must be (B, T) = {(B, T)}, got {tuple(write_idx.shape)}.")
    cos, sin, block_m, block_t = _launch_layout(cos, sin, B, T, head_dim, rep)
    block_n = block_n or _canvas_key_block(block_m)
    nqb = triton.cdiv(rep * T, block_m)
    splits, split_len = _split_layout(L, block_n, n_split, _split_count(B * n_kv * nqb, L, block_n, q.device))
    f32 = dict(dtype=torch.float32, device=q.device)
    pm = torch.empty(B, n_kv, splits, nqb * block_m, **f32)
    pl = torch.empty_like(pm)
    pacc = torch.empty(B, n_kv, splits, nqb * block_m, head_dim, **f32)
    has_mask = key_valid is not None
    kv_mask = key_valid.reshape(B, S).contiguous() if has_mask else write_idx
    _canvas_attention_partial[(B, n_kv, nqb * splits)](
        q, k, v, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos, sin,
        k_cache, v_cache, write_idx.contiguous(), kv_mask, pm, pl, pacc, T, L, scale, split_len,
        HKV=n_kv, D=head_dim, REP=rep, NQB=nqb, NSPLIT=splits, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_T=block_t, HAS_MASK=has_mask,
    )
    out = torch.empty(B, T, n_heads * head_dim, dtype=q.dtype, device=q.device)
    _combine_splits[(B, n_kv, nqb)](
        pm, pl, pacc, out, T, H=n_heads, HKV=n_kv, D=head_dim, REP=rep, NQB=nqb, NSPLIT=splits, BLOCK_M=block_m,
    )
    return out
