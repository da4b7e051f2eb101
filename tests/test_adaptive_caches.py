"""The layer-adaptive caches: ``elastic`` (Elastic-Cache) and ``dllm-cache`` (dLLM-Cache).

Token-identity with the two references on a tiny model is checked outside the repo (see
docs/dev-notes/issue-18-caches.md); here: the settings under which each is exact, the refresh
decisions on crafted inputs, the work each saves with every dLLM strategy, and option errors."""

import warnings

import pytest
import torch

import paradecode
from paradecode.caches.dllm_cache import DLLMCache, DLLMCacheConfig
from paradecode.caches.elastic import ElasticCache, ElasticCacheConfig
from paradecode.models import LLaDAModel
from paradecode.registry import get_strategy_class

from .conftest import make_tiny_model, tiny_config
from .test_contract import RUNS

GEO = dict(gen_length=16, block_length=8)
STRATS = [("lowconf", dict(steps=16)), ("threshold", dict(threshold=0.6))]


def _sample(model, prompts, strategy, opts, cache=None, cache_options=None, **kw):
    return paradecode.sample(model, prompts, strategy, cache=cache, cache_options=cache_options, **GEO, **opts, **kw)


def _fractions(out):
    return out.trace.extra("recompute_fraction")


@pytest.mark.parametrize("strategy, opts", STRATS)
@pytest.mark.parametrize("cache, exact", [("elastic", {"refresh_every": 1}),
                                          ("dllm-cache", {"prompt_interval_steps": 1, "gen_interval_steps": 1})])
def test_exact_settings_equal_no_cache_with_padding_and_cfg(tiny_model, cache, exact, strategy, opts):
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14, 15]]  # left-padded rows
    ref = _sample(tiny_model, prompts, strategy, opts, cfg_scale=1.0)
    out = _sample(tiny_model, prompts, strategy, opts, cache, exact, cfg_scale=1.0)
    assert torch.equal(ref.sequences, out.sequences)
    assert ref.trace.nfe == out.trace.nfe
    assert all(f == 1.0 for f in _fractions(out))


@pytest.mark.parametrize("strategy, opts", STRATS)
def test_elastic_on_one_layer_equals_no_cache(prompts, strategy, opts):
    """Layer 0's keys/values depend only on a column's token and position, and every column whose
    token changed is fed: with one layer the fed rows' logits are exact, whatever is reused."""
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config(n_layers=1)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(20.0)  # as make_tiny_model: peaked, varied confidences
    ref = _sample(model, prompts, strategy, opts)
    out = _sample(model, prompts, strategy, opts, "elastic")
    assert torch.equal(ref.sequences, out.sequences)
    assert min(_fractions(out)) < 0.8  # the partial forwards fed a subset


def test_elastic_trigger_always_on_refreshes_from_layer_one(tiny_model, prompts):
    out = _sample(tiny_model, prompts, "lowconf", dict(steps=16), "elastic", {"gamma": 2.0})
    layers = out.trace.extra("refresh_layer")
    assert layers[0] == 0.0 and all(v == 1.0 for v in layers[1:])  # first forward full, then from layer 1
    never = _sample(tiny_model, prompts, "lowconf", dict(steps=16), "elastic", {"gamma": 0.0})
    assert all(v == 2.0 for v in never.trace.extra("refresh_layer")[1:])  # similarity >= 0: never fires
    assert sum(_fractions(never)) < sum(_fractions(out)) < len(layers)


def _elastic_at_layer(gamma):
    cache = ElasticCache(ElasticCacheConfig(gamma=gamma))
    cache._L, cache._mask, cache._refresh_from = 3, None, 1 << 30
    cache._slot_tracked = torch.tensor([[True]])
    return cache


def test_elastic_drift_test_fires_on_moved_attention():
    # one tracked query row, two heads, three keys; before: both heads attend to key 0
    past_q = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]])
    keys = torch.tensor([[[9.0, 0.0], [0.0, 0.0], [0.0, 9.0]]] * 2)[None]  # (1, 2 heads, 3 keys, 2)
    same = torch.softmax(past_q @ keys.transpose(-2, -1) / 2 ** 0.5, -1)
    moved = torch.tensor([[[[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]]]])  # head 0 moved to key 2
    for probs, gamma, fires in [(same, 0.9, False), (moved, 0.9, True), (moved, 0.2, False)]:
        cache = _elastic_at_layer(gamma)
        cache._k_before = keys
        cache._drift_test(4, probs, past_q)
        assert (cache._refresh_from == 5) is fires


