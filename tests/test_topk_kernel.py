"""paradecode.samplers.topk_kernel: each row's k most confident positions ranked in one Triton
launch (run here under the interpreter), against a stable descending sort (the set a per-row
``torch.topk(confidence, k)`` keeps on a GPU) and against the PyTorch path it replaces there."""

import pytest
import torch

from paradecode.samplers import common
from paradecode.samplers.common import masked_confidence, threshold_mask, topk_mask
from paradecode.samplers.topk_kernel import MAX_WIDTH, threshold_rank_mask, topk_rank_mask, triton

from .conftest import sample_with_kernels_forced

pytestmark = pytest.mark.skipif(triton is None, reason="needs the triton package (its interpreter runs on CPU)")


def _stable_topk(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    order = torch.sort(confidence, dim=-1, descending=True, stable=True).indices  # NaN first, ties by column
    ranked = torch.arange(confidence.shape[-1])[None, :] < k.long()[:, None]
    return torch.empty_like(ranked).scatter_(-1, order, ranked)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("width", [1, 7, 32, 33, 100, 300])
def test_ranks_as_a_stable_descending_sort_with_ties_nan_and_minus_inf(dtype, width):
    """Values from a few levels (ties everywhere), committed positions at -inf, a row of NaNs
    and numbers; k from 0 to past the width: the set a stable sort's first k give."""
    g = torch.Generator().manual_seed(width)
    conf = (torch.randint(0, 4, (6, width), generator=g).to(dtype) / 3)
    conf[conf == 0] = float("-inf")
    conf[0, : width // 2] = float("nan")
    k = torch.randint(0, width + 2, (6,), generator=g)
    k[1] = 0
    assert torch.equal(topk_rank_mask(conf, k), _stable_topk(conf, k))


def test_rows_of_a_wider_tensor_and_a_bool_k():
    """A row stride larger than the width (a slice of the canvas) and k given as bool (the
    threshold rules' top-1: one where the row has a mask, none where it has not)."""
    g = torch.Generator().manual_seed(1)
    wide = torch.rand(4, 50, dtype=torch.float64, generator=g)
    conf = wide[:, 10:42]
    k = torch.tensor([True, False, True, True])
    got = topk_rank_mask(conf, k)
    assert torch.equal(got, _stable_topk(conf.contiguous(), k))
    assert got.sum(-1).tolist() == [1, 0, 1, 1]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_threshold_form_takes_the_top1_and_the_confident_masked_positions(dtype, strict):
    """(top1 | c >= t) & mask, c the confidence at masked positions: against the stable-sort
    top-1 (ties everywhere: values on a few levels, one exactly at the threshold), with rows
    without a mask, a NaN, and confident values at unmasked positions that must not count."""
    g = torch.Generator().manual_seed(4)
    conf = (torch.randint(0, 5, (8, 32), generator=g).to(dtype) / 4)  # 0.5 is the threshold itself
    mask = torch.rand(8, 32, generator=g) < 0.5
    mask[2] = False
    mask[3] = True
    conf[4, 3], mask[4, 3] = float("nan"), True
    conf[5], mask[5] = float("-inf"), False  # its one masked position at -inf ties the unmasked ones:
    mask[5, 5] = True  # the top-1 falls on column 0, which the mask then drops
    masked = masked_confidence(conf, mask)
    top1 = _stable_topk(masked, mask.any(-1))
    above = masked > 0.5 if strict else masked >= 0.5
    want = (top1 | above) & mask
    assert torch.equal(threshold_rank_mask(conf, mask, 0.5, strict), want)
    assert not want[2].any() and want[4, 3] and not want[5].any()


def test_threshold_mask_with_the_kernel_forced_equals_pytorch_without_ties(monkeypatch):
    g = torch.Generator().manual_seed(5)
    conf = torch.rand(6, 32, dtype=torch.float64, generator=g)
    mask = torch.rand(6, 32, generator=g) < 0.6
    mask[1] = False
    eager = [threshold_mask(conf, mask, 0.7, strict) for strict in (False, True)]
    monkeypatch.setattr(common, "sampler_kernels_run", lambda t: True)
    monkeypatch.setattr(common, "_selection_kernels", True)
    calls = []
    monkeypatch.setattr(common, "threshold_rank_mask", lambda *a: calls.append(1) or threshold_rank_mask(*a))
    got = [threshold_mask(conf, mask, 0.7, strict) for strict in (False, True)]
    assert all(torch.equal(a, b) for a, b in zip(got, eager)) and len(calls) == 2


def test_topk_mask_with_the_kernel_forced_equals_pytorch_without_ties(monkeypatch):
    """Without ties the kernel's set is PyTorch's, whatever order topk gives equal values."""
    g = torch.Generator().manual_seed(2)
    conf = torch.rand(5, 32, dtype=torch.float64, generator=g)
    conf[conf < 0.3] = float("-inf")  # committed positions, which never fill k here
    k = torch.tensor([0, 1, 3, 8, 5])
    eager = topk_mask(conf, k)
    monkeypatch.setattr(common, "sampler_kernels_run", lambda t: True)
    assert torch.equal(topk_mask(conf, k), eager)  # the selection kernels are off by default
    monkeypatch.setattr(common, "_selection_kernels", True)
    calls = []
    monkeypatch.setattr(common, "topk_rank_mask", lambda *a: calls.append(1) or topk_rank_mask(*a))
    assert torch.equal(topk_mask(conf, k), eager) and calls == [1]


def test_the_kernel_declines_what_it_does_not_cover():
    conf = torch.rand(2, 8)
    k = torch.ones(2, dtype=torch.long)
    assert topk_rank_mask(conf, k) is not None
    assert topk_rank_mask(conf.t().contiguous().t(), k) is None  # columns not contiguous
    assert topk_rank_mask(torch.rand(2, MAX_WIDTH + 1), k) is None
    assert topk_rank_mask(torch.randint(0, 5, (2, 8)), k) is None
    assert topk_rank_mask(conf, k.double()) is None
    assert topk_rank_mask(torch.rand(2, 3, 8), k) is None
    assert topk_rank_mask(torch.rand(0, 8), k[:0]) is None
    mask = torch.ones(2, 8, dtype=torch.bool)
    assert threshold_rank_mask(conf, mask, 0.5) is not None
    assert threshold_rank_mask(conf, mask.long(), 0.5) is None
    assert threshold_rank_mask(conf, mask[:, :4], 0.5) is None


@pytest.mark.parametrize("strategy, kernel, cache, options", [
    ("lowconf", "topk_rank_mask", "dual", {}), ("localleap", "topk_rank_mask", None, {}),
    ("threshold", "threshold_rank_mask", "dual", {"threshold": 0.5}),
    ("editing", "threshold_rank_mask", None, {"threshold": 0.5}),
    ("dparallel", "threshold_rank_mask", None, {"threshold": 0.5})])
def test_rules_with_the_kernel_forced_decode_as_without(strategy, kernel, cache, options, monkeypatch):
    """Whole generations of each rule that calls the kernels (ragged prompts, rows leaving blocks
    at different steps; the cache does not change the call): the tokens and forwards of the
    PyTorch path."""
    eager, fused, calls = sample_with_kernels_forced(monkeypatch, common, kernel, strategy=strategy,
                                                     gen_length=16, block_length=8, cache=cache, seed=3, **options)
    assert len(calls) >= fused.trace.nfe
    assert torch.equal(fused.sequences, eager.sequences) and fused.trace.nfe == eager.trace.nfe
