"""Split-K for the output projections of a dLLM step, with split counts chosen by timing.

At a few hundred rows (a dual-cache step at batch 8, the prefix cache's block + suffix) the
attention output and MLP down projections of an 8B model have 4,096 output columns: cuBLAS's
tiles then cover about half of an H200's 132 SMs once, and those two matmuls ran at 1.6-1.7x and
1.3-1.6x their limits (``benchmarks/README.md``, "the projections at M = 256"). Splitting the
reduction dimension into ``s`` parts, as one strided batched matmul with float32 partial outputs
summed after, gives ``s`` times the tiles for the same weight bytes. Measured on an H200, the
partial outputs cost more than the tiles save at 256 rows; a split won only where cuBLAS's own
choice was slow (the down projection at 192 and 224 rows). So it is opt-in
(``LLaDAModel.use_split_k``), and the timing decides per shape.

Whether a split pays depends on the shape and the GPU, so :func:`tune_split_k` times each
candidate on the model's own weights (every layer's in turn, so that they come from memory,
not from L2) and keeps, per (rows, out, in) shape, the fastest split that beats one matmul by
a margin. Numerics: the partial sums are float32 and added in float32, as one matmul
accumulates, but in another order; the tokens of a model with splits can differ from those of
the same model without them, and eager and graphed forwards of one model agree.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SplitKPlan", "split_k_linear", "project", "tune_split_k", "plan_from_times", "SPLITS", "TUNED_ROWS"]

SPLITS = (1, 2, 3, 4, 6, 8)
"""Candidate split counts; a split needs ``in_features / s`` to be a multiple of 64."""

TUNED_ROWS = tuple(range(32, 1025, 32))
"""Row counts tuned; a forward's rows round up to the next one, and past the last a matmul has
tiles enough for every SM without a split."""

MARGIN = 0.97
"""A split is kept only when it takes at most this fraction of one matmul's time."""


def split_k_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], splits: int) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` as ``splits`` matmuls over parts of the input features,
    one strided batched matmul with float32 outputs, summed in float32 and rounded once."""
    n_out, k = weight.shape
    if splits < 1 or k % splits:
        raise ValueError(f"splits must divide the {k} input features, got {splits}.")
    rows = x.reshape(-1, k)
    part = k // splits
    a = rows.reshape(rows.shape[0], splits, part).transpose(0, 1)  # (s, M, K/s): a view of contiguous rows
    b = weight.view(n_out, splits, part).permute(1, 2, 0)  # (s, K/s, N): the weight as stored
    out = _bmm_wide(a, b).sum(0)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.to(x.dtype).view(*x.shape[:-1], n_out)


def _bmm_wide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with float32 outputs for half inputs (float64 stays float64)."""
    if a.dtype not in (torch.float16, torch.bfloat16):
        return torch.bmm(a, b)
    if a.is_cuda and _has_bmm_out_dtype(a.device):
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a, b).float() if a.is_cuda else torch.bmm(a.float(), b.float())


_BMM_OUT_DTYPE: dict[torch.device, bool] = {}


def _has_bmm_out_dtype(device: torch.device) -> bool:
    """Whether this torch has ``bmm(..., out_dtype=float32)`` for half inputs on ``device`` (checked
    once, outside any graph capture: :func:`tune_split_k` calls it first)."""
    if device not in _BMM_OUT_DTYPE:
        try:
            x = torch.ones(1, 2, 64, dtype=torch.bfloat16, device=device)
            torch.bmm(x, x.transpose(1, 2), out_dtype=torch.float32)
            _BMM_OUT_DTYPE[device] = True
        except (RuntimeError, TypeError):
            _BMM_OUT_DTYPE[device] = False
    return _BMM_OUT_DTYPE[device]


class SplitKPlan:
    """Split counts per (rows, out_features, in_features); shapes not in the plan run unsplit."""

    def __init__(self, table: Optional[dict[tuple[int, int, int], int]] = None) -> None:
        self.table: dict[tuple[int, int, int], int] = dict(table or {})
        self.rows = sorted({m for m, _, _ in self.table})

    def splits(self, rows: int, weight: torch.Tensor) -> int:
        """The split for ``rows`` rows of ``weight`` (out, in): the plan's entry at the next tuned row count."""
        i = bisect.bisect_left(self.rows, rows)
        if i == len(self.rows):
            return 1
        n_out, k = weight.shape
        return self.table.get((self.rows[i], n_out, k), 1)

    def __repr__(self) -> str:
        kept = {key: s for key, s in self.table.items() if s > 1}
        return f"SplitKPlan({len(self.table)} shapes, split where faster: {kept})"


def project(linear: nn.Linear, x: torch.Tensor, plan: Optional[SplitKPlan]) -> torch.Tensor:
    """``linear(x)``, split as ``plan`` says for this many rows (unsplit without a plan)."""
    if plan is None:
        return linear(x)
    s = plan.splits(x.numel() // x.shape[-1], linear.weight)
    return linear(x) if s == 1 else split_k_linear(x, linear.weight, linear.bias, s)


def _candidates(k: int) -> list[int]:
    return [s for s in SPLITS if k % s == 0 and (k // s) % 64 == 0]


def tune_split_k(
    weights: Sequence[torch.Tensor], rows: Iterable[int] = TUNED_ROWS, repeats: int = 5
) -> dict[tuple[int, int, int], dict[int, float]]:
    """Time every candidate split of ``x @ w.T`` for each row count, cycling through ``weights``
    (one projection of every layer, one shape: each timed call reads its weight from memory).
    Returns ``{(rows, out, in): {split: seconds per matmul}}``; CUDA only."""
    if not weights or any(w.shape != weights[0].shape for w in weights):
        raise ValueError("tune_split_k takes a non-empty list of weights of one shape (one projection per layer).")
    dev = weights[0].device
    if dev.type != "cuda":
        raise ValueError("tune_split_k times matmuls on a CUDA device; on a CPU give SplitKPlan a table.")
    _has_bmm_out_dtype(dev)
    n_out, k = weights[0].shape
    times: dict[tuple[int, int, int], dict[int, float]] = {}
    stream = torch.cuda.Stream(dev)
    for m in rows:
        x = torch.randn(m, k, dtype=weights[0].dtype, device=dev)
        per: dict[int, float] = {}
        for s in _candidates(k):
            def run(s: int = s) -> None:
                for w in weights:
                    F.linear(x, w) if s == 1 else split_k_linear(x, w, None, s)

            # replayed from a graph, as a step runs them: timed eagerly, the host's launches of the
            # split's extra ops would be measured instead of the device's work
            stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(stream):
                run()  # warm-up: cuBLAS heuristics, workspace
            torch.cuda.current_stream(dev).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            best = math.inf
            for _ in range(repeats):
                start.record()
                graph.replay()
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3 / len(weights))
            per[s] = best
            del graph
        times[(m, n_out, k)] = per
    return times


def plan_from_times(times: dict[tuple[int, int, int], dict[int, float]], margin: float = MARGIN) -> SplitKPlan:
    """Per shape, the fastest split if it takes at most ``margin`` of the unsplit time, else 1."""
    table = {}
    for key, per in times.items():
        s, t = min(per.items(), key=lambda kv: kv[1])
        table[key] = s if s > 1 and t <= margin * per[1] else 1
    return SplitKPlan(table)
