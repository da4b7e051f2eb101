"""paradecode.samplers.prophet_kernel: Prophet's answer-window gap in two Triton launches (run
here under the interpreter), against the PyTorch path it replaces on a GPU, and Prophet's steps
with it forced."""

import pytest
import torch

from paradecode.samplers.prophet_kernel import answer_window_gap, triton

from .conftest import sample_with_kernels_forced

pytestmark = pytest.mark.skipif(triton is None, reason="needs the triton package (its interpreter runs on CPU)")

MASK = 9


def _reference(logits: torch.Tensor, k: int, start, canvas) -> torch.Tensor:
    """The mean top-1 minus top-2 gap over the window, written plainly, row by row."""
    out = []
    for r in range(logits.shape[0]):
        if start is not None:
            cols = [c for c in range(start, start + k) if c < logits.shape[1]]
        else:
            cols = [c for c in range(logits.shape[1]) if canvas[r, c] == MASK][:k]
        if not cols:
            out.append(float("-inf"))
            continue
        top2 = torch.topk(logits[r, cols].float(), 2, dim=-1).values
        out.append((top2[:, 0] - top2[:, 1]).mean().item())
    return torch.tensor(out)


def _case(dtype, n=3, G=40, V=5000, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, G, V, generator=g)).to(dtype)
    canvas = torch.randint(0, 50, (n, G), generator=g)
    canvas[canvas == MASK] = 0
    canvas[0, [2, 5, 7, 30, 31, 39]] = MASK  # more masks than the window: the first k count
    canvas[1, [38]] = MASK  # fewer: the mean of those there are
    return logits, canvas  # row 2: no mask at all, -inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [1, 5])
def test_first_masked_window_gap_equals_topk_over_the_window(dtype, k):
    logits, canvas = _case(dtype)
    got = answer_window_gap(logits, k, None, canvas, MASK)
    ref = _reference(logits, k, None, canvas)
    assert got[2] == float("-inf") and ref[2] == float("-inf")
    torch.testing.assert_close(got[:2], ref[:2], rtol=1e-6, atol=0)


@pytest.mark.parametrize("start", [0, 17, 37, 40])
def test_fixed_window_gap_keeps_the_columns_inside_the_generation(start):
    logits, _ = _case(torch.bfloat16, seed=1)
    got = answer_window_gap(logits, 5, start)
    ref = _reference(logits, 5, start, None)
    if start >= 40:
        assert torch.isinf(got).all() and (got < 0).all()
    else:
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def test_tied_maxima_give_a_zero_gap_within_and_across_lanes():
    logits = torch.zeros(1, 2, 6000)
    logits[0, 0, [10, 10 + 2048]] = 4.0  # the same lane, two tiles apart
    logits[0, 1, [3, 700]] = 2.0  # two lanes
    logits[0, 1, 5999] = 1.0
    got = answer_window_gap(logits, 1, 0)
    assert got.item() == 0.0
    got = answer_window_gap(logits, 1, 1)
    assert got.item() == 0.0
    logits[0, 1, 700] = 1.5
    assert answer_window_gap(logits, 1, 1).item() == 0.5


def test_strided_logits_are_read_in_place_and_other_inputs_are_declined():
    logits, canvas = _case(torch.float32, G=50)
    view = logits[:, 10:]  # the generation's part of a wider canvas's logits
    got = answer_window_gap(view, 3, None, canvas[:, 10:].contiguous(), MASK)
    torch.testing.assert_close(got, _reference(view, 3, None, canvas[:, 10:]), rtol=1e-6, atol=0)
    assert answer_window_gap(logits.double(), 3, 0) is None
    assert answer_window_gap(logits.transpose(1, 2), 3, 0) is None
    assert answer_window_gap(logits, 3, None) is None  # no canvas for a masked window


@pytest.mark.parametrize("opts", [
    dict(early_threshold=2.0, mid_threshold=2.0, late_threshold=2.0, max_steps=24),
    dict(answer_start=4, answer_length=3, early_threshold=1.5, mid_threshold=1.5, late_threshold=1.5, max_steps=24),
])
def test_prophet_with_the_kernel_forced_decodes_as_without(opts, monkeypatch):
    """Prophet's steps with the gap from the kernels (forced, as on a GPU) give the tokens, forwards
    and per-step gaps of the PyTorch path; its exits fire."""
    from paradecode.samplers import prophet

    eager, fused, calls = sample_with_kernels_forced(monkeypatch, prophet, "answer_window_gap", strategy="prophet",
                                                     gen_length=24, block_length=8, seed=3, **opts)
    assert calls
    assert torch.equal(fused.sequences, eager.sequences) and fused.trace.nfe == eager.trace.nfe
    gaps = [torch.stack(t.trace.extra("prophet_gap")) for t in (eager, fused)]
    torch.testing.assert_close(gaps[1], gaps[0], rtol=1e-6, atol=0, equal_nan=True)
    assert sum(int(e) for e in fused.trace.extra("prophet_exit")) > 0
