"""paradecode.samplers.confidence_kernel: the greedy prediction and its float64 softmax
confidence from one Triton pass (run here under the interpreter), against PyTorch's
argmax + float64 softmax, and the greedy step that uses it."""

import pytest
import torch

from paradecode.samplers import common
from paradecode.samplers.common import forbid_token, predict
from paradecode.samplers.confidence_kernel import token_confidence, top1_confidence, triton

pytestmark = pytest.mark.skipif(triton is None, reason="needs the triton package (its interpreter runs on CPU)")


def _reference(logits: torch.Tensor, forbid):
    logits = forbid_token(logits, forbid)
    x0 = logits.argmax(-1)
    return x0, torch.softmax(logits.to(torch.float64), -1).gather(-1, x0[..., None])[..., 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape, forbid", [((2, 3, 5000), 7), ((1, 2, 9000), None), ((40, 300), 299), ((3, 1), None)])
def test_kernel_equals_argmax_and_float64_softmax(dtype, shape, forbid):
    """Rows split into vocabulary chunks (few rows, a long vocabulary) and rows whole (many
    rows): the same argmax, and the confidence to float64 rounding, mask column excluded."""
    g = torch.Generator().manual_seed(3)
    logits = (4 * torch.randn(*shape, generator=g)).to(dtype)
    if forbid is not None:
        logits[..., forbid] = 50.0  # would win were it not excluded
    x0, conf = top1_confidence(logits, forbid)
    ref_x0, ref_conf = _reference(logits, forbid)
    assert x0.shape == shape[:-1] and x0.dtype == torch.int64 and conf.dtype == torch.float64
    assert torch.equal(x0, ref_x0)
    torch.testing.assert_close(conf, ref_conf, rtol=1e-13, atol=0)


def test_kernel_takes_the_first_of_tied_maxima_across_chunks():
    """Ties between chunks and within one: PyTorch's first maximal index."""
    logits = torch.zeros(2, 12000)
    logits[0, [9000, 2500, 11999]] = 3.0
    logits[1, [4097, 4099, 6]] = 1.0
    x0, conf = top1_confidence(logits)
    assert x0.tolist() == [2500, 6]
    torch.testing.assert_close(conf, _reference(logits, None)[1], rtol=1e-13, atol=0)


def test_kernel_gives_nan_where_pytorchs_softmax_does():
    """A NaN or +inf logit, or a row of -inf: NaN confidence (the step's finiteness check
    reports it); finite rows beside them are unaffected."""
    logits = torch.randn(4, 5000, generator=torch.Generator().manual_seed(0))
    logits[0, 4321] = float("nan")
    logits[1, 17] = float("inf")
    logits[2] = float("-inf")
    x0, conf = top1_confidence(logits)
    assert torch.isnan(conf[:3]).all()
    assert torch.isnan(_reference(logits, None)[1][:3]).all()
    assert torch.equal(x0[3], logits[3].argmax()) and torch.isfinite(conf[3])


def test_kernel_reads_strided_rows_and_declines_what_it_does_not_cover():
    base = torch.randn(3, 4, 2100, generator=torch.Generator().manual_seed(5))
    for sliced in (base[:, 1:3], base[1:, ::2], base[0, 1:]):  # columns of a larger array: read in place
        x0, conf = top1_confidence(sliced, 2)
        ref_x0, ref_conf = _reference(sliced, 2)
        assert x0.shape == sliced.shape[:-1] and torch.equal(x0, ref_x0)
        torch.testing.assert_close(conf, ref_conf, rtol=1e-13, atol=0)
    flat = torch.randn(2, 2, 2, 1500, generator=torch.Generator().manual_seed(6))  # four dimensions: flattened
    assert torch.equal(top1_confidence(flat)[0], flat.argmax(-1))
    assert top1_confidence(base.to(torch.float64)) is None  # float64 logits: PyTorch's path
    assert top1_confidence(base.transpose(1, 2)) is None  # vocabulary not contiguous


def _logits_predicting(token, shape, dtype, seed):
    """Random logits where two positions in three predict ``token``, by varied margins."""
    g = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(*shape, generator=g)
    pick = (torch.arange(logits[..., 0].numel()) % 3 != 2).reshape(shape[:-1])
    margin = 2 * torch.rand(shape[:-1], generator=g)
    logits[..., token] = torch.where(pick, logits.amax(-1) + margin, logits[..., token])
    return logits.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, forbid", [((2, 3, 5000), 7), ((40, 300), 299), ((1, 3, 9000), None)])
def test_token_confidence_is_the_confidence_where_the_argmax_is_the_token(dtype, shape, forbid):
    """Learn2PD's end-of-text ranking: the float64 confidence at positions predicting the token
    and allowed by ``where``, -1 at every other; rows split into vocabulary chunks and whole."""
    token = 5
    logits = _logits_predicting(token, shape, dtype, seed=sum(shape))
    if forbid is not None:
        logits[..., forbid] = 50.0  # would win were it not excluded
    where = (torch.arange(logits[..., 0].numel()) % 2 == 0).reshape(shape[:-1])
    x0, conf = _reference(logits, forbid)
    hits = where & (x0 == token)
    assert hits.any() and ((x0 == token) & ~where).any() and (where & (x0 != token)).any()
    out = token_confidence(logits, token, where, forbid)
    assert out.shape == shape[:-1] and out.dtype == torch.float64
    assert (out[~hits] == -1).all()
    torch.testing.assert_close(out[hits], conf[hits], rtol=1e-13, atol=0)
    cols = (slice(None), slice(1, None)) if logits.dim() == 3 else (slice(1, None),)  # a slice, read in place
    torch.testing.assert_close(token_confidence(logits[cols], token, where[cols], forbid),
                               torch.where(hits, conf, -1.0)[cols], rtol=1e-13, atol=0)


def test_token_confidence_gives_nan_where_the_softmax_does_and_declines_other_shapes():
    logits = _logits_predicting(3, (4, 5000), torch.float32, seed=2)
    logits[:, 3] = torch.tensor([float("inf"), 40.0, 40.0, -1.0])
    logits[1, 17] = float("inf")  # the argmax moves off the token: not ranked
    where = torch.ones(4, dtype=torch.bool)
    out = token_confidence(logits, 3, where)
    ref_x0, ref_conf = _reference(logits, None)
    assert torch.isnan(out[0]) and torch.isnan(ref_conf[0]) and ref_x0[0] == 3
    assert out[1] == -1 and out[3] == -1
    torch.testing.assert_close(out[2], ref_conf[2], rtol=1e-13, atol=0)
    assert token_confidence(logits, 3, where[:3]) is None  # ``where`` of another shape
    assert token_confidence(logits.to(torch.float64), 3, where) is None


def test_argmax_alone_reads_once_and_gives_the_same_tokens():
    logits = torch.randn(3, 4, 7000, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    x0, conf = top1_confidence(logits, 2, confidence=False)
    assert conf is None and torch.equal(x0, _reference(logits, 2)[0])


def test_greedy_predict_uses_the_kernel_and_keeps_its_results(monkeypatch):
    """predict's greedy low-confidence path with the kernel forced (as on a GPU) gives the same
    tokens and confidences as without it; sampled and random-remasking steps are unchanged."""
    logits = torch.randn(2, 8, 3000, generator=torch.Generator().manual_seed(9))
    eager = predict(logits, 0.0, "low_confidence", None, mask_id=11)
    calls = []
    monkeypatch.setattr(common, "sampler_kernels_run", lambda t: True)
    real = common.top1_confidence
    monkeypatch.setattr(common, "top1_confidence", lambda *a: calls.append(1) or real(*a))
    fused = predict(logits, 0.0, "low_confidence", None, mask_id=11)
    assert calls == [1]
    assert torch.equal(fused[0], eager[0])
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-13, atol=0)
    sampled = predict(logits, 0.5, "low_confidence", torch.Generator().manual_seed(1), mask_id=11)
    assert calls == [1] and sampled[1].dtype == torch.float64


def test_confidence_benchmark_smoke_times_both_ways_and_checks_they_agree(tmp_path):
    """benchmarks/confidence_kernel.py --smoke (interpreter): both ways timed per row count,
    the same tokens, confidences to float64 rounding; the results file written."""
    from .conftest import load_script

    res = load_script("benchmarks/confidence_kernel.py").main(["--smoke", "--out-dir", str(tmp_path)])
    assert res["rows"]
    for r in res["rows"].values():
        assert r["torch_us"] > 0 and r["kernel_us"] > 0
        assert r["tokens_equal"] and r["max_rel_conf_diff"] < 1e-13
    assert next(tmp_path.glob("confidence_kernel_*_cpu-smoke.txt")).read_text().startswith("confidence_kernel")



def _torch_entropy(logits, forbid):
    from paradecode.samplers import eb

    common.fused_confidence(False)
    try:
        return eb.token_entropy(logits, forbid)
    finally:
        common.fused_confidence(True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, forbid", [((2, 3, 5000), 7), ((1, 2, 9000), None), ((40, 300), 299)])
def test_entropy_kernel_equals_the_log_softmax_entropy(dtype, shape, forbid):
    """Rows split into vocabulary chunks and rows whole: EB's and dParallel's entropy, mask
    column excluded, to float32 rounding; a peaked row (near 0 nats) and a flat one (log V)."""
    from paradecode.samplers.confidence_kernel import softmax_entropy

    g = torch.Generator().manual_seed(5)
    logits = (4 * torch.randn(*shape, generator=g)).to(dtype)
    logits.view(-1, shape[-1])[0] = 0.0  # flat: log of the entries left
    logits.view(-1, shape[-1])[1, 11] = 60.0  # one entry takes all the mass
    if forbid is not None:
        logits[..., forbid] = 50.0  # would dominate were it not excluded
    got = softmax_entropy(logits, forbid)
    ref = _torch_entropy(logits, forbid)
    assert got.shape == shape[:-1] and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=2e-5, atol=2e-6)
    n_left = shape[-1] - (forbid is not None)
    assert abs(got.view(-1)[0].item() - torch.log(torch.tensor(float(n_left))).item()) < 1e-4


def test_entropy_kernel_handles_minus_inf_entries_and_strided_rows():
    from paradecode.samplers.confidence_kernel import softmax_entropy

    logits = torch.randn(3, 8, 6000, generator=torch.Generator().manual_seed(2))
    logits[0, 0, 100:5000] = float("-inf")  # most of a row excluded: whole chunks of -inf
    view = logits[:, 2:6]  # a block's columns of a wider canvas
    torch.testing.assert_close(softmax_entropy(view, 5), _torch_entropy(view, 5), rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(softmax_entropy(logits, None), _torch_entropy(logits, None), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("rule, opts", [("eb", dict(gamma=0.5)), ("dparallel", dict(threshold=0.5))])
def test_entropy_rules_with_the_kernels_forced_decode_as_without(rule, opts, monkeypatch):
    from paradecode.samplers import eb

    from .conftest import sample_with_kernels_forced

    eager, fused, calls = sample_with_kernels_forced(monkeypatch, eb, "softmax_entropy", strategy=rule, gen_length=24,
                                                     block_length=8, cache="dual", seed=3, **opts)
    assert len(calls) == fused.trace.nfe
    assert torch.equal(fused.sequences, eager.sequences) and fused.trace.nfe == eager.trace.nfe
