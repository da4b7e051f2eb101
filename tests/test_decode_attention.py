"""The one-kernel RoPE + cache write + attention (``attention="triton"``), run by Triton's
interpreter on the CPU (tests/conftest.py turns it on where no GPU is): the same outputs and
cache as the SDPA path, stale slots ignored, greedy speculative decoding unchanged, clear errors.
float32 and float16 only: the interpreter's bfloat16 ``tl.dot`` is wrong (bf16 is checked on a
GPU by ``benchmarks/decode_attention.py``)."""

from typing import Optional

import pytest
import torch

import paradecode
from paradecode.caches.static_kv import StaticKVCache
from paradecode.models.decode_attention import canvas_attention, check_available, rope_cache_attention, triton_available
from paradecode.models.llada import apply_rope, split_qkv
from paradecode.models.llama import LlamaLM, check_attention
from paradecode.speculative import greedy_decode
from paradecode.speculative.causal_lm import CausalLM

pytest.importorskip("triton")
from .conftest import load_script, make_tiny_model

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

if not triton_available(torch.device("cpu")):  # pragma: no cover - conftest sets the interpreter
    pytest.fail("TRITON_INTERPRET=1 must be set before triton is imported (tests/conftest.py does it)")


def reference_canvas_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, write_idx: torch.Tensor, key_valid: Optional[torch.Tensor],
    n_heads: int, n_kv: int, head_dim: int, scale: float,
) -> torch.Tensor:
    """What :func:`canvas_attention` computes, in plain PyTorch (as ``cached_attention`` with a
    canvas cache does it: RoPE, a scatter into the cache, SDPA over the canvas slots)."""
    B, T, _ = q.shape
    L = k_cache.shape[2] - 1
    qh = apply_rope(q.reshape(B, T, n_heads, head_dim).transpose(1, 2), cos, sin)
    kh = apply_rope(k.reshape(B, T, n_kv, head_dim).transpose(1, 2), cos, sin)
    vh = v.reshape(B, T, n_kv, head_dim).transpose(1, 2)
    index = write_idx[:, None, :, None].expand(-1, n_kv, -1, head_dim)
    k_cache.scatter_(2, index, kh.to(k_cache.dtype))
    v_cache.scatter_(2, index, vh.to(v_cache.dtype))
    rep = n_heads // n_kv
    kr, vr = k_cache.repeat_interleave(rep, dim=1), v_cache.repeat_interleave(rep, dim=1)
    if key_valid is None:
        a = torch.nn.functional.scaled_dot_product_attention(qh, kr[:, :, :L], vr[:, :, :L], scale=scale)
    else:
        mask = key_valid.reshape(B, 1, 1, L + 1)
        a = torch.nn.functional.scaled_dot_product_attention(qh, kr, vr, attn_mask=mask, scale=scale)
    return a.transpose(1, 2).reshape(B, T, n_heads * head_dim)


def reference_rope_cache_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor, start: torch.Tensor,
    n_heads: int, n_kv: int, head_dim: int, scale: float,
) -> torch.Tensor:
    """What :func:`rope_cache_attention` computes, in plain PyTorch (RoPE in float32, the cache
    written at ``length ..``, SDPA over :class:`StaticKVCache`'s key mask)."""
    B, T, _ = q.shape
    S = k_cache.shape[2]
    qh = apply_rope(q.reshape(B, T, n_heads, head_dim).transpose(1, 2), cos, sin)
    kh = apply_rope(k.reshape(B, T, n_kv, head_dim).transpose(1, 2), cos, sin)
    vh = v.reshape(B, T, n_kv, head_dim).transpose(1, 2)
    slots = length[:, None] + torch.arange(T, device=q.device)
    rows = torch.arange(B, device=q.device)[:, None, None]
    heads = torch.arange(n_kv, device=q.device)[None, :, None]
    k_cache[rows, heads, slots[:, None, :]] = kh.to(k_cache.dtype)
    v_cache[rows, heads, slots[:, None, :]] = vh.to(v_cache.dtype)
    s = torch.arange(S, device=q.device)[None, None, :]
    qs = slots[:, :, None]
    mask = ((s >= start[:, None, None]) & (s <= qs)) | (s == qs)
    rep = n_heads // n_kv
    kr = k_cache.repeat_interleave(rep, dim=1)
    vr = v_cache.repeat_interleave(rep, dim=1)
    a = torch.nn.functional.scaled_dot_product_attention(qh, kr, vr, attn_mask=mask[:, None], scale=scale)
    return a.transpose(1, 2).reshape(B, T, n_heads * head_dim)


