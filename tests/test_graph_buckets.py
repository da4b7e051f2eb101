"""CUDA-graph keys, static inputs and buffer reuse of ``CUDAGraphModel``, checked on CPU.

Real capture needs a GPU; here ``paradecode.models.graph_standins.ReplayedGraphs`` stands in
for it: it runs the body once at capture and re-runs it on every replay against the *static*
tensors and a snapshot of the cache's Python state taken at capture (what a CUDA graph
freezes). Any input the wrapper forgets to copy in before a replay (ids, positions, fed
columns, attention mask, key mask), or a graph replayed on buffers it no longer owns, then
gives different tokens from the eager model.
"""

import pytest
import torch

import paradecode
from paradecode.models import LLaDAModel
from paradecode.models.graph_standins import ReplayedGraphs
from paradecode.models.graphs import KVBufferStore, graph_key

from .conftest import tiny_config


def _model() -> LLaDAModel:
    torch.manual_seed(0)
    return LLaDAModel(tiny_config()).eval()


def _ragged(seed: int, rows: int = 3):
    """Rows of 6, 1, 3 (2) tokens in an order that depends on the seed: same padded shape,
    different masks from call to call."""
    g = torch.Generator().manual_seed(seed)
    lengths = [(6, 1, 3, 2)[i] for i in torch.randperm(rows, generator=g).tolist()]
    return [torch.randint(0, 50, (n,), generator=g).tolist() for n in lengths]


OPTS = dict(gen_length=16, block_length=4, steps=8)  # 4 blocks, 2 tokens per step


@pytest.mark.parametrize("cache", [None, "prefix", "dual", "dkv-decode"])
def test_padded_batches_replay_graphs_and_match_eager(cache):
    model = _model()
    graphed = ReplayedGraphs(model)
    for seed in (1, 4):  # the second call replays the first call's graphs on new prompts
        prompts = _ragged(seed)
        ref = paradecode.sample(model, prompts, "lowconf", cache=cache, **OPTS)
        out = paradecode.sample(graphed, prompts, "lowconf", cache=cache, **OPTS)
        assert torch.equal(out.sequences, ref.sequences)
    assert graphed.replays > 0
    # padded: every graph takes a mask (an attention mask, or for partial steps the cache's key mask)
    assert all(key[2] is not None or key[0][2] is not None for key in graphed._graphs)
    if cache in (None, "dual"):  # fixed shapes: the second call captured nothing new
        captures = graphed.captures
        paradecode.sample(graphed, _ragged(3), "lowconf", cache=cache, **OPTS)
        assert graphed.captures == captures


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_each_batch_size_is_its_own_bucket_and_unpadded_batches_match(rows):
    model = _model()
    graphed = ReplayedGraphs(model)
    g = torch.Generator().manual_seed(rows)
    prompts = torch.randint(0, 50, (rows, 6), generator=g)
    for _ in range(2):
        ref = paradecode.sample(model, prompts, "lowconf", cache="dual", **OPTS)
        out = paradecode.sample(graphed, prompts, "lowconf", cache="dual", **OPTS)
        assert torch.equal(out.sequences, ref.sequences)
    assert all(key[1][0] == rows and key[2] is None for key in graphed._graphs)
    assert graphed.replays > 0


def test_without_buffer_reuse_graphs_are_recaptured_per_call():
    model = _model()
    graphed = ReplayedGraphs(model, reuse_buffers=False)
    prompts = torch.randint(0, 50, (2, 6))
    paradecode.sample(graphed, prompts, "lowconf", cache="dual", **OPTS)
    first = graphed.captures
    out = paradecode.sample(graphed, prompts, "lowconf", cache="dual", **OPTS)
    assert graphed.captures > first  # private buffers: the old graphs were stale and dropped
    ref = paradecode.sample(model, prompts, "lowconf", cache="dual", **OPTS)
    assert torch.equal(out.sequences, ref.sequences)


