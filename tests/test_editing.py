"""``editing``: LLaDA2.1's draft-and-edit (SGLang ``JointThreshold``): threshold commits plus
edits of committed block tokens, with post-edit steps."""

import pytest
import torch

import paradecode
from paradecode.registry import get_strategy_class
from paradecode.samplers.block import BlockView, NoProgressError, block_step
from paradecode.samplers.block_decoder import BlockDecoder

from .conftest import MASK, make_tiny_model

GEO = dict(gen_length=32, block_length=16)
V = 64


@pytest.fixture(scope="module")
def tiny():
    model = make_tiny_model()
    prompts = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    return model, prompts


def _rule(**options):
    cls = get_strategy_class("editing")
    return cls(cls.Config(gen_length=4, block_length=4, **options))


def _logits(rows):
    """(1, W, V) logits giving each position's token ``t`` the probability ``p`` (rest uniform)."""
    out = torch.zeros(1, len(rows), V)
    for i, (t, p) in enumerate(rows):
        rest = (1 - p) / (V - 2)  # the mask token gets nothing: predict() excludes it
        probs = torch.full((V,), rest)
        probs[MASK], probs[t] = 0.0, p
        out[0, i] = probs.clamp_min(1e-30).log()
    return out


def _step(rule, tokens, logits, fixed=None):
    state = rule.new_state(1, MASK, None, None, torch.device("cpu"))
    view = BlockView(rows=torch.tensor([0]), logits=logits, tokens=torch.tensor([tokens]), mask=None,
                     step_in_block=torch.zeros(1, dtype=torch.long), block_start=torch.zeros(1, dtype=torch.long),
                     fixed=fixed)
    return block_step(rule, state, view), state


def test_defaults_are_sglang_joint_threshold():
    c = get_strategy_class("editing").Config()
    assert (c.threshold, c.editing_threshold, c.max_post_edit_steps) == (0.5, 0.0, 16)


