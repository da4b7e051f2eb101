"""``fuse_projections``: joined q/k/v and gate/up matmuls, one RoPE call and copy-free GQA give
the unfused forward's logits and the target's greedy outputs, share one joined copy per model,
cost no memory, and fall back cleanly when the model moves."""

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import paradecode
from paradecode.caches.static_kv import StaticKVCache
from paradecode.models.llama import LlamaLM, gqa_mode
from paradecode.speculative import greedy_decode
from paradecode.speculative.causal_lm import CausalLM

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
SHAPE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=256, pad_token_id=0, bos_token_id=None, eos_token_id=None)


def model(kind="gqa", seed=0, dtype=torch.float32, scale=4.0):
    torch.manual_seed(seed)
    if kind == "qwen2":  # q/k/v biases, no o/mlp biases
        m = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, **SHAPE))
    else:
        kw = {"gqa": dict(num_key_value_heads=2, rope_parameters=LLAMA3_ROPE),
              "mha": dict(num_key_value_heads=4),
              "bias": dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True)}[kind]
        m = LlamaForCausalLM(LlamaConfig(**SHAPE, **kw))
    m = m.eval().to(dtype)
    with torch.no_grad():  # larger weights than the init: varied, peaked logits
        for p in m.parameters():
            p.mul_(scale)
    return m


def run_feeds(lm, seed=1):
    """Prefill with left padding, a 3-token verify, a rollback to different row lengths, then
    single-token steps: the logits of every forward."""
    g = torch.Generator().manual_seed(seed)
    cache = StaticKVCache.for_model(lm, 2, 64)
    cache.start.copy_(torch.tensor([0, 3]))
    outs = []
    with torch.no_grad():
        for T, keep in ((8, 8), (3, torch.tensor([1, 3])), (3, 3), (1, 1), (1, 1), (1, 1)):
            ids = torch.randint(1, 64, (2, T), generator=g)
            outs.append(lm(ids, cache.positions(T), cache, num_logits=T))
            cache.advance(keep)
    return outs


def test_gqa_mode_is_chosen_once_for_the_device():
    assert gqa_mode(4, 4, 8, torch.float32, torch.device("cpu")) == "expand"  # nothing to repeat
    # torch >= 2.5 has enable_gqa, and its CPU kernels take a boolean mask with it
    assert gqa_mode(4, 2, 8, torch.float32, torch.device("cpu")) == "native"
    assert LlamaLM(model()).gqa == "expand"  # the unfused forward is unchanged


@pytest.mark.parametrize("kind", ["gqa", "mha", "bias", "qwen2"])
def test_fused_logits_equal_unfused_over_prefill_and_decode_steps(kind):
    m = model(kind)
    ref = run_feeds(LlamaLM(m))  # before fusing: the parameters are still the model's own tensors
    fused = LlamaLM(m, fuse_projections=True)
    assert fused.fused
    modes = ("native", "pack", "expand") if fused.n_kv != fused.n_heads else (fused.gqa,)
    for mode in modes:
        fused.gqa = mode
        got = run_feeds(fused)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(torch.cat([o.flatten() for o in got])).all()


def test_fusion_costs_no_memory_and_keeps_the_model_as_it_was():
    m = model("qwen2")
    ids = torch.tensor([[5, 9, 2, 31, 7]])
    with torch.no_grad():
        before_logits = m(ids).logits
    before = {k: v.clone() for k, v in m.state_dict().items()}
    plain = LlamaLM(m)
    bytes_before = plain.weight_bytes()
    fused = LlamaLM(m, fuse_projections=True)
    assert fused.weight_bytes() == bytes_before == plain.weight_bytes()
    attn = m.model.layers[0].self_attn
    # q/k/v are views of one joined tensor: no second copy of the weights
    assert attn.k_proj.weight.untyped_storage().data_ptr() == attn.q_proj.weight.untyped_storage().data_ptr()
    assert attn.q_proj.bias.untyped_storage().data_ptr() == attn.v_proj.bias.untyped_storage().data_ptr()
    after = m.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    with torch.no_grad():
        torch.testing.assert_close(m(ids).logits, before_logits, rtol=0, atol=0)