def test_graph_key_separates_masks_batches_and_uncapturable_caches():
    assert graph_key((1, 8), None, False, None) != graph_key((2, 8), None, False, None)
    assert graph_key((2, 8), None, False, None) != graph_key((2, 8), None, False, (2, 8))
    sig = ("DualCache", (2, 4), None, ("store", 1, 0))
    assert graph_key((2, 4), sig, True, None) == (sig, (2, 4), None)
    assert graph_key((2, 4), None, True, None) is None  # the cache declines: eager


def test_buffer_store_hands_back_the_same_buffer_and_token_per_shape():
    store = KVBufferStore()
    like = torch.zeros(1)
    a, ta = store.zeros((0, "k"), (1, 2, 3), like)
    b, tb = store.zeros((0, "k"), (1, 2, 3), like)
    c, tc = store.zeros((0, "k"), (2, 2, 3), like)
    assert a is b and ta == tb and c is not a and tc != ta
    assert tc != ta
    evicted = []
    store = KVBufferStore(max_groups=1, on_evict=evicted.append)
    a, ta = store.zeros((0, "k"), (1, 2, 3), like)
    a.fill_(1)
    c, tc = store.zeros((0, "k"), (2, 2, 3), like)  # a second shape evicts the first
    assert evicted == [ta]
    d, td = store.zeros((0, "k"), (1, 2, 3), like)
    assert d is not a and td not in (ta, tc) and not d.any() and evicted == [ta, tc]
    store.clear()
    assert evicted[-1] == td and store.nbytes() == 0
    with pytest.raises(ValueError, match="max_groups"):
        KVBufferStore(max_groups=0)


@pytest.mark.parametrize("groups", [1, 2])
def test_alternating_batch_sizes_keep_at_most_the_store_groups(groups):
    model = _model()
    graphed = ReplayedGraphs(model, kv_groups=groups)
    prompts = {r: torch.randint(0, 50, (r, 6)) for r in (1, 2)}
    for r in (2, 1, 2, 1):
        captures = graphed.captures
        out = paradecode.sample(graphed, prompts[r], "lowconf", cache="dual", **OPTS)
        ref = paradecode.sample(model, prompts[r], "lowconf", cache="dual", **OPTS)
        assert torch.equal(out.sequences, ref.sequences)
    tokens = {k[0][-1] for k in graphed._graphs if k[0] != "full"}
    assert len(tokens) == groups  # graphs of evicted buffers were dropped with them
    assert (graphed.captures == captures) == (groups == 2)  # two groups: the last call captured nothing


def test_default_positions_of_padded_batches_are_the_models():
    model = _model()
    graphed = ReplayedGraphs(model)
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
        for _ in range(3):  # eager, capture, replay
            out = graphed(ids, attention_mask=mask)
            torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert graphed.replays == 1


def test_a_later_generation_replays_its_first_refresh_too():
    model = _model()
    graphed = ReplayedGraphs(model)
    prompts = torch.randint(0, 50, (2, 6))
    for _ in range(2):
        paradecode.sample(graphed, prompts, "lowconf", cache="dual", **OPTS)
    replays = graphed.replays
    out = paradecode.sample(graphed, prompts, "lowconf", cache="dual", **OPTS)
    steps = out.trace.steps
    assert graphed.replays - replays == steps  # every forward replayed, block 0's refresh included
    ref = paradecode.sample(model, prompts, "lowconf", cache="dual", **OPTS)
    assert torch.equal(out.sequences, ref.sequences)


def test_no_cache_graphs_keep_only_the_most_recent_shapes():
    model = _model()
    graphed = ReplayedGraphs(model, capture_after=0, full_shapes=2)
    ids = {n: torch.randint(0, 50, (1, n)) for n in (4, 5, 6)}
    with torch.no_grad():
        for n in (4, 5, 4, 6):  # 4 was used after 5: 5 is the least recently used when 6 comes
            torch.testing.assert_close(graphed(ids[n]), model(ids[n]), rtol=0, atol=0)
    assert sorted(k[1][1] for k in graphed._graphs) == [4, 6]
