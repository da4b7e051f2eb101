"""The elementwise kernel table (``paradecode.models.llada._KERNELS``): SwiGLU, residual add +
RMSNorm and the static cache's k/v write leave every eager output bit-identical to the plain
ops; ``compile_elementwise()`` fuses them (logits within float rounding) and
``compile_elementwise(False)`` restores the eager ones; and each model calls the kernels where
its layers have the pattern (kernel counts below; ``python -m tests.test_fused_elementwise``
prints them per layer)."""

from collections import Counter
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from paradecode.caches.static_kv import StaticKVCache
from paradecode.models import LLaDAModel
from paradecode.models import llada as llada_module
from paradecode.models.llada import _KERNELS, cached_attention, compile_elementwise, rms_norm, rope_cos_sin
from paradecode.models.llama import LlamaLM, _additive_mask, _attend, _pack_mask, _repeat_kv, _rotate

from .conftest import tiny_config
from .test_dream import tiny_dream
from .test_llama_fused import model as llama_model

NEW = ("swiglu", "add_rms_norm", "write_kv")


def tiny_llada(fuse: bool = False, dtype: torch.dtype = torch.float32, **over) -> LLaDAModel:
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config(**over)).eval().to(dtype)
    with torch.no_grad():  # larger than the init: activations where rounding shows
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model.fuse_projections() if fuse else model


# ---- references: the forwards as written before the kernels, with the plain ops ----------------
def llada_reference(model: LLaDAModel, ids: torch.Tensor) -> torch.Tensor:
    tr, c = model.model.transformer, model.config
    B, T = ids.shape
    x = tr["wte"](ids)
    cos, sin = rope_cos_sin(torch.arange(T).expand(B, T), c.head_dim, c.rope_theta)
    for b in tr["blocks"]:
        fused = b.fused_groups()
        h = rms_norm(x, b.attn_norm.weight, None, b.attn_norm.eps)
        q, k, v = fused["qkv"](h) if fused else (b.q_proj(h), b.k_proj(h), b.v_proj(h))
        q, k, v = (t.view(B, T, -1, c.head_dim).transpose(1, 2) for t in (q, k, v))
        att = cached_attention(b.layer_id, q, k, v, cos, sin, None)
        x = x + b.attn_out(att.transpose(1, 2).reshape(B, T, -1))
        h = rms_norm(x, b.ff_norm.weight, None, b.ff_norm.eps)
        gate, up = fused["gate_up"](h) if fused else (b.ff_proj(h), b.up_proj(h))
        x = x + b.ff_out(F.silu(gate) * up)
    return model.lm_head(x)


def dream_reference(model, ids: torch.Tensor) -> torch.Tensor:
    c = model.config
    B, T = ids.shape
    x = model.model.embed_tokens(ids)
    cos, sin = rope_cos_sin(torch.arange(T).expand(B, T), c.head_dim, c.rope_theta)
    for layer in model.model.layers:
        n1, n2, mlp = layer.input_layernorm, layer.post_attention_layernorm, layer.mlp
        x = x + layer.self_attn(rms_norm(x, n1.weight, None, n1.eps), cos, sin, None)
        h = rms_norm(x, n2.weight, None, n2.eps)
        fused = mlp.fused_groups()
        gate, up = fused["gate_up"](h) if fused else (mlp.gate_proj(h), mlp.up_proj(h))
        x = x + mlp.down_proj(F.silu(gate) * up)
    return model.logits_of(x)


def _norm(x, norm):
    return rms_norm(x, norm.weight, None, norm.variance_epsilon)