def test_wrappers_share_one_join_and_a_moved_model_falls_back():
    m = model("gqa")
    keep = torch.arange(0, 64, 2)
    a = CausalLM.of(m, fuse_projections=True)
    b = CausalLM.of(m, keep, fuse_projections=True)  # the VocabTrim draft of the same model
    assert a.lm.fused and b.lm.fused  # the second did not re-join (that would leave the first stale)
    assert CausalLM.of(m, fuse_projections=True) is a
    ref = run_feeds(LlamaLM(m))
    with torch.no_grad():  # new tensors for the layers' parameters, as a move would give
        for p in m.model.layers.parameters():
            p.data = p.data.clone()
    assert not a.lm.fused  # the joined copy is stale: the separate matmuls run
    torch.testing.assert_close(run_feeds(a.lm), ref, rtol=1e-5, atol=1e-5)
    again = CausalLM.of(m, fuse_projections=True)
    assert again is not a and again.lm.fused
    torch.testing.assert_close(run_feeds(again.lm), ref, rtol=1e-5, atol=1e-5)


def test_projections_that_cannot_be_joined_are_refused_clearly():
    m = model("gqa")
    m.model.layers[1].mlp.up_proj.half()
    with pytest.raises(ValueError, match="layer 1.*fuse_projections off"):
        LlamaLM(m, fuse_projections=True)


def pair():
    target = model("gqa", seed=5, scale=8.0).double()
    draft = model("gqa", seed=5, scale=8.0).double()
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return target, draft


def test_fused_speculative_greedy_equals_target_greedy_with_and_without_vocabtrim():
    target, draft = pair()
    rows = [[5, 9, 2, 31, 7, 8], [3, 4], [12, 13, 14, 15]]
    ref = [greedy_decode(CausalLM(target), torch.tensor([r]), 20)[0] for r in rows]  # unfused, one row each
    keep = torch.randperm(64, generator=torch.Generator().manual_seed(3))[:24]
    opts = dict(draft_model=draft, max_new_tokens=20, num_draft_tokens=4, fuse_projections=True)
    for extra in ({}, {"vocabtrim": keep}):
        out = paradecode.sample(target, rows, "speculative", **opts, **extra)
        for i, r in enumerate(ref):
            assert torch.equal(out.generated[i][: len(r)], r), (extra.keys(), i)
        assert out.trace.nfe_by_role["draft"] > 0
    assert CausalLM.of(target, fuse_projections=True).lm.fused
    assert CausalLM.of(draft, keep, fuse_projections=True).lm.fused
    accepted = torch.stack(out.trace.extra("accepted"))
    assert accepted.sum() > 0  # the draft's tokens were taken, not just the target's


def test_fused_vocabtrim_head_gives_the_kept_rows_of_the_full_logits():
    m = model("qwen2")
    keep = torch.tensor([7, 3, 60, 11, 0, 42])
    ref = run_feeds(LlamaLM(m))
    got = run_feeds(LlamaLM(m, keep_ids=keep, fuse_projections=True))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b[..., keep], rtol=1e-5, atol=1e-5)


class OpCount(TorchDispatchMode):
    """The aten ops a forward dispatches, views and reshapes excluded (what would be kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func._schema.returns or not func._schema.returns[0].alias_info or func._schema.is_mutable:
            if func.__name__ != "_unsafe_view.default":
                self.ops[func.__name__] += 1
        return out


@pytest.mark.parametrize("T", [1, 6])
def test_fused_decode_forward_launches_fewer_kernels(T):
    """Per layer: 4 matmuls instead of 7, no copy of the repeated keys/values (native GQA), one
    RoPE call instead of two, and the mask converted once per forward instead of per layer."""
    m = model("gqa")
    L = m.config.num_hidden_layers
    counts = {}
    for fuse in (False, True):
        lm = LlamaLM(m, fuse_projections=fuse)
        cache = StaticKVCache.for_model(lm, 1, 64)
        with torch.no_grad():
            lm(torch.ones(1, 8, dtype=torch.long), cache.positions(8), cache, 1)
            cache.advance(8)
            with OpCount() as c:
                lm(torch.ones(1, T, dtype=torch.long), cache.positions(T), cache, T)
        counts[fuse] = c.ops
    plain, fused = counts[False], counts[True]
    assert plain["mm.default"] == 7 * L + 1 and fused["mm.default"] == 4 * L + 1
    assert plain["clone.default"] == 2 * L and fused["clone.default"] == 0  # repeat_kv's K/V copies
    assert plain["neg.default"] == 2 * L and fused["neg.default"] == L  # rotate-half of q and k together
    assert plain["where.self"] == L and fused["where.self"] == 1  # bool -> additive mask
    assert sum(fused.values()) <= sum(plain.values()) - 8 * L
