"""The layer-adaptive caches (``elastic``, ``dllm-cache``) on DreamModel, whose logits at column i
come from the output at column i - 1 and whose padding is a key mask.

Exact settings equal no cache for every strategy (tests/test_dream.py runs them with CFG and
ragged prompts); here: what each policy refreshes on a shifted model, the settings under which
each is exact by construction, determinism at the defaults, and that every model claiming the
layer hooks calls them. Token identity with the references' Dream paths on a tiny model is
checked outside the repo (docs/dev-notes/issue-18-dream-hooks.md)."""

import pytest
import torch

import paradecode
from paradecode.caches.dllm_cache import DLLMCache, DLLMCacheConfig
from paradecode.caches.elastic import ElasticCache, ElasticCacheConfig
from paradecode.caches.layered import LayeredCanvasCache
from paradecode.models import DreamModel, LLaDAModel

from .conftest import make_tiny_model
from .test_dream import MASK, _canvas_request, tiny_dream

GEO = dict(gen_length=16, block_length=8)
STRATS = [("lowconf", dict(steps=16)), ("threshold", dict(threshold=0.6))]
PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]  # the second row is left-padded


@pytest.fixture(scope="module")
def dream() -> DreamModel:
    return tiny_dream(num_hidden_layers=3)


def _sample(model, strategy, opts, cache=None, cache_options=None, **kw):
    return paradecode.sample(model, PROMPTS, strategy, cache=cache, cache_options=cache_options, **GEO, **opts, **kw)


def _partial_canvas():
    """Two rows (one left-padded), block 2 of 3 at column s: decoded but for masks at s, s+1, s+2,
    s+5 and s+7; column s+3 committed in the previous step."""
    R, P, B, G = 2, 6, 8, 24
    g = torch.Generator().manual_seed(4)
    tokens = torch.cat([torch.randint(0, 50, (R, P), generator=g), torch.full((R, G), MASK)], dim=1)
    s = P + B
    tokens[:, P : s + B] = torch.randint(0, 50, (R, 2 * B), generator=g)
    for c in (0, 1, 2, 5, 7):
        tokens[:, s + c] = MASK
    am = torch.ones_like(tokens)
    am[1, :2] = 0
    committed = torch.full(tokens.shape, -1)
    committed[:, P : s + B] = 1
    committed[:, s + 3] = 4  # the request's step is 5
    committed[tokens == MASK] = -1
    return tokens, am, s, B, committed