def _write_with_scatter(cache: StaticKVCache, layer: int, k, v):
    """StaticKVCache.update as it was: two scatter_ at the forward's slots."""
    slot = cache._index[2][:, 0]  # (B, m)
    idx = slot[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
    cache.k[layer].scatter_(2, idx, k)
    cache.v[layer].scatter_(2, idx, v)
    return cache.k[layer], cache.v[layer], cache._mask


def llama_reference(lm: LlamaLM, ids, positions, cache: StaticKVCache, num_logits: int) -> torch.Tensor:
    """LlamaLM's unfused or fused forward (as ``lm.fused``) with the plain ops for the norms,
    residual adds, SwiGLU and cache writes; the rest is the module's own helpers."""
    B, T = ids.shape
    H, Hkv, D = lm.n_heads, lm.n_kv, lm.head_dim
    x = lm.hf_model.model.embed_tokens(ids)
    if lm.fused:
        freqs = positions[..., None].float() * lm.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        cos, sin = emb.cos() * lm.rope_scale, emb.sin() * lm.rope_scale
    else:
        cos, sin = lm.rope(positions, x.dtype)
    cache.begin_forward(positions)
    for i, layer in enumerate(lm.layers):
        attn, mlp = layer.self_attn, layer.mlp
        h = _norm(x, layer.input_layernorm)
        if lm.fused:
            qkv, gate_up = lm._fused[i]
            y = F.linear(h, qkv.weight, qkv.bias)
            qk = llada_module.apply_rope(y[..., : (H + Hkv) * D].view(B, T, H + Hkv, D).transpose(1, 2), cos, sin)
            q, k = qk[:, :H], qk[:, H:]
            v = y[..., (H + Hkv) * D :].view(B, T, Hkv, D).transpose(1, 2)
            k, v, mask = _write_with_scatter(cache, i, k, v)
            bias = _additive_mask(mask, q.dtype)
            a = _attend(q, k, v, bias, lm.scaling, lm.gqa, _pack_mask(bias, H // Hkv) if lm.gqa == "pack" else None)
            x = x + attn.o_proj(a)
            g, u = gate_up(_norm(x, layer.post_attention_layernorm))
        else:
            q, k, v = (p(h).view(B, T, -1, D).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            k, v, mask = _write_with_scatter(cache, i, k, v)
            if Hkv != H:
                k, v = _repeat_kv(k, H // Hkv), _repeat_kv(v, H // Hkv)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=lm.scaling)
            x = x + attn.o_proj(a.transpose(1, 2).reshape(B, T, -1))
            h = _norm(x, layer.post_attention_layernorm)
            g, u = mlp.gate_proj(h), mlp.up_proj(h)
        x = x + mlp.down_proj(F.silu(g) * u)
    cache.end_forward()
    return lm._head(x, num_logits)


FEEDS = ((8, 8), (3, torch.tensor([1, 3])), (1, 1), (1, 1))  # (tokens fed, slots kept) per forward


def llama_feeds(forward, lm: LlamaLM, seed: int = 1, feeds=FEEDS):
    """A left-padded prefill, a 3-token verify, a rollback to different lengths per row and one-token
    steps: every forward's logits, and the cache's buffers at the end."""
    g = torch.Generator().manual_seed(seed)
    cache = StaticKVCache.for_model(lm, 2, 32)
    cache.start.copy_(torch.tensor([0, 3]))
    outs = []
    with torch.no_grad():
        for T, keep in feeds:
            ids = torch.randint(1, 64, (2, T), generator=g)
            outs.append(forward(ids, cache.positions(T), cache, T))
            cache.advance(keep)
    return outs, cache.k + cache.v


def _llama_lm(kind: str, fuse: bool, dtype: torch.dtype) -> LlamaLM:
    lm = LlamaLM(llama_model(kind, dtype=dtype), fuse_projections=fuse)
    assert lm.fused == fuse
    return lm


# ---- eager: bit-identical ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _eager_kernels():
    """Every test starts and ends with the eager table (a failing compiled test must not leak)."""
    compile_elementwise(False)
    yield
    compile_elementwise(False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fuse", [False, True])
def test_llada_and_dream_eager_logits_are_bit_identical_to_the_plain_ops(dtype, fuse):
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    llada = tiny_llada(fuse, dtype)
    dream = tiny_dream().to(dtype)
    if fuse:
        dream.fuse_projections()
    with torch.no_grad():
        for model, reference in ((llada, llada_reference), (dream, dream_reference)):
            got, want = model(ids), reference(model, ids)
            assert torch.equal(got, want), f"{type(model).__name__}: max diff {(got - want).abs().max()}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("kind", ["gqa", "qwen2"])
def test_llama_eager_logits_and_cache_are_bit_identical_to_the_plain_ops(kind, fuse, dtype):
    lm = _llama_lm(kind, fuse, dtype)
    got, got_kv = llama_feeds(lambda i, p, c, n: lm(i, p, c, n), lm)
    want, want_kv = llama_feeds(lambda i, p, c, n: llama_reference(lm, i, p, c, n), lm)
    for a, b in zip(got + got_kv, want + want_kv):
        assert torch.equal(a, b), f"max diff {(a.float() - b.float()).abs().max()}"


def test_write_kv_writes_exactly_the_indexed_slots():
    kb, vb = torch.zeros(2, 3, 10, 4), torch.full((2, 3, 10, 4), -1.0)
    k, v = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    slots = torch.tensor([[4, 5], [0, 7]])
    index = (torch.arange(2)[:, None, None], torch.arange(3)[None, :, None], slots[:, None, :])
    _KERNELS["write_kv"](kb, vb, index, k, v)
    for r in range(2):
        assert torch.equal(kb[r][:, slots[r]], k[r]) and torch.equal(vb[r][:, slots[r]], v[r])
    untouched = torch.ones(2, 10, dtype=torch.bool)
    untouched[0, [4, 5]] = untouched[1, [0, 7]] = False
    assert (kb.permute(0, 2, 1, 3)[untouched] == 0).all() and (vb.permute(0, 2, 1, 3)[untouched] == -1).all()


# ---- compile_elementwise -------------------------------------------------------------------------
def test_compile_elementwise_swaps_every_kernel_and_false_restores_them():
    eager = dict(llada_module.EAGER_KERNELS)
    assert set(NEW) <= set(eager) and _KERNELS == eager
    compile_elementwise(True, backend="eager")  # torch.compile is lazy: nothing compiles until a call
    assert all(_KERNELS[name] is not fn for name, fn in eager.items())
    compile_elementwise(False)
    assert all(_KERNELS[name] is fn for name, fn in eager.items())


@pytest.mark.slow
def test_compiled_kernels_give_the_eager_logits_within_rounding_on_cpu():
    """Inductor on the CPU (fused C++ kernels): LLaDA (RMSNorm, RoPE, SwiGLU, add + norm) and the
    fused Llama forward (those and the cache write) give the eager logits and cache within float
    rounding; then eager again gives the eager logits exactly. (Dream and the unfused Llama forward
    call the same functions.)"""
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    llada, lm = tiny_llada(), _llama_lm("gqa", True, torch.float32)

    def run():
        with torch.no_grad():
            # no one-token forwards: each size-1 shape is one more compilation (tens of seconds here)
            return [llada(ids)], llama_feeds(lambda i, p, c, n: lm(i, p, c, n), lm, feeds=FEEDS[:2])

    ref = run()
    try:
        compile_elementwise(True)
        got = run()
        assert all(_KERNELS[name] is not fn for name, fn in llada_module.EAGER_KERNELS.items())
    finally:
        compile_elementwise(False)
    again = run()
    for g, r in ((got, ref), (again, ref)):
        exact = g is again
        for a, b in zip(g[0] + g[1][0] + g[1][1], r[0] + r[1][0] + r[1][1]):
            if exact:
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


# ---- where the kernels are called: op counts -----------------------------------------------------
class OpCount(TorchDispatchMode):
    """The aten ops a forward dispatches (views excluded: what would be kernels), with each call of
    a ``_KERNELS`` entry counted once as ``kernel:<name>`` and its own ops not counted (what a
    compiled, fused kernel is) when ``as_one``."""

    def __init__(self, as_one: bool = True) -> None:
        super().__init__()
        self.ops: Counter = Counter()
        self.as_one = as_one
        self._inside = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self._inside == 0 and (not func._schema.returns or not func._schema.returns[0].alias_info
                                  or func._schema.is_mutable) and func.__name__ != "_unsafe_view.default":
            self.ops[func.__name__] += 1
        return out

    @contextmanager
    def kernels(self):
        """Count each kernel-table call (once, as one op when ``as_one``)."""
        saved = dict(_KERNELS)

        def counted(name, fn):
            def call(*args, **kwargs):
                self.ops[f"kernel:{name}"] += 1
                self._inside += self.as_one
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._inside -= self.as_one
            return call

        _KERNELS.update({name: counted(name, fn) for name, fn in saved.items()})
        try:
            with self:
                yield self
        finally:
            _KERNELS.update(saved)

    def total(self) -> int:
        n = sum(self.ops.values())
        return n - sum(v for k, v in self.ops.items() if k.startswith("kernel:")) * (not self.as_one)


def llada_forward_ops(n_layers: int, as_one: bool, join: bool = True) -> Counter:
    model = tiny_llada(n_layers=n_layers, n_kv_heads=4)  # LLaDA-8B's block: MHA, no biases
    model.join_residual_norms = join
    ids = torch.randint(0, 50, (1, 8))
    with torch.no_grad(), OpCount(as_one).kernels() as count:
        model(ids)
    return count


def llama_decode_ops(n_layers: int, fuse: bool, as_one: bool) -> Counter:
    """The ops of a one-token decode forward after a prefill (batch 1, GQA)."""
    m = llama_model("gqa")
    m.model.layers = m.model.layers[:n_layers]
    lm = LlamaLM(m, fuse_projections=fuse)
    cache = StaticKVCache.for_model(lm, 1, 32)
    with torch.no_grad():
        lm(torch.randint(1, 64, (1, 5)), cache.positions(5), cache, 1)
        cache.advance(5)
        ids, positions = torch.randint(1, 64, (1, 1)), cache.positions(1)
        with OpCount(as_one).kernels() as count:
            lm(ids, positions, cache, 1)
    return count


def test_each_model_calls_the_fused_kernels_once_per_pattern():
    L = 2
    llada = llada_forward_ops(L, as_one=True).ops
    # a block's output residual and the next block's attention norm are one call: the first
    # block's norm, the head's and the last block's residual are on their own
    assert (llada["kernel:add_rms_norm"], llada["kernel:swiglu"], llada["kernel:rms_norm"]) == (2 * L - 1, L, 2)
    assert llada["silu.default"] == 0 and llada["add.Tensor"] == 1
    apart = llada_forward_ops(L, as_one=True, join=False).ops
    assert (apart["kernel:add_rms_norm"], apart["kernel:rms_norm"], apart["add.Tensor"]) == (L, L + 1, L)
    for fuse in (False, True):
        ops = llama_decode_ops(L, fuse, as_one=True).ops
        # the MLP's residual and the next layer's input norm are one call; the head's norm is its own
        assert (ops["kernel:add_rms_norm"], ops["kernel:rms_norm"]) == (2 * L - 1, 2)
        assert (ops["kernel:swiglu"], ops["kernel:write_kv"]) == (L, L)
        assert ops["silu.default"] == 0 and ops["scatter_.default"] == 0
    dream = OpCount(True)
    model, ids = tiny_dream(), torch.randint(0, 50, (1, 6))
    with torch.no_grad(), dream.kernels():
        model(ids)
    assert (dream.ops["kernel:add_rms_norm"], dream.ops["kernel:swiglu"], dream.ops["kernel:rms_norm"]) == (3, 2, 2)
    model.join_residual_norms = False
    apart = OpCount(True)
    with torch.no_grad(), apart.kernels():
        model(ids)
    assert (apart.ops["kernel:add_rms_norm"], apart.ops["kernel:rms_norm"]) == (2, 3)


def per_layer_counts() -> dict[str, tuple[int, int]]:
    """Ops per layer (two layers' count minus one layer's): eager, and with every kernel-table call
    counted as one kernel (what ``compile_elementwise`` launches)."""
    rows = {"LLaDA block, 8 tokens, no cache": lambda n, one: llada_forward_ops(n, one)}
    for fuse in (False, True):
        rows[f"Llama decode step, {'fused' if fuse else 'unfused'} projections"] = (
            lambda n, one, fuse=fuse: llama_decode_ops(n, fuse, one))
    return {name: tuple(f(2, one).total() - f(1, one).total() for one in (False, True)) for name, f in rows.items()}


if __name__ == "__main__":
    for name, (eager, fused) in per_layer_counts().items():
        print(f"{name}: {eager} ops per layer eager, {fused} with the kernel table compiled")
