"""``wino``: WINO's revokable decoding (wide-in draft, narrow-out verification by a shadow block)."""

import pytest
import torch

import paradecode
from paradecode.registry import get_strategy_class
from paradecode.samplers.wino import draft_mask, remask_mask

from .conftest import MASK, make_tiny_model


@pytest.fixture(scope="module")
def tiny():
    model = make_tiny_model()
    prompts = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    return model, prompts


def _revised(out):
    return sum(int(r.sum()) for r in out.trace.extra("revised"))


def test_defaults_are_the_papers():
    c = get_strategy_class("wino").Config()
    assert (c.threshold, c.threshold_back) == (0.6, 0.9)


@pytest.mark.parametrize("bad", [dict(threshold=-1.0), dict(threshold_back=float("nan")), dict(layout="llada2"),
                                 dict(cfg_scale=1.0)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        get_strategy_class("wino").Config(gen_length=8, block_length=8, **bad)


def test_caches_are_refused_with_a_reason(tiny):
    model, prompts = tiny
    with pytest.raises(ValueError, match="shadow block"):
        paradecode.sample(model, prompts, "wino", gen_length=16, block_length=8, cache="dual")


# ---- the rule on hand-made confidences -----------------------------------------------------------

def test_draft_takes_above_threshold_capped_and_at_least_one():
    conf = torch.tensor([[0.9, 0.7, 0.65, 0.3, 0.2, 0.1, 0.95, 0.61],
                         [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.1, 0.1]], dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 6] = False  # committed: never drafted again
    out = draft_mask(conf, mask, 0.6)
    # row 0: 4 above 0.6 among 7 masks; cap = max(floor(0.7 * 7), 5) = 5 -> all 4. row 1: none above: the top one.
    assert out[0].tolist() == [True, True, True, False, False, False, False, True]
    assert out[1].nonzero().flatten().tolist() == [5]
    many = torch.full((1, 8), 0.99, dtype=torch.float64)
    many[0, :3] = torch.tensor([0.991, 0.992, 0.993], dtype=torch.float64)
    capped = draft_mask(many, torch.ones(1, 8, dtype=torch.bool), 0.6)
    assert int(capped.sum()) == 5 and capped[0, :3].all()  # cap = max(floor(5.6), 5) = 5: the most confident


def test_remask_fires_below_threshold_back_and_respects_the_last_accept_bound():
    back = torch.tensor([[0.5, 0.95, 0.2, 0.85, 1.0, 1.0]], dtype=torch.float64)
    committed = torch.tensor([[True, True, True, True, False, False]])
    two, one = torch.tensor([2]), torch.tensor([1])
    assert remask_mask(back, committed, two, torch.tensor([30]), 0.9)[0].tolist() == [True, False, True, True, False, False]
    assert not remask_mask(back, committed, one, torch.tensor([30]), 0.9).any()  # one accepted: no verification
    # three below 0.9 >= last_accept 3: only the 2 least confident
    assert remask_mask(back, committed, two, torch.tensor([3]), 0.9)[0].tolist() == [True, False, True, False, False, False]
    assert not remask_mask(back, committed, two, torch.tensor([30]), 0.0).any()


# ---- degenerate settings equal known rules -----------------------------------------------------------

@pytest.mark.parametrize("threshold", [0.6, pytest.param(0.3, marks=pytest.mark.slow), pytest.param(0.9, marks=pytest.mark.slow)])
def test_without_verification_and_cap_it_is_the_threshold_rule(tiny, threshold):
    """threshold_back = 0 never re-masks; a block of 4 never reaches the cap (>= 5): the
    threshold rule (strict > here, >= there: equal unless a confidence equals the threshold)."""
    model, prompts = tiny
    ref = paradecode.sample(model, prompts, "threshold", threshold=threshold, gen_length=32, block_length=4)
    out = paradecode.sample(model, prompts, "wino", threshold=threshold, threshold_back=0.0, gen_length=32, block_length=4)
    assert torch.equal(ref.sequences, out.sequences) and ref.trace.nfe == out.trace.nfe
    assert _revised(out) == 0


def test_one_token_per_step_is_lowconf(tiny):
    """threshold above every confidence: one token per step, the most confident (no re-mask
    either: it needs more than one accepted) = lowconf at steps = gen_length."""
    model, prompts = tiny
    ref = paradecode.sample(model, prompts, "lowconf", steps=32, gen_length=32, block_length=16)
    out = paradecode.sample(model, prompts, "wino", threshold=1.0, gen_length=32, block_length=16)
    assert torch.equal(ref.sequences, out.sequences) and out.trace.nfe == 32


# ---- the shadow block ----------------------------------------------------------------------------

def test_shadow_verification_equals_a_forward_with_the_token_masked(tiny):
    """A shadow position predicts its column from everything else: with one committed token and
    the rest of the block masked, that is a plain forward with the token masked (the other
    shadow positions are masks at other positions, which the plain forward's masked block
    columns also are, so the attention sees the same keys once more: compare the argmax)."""
    model, prompts = tiny
    strat = get_strategy_class("wino")(get_strategy_class("wino").Config(gen_length=8, block_length=8))
    models, ctx = strat.setup(model, mask_token_id=MASK)
    state = strat.start(prompts[:1], **ctx)
    state.x[0, 6] = 7  # commit a token in the block
    rows, request = strat.request(state)
    logits = models["model"](request.inputs, **request.kwargs)
    L = state.x.shape[1]
    assert request.inputs.shape[1] == L + 8
    positions = request.kwargs["positions"]
    assert positions[0, L:].tolist() == list(range(6, 14))  # the shadow sits at the block's positions
    pair = request.kwargs["attention_mask"][0]
    assert not pair[:L, L:].any()  # the canvas never sees the shadow
    assert not pair[L, 6] and pair[L, 7] and pair[L + 1, 6]  # a shadow query hides only its own column
    # the canvas part is a plain forward
    plain = model(state.x, positions=torch.arange(L)[None])
    start = request.kwargs.get("logits_range", (0, None))[0]
    assert torch.allclose(logits[0, : L - start], plain[0, start:], atol=1e-4)


def test_remasking_fires_and_the_output_is_complete(tiny):
    model, prompts = tiny
    out = paradecode.sample(model, prompts, "wino", gen_length=32, block_length=16)
    assert _revised(out) > 0
    assert not (out.generated == MASK).any()
    assert out.trace.nfe <= 32  # a block of W takes at most W steps (see the module docstring)


def restated_wino(model, prompt, gen_length, block_length, threshold, threshold_back):
    """WINO's ``decoding_wino`` restated (one row, greedy, no padding): the canvas plus a shadow
    block of masks at the block's positions, each shadow query hiding its own column; draft
    above ``threshold`` (cap min(max(0.7 m, 5), 20), at least one); when more than one is
    accepted, re-mask committed tokens whose shadow probability is below ``threshold_back``
    (at most last_accept - 1, the lowest). The mask token is never predicted."""
    P, W = prompt.shape[1], block_length
    L = P + gen_length
    x = torch.full((1, L), MASK)
    x[0, :P] = prompt[0]
    for b in range(gen_length // W):
        s = P + b * W
        pos = torch.cat([torch.arange(L), torch.arange(s, s + W)])[None]
        pair = torch.ones(1, L + W, L + W, dtype=torch.bool)
        pair[0, :L, L:] = False
        for j in range(W):
            pair[0, L + j, s + j] = False
        last = 30
        while (x[0, s : s + W] == MASK).any():
            feed = torch.cat([x, torch.full((1, W), MASK)], 1)
            with torch.no_grad():
                logits = model(feed, positions=pos, attention_mask=pair)[0].double()
            logits[:, MASK] = float("-inf")
            p = logits.softmax(-1)
            block = x[0, s : s + W].clone()
            masked = block == MASK
            pred = logits[s : s + W].argmax(-1)
            conf = [float(p[s + j, pred[j]]) if masked[j] else -1.0 for j in range(W)]
            m = int(masked.sum())
            cap = min(max(int(m * 0.7), 5), 20)
            take = [j for j in range(W) if masked[j] and conf[j] > threshold]
            if len(take) > cap:
                take = sorted(take, key=lambda j: -conf[j])[:cap]
            if not take:
                take = [max((j for j in range(W) if masked[j]), key=lambda j: conf[j])]
            back = {j: float(p[L + j, block[j]]) for j in range(W) if not masked[j]}
            for j in take:
                x[0, s + j] = pred[j]
            if len(take) > 1:
                low = [j for j in back if back[j] < threshold_back]
                if len(low) >= last:
                    low = sorted(low, key=lambda j: back[j])[: last - 1]
                for j in low:
                    x[0, s + j] = MASK
            last = len(take)
    return x


@pytest.mark.parametrize("block_length,threshold,threshold_back", [
    (16, 0.6, 0.9), pytest.param(8, 0.5, 0.8, marks=pytest.mark.slow), pytest.param(16, 0.3, 0.99, marks=pytest.mark.slow)])
def test_token_identical_to_restated_reference(tiny, block_length, threshold, threshold_back):
    model, _ = tiny
    prompts = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(11))
    out = paradecode.sample(model, prompts, "wino", gen_length=32, block_length=block_length, threshold=threshold,
                            threshold_back=threshold_back, mask_token_id=MASK)
    assert _revised(out) > 0
    for r in range(prompts.shape[0]):
        ref = restated_wino(model, prompts[r : r + 1], 32, block_length, threshold, threshold_back)
        assert torch.equal(out.sequences[r], ref[0]), r


def test_padded_rows_decode_as_alone(tiny):
    """Left padding: the shadow block's positions skip the padding as the canvas's do."""
    model, _ = tiny
    a = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(2))
    b = torch.randint(0, 50, (1, 4), generator=torch.Generator().manual_seed(3))
    batch = torch.cat([a, torch.cat([torch.full((1, 2), 62), b], 1)])
    am = torch.ones(2, 6, dtype=torch.long)
    am[1, :2] = 0
    out = paradecode.sample(model, batch, "wino", attention_mask=am, gen_length=16, block_length=8, mask_token_id=MASK)
    alone = paradecode.sample(model, b, "wino", gen_length=16, block_length=8, mask_token_id=MASK)
    assert torch.equal(out.generated[1], alone.generated[0])


def test_a_model_without_pair_masks_is_refused():
    from .test_editing import Flipper

    with pytest.raises(ValueError, match="per-query attention mask"):
        paradecode.sample(Flipper(), torch.zeros(1, 4, dtype=torch.long), "wino", gen_length=8, block_length=4,
                          mask_token_id=MASK)
