"""Split-K for the output projections (paradecode.models.split_k): the arithmetic of a split,
the plan's look-up, and a LLaDA model whose attn_out / ff_out take the split path."""

import pytest
import torch
import torch.nn.functional as F

from paradecode.models import split_k
from paradecode.models.split_k import SplitKPlan, plan_from_times, project, split_k_linear

from .conftest import make_tiny_model


@pytest.mark.parametrize("splits", [1, 2, 3, 4, 6])
def test_a_split_matmul_is_the_matmul(splits):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 48, generator=g, dtype=torch.float64)
    w = torch.randn(7, 48, generator=g, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64)
    y = split_k_linear(x, w, b, splits)
    assert y.shape == (2, 5, 7) and y.dtype == x.dtype
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-12, atol=1e-12)
    strided = torch.randn(48, 10, generator=g, dtype=torch.float64).T  # rows not contiguous
    torch.testing.assert_close(split_k_linear(strided, w, None, splits), F.linear(strided, w), rtol=1e-12, atol=1e-12)


def test_a_split_rounds_once_from_float32_sums():
    """bf16 inputs: the parts are summed in float32 and rounded to bf16 once, so the result is
    the float32 product rounded (up to summation order), not a sum of rounded parts."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 256, generator=g).bfloat16()
    w = torch.randn(32, 256, generator=g).bfloat16()
    exact = (x.double() @ w.double().T).to(torch.bfloat16)
    y = split_k_linear(x, w, None, 4)
    assert y.dtype == torch.bfloat16
    assert (y.double() - exact.double()).abs().max() <= 2 ** -7 * exact.double().abs().max()
    with pytest.raises(ValueError, match="must divide the 256 input features"):
        split_k_linear(x, w, None, 3)


def test_the_plan_rounds_rows_up_and_leaves_other_shapes_unsplit():
    plan = SplitKPlan({(32, 7, 48): 2, (64, 7, 48): 4, (32, 9, 48): 3})
    w = torch.zeros(7, 48)
    assert [plan.splits(r, w) for r in (1, 32, 33, 64)] == [2, 2, 4, 4]
    assert plan.splits(65, w) == 1  # beyond the tuned rows: unsplit
    assert plan.splits(32, torch.zeros(7, 96)) == 1  # a shape not tuned
    assert plan.splits(32, torch.zeros(9, 48)) == 3


def test_a_split_is_kept_only_when_it_beats_one_matmul_by_the_margin():
    times = {(32, 7, 48): {1: 10.0, 2: 9.8, 4: 9.9},  # 2% faster: within the margin, unsplit
             (64, 7, 48): {1: 10.0, 2: 8.0, 4: 6.0}}
    plan = plan_from_times(times)
    assert plan.table == {(32, 7, 48): 1, (64, 7, 48): 4}
    assert "(64, 7, 48): 4" in repr(plan)


def test_a_llada_model_with_a_plan_runs_the_split_path_and_keeps_its_logits(monkeypatch):
    model = make_tiny_model().double()
    ids = torch.randint(0, 60, (2, 12), generator=torch.Generator().manual_seed(2))
    ref = model(ids)
    calls = []
    real = split_k.split_k_linear
    monkeypatch.setattr("paradecode.models.split_k.split_k_linear",
                        lambda x, w, b, s: calls.append((tuple(w.shape), s)) or real(x, w, b, s))
    model.use_split_k(SplitKPlan({(32, 64, 64): 2, (32, 64, 96): 3}))
    out = model(ids)
    assert calls == [((64, 64), 2), ((64, 96), 3)] * 2  # attn_out and ff_out of both blocks
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    model.use_split_k(None)
    calls.clear()
    model(ids)
    assert calls == []


def test_use_split_k_refuses_what_it_cannot_use():
    model = make_tiny_model()
    with pytest.raises(ValueError, match="'tune', a SplitKPlan or None"):
        model.use_split_k("fast")
    with pytest.raises(ValueError, match="'tune', a SplitKPlan or None"):
        model.use_split_k({(32, 64, 64): 2})
    with pytest.raises(ValueError, match="CUDA device"):
        model.use_split_k("tune")  # on a CPU there is nothing to time


def test_project_without_a_plan_is_the_linear():
    lin = torch.nn.Linear(48, 7).double()
    x = torch.randn(3, 48, dtype=torch.float64)
    assert torch.equal(project(lin, x, None), lin(x))
