"""CreditDecoding's credit update and fused logits in one Triton pass over the vocabulary.

Each step, CreditDecoding decays every (row, block position, vocabulary entry) credit by
``beta``, adds ``p_top1 ** gamma`` to the current top-1 token's, and decides on ``logits + alpha
* log1p(credit)``. In PyTorch that is a float32 softmax of the block's logits, its max, a
gather of the rows' credit, a scale, a scatter-add, a write back, ``log1p``, a scale and an add:
~0.15 ms of device time per step at batch 1 on an H200 (LLaDA-8B's 126,464-entry vocabulary).
Here the top-1 and its probability come from :func:`~paradecode.samplers.confidence_kernel.top1_confidence`
(one pass, float64 sum) and :func:`credit_step` reads the logits and the credit once, writing
the credit in place and the fused logits.

Values agree with PyTorch's to float32 rounding, not bit for bit: the top-1 probability is
summed in float64 (PyTorch's float32 softmax may differ in its last bit), and ``log1p`` is
computed as ``log(u) * c / (u - 1)`` with ``u = 1 + c`` (accurate to a few float32 ulps; the
interpreter that runs the tests has no ``log1p``). A multiply-add is not fused, as in PyTorch.
"""

from __future__ import annotations

import torch

from ..models.decode_attention import tl, triton, triton_available
from .confidence_kernel import INPUT_DTYPES

__all__ = ["credit_step", "credit_kernel_applies"]

_TILE = 1024
_CHUNK = 8192  # vocabulary entries per program


if triton is not None:

    @triton.jit
    def _credit_pass(LOGITS, CREDIT, OUT, ROWS, TOP, BOOST, V, W, s0, s1, c0, c1, beta, alpha, CHUNK,
                     TILE: tl.constexpr):
        # program (i * W + w, chunk): one block position's CHUNK of the vocabulary
        r = tl.program_id(0).to(tl.int64)
        chunk = tl.program_id(1)
        i, w = r // W, r % W
        credit_row = tl.load(ROWS + i)
        top = tl.load(TOP + r)
        boost = tl.load(BOOST + r)
        src = LOGITS + i * s0 + w * s1
        cred = CREDIT + credit_row * c0 + w * c1
        dst = OUT + r * V
        lo = chunk * CHUNK
        hi = tl.minimum(lo + CHUNK, V)
        lanes = tl.arange(0, TILE)
        for start in range(lo, hi, TILE):
            col = start + lanes
            inside = col < hi
            x = tl.load(src + col, mask=inside, other=0.0).to(tl.float32)
            c = tl.load(cred + col, mask=inside, other=0.0) * beta
            c = c + tl.where(col == top, boost, 0.0)
            tl.store(cred + col, c, mask=inside)
            u = 1.0 + c
            log1p = tl.where(u == 1.0, c, tl.log(u) * (c / (u - 1.0)))
            tl.store(dst + col, x + alpha * log1p, mask=inside)


def credit_kernel_applies(logits: torch.Tensor, credit: torch.Tensor) -> bool:
    """Whether :func:`credit_step` runs on these tensors (else the caller uses PyTorch)."""
    return (triton_available(logits.device) and logits.dim() == 3 and logits.stride(-1) == 1
            and logits.dtype in INPUT_DTYPES
            and credit.dtype == torch.float32 and credit.is_contiguous() and logits.numel() > 0)


def credit_step(
    logits: torch.Tensor, credit: torch.Tensor, rows: torch.Tensor, top: torch.Tensor, boost: torch.Tensor,
    beta: float, alpha: float,
) -> torch.Tensor:
    """Decay ``credit`` (B, W, V) of batch rows ``rows`` (n,) (device) by ``beta``, add ``boost``
    (n, W) at each position's ``top`` token (n, W), in place; returns ``logits`` (n, W, V) +
    ``alpha * log1p(credit)`` in float32."""
    n, W, V = logits.shape
    out = torch.empty(n, W, V, dtype=torch.float32, device=logits.device)
    chunks = -(-V // _CHUNK)
    _credit_pass[(n * W, chunks)](
        logits, credit, out, rows.to(torch.int64).contiguous(), top.to(torch.int64).contiguous(),
        boost.to(torch.float32).contiguous(), V, W, logits.stride(0), logits.stride(1), credit.stride(0),
        credit.stride(1), float(beta), float(alpha), _CHUNK, TILE=_TILE, enable_fp_fusion=False,
    )
    return out
