"""paradecode.models.elementwise_triton: RoPE and SwiGLU as Triton kernels (run here under the
Triton interpreter), against the eager functions they replace, on the layouts the models feed
them; layouts they do not cover return None (the caller's compiled fallback runs)."""

import pytest
import torch

from paradecode.models import llada as llada_module
from paradecode.models.elementwise_triton import rope_triton, swiglu_triton, triton
from paradecode.models.llada import apply_rope, rope_cos_sin, swiglu

pytestmark = pytest.mark.skipif(triton is None, reason="needs the triton package (its interpreter runs on CPU)")


def _joined_qk(B: int, T: int, H: int, Hkv: int, D: int, dtype: torch.dtype) -> torch.Tensor:
    """q and k as rope_joined hands them over: (B, H + Hkv, T, D), a transposed view of a slice
    of the joined q/k/v projection's output."""
    qkv = torch.randn(B, T, (H + 2 * Hkv) * D, generator=torch.Generator().manual_seed(1)).to(dtype)
    return qkv[..., : (H + Hkv) * D].view(B, T, H + Hkv, D).transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("B, T, H, Hkv, D, cos_rows", [(2, 5, 4, 2, 16, 2), (3, 4, 20, 20, 32, 1), (1, 1, 2, 1, 64, 1)])
def test_rope_kernel_equals_the_eager_rotation(dtype, B, T, H, Hkv, D, cos_rows):
    """Float32 rotation of each element, rounded once: the eager function's result exactly (no
    fused multiply-add in the interpreter), whether cos/sin are per row or shared, with more
    heads than one program takes (20 + 20 > 16) and a lone token."""
    qk = _joined_qk(B, T, H, Hkv, D, dtype)
    positions = torch.arange(T).expand(cos_rows, T) + torch.arange(cos_rows)[:, None] * 7
    cos, sin = rope_cos_sin(positions, D, 10000.0)
    got = rope_triton(qk, cos, sin)
    assert got.shape == qk.shape and got.dtype == dtype
    assert torch.equal(got, apply_rope(qk, cos, sin))


def test_rope_kernel_leaves_layouts_it_does_not_cover_to_the_fallback():
    qk = _joined_qk(1, 3, 2, 2, 16, torch.float32)
    cos, sin = rope_cos_sin(torch.arange(3)[None], 16, 10000.0)
    odd = torch.randn(1, 2, 3, 12)
    assert rope_triton(odd, *rope_cos_sin(torch.arange(3)[None], 12, 10000.0)) is None  # head_dim not a power of two
    assert rope_triton(qk, cos.half(), sin.half()) is None  # tables not float32
    assert rope_triton(qk.transpose(2, 3), cos, sin) is None  # strided last dimension
    assert rope_triton(qk, cos[..., :8], sin[..., :8]) is None  # tables of another width


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(2, 5, 24), (1, 1, 40), (7, 1100)])
def test_swiglu_kernel_equals_silu_times_up(dtype, shape):
    """The halves of a joined gate/up output, and separate tensors; SiLU rounded to the
    activation dtype before the product, as the eager function. 1,100 columns: two column
    blocks, the second partial."""
    g = torch.Generator().manual_seed(2)
    joined = (3 * torch.randn(*shape[:-1], 2 * shape[-1], generator=g)).to(dtype)
    gate, up = joined[..., : shape[-1]], joined[..., shape[-1]:]
    for a, b in ((gate, up), (gate.contiguous(), up.contiguous())):
        got = swiglu_triton(a, b)
        assert got.is_contiguous() and got.shape == a.shape
        want = swiglu(a, b)
        if dtype == torch.float32:  # the interpreter's exp and the CPU's differ in the last bit
            torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-6)
        else:
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)  # one fp16 rounding apart at most


def test_swiglu_kernel_leaves_layouts_it_does_not_cover_to_the_fallback():
    x = torch.randn(4, 6)
    assert swiglu_triton(x.t(), x.t()) is None  # columns not contiguous
    assert swiglu_triton(x, x[:, :5]) is None  # shapes differ
    rows_apart = torch.randn(3, 4, 10)[:, ::2]  # (3, 2, 10): the two leading dims are not one stride apart
    assert swiglu_triton(rows_apart[..., :5], rows_apart[..., 5:]) is not None  # 2 rows of stride 20, 3 of 40: fine
    skew = torch.randn(3, 5, 10).transpose(0, 1)  # (5, 3, 10) with strides (10, 50, 1)
    assert swiglu_triton(skew, skew) is None


