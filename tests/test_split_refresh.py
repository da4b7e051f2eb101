"""Fast-dLLM's caches on a batch whose rows are at different steps of their blocks (threshold
rules): a step where some rows start a block (they refresh the whole canvas) and others do
not runs as two forwards, the partial one at the block's width for every row and the refresh
of those rows alone, instead of feeding every row the whole canvas. Tokens and forward counts
equal those of the single mixed forward."""

import pytest
import torch

import paradecode
from paradecode.caches.blockcache import _BlockCache
from paradecode.caches.canvas import CanvasKVCache

from .conftest import make_tiny_model

GEN, BLOCK = 32, 8
RUN_REFRESH = CanvasKVCache._run_refresh


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


def _run(model, prompts, cache, split, monkeypatch, **opts):
    """(output, fed (rows, width) per model call, split steps) with ``split_refresh`` set."""
    monkeypatch.setattr(_BlockCache, "split_refresh", split)
    fed, splits = [], []
    hook = model.register_forward_pre_hook(lambda m, args, kw: fed.append(tuple(args[0].shape)), with_kwargs=True)
    def spy(self, m, out):
        splits.append(len(self._refresh[0]))
        return RUN_REFRESH(self, m, out)

    monkeypatch.setattr(CanvasKVCache, "_run_refresh", spy)
    try:
        out = paradecode.sample(model, prompts, "threshold", cache=cache, gen_length=GEN, block_length=BLOCK,
                                seed=4, **opts)
    finally:
        hook.remove()
    return out, fed, splits


PROMPTS = {
    "same length": torch.randint(0, 50, (6, 5), generator=torch.Generator().manual_seed(1)).tolist(),
    "left-padded": [[5, 9, 13], [7, 8, 9, 10, 11, 12], [3, 4], [20, 21, 22, 23], [30], [40, 41, 42, 43, 44]],
}


@pytest.mark.parametrize("cache", ["dual", "prefix"])
@pytest.mark.parametrize("prompts", sorted(PROMPTS))
def test_split_steps_give_the_tokens_and_forwards_of_mixed_steps(model, monkeypatch, cache, prompts):
    mixed, fed_mixed, none = _run(model, PROMPTS[prompts], cache, False, monkeypatch, threshold=0.6)
    split, fed_split, splits = _run(model, PROMPTS[prompts], cache, True, monkeypatch, threshold=0.6)
    assert not none and splits, "the batch must have steps where some rows refresh and others do not"
    assert torch.equal(mixed.sequences, split.sequences)
    assert torch.equal(mixed.trace.row_nfe, split.trace.row_nfe)
    assert mixed.trace.nfe == split.trace.nfe  # a split step is one forward of the strategy's
    # the model runs once more per split step, and is fed fewer tokens in all
    assert len(fed_split) == len(fed_mixed) + len(splits)
    tokens = lambda fed: sum(r * w for r, w in fed)  # noqa: E731
    assert tokens(fed_split) < tokens(fed_mixed)


def test_dual_split_steps_feed_every_row_its_block_and_the_refreshing_rows_the_canvas(model, monkeypatch):
    prompts = PROMPTS["same length"]
    out, fed, splits = _run(model, prompts, "dual", True, monkeypatch, threshold=0.6)
    L = len(prompts[0]) + GEN
    assert splits
    # every forward is a refresh (the whole canvas) or a partial step (one block), never a
    # whole-canvas forward of rows that only needed their block
    assert all(w in (L, BLOCK) for _, w in fed), fed
    # each split step: a partial forward of the rows in play, then one of its refreshing rows alone
    for n in splits:
        i = fed.index((n, L), 1)
        assert fed[i - 1][1] == BLOCK and fed[i - 1][0] > n
        fed = fed[i + 1 :]


def test_split_steps_with_classifier_free_guidance(model, monkeypatch):
    prompts = PROMPTS["same length"]
    mixed, _, _ = _run(model, prompts, "dual", False, monkeypatch, threshold=0.6, cfg_scale=1.0)
    split, _, splits = _run(model, prompts, "dual", True, monkeypatch, threshold=0.6, cfg_scale=1.0)
    assert splits and all(n % 2 == 0 for n in splits)  # cond and uncond rows refresh together
    assert torch.equal(mixed.sequences, split.sequences)


@pytest.mark.parametrize("cache", ["dual", "prefix"])
def test_a_step_splits_only_when_its_two_forwards_feed_fewer_tokens(model, monkeypatch, cache):
    prompts = PROMPTS["same length"]
    L = len(prompts[0]) + GEN
    _, fed, splits = _run(model, prompts, cache, True, monkeypatch, threshold=0.6)
    assert splits
    share = _BlockCache.split_max_share
    for n in splits:  # (rows, width) of the partial forward, then (n, L) of the refresh
        i = fed.index((n, L), 1)
        rows, width = fed[i - 1]
        assert rows * width + n * L <= share * rows * L
        fed = fed[i + 1 :]
    monkeypatch.setattr(CanvasKVCache, "split_max_share", 0.0)  # a split never pays: mixed steps
    _, _, none = _run(model, prompts, cache, True, monkeypatch, threshold=0.6)
    assert not none
