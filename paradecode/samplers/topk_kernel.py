"""Each row's ``k`` most confident block positions in one Triton launch.

Every rule that commits "the k most confident masked positions" (LLaDA's low-confidence
schedule, and the single most confident one that Fast-dLLM's threshold rule, editing, LocalLeap
and their kin always take) asked PyTorch for a full ``topk`` of the block and scattered the first
``k`` of its order back. At batch 1 on an H200 that ``topk`` of 32 float64 values is a radix
select and a sort, ~16 us of a ~7 ms dual-cache step, plus five small launches around it
(``benchmarks/results/step_profile_2026-12-04_h200_eot-kernel.txt``).

:func:`topk_rank_mask` ranks each position against its row in registers (one program per row):
a position is taken when fewer than ``k`` positions beat it. A position beats another when its
value is greater, NaN counting above everything (as ``torch.topk`` orders it), or equal with a
smaller column. That is the set the references' per-row ``torch.topk(confidence, k)`` returns
on a GPU (its gather keeps ties at the k-th value in column order); it is also what a stable
descending sort gives, which the tests compare against.

:func:`threshold_rank_mask` is Fast-dLLM's threshold rule in the same launch: the top-1 of the
masked positions, every masked position at or above the threshold, and the mask, which PyTorch
makes from six launches (the masked confidence, "has a mask", the top-1, the comparison, an or,
an and).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..models.decode_attention import tl, triton, triton_available

__all__ = ["topk_rank_mask", "threshold_rank_mask", "MAX_WIDTH"]

MAX_WIDTH = 1024  # positions per row the kernel ranks (wider rows stay with PyTorch's topk)
_RIVALS = 32  # positions each loop iteration compares against the whole row


if triton is not None:

    @triton.jit
    def _rank_mask(CONF, K, MASK, OUT, W, s0, m0, threshold,
                   WB: tl.constexpr, BJ: tl.constexpr, MASKED: tl.constexpr, THRESHOLD: tl.constexpr,
                   STRICT: tl.constexpr):
        # one row: positions fewer than k others beat (MASKED: unmasked ones rank at -inf, k is
        # whether the row has a mask; THRESHOLD: also those at or above the threshold, then & mask)
        r = tl.program_id(0).to(tl.int64)
        i = tl.arange(0, WB)
        c_raw = tl.load(CONF + r * s0 + i, mask=i < W, other=0.0)
        ci = c_raw
        if MASKED:
            m_i = tl.load(MASK + r * m0 + i, mask=i < W, other=0) != 0
            ci = tl.where(m_i, c_raw, float("-inf"))
            k = tl.max(m_i.to(tl.int32), 0)
        else:
            k = tl.load(K + r).to(tl.int32)
        nan_i = ci != ci
        beaten = tl.zeros([WB], tl.int32)
        for j0 in range(0, W, BJ):
            j = j0 + tl.arange(0, BJ)
            cj = tl.load(CONF + r * s0 + j, mask=j < W, other=0.0)
            if MASKED:
                cj = tl.where(tl.load(MASK + r * m0 + j, mask=j < W, other=0) != 0, cj, float("-inf"))
            nan_j = cj != cj
            above = (cj[None, :] > ci[:, None]) | (nan_j[None, :] & ~nan_i[:, None])
            tie = (cj[None, :] == ci[:, None]) | (nan_j[None, :] & nan_i[:, None])
            beats = (above | (tie & (j[None, :] < i[:, None]))) & (j[None, :] < W)
            beaten += tl.sum(beats.to(tl.int32), 1)
        take = beaten < k
        if THRESHOLD:
            if STRICT:
                take = take | (ci > threshold)
            else:
                take = take | (ci >= threshold)
            take = take & m_i
        tl.store(OUT + r * W + i, take.to(tl.int8), mask=i < W)


def _applies(confidence: torch.Tensor, other: torch.Tensor) -> bool:
    return (confidence.dim() == 2 and triton_available(confidence.device) and confidence.is_floating_point()
            and confidence.stride(-1) == 1 and other.device == confidence.device and 0 < confidence.shape[1] <= MAX_WIDTH
            and confidence.shape[0] > 0)


def _launch(confidence: torch.Tensor, k: Optional[torch.Tensor], mask: Optional[torch.Tensor],
            threshold: Optional[float], strict: bool) -> torch.Tensor:
    n, W = confidence.shape
    out = torch.empty(n, W, dtype=torch.bool, device=confidence.device)
    WB = max(16, triton.next_power_of_2(W))
    m = mask.view(torch.uint8) if mask is not None else out.view(torch.uint8)
    _rank_mask[(n,)](confidence, k if k is not None else m, m, out.view(torch.int8), W, confidence.stride(0),
                     m.stride(0), 0.0 if threshold is None else float(threshold), WB=WB, BJ=min(WB, _RIVALS),
                     MASKED=mask is not None, THRESHOLD=threshold is not None, STRICT=strict)
    return out


def topk_rank_mask(confidence: torch.Tensor, k: torch.Tensor) -> Optional[torch.Tensor]:
    """(n, W) bool: each row's ``k[row]`` highest ``confidence`` values (ties to the smaller
    column, NaN highest), or None where the kernel does not apply (the caller uses PyTorch).
    ``confidence`` (n, W) float (its last dimension contiguous); ``k`` (n,) integer or bool, on
    its device."""
    if not _applies(confidence, k) or k.shape != confidence.shape[:1] or k.is_floating_point():
        return None
    k = k.view(torch.uint8) if k.dtype == torch.bool else k
    return _launch(confidence, k.contiguous(), None, None, False)


def threshold_rank_mask(confidence: torch.Tensor, mask: torch.Tensor, threshold: float,
                        strict: bool = False) -> Optional[torch.Tensor]:
    """(n, W) bool: Fast-dLLM's threshold rule in one launch, ``(top1 | c >= threshold) & mask``
    where ``c`` is ``confidence`` at the masked positions and -inf elsewhere, top1 the row's most
    confident masked position (none in a row without a mask), ``strict``: ``c > threshold``.
    None where the kernel does not apply."""
    if (not _applies(confidence, mask) or mask.shape != confidence.shape or mask.dtype != torch.bool
            or mask.stride(-1) != 1):
        return None
    return _launch(confidence, None, mask, threshold, strict)