@pytest.mark.parametrize("bad", [dict(threshold=-0.1), dict(editing_threshold=float("nan")), dict(max_post_edit_steps=-1)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        _rule(**bad)


def test_an_edit_fires_on_a_crafted_step():
    # position 0 holds 5, the model now says 7 with p = 0.8; position 1 holds 3 and the model agrees.
    tokens = [5, 3, MASK, MASK]
    logits = _logits([(7, 0.8), (3, 0.9), (9, 0.6), (11, 0.2)])
    out, _ = _step(_rule(editing_threshold=0.5), tokens, logits)
    assert out.tokens[0].tolist() == [7, 3, 9, MASK]  # edit 5 -> 7; commit 9 (0.6 > 0.5), not 11
    assert out.revised[0].tolist() == [True, False, False, False]
    assert out.transfer[0].tolist() == [False, False, True, False]
    out, _ = _step(_rule(editing_threshold=0.85), tokens, logits)  # 0.8 is not above 0.85: no edit
    assert out.tokens[0].tolist() == [5, 3, 9, MASK] and not out.revised.any()
    out, _ = _step(_rule(editing_threshold=0.8), tokens, logits)  # strictly above, as SGLang
    assert not out.revised.any()


def test_the_prompt_is_never_edited():
    tokens = [5, 3, MASK, MASK]
    logits = _logits([(7, 0.99), (8, 0.99), (9, 0.6), (11, 0.2)])
    out, _ = _step(_rule(), tokens, logits, fixed=torch.tensor([[True, False, False, False]]))
    assert out.tokens[0].tolist() == [5, 8, 9, MASK]


def test_a_full_block_is_held_open_while_edits_fire():
    tokens = [5, 3, 4, 6]
    rule = _rule(max_post_edit_steps=2)
    out, state = _step(rule, tokens, _logits([(7, 0.9), (3, 0.9), (4, 0.9), (6, 0.9)]))
    assert out.left.tolist() == [True] and int(state.post_edits[0]) == 1  # edited: one more step
    out, _ = _step(rule, tokens, _logits([(5, 0.9), (3, 0.9), (4, 0.9), (6, 0.9)]))
    assert out.left.tolist() == [False]  # nothing changed: the block is done


class Flipper(torch.nn.Module):
    """A model whose prediction for a committed position is always another token (p = 0.9),
    and for a masked one token 1 (p = 0.9): every step edits every committed position."""

    supports_cache = False
    config = type("C", (), {"mask_token_id": MASK, "eos_token_id": None, "pad_token_id": 62})()

    def forward(self, x, positions=None, attention_mask=None, logits_range=None, **_):
        other = torch.where(x == 2, torch.full_like(x, 3), torch.full_like(x, 2))  # never the current token
        target = torch.where(x == MASK, torch.ones_like(x), other)
        logits = torch.full((*x.shape, V), -10.0)
        logits.scatter_(-1, target[..., None], 10.0)
        if logits_range is not None:
            logits = logits[:, logits_range[0]:logits_range[1]]
        return logits


@pytest.mark.parametrize("budget", [0, 1, 3, 16])
def test_post_edit_steps_are_bounded(budget):
    prompt = torch.zeros(1, 4, dtype=torch.long)
    out = paradecode.sample(Flipper(), prompt, "editing", gen_length=8, block_length=4, max_post_edit_steps=budget,
                            mask_token_id=MASK)
    # one step fills each block (every mask above 0.5), then `budget` post-edit steps, each editing all 4
    assert out.trace.nfe == 2 * (1 + budget)
    assert sum(int(r.sum()) for r in out.trace.extra("revised")) == 2 * 4 * budget
    assert not (out.generated == MASK).any()


@pytest.mark.parametrize("editing_threshold", [1.0, pytest.param(2.0, marks=pytest.mark.slow)])
@pytest.mark.parametrize("cache", [None, "dual", "dkv-decode"])
def test_editing_off_equals_the_threshold_rule(tiny, editing_threshold, cache):
    model, prompts = tiny
    for threshold in (0.3, 0.5, 0.8):
        ref = paradecode.sample(model, prompts, "threshold", threshold=threshold, cache=cache, **GEO)
        out = paradecode.sample(model, prompts, "editing", threshold=threshold, editing_threshold=editing_threshold,
                                cache=cache, **GEO)
        assert torch.equal(ref.sequences, out.sequences)
        assert torch.equal(ref.trace.row_nfe, out.trace.row_nfe)


def test_edits_change_the_output_and_cost_forwards(tiny):
    model, prompts = tiny
    off = paradecode.sample(model, prompts, "editing", editing_threshold=1.0, **GEO)
    on = paradecode.sample(model, prompts, "editing", editing_threshold=0.5, **GEO)
    revised = sum(int(r.sum()) for r in on.trace.extra("revised"))
    assert revised > 0 and not torch.equal(off.sequences, on.sequences)
    assert on.trace.nfe > off.trace.nfe
    assert on.trace.nfe <= 2 * (16 + 16)  # the step bound: block_length + max_post_edit_steps per block


def reference_joint_threshold(model, prompt, threshold, edit_threshold, max_post, gen_length, block_length):
    """SGLang's ``JointThreshold`` restated for one row, greedy, its block layout (blocks at
    multiples of ``block_length``, the model seeing the canvas up to the block's end), every
    forward recomputed: M2T above ``threshold`` (at least the top one), T2T of the block's
    non-prompt committed positions above ``edit_threshold``; on a full block a post-edit count,
    stopping unapplied past ``max_post``; a step that changes nothing ends the block."""
    P = prompt.shape[1]
    total = -(-(P + gen_length) // block_length) * block_length
    x = torch.full((1, total), MASK)
    x[0, :P] = prompt[0]
    am = torch.zeros(1, total, dtype=torch.long)
    am[0, : P + gen_length] = 1
    for start in range(P // block_length * block_length, total, block_length):
        end = start + block_length
        prompt_mask = x[0, start:end] != MASK
        post = 0
        while True:
            with torch.no_grad():
                logits = model(x[:, :end], positions=torch.arange(end)[None], attention_mask=am[:, :end])[0, start:end]
            logits[:, MASK] = torch.finfo(logits.dtype).min  # paradecode never predicts the mask token
            pred = logits.argmax(-1)
            p = torch.softmax(logits.double(), -1).gather(-1, pred[:, None])[:, 0]
            cur = x[0, start:end]
            masked = cur == MASK
            m2t = torch.zeros_like(masked)
            if masked.any():
                conf = torch.where(masked, p, torch.tensor(-1.0, dtype=p.dtype))
                m2t = conf > threshold
                if not m2t.any():
                    m2t[conf.argmax()] = True
            else:
                post += 1
                if post > max_post:
                    break
            t2t = (p > edit_threshold) & (cur != pred) & ~masked & ~prompt_mask
            change = m2t | t2t
            if not change.any():
                break
            x[0, start:end] = torch.where(change, pred, cur)
    return x[:, : P + gen_length]


@pytest.mark.parametrize("threshold,edit_threshold,max_post", [
    (0.5, 0.0, 16), pytest.param(0.3, 0.5, 4, marks=pytest.mark.slow), pytest.param(0.7, 0.9, 2, marks=pytest.mark.slow)])
def test_token_identical_to_restated_sglang_loop(tiny, threshold, edit_threshold, max_post):
    model, _ = tiny
    prompts = torch.randint(0, 50, (4, 5), generator=torch.Generator().manual_seed(5))
    out = paradecode.sample(model, prompts, "editing", threshold=threshold, editing_threshold=edit_threshold,
                            max_post_edit_steps=max_post, gen_length=16, block_length=8, layout="llada2",
                            mask_token_id=MASK)
    for r in range(prompts.shape[0]):
        ref = reference_joint_threshold(model, prompts[r : r + 1], threshold, edit_threshold, max_post, 16, 8)
        assert torch.equal(out.sequences[r], ref[0]), r


@pytest.mark.parametrize("cache", ["prefix", "dual", "dkv-decode", "dkv-greedy"])
def test_caches_with_exact_options_change_nothing_while_editing(tiny, cache):
    """Edits rewrite committed tokens: with every cache recomputing what it would reuse, the
    tokens and forwards equal the uncached run (dKV treats an edited token as decoded now)."""
    from paradecode.registry import get_cache_class

    model, prompts = tiny
    ref = paradecode.sample(model, prompts, "editing", editing_threshold=0.3, max_post_edit_steps=4, **GEO)
    out = paradecode.sample(model, prompts, "editing", editing_threshold=0.3, max_post_edit_steps=4, cache=cache,
                            cache_options=dict(get_cache_class(cache).exact_options), **GEO)
    assert sum(int(r.sum()) for r in ref.trace.extra("revised")) > 0
    assert torch.equal(ref.sequences, out.sequences)
    assert torch.equal(ref.trace.row_nfe, out.trace.row_nfe)


def test_dkv_recomputes_an_edited_position_next_step():
    """The canvas request marks an edited token as committed at the edit's step, so dKV's
    'decoded in the previous step' set (recomputed, not reused) holds it."""
    prompt = torch.zeros(1, 4, dtype=torch.long)
    strategy = get_strategy_class("editing")(get_strategy_class("editing").Config(gen_length=4, block_length=4,
                                                                                  max_post_edit_steps=2))
    models, ctx = strategy.setup(Flipper(), mask_token_id=MASK)
    state = strategy.start(prompt, **ctx)
    strategy.step(state, lambda role, req: models["model"](req.inputs, **req.kwargs))  # fills the block
    strategy.step(state, lambda role, req: models["model"](req.inputs, **req.kwargs))  # edits all 4
    _, request = strategy.request(state)
    committed = request.canvas.committed_at[0, 4:]
    assert committed.tolist() == [1, 1, 1, 1] and request.canvas.step == 2


def test_block_decoder_reports_edits_and_stays_open():
    rule = _rule(editing_threshold=0.5, max_post_edit_steps=1)
    dec = BlockDecoder(rule, MASK)
    dec.reset(1, torch.device("cpu"))
    out = dec.step(torch.tensor([[5, 3, 4, 6]]), _logits([(7, 0.9), (3, 0.9), (4, 0.9), (6, 0.9)]))
    assert out.tokens[0].tolist() == [7, 3, 4, 6] and out.transfer[0].tolist() == [True, False, False, False]
    assert out.left.tolist() == [False]  # the one post-edit step was this one: the budget is spent


def test_no_progress_guard_still_applies():
    class Stuck(type(_rule())):
        def select(self, view, state):
            return torch.zeros_like(view.mask)

    rule = Stuck(Stuck.Config(gen_length=4, block_length=4))
    with pytest.raises(NoProgressError):
        _step(rule, [MASK, MASK, 3, 4], _logits([(7, 0.9)] * 4))


# ---- diffusers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("editing_threshold,max_post", [
    (0.5, 3), pytest.param(0.0, 16, marks=pytest.mark.slow), pytest.param(1.0, 16, marks=pytest.mark.slow)])
def test_pipeline_with_editing_scheduler_equals_sample(editing_threshold, max_post):
    pytest.importorskip("diffusers")
    import paradecode.integrations.diffusers as pd

    from .test_diffusers_schedulers import TinyLLaDA2, run_pipe

    model = TinyLLaDA2()
    ids = torch.randint(0, 50, (3, 5), generator=torch.Generator().manual_seed(3))
    scheduler = pd.EditingScheduler(block_length=8, threshold=0.5, editing_threshold=editing_threshold,
                                    max_post_edit_steps=max_post)
    assert isinstance(pd.scheduler("editing", block_length=8), pd.EditingScheduler)
    seqs, calls = run_pipe(model, scheduler, ids)
    out = paradecode.sample(model, ids, "editing", threshold=0.5, editing_threshold=editing_threshold,
                            max_post_edit_steps=max_post, gen_length=16, block_length=8, layout="llada2",
                            mask_token_id=MASK)
    assert torch.equal(seqs, out.generated)
    assert calls == out.trace.nfe
    if editing_threshold < 1:
        assert sum(int(r.sum()) for r in out.trace.extra("revised")) > 0


@pytest.mark.parametrize("threshold,editing_threshold,max_post", [
    (0.3, 0.2, 3), pytest.param(0.5, 0.5, 15, marks=pytest.mark.slow), pytest.param(0.7, 0.9, 0, marks=pytest.mark.slow)])
def test_token_identical_to_diffusers_block_refinement_editing(threshold, editing_threshold, max_post):
    """diffusers' own ``BlockRefinementScheduler`` with ``editing_threshold`` in its pipeline,
    one prompt at a time (its block loop runs while any row edits), one commit per step at
    least (``num_inference_steps = block_length``), greedy. diffusers applies the edits of one
    more post-edit step than SGLang (``post_steps > max_post_steps`` is tested after the
    step): ``max_post_steps = k`` there is ``max_post_edit_steps = k + 1`` here."""
    pytest.importorskip("diffusers")
    from diffusers import BlockRefinementScheduler

    from .test_diffusers_schedulers import TinyLLaDA2, run_pipe

    model = TinyLLaDA2()
    ids = torch.randint(0, 50, (4, 5), generator=torch.Generator().manual_seed(7))
    edits = 0
    for r in range(ids.shape[0]):
        theirs, _ = run_pipe(model, BlockRefinementScheduler(block_length=8), ids[r : r + 1], num_inference_steps=8,
                             threshold=threshold, editing_threshold=editing_threshold, max_post_steps=max_post,
                             sampling_method="greedy")
        ours = paradecode.sample(model, ids[r : r + 1], "editing", threshold=threshold,
                                 editing_threshold=editing_threshold, max_post_edit_steps=max_post + 1,
                                 gen_length=16, block_length=8, layout="llada2", mask_token_id=MASK)
        assert torch.equal(theirs, ours.generated), r
        edits += sum(int(x.sum()) for x in ours.trace.extra("revised"))
    assert edits > 0


def test_the_revisable_positions_are_made_once_per_mask():
    """A revising step reads ``view.revisable`` twice (the rule, then the step applying its
    revision): made once for a mask, made again for another, equal to the definition each time."""
    tokens = torch.tensor([[5, MASK, 7, 8]])
    view = BlockView(rows=torch.tensor([0]), logits=torch.zeros(1, 4, 64), tokens=tokens, mask=tokens == MASK,
                     step_in_block=torch.zeros(1, dtype=torch.long), block_start=torch.zeros(1, dtype=torch.long),
                     gen_start=1, fixed=torch.tensor([[False, False, False, True]]))
    first = view.revisable
    assert view.revisable is first and first.tolist() == [[False, False, True, False]]
    view.mask = torch.tensor([[False, False, True, False]])
    assert view.revisable.tolist() == [[False, True, False, False]]
