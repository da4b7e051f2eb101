"""RoPE and SwiGLU as hand-written Triton kernels, for :func:`~paradecode.models.llada.compile_elementwise`.

``torch.compile(dynamic=True)`` fuses each of these into one kernel, but with every size
symbolic it indexes the (batch, heads, tokens, head_dim) views through runtime integer
divisions per element. Profiled at LLaDA-8B's shape (24,576 tokens, a batch-32 refresh), its
RoPE over q and k took 1.7 ms per layer where the bytes need ~0.25 ms, and SwiGLU 1.1 ms where
they need ~0.45 ms: ~10% of a full forward (``benchmarks/step_profile.py``). These kernels tile
by token row and head (RoPE) or row and column block (SwiGLU), one division per program, and
do the arithmetic of the eager functions (:func:`~paradecode.models.llada.apply_rope`,
:func:`~paradecode.models.llada.swiglu`): float32 rotation rounded once, SiLU rounded to the
activation dtype before the product. Layouts they do not cover return None; the caller falls
back to the compiled kernel.
"""

from __future__ import annotations

from typing import Optional

import torch

from .decode_attention import tile_width_ok, tl, triton, triton_available

__all__ = ["copy_rows_triton", "rope_triton", "swiglu_triton"]

_HEADS_PER_PROGRAM = 16
_SWIGLU_BLOCK = 1024
_COPY_ROWS = 32


if triton is not None:

    @triton.jit
    def _rope_kernel(X, C, S, OUT, T, N, sxb, sxt, sxh, scb, sct, HALF: tl.constexpr, HB: tl.constexpr):
        # one token row (b, t) and HB of its N heads: out = x * cos + rotate_half(x) * sin
        r = tl.program_id(0).to(tl.int64)
        b, t = r // T, r % T
        h = tl.program_id(1) * HB + tl.arange(0, HB)
        d = tl.arange(0, HALF)
        ok = (h < N)[:, None]
        x_at = X + b * sxb + t * sxt + h[:, None] * sxh + d[None, :]
        x1 = tl.load(x_at, mask=ok, other=0.0).to(tl.float32)
        x2 = tl.load(x_at + HALF, mask=ok, other=0.0).to(tl.float32)
        cs = b * scb + t * sct + d
        c1, c2 = tl.load(C + cs)[None, :], tl.load(C + cs + HALF)[None, :]
        s1, s2 = tl.load(S + cs)[None, :], tl.load(S + cs + HALF)[None, :]
        o_at = OUT + (r * N + h[:, None]) * (2 * HALF) + d[None, :]
        tl.store(o_at, (x1 * c1 + (-x2) * s1).to(OUT.dtype.element_ty), mask=ok)
        tl.store(o_at + HALF, (x2 * c2 + x1 * s2).to(OUT.dtype.element_ty), mask=ok)

    @triton.jit
    def _swiglu_kernel(G, U, OUT, I, sg, su, BLOCK: tl.constexpr):
        # one row, BLOCK of its I columns: silu(gate), rounded to the activation dtype, times up
        row = tl.program_id(0).to(tl.int64)
        col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = col < I
        g = tl.load(G + row * sg + col, mask=ok, other=0.0).to(tl.float32)
        u = tl.load(U + row * su + col, mask=ok, other=0.0).to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(OUT.dtype.element_ty).to(tl.float32)
        tl.store(OUT + row * I + col, (act * u).to(OUT.dtype.element_ty), mask=ok)

    @triton.jit
    def _copy_rows_kernel(SRC, DST, IDX, H, T, ssb, ssh, sst, sdb, sdh, sdt, sib,
                          D: tl.constexpr, TB: tl.constexpr, HAS_IDX: tl.constexpr):
        # TB consecutive rows (positions) of one (batch, head): each row D contiguous elements,
        # written to the same positions, or to those IDX gives (a scatter of whole rows)
        bh = tl.program_id(0).to(tl.int64)
        b, h = bh // H, bh % H
        t = tl.program_id(1) * TB + tl.arange(0, TB)
        d = tl.arange(0, D)
        ok = t < T
        rows = tl.load(SRC + b * ssb + h * ssh + t[:, None] * sst + d[None, :], mask=ok[:, None])
        to = tl.load(IDX + b * sib + t, mask=ok, other=0).to(tl.int64) if HAS_IDX else t
        tl.store(DST + b * sdb + h * sdh + to[:, None] * sdt + d[None, :], rows, mask=ok[:, None])