def test_compile_elementwise_routes_rope_and_swiglu_to_the_kernels_and_keeps_results(monkeypatch):
    """A tiny LLaDA forward with the kernels in (the other elementwise kernels compiled with the
    eager backend): every RoPE and SwiGLU call runs a kernel (none falls back), and the logits
    are the eager ones within float rounding; off again, the eager functions."""
    from paradecode.models import elementwise_triton

    from .conftest import tiny_config

    served = {"rope": 0, "swiglu": 0}

    def counted(name, fn):
        def run(*args):
            out = fn(*args)
            served[name] += out is not None
            return out
        return run

    monkeypatch.setattr(elementwise_triton, "rope_triton", counted("rope", rope_triton))
    monkeypatch.setattr(elementwise_triton, "swiglu_triton", counted("swiglu", swiglu_triton))
    config = tiny_config()
    model = llada_module.LLaDAModel(config).eval()
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(ids)
        try:
            llada_module.compile_elementwise(True, backend="eager")
            out = model(ids)
        finally:
            llada_module.compile_elementwise(False)
    assert served == {"rope": 2 * config.n_layers, "swiglu": config.n_layers}  # q and k rotated apart, unfused
    assert llada_module._KERNELS["rope"] is apply_rope and llada_module._KERNELS["swiglu"] is swiglu
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_elementwise_benchmark_smoke_times_every_variant_and_compares_with_eager(tmp_path):
    """benchmarks/elementwise_kernels.py --smoke (interpreter): each row count has all three
    variants timed and the Triton results compared with eager's (RoPE exact on CPU)."""
    from .conftest import load_script

    res = load_script("benchmarks/elementwise_kernels.py").main(["--smoke", "--out-dir", str(tmp_path)])
    for kernel in ("rope", "swiglu"):
        assert res[kernel]
        for r in res[kernel].values():
            assert all(r[k]["us"] > 0 for k in ("eager", "compiled", "triton"))
    assert all(r["triton_vs_eager"]["equal_share"] == 1.0 for r in res["rope"].values())
    assert res["cache_write"] and all(w["equal"] and w["triton"]["us"] > 0 for w in res["cache_write"].values())
    assert res["cache_scatter"] and all(w["equal"] and w["triton"]["us"] > 0 for w in res["cache_scatter"].values())
    assert next(tmp_path.glob("elementwise_kernels_*_cpu-smoke.txt")).read_text().startswith("elementwise_kernels")


def test_a_whole_forward_compiled_with_the_kernels_in_still_traces_as_one_graph(monkeypatch):
    """CausalLM's compile_mode compiles the captured forward whole (fullgraph). Under
    compile_elementwise the RoPE / SwiGLU entries then hand the tracer their compiled fallback,
    not the Triton launch: one graph, no break, the eager tokens."""
    from paradecode.speculative.causal_lm import CausalLM, greedy_decode

    from .test_static_llama import compiled_decode_case

    counting_backend, graphs, m, prompt, ref = compiled_decode_case(monkeypatch, fuse=True)
    try:
        llada_module.compile_elementwise(True, backend="eager")
        lm = CausalLM(m, fuse_projections=True, compile_mode="default", compile_backend=counting_backend)
        out = greedy_decode(lm, prompt, 10)
    finally:
        llada_module.compile_elementwise(False)
    assert torch.equal(out, ref)
    assert lm.graph_error is None and len(graphs) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_row_copy_kernel_writes_a_forwards_keys_into_the_cache_buffer(dtype):
    """Keys as a full forward hands them over (a (B, H, T, D) view of (B, T, H, D) rows) into the
    first T positions of a (B, H, T + 1, D) cache buffer; 37 positions: a partial last tile."""
    from paradecode.models.elementwise_triton import copy_rows_triton

    B, T, H, D = 2, 37, 3, 16
    src = torch.randn(B, T, 2 * H, D).to(dtype)[:, :, H:].transpose(1, 2)
    buf = torch.full((B, H, T + 1, D), -1.0, dtype=dtype)
    assert copy_rows_triton(buf[:, :, :T], src)
    assert torch.equal(buf[:, :, :T], src) and (buf[:, :, T] == -1).all()
    assert not copy_rows_triton(torch.empty(B, H, T, 12), torch.empty(B, H, T, 12))  # head_dim not a power of two
    assert not copy_rows_triton(buf[:, :, :T - 1], src)  # shapes differ


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_row_copy_kernel_scatters_fed_rows_to_their_canvas_slots(dtype):
    """With an index, as a partial step writes its fed keys: each row to its own slot per batch
    row, padding sent to the trash slot; the result is PyTorch's scatter's (the trash slot aside,
    where one of the padded rows lands)."""
    from paradecode.models.elementwise_triton import copy_rows_triton

    B, T, H, D, S = 2, 37, 3, 16, 50
    g = torch.Generator().manual_seed(4)
    src = torch.randn(B, T, 2 * H, D, generator=g).to(dtype)[:, :, H:].transpose(1, 2)
    index = torch.stack([torch.randperm(S - 1, generator=g)[:T] for _ in range(B)])
    index[1, -5:] = S - 1  # padding: the trash slot
    buf = torch.randn(B, H, S, D, generator=g).to(dtype)
    want = buf.clone().scatter_(2, index[:, None, :, None].expand(-1, H, -1, D), src)
    assert copy_rows_triton(buf, src, index)
    assert torch.equal(buf[:, :, : S - 1], want[:, :, : S - 1])
    assert torch.equal(buf[0, :, S - 1], want[0, :, S - 1])  # row 0 sends nothing there
    assert not copy_rows_triton(buf, src, index[:, :-1])  # one index per fed row
    assert not copy_rows_triton(buf, src, index.float())


@pytest.mark.parametrize("cache", ["dual", "prefix", "dkv-decode"])
def test_caches_writing_their_refresh_through_the_row_kernel_give_the_same_tokens(tiny_model, prompts, cache, monkeypatch):
    """Forced on (as on a GPU), every forward's keys and values go through the kernel (a
    refresh's copy; a partial step's slice copy (prefix) or scatter (dKV)), and the tokens and
    forwards are those of PyTorch's copy and scatter."""
    import paradecode
    from paradecode.caches import canvas

    ref = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=8, cache=cache)
    scattered = []
    real = canvas.copy_rows_triton
    monkeypatch.setattr(canvas, "_row_kernel_runs", lambda t: True)
    monkeypatch.setattr(canvas, "copy_rows_triton",
                        lambda dst, src, index=None: scattered.append(index is not None) or real(dst, src, index))
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=8, cache=cache)
    assert torch.equal(out.sequences, ref.sequences) and out.trace.nfe == ref.trace.nfe
    assert scattered and len(scattered) % (2 * tiny_model.config.n_layers) == 0
    assert any(scattered) == (cache == "dkv-decode")  # dKV feeds scattered positions; prefix a span