class _Values:
    """A block whose value vectors are given (what V-verify reads through ``block.values``)."""

    def __init__(self, v):
        self.v = v

    def values(self, x):
        return self.v


def test_dllm_verify_picks_least_similar_values_and_refreshes_all_values():
    cache = DLLMCache(DLLMCacheConfig(transfer_ratio=0.5))
    R, kv, hd, P, G = 1, 2, 3, 2, 4
    cache._gen_start = P
    cache._v = [torch.ones(R, kv, P + G + 1, hd)]
    fresh = torch.ones(R, G, kv * hd)
    fresh[0, 1] = -1.0  # opposite: similarity -1
    fresh[0, 3, :3] = 0.0  # half zero: similarity ~0.7
    picked = cache._verify(0, torch.zeros(R, G, 8), _Values(fresh))
    assert sorted(picked[0].tolist()) == [1, 3]
    assert torch.equal(cache._v[0][0, :, P + 1], -torch.ones(kv, hd))  # every response value replaced
    assert torch.equal(cache._v[0][0, :, :P], torch.ones(kv, P, hd))  # the prompt's kept


def test_dllm_refresh_schedule(tiny_model, prompts):
    out = _sample(tiny_model, prompts, "lowconf", dict(steps=16), "dllm-cache",
                  {"prompt_interval_steps": 3, "gen_interval_steps": 2, "transfer_ratio": 0.0})
    prompt, gen = out.trace.extra("refresh_prompt"), out.trace.extra("refresh_gen")
    assert prompt[:7] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert gen[:7] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    fr = _fractions(out)
    assert fr[0] == 1.0 and fr[1] < fr[2] < 1.0  # nothing but layer 0, then layer 0 + the response


@pytest.mark.parametrize("cache", ["elastic", "dllm-cache"])
@pytest.mark.parametrize("strategy", sorted(s for s in RUNS if get_strategy_class(s).family == "dllm"
                                             and get_strategy_class(s).cacheable))  # wino refuses caches
def test_defaults_run_with_every_strategy_and_save_work(cache, strategy):
    model = make_tiny_model()
    prompts = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    _, opts = RUNS[strategy]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = paradecode.sample(model, prompts, strategy, seed=4, cache=cache, **opts)
    assert out.sequences.shape == (2, 5 + 16)
    assert (out.sequences[:, 5:] != model.config.mask_token_id).all()
    fr = _fractions(out)
    assert len(fr) == out.trace.nfe and sum(fr) / len(fr) < 0.9


@pytest.mark.parametrize("cache, options, word", [
    ("elastic", {"gamma": "high"}, "gamma"),
    ("elastic", {"gamma": float("nan")}, "gamma"),
    ("elastic", {"track_num": 0}, "track_num"),
    ("elastic", {"window_length": 2.5}, "window_length"),
    ("elastic", {"block_caching": 1}, "block_caching"),
    ("elastic", {"refresh_every": 0}, "refresh_every"),
    ("elastic", {"beta": 3}, "beta"),
    ("dllm-cache", {"prompt_interval_steps": 0}, "prompt_interval_steps"),
    ("dllm-cache", {"gen_interval_steps": 1.5}, "gen_interval_steps"),
    ("dllm-cache", {"transfer_ratio": 1.5}, "transfer_ratio"),
    ("dllm-cache", {"transfer_ratio": -0.1}, "transfer_ratio"),
])
def test_invalid_options_are_refused(tiny_model, prompts, cache, options, word):
    with pytest.raises((TypeError, ValueError), match=word):
        _sample(tiny_model, prompts, "lowconf", dict(steps=16), cache, options)


def test_block_values_are_the_v_projection_fused_or_not(tiny_model):
    block = tiny_model.model.transformer["blocks"][1]
    x = torch.randn(2, 5, tiny_model.config.d_model)
    want = block.v_proj(block.attn_norm(x))
    torch.testing.assert_close(block.values(x), want)
    tiny_model.fuse_projections()
    assert block.fused_groups() is not None
    torch.testing.assert_close(block.values(x), want, rtol=1e-5, atol=1e-5)