def copy_rows_triton(dst: torch.Tensor, src: torch.Tensor, index: Optional[torch.Tensor] = None) -> bool:
    """``dst.copy_(src)`` for (B, H, T, D) views whose last dimension is contiguous, such as a
    full forward's keys (rows of the projection's output, heads interleaved) written into a
    K/V cache buffer (heads apart). PyTorch's copy indexes such a transposing copy per element
    and ran at ~1/3 of the copy rate at a batch-32 refresh. With ``index`` (B, T) integer, row
    ``t`` of ``src`` goes to row ``index[b, t]`` of ``dst`` (B, H, S, D), as
    ``dst.scatter_(2, index[:, None, :, None].expand_as(src), src)`` does element by element (a
    partial step's fed keys written into the canvas; rows that share a target, such as padding
    sent to a trash slot, leave one of them there). Returns False (nothing copied) where the
    kernel does not apply: the caller copies."""
    if dst.dim() != 4 or src.dim() != 4 or dst.dtype != src.dtype or not triton_available(dst.device):
        return False
    B, H, T, D = src.shape
    if index is None:
        if dst.shape != src.shape:
            return False
    elif (dst.shape[:2] != (B, H) or dst.shape[3] != D or index.shape != (B, T) or index.stride(-1) != 1
          or index.dtype not in (torch.int32, torch.int64) or index.device != dst.device):
        return False
    if not tile_width_ok(D) or dst.stride(-1) != 1 or src.stride(-1) != 1 or src.device != dst.device:
        return False
    if src.numel():
        _copy_rows_kernel[(B * H, triton.cdiv(T, _COPY_ROWS))](
            src, dst, src if index is None else index, H, T, *src.stride()[:3], *dst.stride()[:3],
            0 if index is None else index.stride(0), D=D, TB=_COPY_ROWS, HAS_IDX=index is not None)
    return True


def rope_triton(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Optional[torch.Tensor]:
    """Rotate-half RoPE of ``t`` (B, N, T, D) with float32 ``cos`` / ``sin`` (B or 1, 1, T, D),
    as :func:`~paradecode.models.llada.apply_rope`; the result is (B, N, T, D), a view of a
    (B, T, N, D) buffer (the layout of a q/k projection's output, so both sides read and write
    whole rows). None where the kernel does not apply (not a GPU tensor, head_dim not a power of
    two >= 16, a strided last dimension)."""
    if t.dim() != 4 or cos.dim() != 4 or not triton_available(t.device):
        return None
    B, N, T, D = t.shape
    if not tile_width_ok(D) or t.stride(-1) != 1 or cos.dtype != torch.float32 or sin.dtype != torch.float32:
        return None
    if cos.shape[1] != 1 or cos.shape[2:] != (T, D) or cos.shape[0] not in (1, B) or cos.shape != sin.shape:
        return None
    if cos.stride() != sin.stride() or cos.stride(-1) != 1:
        return None
    out = torch.empty(B, T, N, D, dtype=t.dtype, device=t.device)
    if t.numel() == 0:
        return out.transpose(1, 2)
    scb = cos.stride(0) if cos.shape[0] == B and B > 1 else 0
    grid = (B * T, triton.cdiv(N, _HEADS_PER_PROGRAM))
    _rope_kernel[grid](t, cos, sin, out, T, N, t.stride(0), t.stride(2), t.stride(1), scb, cos.stride(2),
                       HALF=D // 2, HB=_HEADS_PER_PROGRAM)
    return out.transpose(1, 2)


def swiglu_triton(gate: torch.Tensor, up: torch.Tensor) -> Optional[torch.Tensor]:
    """``silu(gate) * up`` as :func:`~paradecode.models.llada.swiglu` computes it, for ``gate`` /
    ``up`` of one shape (..., I) whose rows each have one stride (separate tensors, or the two
    halves of a joined gate/up projection); a contiguous result. None where the kernel does not
    apply (not a GPU tensor, other layouts)."""
    if gate.shape != up.shape or gate.dtype != up.dtype or gate.dim() < 2 or not triton_available(gate.device):
        return None
    I = gate.shape[-1]
    rows = gate.numel() // I if I else 0

    def row_stride(x: torch.Tensor) -> Optional[int]:
        """The stride between consecutive rows (leading dims flattened), or None if there is none."""
        if x.stride(-1) != 1:
            return None
        stride = nxt = None
        for size, s in zip(reversed(x.shape[:-1]), reversed(x.stride()[:-1])):
            if size == 1:
                continue
            if stride is None:
                stride = s
            elif s != nxt:
                return None
            nxt = s * size
        return 0 if stride is None else stride

    sg, su = row_stride(gate), row_stride(up)
    if sg is None or su is None:
        return None
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    if rows == 0 or I == 0:
        return out
    _swiglu_kernel[(rows, triton.cdiv(I, _SWIGLU_BLOCK))](gate, up, out, I, sg, su, BLOCK=_SWIGLU_BLOCK)
    return out