def inputs(B, T, H, Hkv, D, S, lengths, starts, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, (H + 2 * Hkv) * D, generator=g).to(dtype)
    q, k, v = split_qkv(qkv, H, Hkv, D)
    length, start = torch.tensor(lengths), torch.tensor(starts)
    pos = (length - start)[:, None] + torch.arange(T)
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    f = pos[..., None].float() * inv
    emb = torch.cat((f, f), -1)[:, None]
    kc = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    vc = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    return q, k, v, emb.cos(), emb.sin(), kc, vc, length, start


@pytest.mark.parametrize("B,T,H,Hkv,D,lengths,starts", [
    (1, 1, 8, 2, 64, [37], [0]),                # a draft step: one token, 4 query heads per kv head
    (2, 6, 8, 2, 32, [37, 100], [0, 5]),        # a verify of k + 1 tokens, ragged rows, left padding
    (2, 3, 4, 4, 16, [0, 70], [0, 3]),          # no GQA; a row with an empty cache
    (1, 40, 8, 2, 16, [0], [5]),                # a left-padded prefill: 160 query rows, 3 query blocks
])
def test_kernel_matches_the_sdpa_path(B, T, H, Hkv, D, lengths, starts):
    q, k, v, cos, sin, kc, vc, length, start = inputs(B, T, H, Hkv, D, 128, lengths, starts)
    kc2, vc2 = kc.clone(), vc.clone()
    out = rope_cache_attention(q, k, v, cos, sin, kc, vc, length, start, H, Hkv, D, D ** -0.5)
    ref = reference_rope_cache_attention(q, k, v, cos, sin, kc2, vc2, length, start, H, Hkv, D, D ** -0.5)
    assert out.shape == (B, T, H * D)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)  # the same slots written, the same values


@pytest.mark.parametrize("n_split", [2, 3, 5])
def test_a_cache_split_over_programs_matches_the_sdpa_path(n_split):
    """FlashDecoding over the cache's slots: splits that start past a row's length (or end
    before its start) add nothing, the new keys count once, the cache is written once."""
    B, T, H, Hkv, D, S = 3, 6, 8, 2, 32, 320
    q, k, v, cos, sin, kc, vc, length, start = inputs(B, T, H, Hkv, D, S, [300, 70, 0], [130, 5, 0])
    kc2, vc2 = kc.clone(), vc.clone()
    out = rope_cache_attention(q, k, v, cos, sin, kc, vc, length, start, H, Hkv, D, D ** -0.5, n_split=n_split)
    ref = reference_rope_cache_attention(q, k, v, cos, sin, kc2, vc2, length, start, H, Hkv, D, D ** -0.5)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)


def test_caches_split_by_capacity_only_when_long():
    """The split count depends on the cache's capacity, not its length (a captured graph stays
    right as it fills), and a short cache keeps one program per query block."""
    from paradecode.models import decode_attention as da

    cpu = torch.device("cpu")  # 8 "SMs" under the interpreter
    assert da._cache_split_count(8, 192, cpu) == 1  # the speculative benchmark's cache
    assert da._cache_split_count(2, 4096, cpu) == 4  # as many as the device has room for
    assert da._cache_split_count(1, 512, cpu) == 2  # splits of at least CACHE_SPLIT_SLOTS
    assert da._cache_split_count(16, 8192, cpu) == 1  # a batch that fills the device alone


def test_float16_agrees_to_rounding():
    q, k, v, cos, sin, kc, vc, length, start = inputs(2, 3, 8, 2, 64, 192, [150, 64], [2, 0], dtype=torch.float16)
    kc2, vc2 = kc.clone(), vc.clone()
    out = rope_cache_attention(q, k, v, cos, sin, kc, vc, length, start, 8, 2, 64, 0.125)
    ref = reference_rope_cache_attention(q, k, v, cos, sin, kc2, vc2, length, start, 8, 2, 64, 0.125)
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)


def test_slots_past_the_length_and_before_the_start_are_not_read():
    """Rejected drafts' slots (past ``length``) and left padding (before ``start``) may hold anything."""
    q, k, v, cos, sin, kc, vc, length, start = inputs(2, 2, 4, 2, 16, 96, [40, 70], [3, 0])
    a = rope_cache_attention(q, k, v, cos, sin, kc.clone(), vc.clone(), length, start, 4, 2, 16, 0.25)
    kc[:, :, 75:], vc[:, :, 75:] = 1e4, -1e4
    kc[0, :, :3], vc[0, :, :3] = 1e4, 1e4
    b = rope_cache_attention(q, k, v, cos, sin, kc, vc, length, start, 4, 2, 16, 0.25)
    assert torch.equal(a, b)


