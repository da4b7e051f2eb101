"""A Triton matmul for the linears of batch-1 decoding: a few input rows, a weight read once.

A draft model's decode forward (Llama-3.2-1B shape, one or two rows) is a chain of small
matrix-vector products: cuBLAS picks tile shapes made for many rows and, on an H200, takes
2.1x the weight-read time for the 2048 x 3072 q/k/v weight, 3.0x for the 2048 x 2048 output
projection and 1.7x for the 8192 x 2048 down projection (``benchmarks/results/kernel_breakdown_
2026-12-02_h200.txt``). With the weight read at the copy rate the product is free: the kernel
is only a good weight stream. :func:`skinny_linear` gives each program ``block_n`` output
columns (weight rows), streams their weight in ``block_k``-wide slices and keeps every input
row's partial sums in float32 registers; ``split`` > 1 also cuts the reduction over K into
that many programs (more programs for a narrow output) and a second kernel sums their float32
partials. The sums are in float32 as cuBLAS's are, in another order: results agree with
``F.linear`` to rounding, not bit for bit. A CUDA GPU runs it; a CPU only under Triton's
interpreter (``TRITON_INTERPRET=1``, the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .decode_attention import triton, tl, triton_available

__all__ = ["LINEAR_KERNELS", "SKINNY_MAX_ROWS", "SKINNY_FORWARD_ROWS", "SkinnyConfig", "skinny_linear", "default_config",
           "supports"]

LINEAR_KERNELS = ("torch", "triton")
"""How a decode forward's linears run: ``F.linear`` (cuBLAS), or :func:`skinny_linear` where a
forward feeds few tokens (``F.linear`` for the rest)."""

SKINNY_MAX_ROWS = 8
"""Most input rows the kernel takes: every row's sums stay in registers beside the weight slice."""

SKINNY_FORWARD_ROWS = 2
"""Most tokens a forward may feed (all rows together) for ``linear="triton"`` to run it through
this kernel: from three rows on, the search found cuBLAS faster at every Llama shape (3x at six)."""


@dataclass(frozen=True)
class SkinnyConfig:
    """Launch settings: output columns per program, reduction slice, K splits, warps, pipeline stages."""

    block_n: int = 8
    block_k: int = 512
    split: int = 1
    num_warps: int = 4
    num_stages: int = 3


