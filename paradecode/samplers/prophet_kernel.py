"""Prophet's answer-window gap in two Triton launches instead of ~25 small PyTorch ones.

Prophet averages, over an answer window of ``k`` generation columns (the first ``k`` still
masked, or ``k`` from a fixed offset), each column's top-1 minus top-2 logit. In PyTorch that
is a chain of small kernels every step (the masked columns' ranks, a top-k of column indices,
a gather, a top-2 over the vocabulary, the masked mean): about 0.1 ms of device time at batch 1
on an H200, most of it launch-bound. :func:`answer_window_gap` finds each window column and
its top-2 in one program per (row, window slot), and averages the slots in a second launch.

The values are PyTorch's: the top-2 is taken in float32 from the logits' own values (exact for
bf16 / fp16 / fp32 inputs) and two equal maxima give a gap of 0, as ``topk`` does; the mean adds
the window's gaps in another order than ``sum`` over the generation, so it may differ in the
last bit of float32.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..models.decode_attention import tl, triton, triton_available
from .confidence_kernel import INPUT_DTYPES

__all__ = ["answer_window_gap"]

_TILE = 2048  # vocabulary entries per loop iteration
_COLS = 256  # generation columns scanned per iteration for the masked ones


if triton is not None:

    @triton.jit
    def _slot_gap(L, CANVAS, GAP, OK, G, V, k, MASK_ID, START, s0, s1, c0,
                  TILE: tl.constexpr, COLS: tl.constexpr, FIXED: tl.constexpr):
        # program (row, j): the j-th column of the row's window and its top-1 minus top-2 logit
        row = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1)
        if FIXED:
            col = START + j
            ok = col < G
        else:  # the (j + 1)-th masked column of the generation
            found = j * 0 - 1
            seen = j * 0
            cols = tl.arange(0, COLS)
            for t in range(0, G, COLS):
                g = t + cols
                tok = tl.load(CANVAS + row * c0 + g, mask=g < G, other=0)
                masked = ((tok == MASK_ID) & (g < G)).to(tl.int32)
                rank = tl.cumsum(masked, 0) + seen
                hit = (masked == 1) & (rank == j + 1)
                found = tl.maximum(found, tl.max(tl.where(hit, g, -1), 0))
                seen += tl.sum(masked, 0)
            ok = found >= 0
            col = tl.maximum(found, 0)
        base = L + row * s0 + col.to(tl.int64) * s1
        lanes = tl.arange(0, TILE)
        b1 = tl.full([TILE], float("-inf"), tl.float32)
        b2 = tl.full([TILE], float("-inf"), tl.float32)
        width = tl.where(ok, V, 0)  # a slot outside the window reads nothing
        for start in range(0, V, TILE):
            c = start + lanes
            x = tl.load(base + c, mask=c < width, other=float("-inf")).to(tl.float32)
            up = x > b1
            b2 = tl.where(up, b1, tl.maximum(b2, x))
            b1 = tl.where(up, x, b1)
        m1 = tl.max(b1, 0)
        first = tl.min(tl.where(b1 == m1, lanes, TILE), 0)  # the lane holding the maximum
        m2 = tl.max(tl.where(lanes == first, b2, b1), 0)  # its runner-up, or another lane's best
        out = row * k + j
        tl.store(GAP + out, tl.where(ok, m1 - m2, 0.0))
        tl.store(OK + out, ok.to(tl.int32))

    @triton.jit
    def _window_mean(GAP, OK, MEAN, k, KB: tl.constexpr):
        # one row: the mean of its window's gaps, -inf when the window is empty
        row = tl.program_id(0).to(tl.int64)
        s = tl.arange(0, KB)
        inside = s < k
        gap = tl.load(GAP + row * k + s, mask=inside, other=0.0)
        ok = tl.load(OK + row * k + s, mask=inside, other=0)
        count = tl.sum(ok, 0)
        mean = tl.sum(tl.where(ok > 0, gap, 0.0), 0) / tl.maximum(count, 1).to(tl.float32)
        tl.store(MEAN + row, tl.where(count > 0, mean, float("-inf")))


def answer_window_gap(
    gen_logits: torch.Tensor, k: int, start: Optional[int] = None,
    canvas: Optional[torch.Tensor] = None, mask_id: Optional[int] = None,
) -> Optional[torch.Tensor]:
    """(n,) mean top-1 minus top-2 logit over each row's answer window, or -inf for an empty
    window. ``gen_logits`` (n, G, V): the generation's logits. The window is the ``k`` columns
    from ``start`` (those inside G), or with ``start`` None the first ``k`` columns where
    ``canvas`` (n, G) holds ``mask_id``.

    Returns None where the kernels do not apply (no Triton here, other dtypes, a vocabulary
    that is not contiguous): the caller computes it with PyTorch."""
    n, G, V = gen_logits.shape
    if (not triton_available(gen_logits.device) or gen_logits.dtype not in INPUT_DTYPES or gen_logits.stride(-1) != 1
            or n == 0 or G == 0 or V < 2 or k <= 0):
        return None
    fixed = start is not None
    if not fixed and (canvas is None or canvas.shape != (n, G) or canvas.stride(-1) != 1 or mask_id is None):
        return None
    dev = gen_logits.device
    gap = torch.empty(n, k, dtype=torch.float32, device=dev)
    ok = torch.empty(n, k, dtype=torch.int32, device=dev)
    mean = torch.empty(n, dtype=torch.float32, device=dev)
    tokens = gen_logits if fixed else canvas  # an unused pointer under FIXED
    _slot_gap[(n, k)](gen_logits, tokens, gap, ok, G, V, k, -1 if fixed else int(mask_id), int(start or 0),
                      gen_logits.stride(0), gen_logits.stride(1), 0 if fixed else canvas.stride(0),
                      TILE=_TILE, COLS=_COLS, FIXED=fixed)
    _window_mean[(n,)](gap, ok, mean, k, KB=max(2, triton.next_power_of_2(k)))
    return mean
