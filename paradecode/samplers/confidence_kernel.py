"""Greedy predictions and their float64 softmax confidence in one pass over the logits (Triton).

LLaDA's low-confidence remasking takes, per position, the argmax of the logits and its
probability under a float64 softmax. PyTorch does that as a copy (the mask token set to -inf),
an argmax, a float64 softmax that writes the whole (positions, vocabulary) array in float64, and
a gather. At LLaDA-8B's vocabulary (126,464) a batch-32 step writes and reads ~1 GB of float64
for 1,024 positions: 1.3 ms of a 105 ms dual-cache step, and 0.14 ms of a 7 ms one at batch 1
(``benchmarks/step_profile.py``). The argmax's probability is ``1 / sum_i exp(l_i - max)``,
which needs only the maximum and that sum: :func:`top1_confidence` reads the logits twice
(the second time mostly from L2) and writes two numbers per position.

The arithmetic is the reference's: the logits are exact in float64, the sum adds float64
``exp(l_i - max)``. Only the summation order differs (per chunk of the vocabulary, chunks
rescaled to the row's maximum), so confidences agree with PyTorch's to a few float64 ulps; the
argmax is PyTorch's (the first maximal index). A non-finite row gives NaN as PyTorch's softmax
does (a +inf or NaN logit, or every logit -inf), which the step's finiteness check reports.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..models.decode_attention import multiprocessors, tl, triton, triton_available

__all__ = ["top1_confidence", "token_confidence", "softmax_entropy"]

_TILE = 2048  # vocabulary entries per loop iteration of a program
INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # logits the samplers' kernels read
# Programs per multiprocessor for reads that take the argmax alone (no float64 exponentials). A
# plain read of the logits may want more loads in flight than the two programs per SM that suit
# the float64 sums; benchmarks/select_kernels.py sweeps it (not yet run on a GPU).
ARGMAX_PROGRAMS_PER_SM = 2


if triton is not None:

    @triton.jit
    def _chunk_span(L, V, CHUNK, W, s0, s1):
        # the program's row (r // W, r % W of the leading dimensions), its logits and its CHUNK of them
        row = tl.program_id(0).to(tl.int64)
        lo = tl.program_id(1) * CHUNK
        return row, L + (row // W) * s0 + (row % W) * s1, lo, tl.minimum(lo + CHUNK, V)

    @triton.jit
    def _chunk_top1(L, M, IDX, S, V, CHUNK, FORBID, W, s0, s1, n_chunks, TILE: tl.constexpr, SUM: tl.constexpr):
        # one row and one CHUNK of its V logits: the chunk's max, first argmax and (SUM) sum exp(l - max)
        row, base, lo, hi = _chunk_span(L, V, CHUNK, W, s0, s1)
        lanes = tl.arange(0, TILE)
        best = tl.full([TILE], float("-inf"), tl.float32)
        best_at = tl.full([TILE], 2147483647, tl.int32)
        for start in range(lo, hi, TILE):
            col = start + lanes
            x = tl.load(base + col, mask=col < hi, other=float("-inf")).to(tl.float32)
            x = tl.where(col == FORBID, float("-inf"), x)
            take = (x > best) | ((x == best) & (col < best_at))  # first maximal column per lane
            best_at = tl.where(take, col, best_at)
            best = tl.where(take, x, best)
        m = tl.max(best, 0)
        at = tl.min(tl.where(best == m, best_at, 2147483647), 0)
        out = row * n_chunks + tl.program_id(1)
        tl.store(M + out, m)
        tl.store(IDX + out, at)
        if SUM:
            tl.store(S + out, _sum_exp(base, lo, hi, FORBID, m.to(tl.float64), TILE))

    @triton.jit
    def _sum_exp(base, lo, hi, FORBID, m64, TILE: tl.constexpr):
        # sum exp(l - m64) in float64 over columns [lo, hi), FORBID left out: NaN where the
        # columns hold a NaN or +inf logit, as PyTorch's softmax
        lanes = tl.arange(0, TILE)
        acc = tl.zeros([TILE], tl.float64)
        for start in range(lo, hi, TILE):
            col = start + lanes
            x = tl.load(base + col, mask=col < hi, other=float("-inf")).to(tl.float64)
            x = tl.where(col == FORBID, float("-inf"), x)
            acc += tl.where(x == float("-inf"), 0.0, tl.exp(x - m64))
        return tl.sum(acc, 0)

    @triton.jit
    def _row_top1(M, IDX, row, n_chunks, CB: tl.constexpr):
        # a row's maximum and first argmax (0 for a row of -inf, as PyTorch's) from its chunks'
        c = tl.arange(0, CB)
        ok = c < n_chunks
        m_c = tl.load(M + row * n_chunks + c, mask=ok, other=float("-inf"))
        at_c = tl.load(IDX + row * n_chunks + c, mask=ok, other=2147483647)
        m = tl.max(m_c, 0)
        at = tl.min(tl.where(m_c == m, at_c, 2147483647), 0)
        return m_c, m, tl.where(m == float("-inf"), 0, at)

    @triton.jit
    def _chunk_token_sum(L, M, IDX, WHERE, S, V, CHUNK, FORBID, TOKEN, W, s0, s1, n_chunks,
                         CB: tl.constexpr, TILE: tl.constexpr):
        # one row and one CHUNK: only where the row's argmax is TOKEN and WHERE holds, the chunk's
        # sum exp(l - row max); every other program ends after reading its row's chunk maxima
        row, base, lo, hi = _chunk_span(L, V, CHUNK, W, s0, s1)
        _, m, at = _row_top1(M, IDX, row, n_chunks, CB)
        if (at == TOKEN) & (tl.load(WHERE + row) != 0) & (m != float("-inf")):
            tl.store(S + row * n_chunks + tl.program_id(1), _sum_exp(base, lo, hi, FORBID, m.to(tl.float64), TILE))

    @triton.jit
    def _combine_token_conf(M, IDX, WHERE, S, CONF, n_chunks, TOKEN, CB: tl.constexpr):
        # one row: 1 / (sum of its chunks' sums) where its argmax is TOKEN and WHERE holds, else -1
        row = tl.program_id(0).to(tl.int64)
        _, m, at = _row_top1(M, IDX, row, n_chunks, CB)
        want = (at == TOKEN) & (tl.load(WHERE + row) != 0)
        c = tl.arange(0, CB)
        s_c = tl.load(S + row * n_chunks + c, mask=c < tl.where(want & (m != float("-inf")), n_chunks, 0), other=0.0)
        total = tl.where(want, tl.sum(s_c, 0), 1.0)
        conf = tl.where((total != total) | (m == float("-inf")), float("nan"), 1.0 / total)
        tl.store(CONF + row, tl.where(want, conf, -1.0))

    @triton.jit
    def _combine_top1(M, IDX, S, X0, CONF, n_chunks, CB: tl.constexpr, SUM: tl.constexpr):
        # one row: the chunks' maxima, first argmax and (SUM) sums rescaled to the row's maximum
        row = tl.program_id(0).to(tl.int64)
        m_c, m, at = _row_top1(M, IDX, row, n_chunks, CB)
        tl.store(X0 + row, at.to(tl.int64))
        if SUM:
            c = tl.arange(0, CB)
            s_c = tl.load(S + row * n_chunks + c, mask=c < n_chunks, other=0.0)
            m64 = m.to(tl.float64)
            scaled = tl.where(m_c == float("-inf"), 0.0, s_c * tl.exp(m_c.to(tl.float64) - m64))
            total = tl.sum(scaled, 0)
            any_nan = tl.sum(tl.where(s_c != s_c, 1, 0), 0) > 0
            tl.store(CONF + row, tl.where(any_nan | (m == float("-inf")), float("nan"), 1.0 / total))

    @triton.jit
    def _chunk_entropy(L, M, S0, S1, V, CHUNK, FORBID, W, s0, s1, n_chunks, TILE: tl.constexpr):
        # one row and one CHUNK of its logits: the chunk's max m, sum exp(l - m), sum exp(l - m) (l - m)
        row, base, lo, hi = _chunk_span(L, V, CHUNK, W, s0, s1)
        lanes = tl.arange(0, TILE)
        best = tl.full([TILE], float("-inf"), tl.float32)
        for start in range(lo, hi, TILE):
            col = start + lanes
            x = tl.load(base + col, mask=col < hi, other=float("-inf")).to(tl.float32)
            best = tl.maximum(best, tl.where(col == FORBID, float("-inf"), x))
        m64 = tl.max(best, 0).to(tl.float64)
        acc0 = tl.zeros([TILE], tl.float64)
        acc1 = tl.zeros([TILE], tl.float64)
        for start in range(lo, hi, TILE):
            col = start + lanes
            x = tl.load(base + col, mask=col < hi, other=float("-inf")).to(tl.float64)
            d = tl.where(col == FORBID, float("-inf"), x) - m64
            e = tl.where(d == float("-inf"), 0.0, tl.exp(d))
            acc0 += e
            acc1 += tl.where(d == float("-inf"), 0.0, e * d)  # an excluded entry adds 0, not 0 * -inf
        out = row * n_chunks + tl.program_id(1)
        tl.store(M + out, m64.to(tl.float32))
        tl.store(S0 + out, tl.sum(acc0, 0))
        tl.store(S1 + out, tl.sum(acc1, 0))

    @triton.jit
    def _combine_entropy(M, S0, S1, H, n_chunks, CB: tl.constexpr):
        # one row: H = log Z - E[l - m] with the chunks' sums rescaled to the row's max
        row = tl.program_id(0).to(tl.int64)
        c = tl.arange(0, CB)
        ok = c < n_chunks
        m_c = tl.load(M + row * n_chunks + c, mask=ok, other=float("-inf"))
        s0_c = tl.load(S0 + row * n_chunks + c, mask=ok, other=0.0)
        s1_c = tl.load(S1 + row * n_chunks + c, mask=ok, other=0.0)
        m = tl.max(m_c, 0).to(tl.float64)
        live = m_c != float("-inf")
        shift = tl.where(live, m_c.to(tl.float64) - m, 0.0)
        scale = tl.where(live, tl.exp(shift), 0.0)
        z = tl.sum(s0_c * scale, 0)
        t = tl.sum(tl.where(live, scale * (s1_c + shift * s0_c), 0.0), 0)
        tl.store(H + row, (tl.log(z) - t / z).to(tl.float32))


def _chunked(logits: torch.Tensor, per_sm: int = 2) -> Optional[tuple]:
    """The (rows, W, s0, s1, R, n_chunks, chunk) layout both kernels read ``logits`` in, or None
    where they do not apply (no Triton here, float64, an empty or non-contiguous vocabulary).
    ``per_sm``: programs per multiprocessor the vocabulary is split for, where rows are few."""
    if (not triton_available(logits.device) or logits.dtype not in INPUT_DTYPES or logits.dim() < 1
            or logits.shape[-1] == 0 or logits.stride(-1) != 1 or logits.numel() == 0):
        return None
    V = logits.shape[-1]
    # rows addressed as (i, j) of up to two leading dimensions with their own strides: a slice
    # of a step's logits (the block columns of the full canvas's) is read in place, not copied
    rows = logits if logits.dim() == 3 else logits.reshape(1, -1, V)
    if rows.stride(-1) != 1:
        return None
    W, s0, s1 = rows.shape[1], rows.stride(0), rows.stride(1)
    R = rows.shape[0] * W
    # enough programs to fill the device: split each row's vocabulary when rows are few
    want = max(1, -(-per_sm * multiprocessors(logits.device) // R))
    n_chunks = min(want, 64, -(-V // _TILE))
    chunk = -(-V // n_chunks)
    chunk = -(-chunk // _TILE) * _TILE
    n_chunks = -(-V // chunk)
    return rows, W, s0, s1, R, n_chunks, chunk


def softmax_entropy(logits: torch.Tensor, forbid: Optional[int] = None) -> Optional[torch.Tensor]:
    """(...) float32 entropy (nats) of softmax over the last dimension of ``logits``, column
    ``forbid`` excluded (probability 0, adding nothing), in one pass per vocabulary chunk:
    ``H = log Z - sum_i p_i (l_i - m)`` from the chunk sums of ``exp(l_i - m)`` and
    ``exp(l_i - m) (l_i - m)`` in float64. PyTorch's ``log_softmax`` path works in float32, so
    the two agree to float32 rounding. None where the kernel does not apply."""
    layout = _chunked(logits)
    if layout is None:
        return None
    rows, W, s0, s1, R, n_chunks, chunk = layout
    V, dev = logits.shape[-1], logits.device
    m = torch.empty(R, n_chunks, dtype=torch.float32, device=dev)
    s0_, s1_ = (torch.empty(R, n_chunks, dtype=torch.float64, device=dev) for _ in range(2))
    h = torch.empty(R, dtype=torch.float32, device=dev)
    _chunk_entropy[(R, n_chunks)](rows, m, s0_, s1_, V, chunk, _forbid_column(forbid, V), W, s0, s1, n_chunks,
                                  TILE=_TILE)
    _combine_entropy[(R,)](m, s0_, s1_, h, n_chunks, CB=_combine_width(n_chunks))
    return h.reshape(logits.shape[:-1])


def top1_confidence(
    logits: torch.Tensor, forbid: Optional[int] = None, confidence: bool = True
) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``(argmax, float64 softmax probability of the argmax)`` over the last dimension of
    ``logits`` (any leading shape), with column ``forbid`` (the mask token) excluded as -inf.
    ``confidence=False``: the argmax alone (None for the confidence), in one read of the logits
    without float64 exponentials, which cost more than the read at LLaDA's vocabulary.

    Returns None where the kernel does not apply (no Triton here, float64 logits, a last
    dimension that is not contiguous): the caller computes it with PyTorch.
    """
    layout = _chunked(logits) if confidence else _chunked(logits, ARGMAX_PROGRAMS_PER_SM)
    if layout is None:
        return None
    R, n_chunks = layout[4], layout[5]
    sums = _sums(layout) if confidence else None
    m, idx = _chunk_maxima(layout, _forbid_column(forbid, logits.shape[-1]), sums)
    x0 = torch.empty(R, dtype=torch.int64, device=logits.device)
    conf = torch.empty(R, dtype=torch.float64, device=logits.device) if confidence else None
    _combine_top1[(R,)](m, idx, m if sums is None else sums, x0, x0 if conf is None else conf, n_chunks,
                        CB=_combine_width(n_chunks), SUM=confidence)
    lead = logits.shape[:-1]
    return x0.reshape(lead), None if conf is None else conf.reshape(lead)


