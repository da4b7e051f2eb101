"""The registry's contract matrix: every strategy x every cache policy.

Where a policy serves the strategy's model family, running it with the policy's declared
``exact_options`` (it recomputes everything it would reuse) gives the tokens and forward
counts of running without it. Where it does not (or the strategy runs its own forward, a
non-``cacheable`` one), ``sample`` refuses with a message naming both. A strategy or policy added to the registry joins the matrix with no edit here except
a line in ``RUNS`` (a test fails until it has one)."""

import pytest
import torch

import paradecode
from paradecode.registry import get_cache_class, get_strategy_class

from ._vision_tiny import tiny_vae, tiny_var

GEO = dict(gen_length=16, block_length=8)
# How to run each strategy on the tiny models: (model key, options).
RUNS = {
    "lowconf": ("dllm", dict(GEO, steps=16)),
    "threshold": ("dllm", dict(GEO, threshold=0.6)),
    "prophet": ("dllm", dict(GEO, base_options=dict(steps=16), answer_start=3, early_threshold=2.0,
                              mid_threshold=1.5, late_threshold=1.0)),
    "credit": ("dllm", dict(GEO, threshold=0.8)),
    "localleap": ("dllm", dict(GEO, threshold=0.7, relaxed_threshold=0.4)),
    "learn2pd": ("dllm", dict(GEO, steps=16)),
    "eb": ("dllm", dict(GEO, gamma=0.5)),
    "dparallel": ("dllm", dict(GEO, threshold=0.5)),
    "editing": ("dllm", dict(GEO, threshold=0.5, editing_threshold=0.3, max_post_edit_steps=3)),
    "wino": ("dllm", dict(GEO, threshold=0.6, threshold_back=0.9)),
    "speculative": ("causal", dict(max_new_tokens=6, num_draft_tokens=2)),
    "var": ("var", dict(cfg=2.0, top_k=20)),
    "code": ("var", dict(cfg=2.0, top_k=20, draft_steps=3)),
}


@pytest.fixture(scope="module")
def setups():
    from .conftest import make_tiny_model

    dllm = make_tiny_model()
    prompts = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    vae = tiny_vae()
    big, small = tiny_var(vae, depth=4, seed=1), tiny_var(vae, depth=2, seed=2)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(3)
    target, draft = LlamaForCausalLM(cfg).eval(), LlamaForCausalLM(cfg).eval()
    return {
        "dllm": (dllm, prompts, {}),
        "var": (big, [0, 3], {"refiner": small}),
        "causal": (target, torch.tensor([[1, 2, 3]]), {"draft_model": draft}),
    }


def test_every_registered_strategy_has_a_run():
    assert set(paradecode.strategies()) == set(RUNS)


def _run(setups, strategy, cache=None, cache_options=None):
    key, opts = RUNS[strategy]
    model, prompt, runtime = setups[key]
    if strategy != "code":
        runtime = {k: v for k, v in runtime.items() if k != "refiner"}
    return paradecode.sample(model, prompt, strategy, seed=4, cache=cache, cache_options=cache_options,
                             **runtime, **opts)


@pytest.mark.parametrize("cache", sorted(paradecode.cache_policies()))
@pytest.mark.parametrize("strategy", sorted(RUNS))
def test_exact_options_change_nothing_and_other_families_are_refused(setups, strategy, cache):
    policy = get_cache_class(cache)
    family = get_strategy_class(strategy).family
    if family not in policy.families or not getattr(get_strategy_class(strategy), "cacheable", True):
        with pytest.raises(ValueError) as err:
            _run(setups, strategy, cache)
        assert repr(cache) in str(err.value) and repr(strategy) in str(err.value)
        return
    ref = _run(setups, strategy)
    out = _run(setups, strategy, cache, dict(policy.exact_options))
    assert torch.equal(ref.sequences, out.sequences)
    assert torch.equal(ref.trace.row_nfe, out.trace.row_nfe)
    assert ref.trace.nfe_by_role == out.trace.nfe_by_role