def default_config(rows: int, n: int, k: int) -> SkinnyConfig:
    """The settings used when the caller gives none, from ``benchmarks/skinny_linear.py``'s search
    on an H200 (Llama-3.2-1B and 3.1-8B shapes, one and two rows): 1,024-wide reduction slices;
    four output columns per program up to 4,096 of them, else eight; a reduction four or more
    times longer than the output split in eight (the 1B down projection); two warps from two rows.
    From four rows the slice narrows so that a program holds 8,192 products."""
    m_pad = _pow2(rows)
    block_n = 4 if n <= 4096 else 8
    return SkinnyConfig(block_n=block_n, block_k=1024 if m_pad <= 2 else max(32, 8192 // (m_pad * block_n)),
                        split=8 if k >= 4 * n else 1, num_warps=4 if m_pad == 1 else 2, num_stages=3)


if triton is not None:

    @triton.jit
    def _skinny_input(X, NORM_W, m, m_ok, kk, k_ok, x_row, K, rstd, NORM: tl.constexpr, SWIGLU: tl.constexpr):
        """Rows ``m``, columns ``kk`` of the product's input: X itself, RMSNorm(X) * NORM_W (float32
        statistics, cast back, then scaled, as ``rms_norm``), or silu(gate) * up of X = [gate | up]
        (each op rounded to X's dtype, as ``swiglu`` runs them in that dtype)."""
        at = X + m[:, None] * x_row + kk[None, :]
        ok = m_ok[:, None] & k_ok[None, :]
        x = tl.load(at, mask=ok, other=0.0)
        if NORM:
            xn = (x.to(tl.float32) * rstd[:, None]).to(x.dtype)
            w = tl.load(NORM_W + kk, mask=k_ok, other=0.0)
            x = (xn.to(tl.float32) * w.to(tl.float32)[None, :]).to(x.dtype)
        if SWIGLU:
            g = x.to(tl.float32)
            act = (g / (1.0 + tl.exp(-g))).to(x.dtype)
            up = tl.load(at + K, mask=ok, other=0.0)
            x = (act.to(tl.float32) * up.to(tl.float32)).to(x.dtype)
        return x

    @triton.jit
    def _skinny_linear_kernel(
        X, W, BIAS, OUT, NORM_W, RES, M, N, K, x_row, w_row, out_row, res_row, k_per_split, eps,
        HAS_BIAS: tl.constexpr, M_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        SPLIT: tl.constexpr, NORM: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m = tl.arange(0, M_PAD)
        n_ok = n < N
        m_ok = m < M
        rstd = tl.zeros((M_PAD,), tl.float32)
        if NORM:  # the whole row's mean square, in every program (the rows are a few KB, in L2)
            ss = tl.zeros((M_PAD,), tl.float32)
            for k0 in range(0, K, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                xr = tl.load(X + m[:, None] * x_row + kk[None, :], mask=m_ok[:, None] & (kk < K)[None, :], other=0.0)
                ss += tl.sum(xr.to(tl.float32) * xr.to(tl.float32), 1)
            rstd = 1.0 / tl.sqrt(ss / K + eps)
        acc = tl.zeros((M_PAD, BLOCK_N), tl.float32)
        k_lo = pid_s * k_per_split
        for k0 in range(k_lo, k_lo + k_per_split, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            k_ok = kk < K
            w = tl.load(W + n[:, None] * w_row + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            x = _skinny_input(X, NORM_W, m, m_ok, kk, k_ok, x_row, K, rstd, NORM, SWIGLU)
            acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
        if SPLIT == 1:
            _skinny_store(acc, BIAS, OUT, RES, m, n, m_ok, n_ok, out_row, res_row, HAS_BIAS, RESIDUAL)
        else:  # float32 partials, (SPLIT, M_PAD, N), summed by _skinny_combine
            at = OUT + (pid_s * M_PAD + m)[:, None] * N + n[None, :]
            tl.store(at, acc, mask=n_ok[None, :])

    @triton.jit
    def _skinny_store(acc, BIAS, OUT, RES, m, n, m_ok, n_ok, out_row, res_row, HAS_BIAS: tl.constexpr,
                      RESIDUAL: tl.constexpr):
        """The product (+ bias) rounded to the output dtype, then (+ residual) rounded again: what
        ``residual + F.linear(...)`` gives."""
        ok = m_ok[:, None] & n_ok[None, :]
        if HAS_BIAS:
            acc += tl.load(BIAS + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        y = acc.to(OUT.dtype.element_ty)
        if RESIDUAL:
            r = tl.load(RES + m[:, None] * res_row + n[None, :], mask=ok, other=0.0)
            y = (y.to(tl.float32) + r.to(tl.float32)).to(OUT.dtype.element_ty)
        tl.store(OUT + m[:, None] * out_row + n[None, :], y, mask=ok)

    @triton.jit
    def _skinny_combine(P, BIAS, OUT, RES, M, N, out_row, res_row, HAS_BIAS: tl.constexpr, M_PAD: tl.constexpr,
                        SPLIT: tl.constexpr, BLOCK: tl.constexpr, RESIDUAL: tl.constexpr):
        n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = tl.arange(0, M_PAD)
        ok = (m < M)[:, None] & (n < N)[None, :]
        acc = tl.zeros((M_PAD, BLOCK), tl.float32)
        for s in tl.static_range(SPLIT):
            acc += tl.load(P + (s * M_PAD + m)[:, None] * N + n[None, :], mask=ok, other=0.0)
        _skinny_store(acc, BIAS, OUT, RES, m, n, m < M, n < N, out_row, res_row, HAS_BIAS, RESIDUAL)

def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def supports(x: torch.Tensor, weight: torch.Tensor, swiglu: bool = False) -> bool:
    """Whether :func:`skinny_linear` takes this product (few rows, floating point, one device,
    Triton there); callers fall back to ``F.linear`` otherwise."""
    if x.dim() < 1 or weight.dim() != 2:
        return False
    rows = x.numel() // max(1, x.shape[-1])
    return (
        1 <= rows <= SKINNY_MAX_ROWS
        and x.shape[-1] == weight.shape[1] * (2 if swiglu else 1)
        and x.dtype == weight.dtype
        and x.dtype.is_floating_point
        and x.device == weight.device
        and triton_available(x.device)
    )


def _rows(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` as (rows, width) with contiguous rows (a view where it can be)."""
    t = t.reshape(-1, width)
    return t if t.stride(-1) == 1 else t.contiguous()


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  config: Optional[SkinnyConfig] = None, *, norm_weight: Optional[torch.Tensor] = None,
                  norm_eps: float = 1e-6, swiglu: bool = False,
                  residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for at most :data:`SKINNY_MAX_ROWS` rows of ``x`` (all
    leading dimensions together), the weight (N, K) streamed once; what a layer does around the
    product can ride along instead of costing a kernel each:

    * ``norm_weight``: the product's input is ``rms_norm(x) * norm_weight`` (Llama's RMSNorm,
      ``norm_eps``), computed from ``x`` in every program;
    * ``swiglu``: ``x`` is (..., 2K), gate then up; the input is ``silu(gate) * up``;
    * ``residual`` (..., N): the result is ``residual + F.linear(...)``.

    Raises ``ValueError`` for a product it does not take (see :func:`supports`).
    """
    if not supports(x, weight, swiglu):
        raise ValueError(
            f"skinny_linear takes 1..{SKINNY_MAX_ROWS} rows of x (..., K{' * 2 with swiglu' if swiglu else ''}) "
            f"against a (N, K) weight of x's dtype on x's device with Triton available; got x {tuple(x.shape)} "
            f"{x.dtype} on {x.device}, weight {tuple(weight.shape)} {weight.dtype} on {weight.device}. "
            "Use F.linear for this product."
        )
    if weight.stride(-1) != 1:
        raise ValueError("skinny_linear needs a weight whose rows are contiguous (weight.stride(-1) == 1).")
    if norm_weight is not None and swiglu:
        raise ValueError("skinny_linear applies either an RMSNorm or SwiGLU to its input, not both.")
    N, K = weight.shape
    lead = x.shape[:-1]
    x2 = _rows(x, x.shape[-1])
    M = x2.shape[0]
    res = _rows(residual, N) if residual is not None else None
    if res is not None and res.shape[0] != M:
        raise ValueError(f"residual must hold {M} rows of {N}, got {tuple(residual.shape)}.")
    cfg = config or default_config(M, N, K)
    m_pad = _pow2(M)
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    has_bias = bias is not None
    anything = weight  # a pointer for the inputs a launch does not read
    split = max(1, min(cfg.split, triton.cdiv(K, cfg.block_k)))
    k_per_split = triton.cdiv(triton.cdiv(K, split), cfg.block_k) * cfg.block_k
    split = triton.cdiv(K, k_per_split)
    grid = (triton.cdiv(N, cfg.block_n), split)
    flags = dict(M_PAD=m_pad, NORM=norm_weight is not None, SWIGLU=swiglu)
    launch = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    nw = norm_weight if norm_weight is not None else anything
    r, r_row = (res, res.stride(0)) if res is not None else (anything, 0)
    if split == 1:
        _skinny_linear_kernel[grid](
            x2, weight, bias if has_bias else anything, out, nw, r, M, N, K, x2.stride(0), weight.stride(0),
            out.stride(0), r_row, k_per_split, norm_eps, HAS_BIAS=has_bias, BLOCK_N=cfg.block_n,
            BLOCK_K=cfg.block_k, SPLIT=1, RESIDUAL=res is not None, **flags, **launch,
        )
    else:
        part = torch.empty(split, m_pad, N, dtype=torch.float32, device=x.device)
        _skinny_linear_kernel[grid](
            x2, weight, anything, part, nw, anything, M, N, K, x2.stride(0), weight.stride(0), N, 0, k_per_split,
            norm_eps, HAS_BIAS=False, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, SPLIT=split, RESIDUAL=False,
            **flags, **launch,
        )
        block = 256
        _skinny_combine[(triton.cdiv(N, block),)](
            part, bias if has_bias else anything, out, r, M, N, out.stride(0), r_row, HAS_BIAS=has_bias, M_PAD=m_pad,
            SPLIT=split, BLOCK=block, RESIDUAL=res is not None,
        )
    return out.reshape(*lead, N)

