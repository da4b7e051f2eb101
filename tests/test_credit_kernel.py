"""paradecode.samplers.credit_kernel: CreditDecoding's credit update and fused logits in one
Triton pass (run here under the interpreter), against the PyTorch path it replaces on a GPU."""

import pytest
import torch

from paradecode.samplers.credit_kernel import credit_kernel_applies, credit_step, triton

from .conftest import sample_with_kernels_forced

pytestmark = pytest.mark.skipif(triton is None, reason="needs the triton package (its interpreter runs on CPU)")


def _torch_step(logits, credit, rows, top, boost, beta, alpha):
    """CreditDecoding's update as written in PyTorch (credit.py's path without the kernel)."""
    row_credit = credit[rows] * beta
    row_credit.scatter_add_(-1, top.unsqueeze(-1), boost.unsqueeze(-1))
    credit[rows] = row_credit
    return logits + alpha * torch.log1p(row_credit)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [[0, 1, 2], [2, 0]])
def test_credit_pass_equals_the_pytorch_update(dtype, rows):
    """Every row or some (in any order), a vocabulary over two chunks: the credit written in place
    and the fused logits agree with PyTorch's to float32 rounding, over several steps."""
    g = torch.Generator().manual_seed(0)
    B, W, V = 3, 4, 9000
    credit = torch.rand(B, W, V, generator=g) * torch.rand(B, W, V, generator=g).lt(0.01)  # sparse, as in use
    ref_credit = credit.clone()
    idx = torch.tensor(rows)
    for step in range(3):
        logits = (3 * torch.randn(len(rows), W, V, generator=g)).to(dtype)
        top = logits.float().argmax(-1)
        boost = torch.rand(len(rows), W, generator=g) * (torch.rand(len(rows), W, generator=g) > 0.3)
        got = credit_step(logits, credit, idx, top, boost, 0.8, 0.7)
        ref = _torch_step(logits, ref_credit, idx, top, boost, 0.8, 0.7)
        assert got.dtype == torch.float32
        torch.testing.assert_close(credit, ref_credit, rtol=2e-7, atol=0)
        torch.testing.assert_close(got, ref, rtol=2e-6, atol=1e-7)
    untouched = [r for r in range(B) if r not in rows]
    assert all(torch.equal(credit[r], ref_credit[r]) for r in untouched)


def test_the_kernel_declines_what_it_does_not_cover():
    credit = torch.zeros(2, 4, 100)
    assert credit_kernel_applies(torch.zeros(2, 4, 100), credit)
    assert not credit_kernel_applies(torch.zeros(2, 4, 100, dtype=torch.float64), credit)
    assert not credit_kernel_applies(torch.zeros(2, 100, 4).transpose(1, 2), credit)
    assert not credit_kernel_applies(torch.zeros(2, 4, 100), credit.double())


@pytest.mark.parametrize("cache", [None, "dual"])
def test_credit_decoding_with_the_kernels_forced_decodes_as_without(cache, monkeypatch):
    """Whole generations (ragged prompts, rows leaving blocks at different steps): the tokens and
    forwards of the PyTorch path with the top-1 and credit kernels forced (as on a GPU)."""
    from paradecode.samplers import credit

    eager, fused, calls = sample_with_kernels_forced(monkeypatch, credit, "credit_step", strategy="credit", gen_length=24,
                                                     block_length=8, cache=cache, seed=3, threshold=0.5)
    assert len(calls) == fused.trace.nfe
    assert torch.equal(fused.sequences, eager.sequences) and fused.trace.nfe == eager.trace.nfe
