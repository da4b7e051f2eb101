"""Learn2PD's per-step work in Triton launches: the filter's verdict, and the end-of-text cut.

The filter (a logistic regression over the block's confidences, as shipped) is in PyTorch a
float32 cast, a linear layer, a sigmoid, a comparison and the mask: five launches for 32 numbers
per row. :func:`filter_accept` is one program per row. Its sums and sigmoid are float32 as
PyTorch's, in another order (and Triton's exponential), so a verdict could differ only for a
probability within a few float32 ulps of the threshold.

The end-of-text cut replaces ~13 small PyTorch launches.

Each step, end-of-text prediction cuts a row after the first end-of-text prediction that the
filter accepted in its block, or else after its most confident masked end-of-text prediction,
and keeps the smallest cut seen so far. In PyTorch that is a chain of tiny kernels (a compare,
a masked minimum over the block, a maximum over the canvas, the choice between the two, the
minimum with the kept cut and its write), each launch-bound at batch 1. :func:`end_of_text_cut`
does it in one program per row.

The decisions are PyTorch's: the block's first hit by column, the first of equally confident
end-of-text positions, no ranking cut where a ranked confidence is NaN (PyTorch's maximum is NaN
then, and a NaN is not >= 0).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..models.decode_attention import tl, triton, triton_available

__all__ = ["end_of_text_cut", "filter_accept"]

_SPAN = 1024  # ranked positions per loop iteration


if triton is not None:

    @triton.jit
    def _cut(CONF, P, ACC, X0, COLS, W, EOS, LO, L, KEPT, ROWS, OUT, SPAN: tl.constexpr, WB: tl.constexpr):
        # one row: the first accepted end-of-text in its block, else the most confident ranked one
        r = tl.program_id(0).to(tl.int64)
        w = tl.arange(0, WB)
        in_block = w < W
        acc = tl.load(ACC + r * W + w, mask=in_block, other=0)
        x0 = tl.load(X0 + r * W + w, mask=in_block, other=-1)
        col = tl.load(COLS + r * W + w, mask=in_block, other=L)
        first = tl.min(tl.where((acc != 0) & (x0 == EOS), col, L), 0)
        lanes = tl.arange(0, SPAN)
        best = tl.full([SPAN], -2.0, tl.float64)  # below every ranked value (-1: not ranked)
        best_at = tl.full([SPAN], 2147483647, tl.int32)
        nans = tl.zeros([SPAN], tl.int32)
        for start in range(0, P, SPAN):
            j = start + lanes
            c = tl.load(CONF + r * P + j, mask=j < P, other=-2.0)
            nans += tl.where(c != c, 1, 0)
            take = c > best  # each lane sees its positions in order: it keeps the first of equals
            best_at = tl.where(take, j, best_at)
            best = tl.where(take, c, best)
        m = tl.max(best, 0)
        at = tl.min(tl.where(best == m, best_at, 2147483647), 0)
        ranked = tl.where((m >= 0) & (tl.sum(nans, 0) == 0), at + LO, L)
        row = tl.load(ROWS + r)
        cut = tl.minimum(tl.where(first < L, first, ranked), tl.load(KEPT + row))
        tl.store(KEPT + row, cut)
        tl.store(OUT + r, cut)

    @triton.jit
    def _filter_accept(CONF, WEIGHT, BIAS, MASK, OUT, W, s0, m0, threshold, WB: tl.constexpr):
        # one row: sigmoid(weight @ float32(confidence) + bias) > threshold, at masked positions
        r = tl.program_id(0).to(tl.int64)
        i = tl.arange(0, WB)
        ok = i < W
        c = tl.load(CONF + r * s0 + i, mask=ok, other=0.0).to(tl.float32)
        w = tl.load(WEIGHT + i[:, None] * W + i[None, :], mask=ok[:, None] & ok[None, :], other=0.0)
        z = tl.sum(w * c[None, :], 1) + tl.load(BIAS + i, mask=ok, other=0.0)
        p = 1.0 / (1.0 + tl.exp(-z))
        m = tl.load(MASK + r * m0 + i, mask=ok, other=0) != 0
        tl.store(OUT + r * W + i, ((p > threshold) & m).to(tl.int8), mask=ok)


def filter_accept(confidence: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, threshold: float,
                  mask: torch.Tensor) -> Optional[torch.Tensor]:
    """(n, W) bool: ``sigmoid(linear(confidence.float())) > threshold & mask`` for a filter of one
    linear layer (``weight`` (W, W), ``bias`` (W,) float32), or None where the kernel does not
    apply (the caller runs the filter module)."""
    n, W = confidence.shape if confidence.dim() == 2 else (0, 0)
    # one program holds the (W, W) weight in registers: blocks of up to 128 positions
    if (n == 0 or not triton_available(confidence.device) or W > 128 or confidence.stride(-1) != 1
            or weight.shape != (W, W) or bias.shape != (W,) or weight.dtype != torch.float32
            or bias.dtype != torch.float32 or weight.device != confidence.device or mask.shape != (n, W)
            or mask.dtype != torch.bool or mask.stride(-1) != 1 or mask.device != confidence.device):
        return None
    out = torch.empty(n, W, dtype=torch.bool, device=confidence.device)
    _filter_accept[(n,)](confidence, weight.contiguous(), bias.contiguous(), mask.view(torch.uint8), out.view(torch.int8),
                         W, confidence.stride(0), mask.stride(0), float(threshold),
                         WB=max(16, triton.next_power_of_2(W)))
    return out


def end_of_text_cut(
    eot_conf: torch.Tensor, accepted: torch.Tensor, x0: torch.Tensor, cols: torch.Tensor,
    eos: int, lo: int, length: int, kept: torch.Tensor, rows: torch.Tensor,
) -> Optional[torch.Tensor]:
    """(n,) canvas column after which each row ends, written into ``kept[rows]`` too.

    ``eot_conf`` (n, P) float64: the end-of-text confidence of columns ``lo`` on, -1 where not
    ranked (:meth:`~paradecode.samplers.block.BlockView.full_token_confidence`); ``accepted``,
    ``x0``, ``cols`` (n, W): the block's filter-accepted positions, predictions and canvas
    columns; ``kept`` (batch,) the smallest cut so far per row (``length``: none), ``rows`` (n,)
    the rows in play. None where the kernel does not apply: the caller computes it with PyTorch.
    """
    n, P = eot_conf.shape
    W = accepted.shape[-1]
    if (not triton_available(eot_conf.device) or eot_conf.dtype != torch.float64 or n == 0 or P == 0
            or accepted.dtype != torch.bool or kept.dtype != torch.long or kept.stride(0) != 1):
        return None
    out = torch.empty(n, dtype=torch.long, device=eot_conf.device)
    _cut[(n,)](eot_conf.contiguous(), P, accepted.contiguous().view(torch.uint8), x0.contiguous(), cols.contiguous(), W,
               int(eos), int(lo), int(length), kept, rows.to(torch.long).contiguous(), out, SPAN=_SPAN,
               WB=max(2, triton.next_power_of_2(W)))
    return out