def test_elastic_on_dream_refreshes_the_predecessors_of_the_window_masks(dream):
    """Elastic-Cache's Dream path feeds ``masked_position - 1``: the rows whose outputs give the
    masks' logits. Their keys/values are refreshed; a window mask whose predecessor is not a mask
    is fed only for its logits' slot (a query: its kept keys/values stay), masks past the sliding
    window are not fed, and the window masks' logits equal the full forward's on the canvas the
    cache holds."""
    tokens, am, s, B, committed = _partial_canvas()
    L = tokens.shape[1]
    policy = ElasticCache(ElasticCacheConfig(window_length=4, gamma=0.0))  # gamma 0: no refresh
    sentinel = 1234.0
    with torch.no_grad():
        policy.forward(dream, _canvas_request(tokens, am, s, B, 0, committed))  # full: fills the cache
        for kb in policy._k:
            kb[:, :, [s - 1, s + 2, s + 9]] = sentinel
        policy.forward(dream, _canvas_request(tokens, am, s, B, 3, committed))
    masks = [s + c for c in (0, 1, 2, 5, 7)]  # the block's masks (the strategy's window)
    fed = set(policy._idx[0][policy._idx[0] < L].tolist())
    kept = set(policy.kept_index()[0][policy.kept_index()[0] < L].tolist())
    assert {m - 1 for m in masks} | {s + 3} <= kept  # predecessors, and the column just committed
    assert {s + 2, s + 5, s + 7} <= fed - kept  # masks whose predecessor is decoded: queries only
    assert s + 9 not in fed  # the next block's masks lie past window_length=4 masks: block caching
    for kb in policy._k:
        assert (kb[:, :, s - 1] != sentinel).all()
        assert (kb[:, :, [s + 2, s + 9]] == sentinel).all()
    clean = ElasticCache(ElasticCacheConfig(window_length=4))
    with torch.no_grad():
        clean.forward(dream, _canvas_request(tokens, am, s, B, 0, committed))
        partial = clean.forward(dream, _canvas_request(tokens, am, s, B, 3, committed))
        ref = dream(tokens, attention_mask=am, logits_range=(s, s + B))
    assert not clean._full and clean.stats()["recompute_fraction"] < 0.6
    window = [m - s for m in masks]
    torch.testing.assert_close(partial[:, window], ref[:, window], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strategy, opts", STRATS)
def test_elastic_on_a_one_layer_dream_equals_no_cache(strategy, opts):
    """Layer 0's keys/values depend only on a column's token and position, and every column whose
    token changed is fed: with one layer the predecessors' outputs, hence the masks' shifted
    logits, are exact whatever is reused."""
    model = tiny_dream(num_hidden_layers=1)
    ref = _sample(model, strategy, opts)
    out = _sample(model, strategy, opts, "elastic")
    assert torch.equal(ref.sequences, out.sequences)
    assert min(out.trace.extra("recompute_fraction")) < 0.8  # the partial forwards fed a subset


def test_elastic_trigger_on_dream(dream):
    out = _sample(dream, "lowconf", dict(steps=16), "elastic", {"gamma": 2.0})
    layers = out.trace.extra("refresh_layer")
    assert layers[0] == 0.0 and all(v == 1.0 for v in layers[1:])  # first forward full, then from layer 1
    never = _sample(dream, "lowconf", dict(steps=16), "elastic", {"gamma": 0.0})
    assert all(v == 3.0 for v in never.trace.extra("refresh_layer")[1:])
    assert sum(never.trace.extra("recompute_fraction")) < sum(out.trace.extra("recompute_fraction")) < len(layers)


@pytest.mark.parametrize("cache, exact", [("elastic", {"refresh_every": 1}),
                                          ("dllm-cache", {"prompt_interval_steps": 1, "gen_interval_steps": 1})])
@pytest.mark.parametrize("strategy, opts", STRATS)
def test_exact_settings_on_dream_equal_no_cache(dream, cache, exact, strategy, opts):
    ref = _sample(dream, strategy, opts, cfg_scale=1.0)
    out = _sample(dream, strategy, opts, cache, exact, cfg_scale=1.0)
    assert torch.equal(ref.sequences, out.sequences) and ref.trace.nfe == out.trace.nfe
    assert all(f == 1.0 for f in out.trace.extra("recompute_fraction"))


def test_dllm_cache_on_dream_reuses_features_exactly_on_an_unchanged_canvas(dream):
    """Between refreshes every layer but the first adds its cached features to a fresh input;
    on the canvas the features were computed on, the (shifted) logits are the full forward's."""
    tokens, am, s, B, committed = _partial_canvas()
    policy = DLLMCache(DLLMCacheConfig(transfer_ratio=0.0))
    with torch.no_grad():
        first = policy.forward(dream, _canvas_request(tokens, am, s, B, 0, committed))
        second = policy.forward(dream, _canvas_request(tokens, am, s, B, 1, committed))
        ref = dream(tokens, attention_mask=am, logits_range=(s, s + B))
    stats = policy.stats()
    assert stats["refresh_prompt"] == 0.0 and stats["refresh_gen"] == 0.0
    assert stats["recompute_fraction"] == pytest.approx(1 / 3)  # layer 0 of 3 only
    torch.testing.assert_close(first, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache", ["elastic", "dllm-cache"])
@pytest.mark.parametrize("strategy, opts", STRATS)
def test_defaults_on_dream_finish_deterministically_and_save_work(dream, cache, strategy, opts):
    a = _sample(dream, strategy, opts, cache)
    b = _sample(dream, strategy, opts, cache)
    assert torch.equal(a.sequences, b.sequences)
    assert not (a.generated == MASK).any()
    fr = a.trace.extra("recompute_fraction")
    assert len(fr) == a.trace.nfe and sum(fr) / len(fr) < 0.9


class _Recorder(LayeredCanvasCache):
    """Records the hook calls of a full forward (no refresh logic)."""

    name = "recorder"

    def __init__(self):
        super().__init__(None)
        self.calls = []

    def full_rows(self, canvas):
        return torch.ones(len(canvas.rows), dtype=torch.bool)

    def layer_input(self, layer, x, block):
        self.calls.append(("input", layer, tuple(block.values(x).shape)))
        return x, None

    def layer_queries(self, layer, q, k):
        self.calls.append(("queries", layer, q.shape[2]))

    def layer_output(self, layer, x):
        self.calls.append(("output", layer))
        return x


@pytest.mark.parametrize("make", [make_tiny_model, lambda: tiny_dream(num_hidden_layers=2)],
                         ids=["llada", "dream"])
def test_models_claiming_layer_hooks_call_them(make):
    """``supports_layer_hooks`` is what the layered policies check before relying on the hooks:
    a model that claims them calls all three per layer, in order, and has ``values``."""
    model = make()
    assert model.supports_layer_hooks
    tokens, am, s, B, committed = _partial_canvas()
    tokens = tokens.clamp(max=model.config.vocab_size - 1)
    rec = _Recorder()
    with torch.no_grad():
        rec.forward(model, _canvas_request(tokens, am, s, B, 0, committed))
    if isinstance(model, DreamModel):
        n, kv = model.config.num_hidden_layers, model.config.n_kv_heads * model.config.head_dim
    else:
        n, kv = model.config.n_layers, model.config.effective_n_kv_heads * model.config.head_dim
    expected = []
    for i in range(n):
        expected += [("input", i, (2, tokens.shape[1], kv)), ("queries", i, tokens.shape[1]), ("output", i)]
    assert rec.calls == expected


def test_a_model_without_the_hooks_is_refused_clearly():
    class NoHooks(DreamModel):
        supports_layer_hooks = False

    model = NoHooks(tiny_dream(num_hidden_layers=1).config)
    with pytest.raises(ValueError, match=r"layer hooks, which NoHooks does not have.*cache='dual'"):
        paradecode.sample(model, [[5, 6, 7]], "threshold", gen_length=16, block_length=8, cache="elastic")
    assert LLaDAModel.supports_layer_hooks and DreamModel.supports_layer_hooks