def test_bad_shapes_get_a_clear_error():
    q, k, v, cos, sin, kc, vc, length, start = inputs(1, 2, 4, 2, 16, 32, [4], [0])
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        rope_cache_attention(q, k, v, cos, sin, kc, vc, length, start, 4, 2, 12, 0.25)
    with pytest.raises(ValueError, match="k_cache must be a contiguous"):
        rope_cache_attention(q, k, v, cos, sin, kc.transpose(2, 3), vc, length, start, 4, 2, 16, 0.25)
    with pytest.raises(ValueError, match=r"q must be \(B, T, 4 \* 16\)"):
        rope_cache_attention(q[..., :32], k, v, cos, sin, kc, vc, length, start, 4, 2, 16, 0.25)
    with pytest.raises(ValueError, match="n_split must be a positive int"):
        rope_cache_attention(q, k, v, cos, sin, kc, vc, length, start, 4, 2, 16, 0.25, n_split=0)


def tiny(seed, dtype=torch.float32, scale=4.0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=0, bos_token_id=None, eos_token_id=None)
    m = LlamaForCausalLM(cfg).eval().to(dtype)
    with torch.no_grad():  # larger weights than the init: peaked logits
        for p in m.parameters():
            p.mul_(scale)
    return m


def test_llama_forward_gives_the_sdpa_logits():
    """Prefill with left padding, a 3-token verify, a rollback to ragged lengths, single tokens."""
    m = tiny(0)
    lms = {a: LlamaLM(m, fuse_projections=True, attention=a) for a in ("sdpa", "triton")}
    caches = {a: StaticKVCache.for_model(lm, 2, 64) for a, lm in lms.items()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for c in caches.values():
            c.start.copy_(torch.tensor([0, 3]))
        for T, keep in ((8, 8), (3, torch.tensor([1, 3])), (1, 1), (1, 1)):
            ids = torch.randint(1, 64, (2, T), generator=g)
            logits = {a: lm(ids, caches[a].positions(T), caches[a], num_logits=T) for a, lm in lms.items()}
            for c in caches.values():
                c.advance(keep)
            # row 1's padding queries (first forward) attend to themselves in both; compare the rest
            torch.testing.assert_close(logits["triton"][:, -1], logits["sdpa"][:, -1], atol=1e-4, rtol=1e-4)
    assert torch.equal(caches["triton"].length, caches["sdpa"].length)


def test_a_prompt_longer_than_the_kernel_takes_takes_sdpa(monkeypatch):
    """A feed of more than CACHE_MAX_TOKENS new tokens (a long prompt) runs the SDPA path: the
    kernel's block of new tokens is as wide as the feed (a 3,900-token prompt compiled for
    minutes on a GPU). The kernel itself refuses such a feed with a clear error."""
    from paradecode.models import decode_attention

    m = tiny(0)
    lm = LlamaLM(m, fuse_projections=True, attention="triton")
    ref = LlamaLM(m, fuse_projections=True, attention="sdpa")
    caches = [StaticKVCache.for_model(x, 1, 128) for x in (lm, ref)]
    ids = torch.randint(1, 64, (1, 12), generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(decode_attention, "CACHE_MAX_TOKENS", 8)
    monkeypatch.setattr("paradecode.models.llama.CACHE_MAX_TOKENS", 8)
    attend = StaticKVCache.attend
    monkeypatch.setattr(StaticKVCache, "attend", lambda self, *a: pytest.fail("the kernel took a 12-token feed"))
    with torch.no_grad():
        got, want = (x(ids, c.positions(12), c, num_logits=12) for x, c in zip((lm, ref), caches))
        torch.testing.assert_close(got, want)
        monkeypatch.setattr(StaticKVCache, "attend", attend)
        for c in caches:
            c.advance(12)
        # then steps of 3 and 1 tokens through the kernel, on the cache the SDPA path wrote
        for T in (3, 1):
            step = torch.randint(1, 64, (1, T), generator=torch.Generator().manual_seed(T))
            got, want = (x(step, c.positions(T), c, num_logits=T) for x, c in zip((lm, ref), caches))
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            for c in caches:
                c.advance(T)
    q = torch.zeros(1, 12, 4 * 16)
    kv = torch.zeros(1, 12, 2 * 16)
    cache = torch.zeros(1, 2, 64, 16)
    with pytest.raises(ValueError, match="at most 8 new tokens per row"):
        rope_cache_attention(q, kv, kv, torch.zeros(1, 1, 12, 16), torch.zeros(1, 1, 12, 16), cache, cache,
                             torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), 4, 2, 16, 0.25)


def test_speculative_with_the_kernel_equals_target_greedy():
    target = tiny(0)
    draft = tiny(0)
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        for p in draft.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    ids = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(3))
    kw = dict(strategy="speculative", draft_model=draft, max_new_tokens=12, num_draft_tokens=3, fuse_projections=True)
    out = paradecode.sample(target, ids, attention="triton", **kw)
    greedy = greedy_decode(CausalLM.of(target, fuse_projections=True, attention="triton"), ids, 12)
    assert torch.equal(out.generated[:, :12], greedy)
    assert out.trace.nfe_by_role["target"] < 12  # drafts were accepted: more than one token per target forward
    assert torch.equal(out.generated, paradecode.sample(target, ids, **kw).generated)  # the SDPA path's tokens


