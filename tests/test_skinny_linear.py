"""The few-row Triton matmul (``linear="triton"``), run by Triton's interpreter on the CPU
(tests/conftest.py turns it on where no GPU is): ``F.linear``'s result for every launch
setting, the Llama forward's logits and greedy speculative decoding unchanged, clear errors.
Timings: ``benchmarks/skinny_linear.py`` on a GPU."""

import pytest
import torch
import torch.nn.functional as F

import paradecode
from paradecode.caches.static_kv import StaticKVCache
from paradecode.models.llama import LlamaLM, check_linear
from paradecode.models.skinny_linear import SKINNY_MAX_ROWS, SkinnyConfig, skinny_linear, supports

pytest.importorskip("triton")
from .conftest import load_script  # noqa: E402

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


@pytest.mark.parametrize("rows,n,k,bias,cfg", [
    (1, 48, 96, False, SkinnyConfig()),
    (2, 40, 100, True, SkinnyConfig(block_n=16, block_k=32)),                 # K not a multiple of the slice
    (5, 33, 64, True, SkinnyConfig(block_n=4, block_k=16, num_warps=2)),      # N not a multiple of block_n
    (8, 24, 200, False, SkinnyConfig(block_n=8, block_k=32, split=3)),        # split K: float32 partials, combined
    (3, 17, 130, True, SkinnyConfig(block_n=4, block_k=16, split=4)),
])
def test_matches_f_linear(rows, n, k, bias, cfg):
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    out = skinny_linear(x, w, b, cfg)
    assert out.shape == (rows, n) and out.dtype == x.dtype
    torch.testing.assert_close(out, F.linear(x, w, b), atol=1e-4, rtol=1e-4)


def test_leading_dimensions_strided_input_and_float16():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 80, generator=g)[..., :64]  # rows of stride 80
    w = torch.randn(20, 64, generator=g)
    torch.testing.assert_close(skinny_linear(x, w), F.linear(x, w), atol=1e-4, rtol=1e-4)
    xh, wh = x.half(), w.half()
    torch.testing.assert_close(skinny_linear(xh, wh), F.linear(xh.float(), wh.float()).half(), atol=2e-2, rtol=2e-3)


def test_too_many_rows_fall_back_and_bad_input_is_refused():
    x = torch.randn(SKINNY_MAX_ROWS + 1, 16)
    w = torch.randn(8, 16)
    assert not supports(x, w) and supports(x[:SKINNY_MAX_ROWS], w)
    with pytest.raises(ValueError, match="Use F.linear for this product"):
        skinny_linear(x, w)
    with pytest.raises(ValueError, match="Use F.linear"):
        skinny_linear(torch.randn(2, 16, dtype=torch.float64), w)  # dtypes differ
    with pytest.raises(ValueError, match="Use F.linear"):
        skinny_linear(torch.randn(2, 15), w)  # K differs
    with pytest.raises(ValueError, match="rows are contiguous"):
        skinny_linear(torch.randn(2, 16), torch.randn(16, 8).t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("cfg", [SkinnyConfig(block_n=8, block_k=32), SkinnyConfig(block_n=4, block_k=16, split=3)])
def test_folded_norm_swiglu_and_residual_match_the_separate_ops(dtype, cfg):
    """What the layer runs around a product, folded in: ``rms_norm`` before, SwiGLU before,
    the residual add after; float16 to the bit (each op rounded where the separate ones round)."""
    from paradecode.models.llada import rms_norm, swiglu

    g = torch.Generator().manual_seed(5)
    x, gu = torch.randn(3, 64, generator=g).to(dtype), torch.randn(3, 128, generator=g).to(dtype)
    w, nw = torch.randn(24, 64, generator=g).to(dtype), torch.randn(64, generator=g).to(dtype)
    b, res = torch.randn(24, generator=g).to(dtype), torch.randn(3, 24, generator=g).to(dtype)

    def lin(inp, bias=None):  # F.linear in float32, rounded once, as the kernel and cuBLAS sum
        return F.linear(inp.float(), w.float(), None if bias is None else bias.float()).to(dtype)

    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0, rtol=0)
    got = skinny_linear(x, w, b, cfg, norm_weight=nw, norm_eps=1e-5, residual=res)
    torch.testing.assert_close(got, res + lin(rms_norm(x, nw, None, 1e-5), b), **tol)
    torch.testing.assert_close(skinny_linear(gu, w, None, cfg, swiglu=True), lin(swiglu(*gu.split(64, -1))), **tol)
    with pytest.raises(ValueError, match="not both"):
        skinny_linear(gu, w, None, cfg, swiglu=True, norm_weight=nw)
    with pytest.raises(ValueError, match="residual must hold 3 rows"):
        skinny_linear(x, w, residual=res[:2])


def tiny(seed, scale=4.0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=0, bos_token_id=None, eos_token_id=None)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the init: peaked logits
        for p in m.parameters():
            p.mul_(scale)
    return m


@pytest.mark.parametrize("attention", ["sdpa", "triton"])
def test_llama_forward_gives_the_cublas_logits(attention):
    """A prefill (16 rows: F.linear), a 3-token verify and single tokens (the kernel), with a
    trimmed head (VocabTrim's rows) and the kernel attention or SDPA."""
    m = tiny(0)
    keep = torch.arange(0, 64, 3)
    lms = {lin: LlamaLM(m, keep, fuse_projections=True, attention=attention, linear=lin) for lin in ("torch", "triton")}
    caches = {lin: StaticKVCache.for_model(lm, 2, 64) for lin, lm in lms.items()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for T in (8, 3, 1, 1):
            ids = torch.randint(1, 64, (2, T), generator=g)
            logits = {lin: lm(ids, caches[lin].positions(T), caches[lin], num_logits=T) for lin, lm in lms.items()}
            for c in caches.values():
                c.advance(T)
            assert logits["triton"].shape == (2, T, keep.numel())
            torch.testing.assert_close(logits["triton"], logits["torch"], atol=1e-4, rtol=1e-4)


def test_speculative_with_the_kernel_equals_target_greedy():
    target, draft = tiny(0), tiny(0)
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        for p in draft.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    ids = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(3))
    kw = dict(strategy="speculative", draft_model=draft, max_new_tokens=12, num_draft_tokens=3, fuse_projections=True)
    out = paradecode.sample(target, ids, linear="triton", **kw)
    assert torch.equal(out.generated, paradecode.sample(target, ids, **kw).generated)  # cuBLAS's tokens
    assert out.trace.nfe_by_role["target"] < 12  # drafts were accepted


def test_options_are_checked():
    with pytest.raises(ValueError, match="fuse_projections=True as well"):
        check_linear("triton", fuse_projections=False)
    with pytest.raises(ValueError, match="linear must be one of"):
        check_linear("cutlass", fuse_projections=True)
    with pytest.raises(ValueError, match="fuse_projections=True as well"):
        paradecode.sample(tiny(0), torch.ones(1, 3, dtype=torch.long), strategy="speculative", draft_model=tiny(1),
                          linear="triton")


def test_the_benchmark_runs_on_the_cpu():
    mod = load_script("benchmarks/skinny_linear.py", "skinny_linear_bench")
    res = mod.main(["--smoke"])
    shapes = res["models"]["tiny"][1]
    assert {s["name"] for s in shapes} == {"a", "head"}
    assert all(s["max_abs_diff_vs_cublas"] < 1e-3 for s in shapes)
    fwd = res["forward"]["tiny"][2]
    assert fwd["one_setting"] is not None and fwd["skinny_best_ms"] <= fwd["one_setting_ms"]
    assert "one forward's linears" in mod.report(res)
