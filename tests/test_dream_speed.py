"""DreamModel's speed options compute what the plain model does: fused projections (one q/k/v
matmul with the biases joined, one gate/up matmul) and CUDA graphs (``CUDAGraphModel``).

Real graph capture needs a GPU; on CPU the wrapper runs eagerly, and the recorder of
tests/test_graph_buckets.py stands in for capture and replay (it re-runs the body on the
static tensors and a snapshot of the cache taken at capture), so an input the wrapper forgets
to copy in before a replay (for Dream also the cache's write index, which sends the shifted
predecessor rows' keys/values to the trash slot) gives different tokens from the eager model.
"""

import pytest
import torch

import paradecode
from paradecode.models.graphs import CUDAGraphModel
from paradecode.registry import get_cache_class

from .test_contract import RUNS
from .test_dream import MASK, PARTIAL_CACHES, _canvas_request, tiny_dream
from paradecode.models.graph_standins import ReplayedGraphs

CACHES = [None, "prefix", "dual", "dkv-decode"]
OPTS = dict(gen_length=16, block_length=8, steps=8)


@pytest.fixture(scope="module")
def pair():
    """(unfused, fused) tiny Dreams with the same float32 weights."""
    return tiny_dream(), tiny_dream().fuse_projections()


def _prompts(rows: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 50, (rows, 5), generator=torch.Generator().manual_seed(seed))


def test_fused_dream_gives_the_unfused_logits_and_keeps_its_weights(pair):
    plain, fused = pair
    assert all(layer.self_attn.fused_groups() and layer.mlp.fused_groups() for layer in fused.model.layers)
    assert plain.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0  # the biases are real
    x = torch.randint(0, 60, (3, 12), generator=torch.Generator().manual_seed(2))
    am = torch.ones_like(x)
    am[1, :3] = 0  # a left-padded row
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused(x, attention_mask=am), plain(x, attention_mask=am), rtol=1e-5, atol=1e-5)
    a, b = plain.state_dict(), fused.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # checkpoints unaffected


def test_a_moved_fused_dream_falls_back_to_the_separate_matmuls(pair, tmp_path):
    plain, _ = pair
    x = torch.randint(0, 60, (1, 9))
    moved = tiny_dream().fuse_projections().to(torch.float64)  # the views no longer share the joined tensor
    with torch.no_grad():
        out = moved(x)
        assert moved.model.layers[0].self_attn.fused_groups() is None and moved.model.layers[0].mlp.fused_groups() is None
        torch.testing.assert_close(out.float(), plain(x), rtol=1e-4, atol=1e-4)
        tiny_dream().fuse_projections().save_pretrained(tmp_path)  # views of one tensor: still saves
        again = type(plain).from_pretrained(tmp_path)
        torch.testing.assert_close(again(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("cache", PARTIAL_CACHES)
def test_fused_dream_gives_the_unfused_logits_through_a_cache(pair, cache):
    """A full forward that fills the cache, then a partial one (the shifted predecessor fed as a
    query): fused and unfused give the same window logits."""
    R, P, B, G = 2, 6, 8, 24
    g = torch.Generator().manual_seed(4)
    tokens = torch.cat([torch.randint(0, 50, (R, P), generator=g), torch.full((R, G), MASK)], dim=1)
    s = P + B
    tokens[:, P:s] = torch.randint(0, 50, (R, B), generator=g)
    tokens[:, s + 3] = 7
    am = torch.ones_like(tokens)
    am[1, :2] = 0
    committed = torch.full(tokens.shape, -1)
    committed[:, P:s] = 1
    committed[:, s + 3] = 4
    outs = []
    for model in pair:
        policy = get_cache_class(cache)(get_cache_class(cache).Config())
        with torch.no_grad():
            full = policy.forward(model, _canvas_request(tokens, am, s, B, 0, committed))
            partial = policy.forward(model, _canvas_request(tokens, am, s, B, 3, committed))
        assert not policy._full
        outs.append((full, partial))
    (full_a, partial_a), (full_b, partial_b) = outs
    torch.testing.assert_close(full_b, full_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(partial_b, partial_a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("strategy", ["lowconf", "threshold", "eb"])
def test_fused_dream_gives_the_same_tokens(pair, strategy, cache):
    plain, fused = pair
    _, opts = RUNS[strategy]
    ref = paradecode.sample(plain, _prompts(), strategy, seed=3, cache=cache, **opts)
    out = paradecode.sample(fused, _prompts(), strategy, seed=3, cache=cache, **opts)
    assert torch.equal(out.sequences, ref.sequences)
    assert not (out.generated == MASK).any()


def test_graph_wrapper_takes_dream_and_runs_it_eagerly_off_gpu(pair):
    plain, fused = pair
    graphed = CUDAGraphModel(fused)
    assert graphed.logits_shift == 1 and graphed.generation_defaults == plain.generation_defaults
    for cache in ("dual", None):
        ref = paradecode.sample(plain, _prompts(), "lowconf", cache=cache, **OPTS)
        out = paradecode.sample(graphed, _prompts(), "lowconf", cache=cache, **OPTS)
        assert torch.equal(out.sequences, ref.sequences)
    assert graphed.captures == 0 and not graphed._graphs  # CPU: nothing captured


def _ragged(seed: int):
    g = torch.Generator().manual_seed(seed)
    lengths = [(6, 1, 3)[i] for i in torch.randperm(3, generator=g).tolist()]
    return [torch.randint(0, 50, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("cache", CACHES + ["dkv-greedy"])
def test_recorded_graphs_of_dream_replay_the_eager_tokens(pair, cache):
    """Capture and replay bookkeeping for a shifted-logits model, unpadded and padded batches,
    two calls in a row (the second replays the first's graphs on new prompts)."""
    plain, fused = pair
    graphed = ReplayedGraphs(fused)
    for prompts in (_prompts(3, 1), _prompts(3, 2), _ragged(1), _ragged(4)):
        ref = paradecode.sample(plain, prompts, "lowconf", cache=cache, **OPTS)
        out = paradecode.sample(graphed, prompts, "lowconf", cache=cache, **OPTS)
        assert torch.equal(out.sequences, ref.sequences)
    assert graphed.replays > 0
    if cache is not None:  # partial steps of a shifted model carry a write index (predecessors: query only)
        partial = [k for k in graphed._graphs if k[0] != "full" and k[0][1] != "full"]
        assert partial and all(k[0][3] for k in partial)