def test_options_are_checked():
    with pytest.raises(ValueError, match="fuse_projections=True as well"):
        check_attention("triton", fuse_projections=False)
    with pytest.raises(ValueError, match="attention must be one of"):
        check_attention("flash", fuse_projections=True)
    with pytest.raises(ValueError, match="fuse_projections=True as well"):
        paradecode.sample(tiny(0), torch.ones(1, 3, dtype=torch.long), strategy="speculative", draft_model=tiny(1),
                          attention="triton")


def test_the_cpu_without_the_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="run on a CUDA GPU"):
        check_available(torch.device("cpu"))


def test_the_benchmark_compares_both_paths_on_the_cpu():
    from argparse import Namespace

    mod = load_script("benchmarks/decode_attention.py", "decode_attention_bench")
    row = mod.run_shape("draft-1b T=2", 1, Namespace(slots=128), torch.device("cpu"), torch.float16)
    assert row["max_abs_diff_k_written"] == 0 and row["max_abs_diff_v_written"] == 0
    assert row["max_abs_diff_out"] < 1e-2 < row["max_abs_ref_out"]
    assert "sdpa_us" not in row  # timings only on a GPU
    assert "draft-1b T=2" in mod.report([row], {"device": "cpu"})
    longer = mod.run_shape("draft-1b T=1", 1, Namespace(slots=128), torch.device("cpu"), torch.float16, length=300)
    assert (longer["length"], longer["slots"], longer["splits"]) == (300, 320, 1)  # the bucket that holds them
    assert longer["max_abs_diff_out"] < 1e-2 < longer["max_abs_ref_out"]
    dual = mod.run_canvas_shape("dream-7b dual", 1, Namespace(), torch.device("cpu"), torch.float16)
    assert dual["max_abs_diff_k_written"] == 0 and dual["max_abs_diff_out"] < 1e-2 < dual["max_abs_ref_out"]


# ---- dLLM caches: canvas_attention ----------------------------------------------------------


def canvas_inputs(B, T, H, Hkv, D, L, widx, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, (H + 2 * Hkv) * D, generator=g).to(dtype)
    q, k, v = split_qkv(qkv, H, Hkv, D)
    widx = torch.tensor(widx)
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    f = widx.clamp(max=L - 1)[..., None].float() * inv
    emb = torch.cat((f, f), -1)[:, None]
    kc = torch.randn(B, Hkv, L + 1, D, generator=g).to(dtype)
    vc = torch.randn(B, Hkv, L + 1, D, generator=g).to(dtype)
    return q, k, v, emb.cos(), emb.sin(), kc, vc, widx


@pytest.mark.parametrize("B,T,H,Hkv,D,L,widx,n_split,masked", [
    (1, 4, 4, 4, 16, 100, [[10, 11, 12, 13]], None, False),                    # a dual step's block, MHA
    (2, 4, 4, 4, 16, 100, [[10, 11, 12, 13], [50, 51, 52, 100]], 3, False),    # a padded feed: slot L is trash
    (2, 5, 8, 2, 32, 130, [[0, 1, 2, 3, 4], [125, 126, 127, 128, 129]], 1, False),  # GQA, one split
    (2, 5, 8, 2, 32, 130, [[60, 61, 62, 63, 130], [60, 61, 62, 63, 64]], None, True),  # left padding: a key mask
    (1, 20, 8, 2, 16, 200, [[3, 90, 7, 150] + list(range(40, 56))], 4, False),  # scattered slots, 3 query blocks
])
def test_canvas_kernel_matches_the_sdpa_path(B, T, H, Hkv, D, L, widx, n_split, masked):
    q, k, v, cos, sin, kc, vc, widx = canvas_inputs(B, T, H, Hkv, D, L, widx)
    valid = None
    if masked:
        valid = torch.ones(B, L + 1, dtype=torch.bool)
        valid[1, :7] = False
        valid[:, L] = False
    kc2, vc2 = kc.clone(), vc.clone()
    out = canvas_attention(q, k, v, cos, sin, kc, vc, widx, valid, H, Hkv, D, D ** -0.5, n_split=n_split)
    ref = reference_canvas_attention(q, k, v, cos, sin, kc2, vc2, widx, valid, H, Hkv, D, D ** -0.5)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)