def token_confidence(
    logits: torch.Tensor, token: int, where: torch.Tensor, forbid: Optional[int] = None
) -> Optional[torch.Tensor]:
    """(...) float64: at positions whose argmax (column ``forbid`` excluded) is ``token`` and where
    ``where`` holds, the float64 softmax probability of that argmax; -1 elsewhere.

    What end-of-text prediction ranks (Learn2PD's most confident end-of-text position), made in
    two reads: the argmax of every position, then float64 sums only for the positions that
    predict ``token`` (usually none), where :func:`top1_confidence` sums every position's
    vocabulary. Values equal ``top1_confidence``'s to float64 rounding; a position that predicts
    ``token`` with a NaN or +inf logit gets NaN. None where the kernel does not apply.
    """
    layout = _chunked(logits, ARGMAX_PROGRAMS_PER_SM)
    if layout is None or where.shape != logits.shape[:-1]:
        return None
    rows, W, s0, s1, R, n_chunks, chunk = layout
    forbid_col = _forbid_column(forbid, logits.shape[-1])
    m, idx = _chunk_maxima(layout, forbid_col)
    flags = where.to(device=logits.device, dtype=torch.bool).contiguous().view(torch.uint8)
    sums, cb = _sums(layout), _combine_width(n_chunks)
    _chunk_token_sum[(R, n_chunks)](rows, m, idx, flags, sums, logits.shape[-1], chunk, forbid_col, int(token),
                                     W, s0, s1, n_chunks, CB=cb, TILE=_TILE)
    conf = torch.empty(R, dtype=torch.float64, device=logits.device)
    _combine_token_conf[(R,)](m, idx, flags, sums, conf, n_chunks, int(token), CB=cb)
    return conf.reshape(logits.shape[:-1])


def _forbid_column(forbid: Optional[int], V: int) -> int:
    return -1 if forbid is None or not 0 <= forbid < V else int(forbid)


def _combine_width(n_chunks: int) -> int:
    return max(2, triton.next_power_of_2(n_chunks))


def _sums(layout: tuple) -> torch.Tensor:
    """A float64 (rows, chunks) buffer for the chunks' sums."""
    return torch.empty(layout[4], layout[5], dtype=torch.float64, device=layout[0].device)


def _chunk_maxima(layout: tuple, forbid_col: int, sums: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (row, chunk)'s maximum (float32) and first argmax (int32); with ``sums``, also the
    chunk's sum exp(l - its max) in float64 into it."""
    rows, W, s0, s1, R, n_chunks, chunk = layout
    m = torch.empty(R, n_chunks, dtype=torch.float32, device=rows.device)
    idx = torch.empty(R, n_chunks, dtype=torch.int32, device=rows.device)
    _chunk_top1[(R, n_chunks)](rows, m, idx, m if sums is None else sums, rows.shape[-1], chunk, forbid_col,
                               W, s0, s1, n_chunks, TILE=_TILE, SUM=sums is not None)
    return m, idx