@pytest.mark.parametrize("block_n,n_split", [(32, 5), (128, 2)])
def test_canvas_kernel_key_blocks_of_other_sizes(block_n, n_split):
    q, k, v, cos, sin, kc, vc, widx = canvas_inputs(2, 4, 8, 2, 32, 300, [[10, 11, 12, 13], [296, 297, 298, 299]])
    kc2, vc2 = kc.clone(), vc.clone()
    out = canvas_attention(q, k, v, cos, sin, kc, vc, widx, None, 8, 2, 32, 0.2, block_n=block_n, n_split=n_split)
    ref = reference_canvas_attention(q, k, v, cos, sin, kc2, vc2, widx, None, 8, 2, 32, 0.2)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_canvas_kernel_refuses_long_feeds():
    q, k, v, cos, sin, kc, vc, widx = canvas_inputs(1, 4, 4, 4, 16, 100, [[10, 11, 12, 13]])
    big = torch.zeros(1, 65, 64)
    with pytest.raises(ValueError, match="at most 64 fed tokens"):
        canvas_attention(big, big, big, cos, sin, kc, vc, widx, None, 4, 4, 16, 0.25)


def _counted(monkeypatch):
    import paradecode.caches.canvas as canvas

    calls = []
    real = canvas.canvas_attention

    def counting(*a, **kw):
        calls.append(a[0].shape[1])
        return real(*a, **kw)

    monkeypatch.setattr(canvas, "canvas_attention", counting)
    return calls


def _dream():
    from .test_dream import tiny_dream

    return tiny_dream()


@pytest.mark.parametrize("make", [make_tiny_model, _dream], ids=["llada", "dream"])
@pytest.mark.parametrize("cache", ["dual", "dkv-decode"])
def test_cached_generation_with_the_kernel_gives_the_same_tokens(make, cache, monkeypatch):
    """Ragged prompts (a key mask), fused projections; Dream: GQA and shifted logits (query-only
    predecessors written to the trash slot). Refreshes fall back to SDPA, partial steps do not."""
    model = make().fuse_projections()
    prompts = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    am = torch.ones(2, 6, dtype=torch.long)
    am[1, :2] = 0
    kw = dict(gen_length=16, block_length=8, steps=8, cache=cache, attention_mask=am)
    want = paradecode.sample(model, prompts, "lowconf", **kw).sequences
    calls = _counted(monkeypatch)
    got = paradecode.sample(model.use_attention_kernel("triton"), prompts, "lowconf", **kw).sequences
    assert torch.equal(got, want)
    assert calls and max(calls) <= 64  # the kernel ran, on partial steps only


@pytest.mark.slow
@pytest.mark.parametrize("make", [make_tiny_model, _dream], ids=["llada", "dream"])
@pytest.mark.parametrize("cache", ["prefix", "dual", "dkv-greedy", "elastic"])
@pytest.mark.parametrize("fuse", [False, True])
def test_every_canvas_cache_gives_the_same_tokens(make, cache, fuse, monkeypatch):
    model = make()
    if fuse:
        model.fuse_projections()
    prompts = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    kw = dict(gen_length=16, block_length=8, steps=8, cache=cache)
    want = paradecode.sample(model, prompts, "lowconf", **kw).sequences
    calls = _counted(monkeypatch)
    got = paradecode.sample(model.use_attention_kernel("triton"), prompts, "lowconf", **kw).sequences
    assert torch.equal(got, want)
    if cache == "elastic":  # layer hooks: the cache's own update runs, never the kernel
        assert not calls


def test_use_attention_kernel_checks_its_argument(monkeypatch):
    model = make_tiny_model()
    with pytest.raises(ValueError, match="attention kernel must be one of"):
        model.use_attention_kernel("flash")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="run on a CUDA GPU"):
        model.use_attention_kernel("triton")
