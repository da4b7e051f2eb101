"""Continuous batching: rows that finish take the next prompt, and every prompt decodes as it
would alone (greedy: the target's own tokens), with a draft model or prompt lookup, through
recorded steps too."""

import copy

import pytest
import torch

import paradecode

from paradecode.speculative.continuous import generate_continuous

from .test_static_llama import LLAMA3_ROPE, fake_cuda_graphs, llama

PROMPTS = [[5, 9, 2, 31, 7, 8], [3, 4], [12, 13, 14, 15], [7, 7, 1, 2], [6, 5, 4, 3, 2, 1, 9], [8, 8], [2, 40, 41]]


def alone(target, prompt, n, eos=None):
    """The target's greedy continuation of ``prompt``: ``n`` tokens, cut after the first EOS."""
    out = target.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=eos,
                          pad_token_id=0)[0, len(prompt):].tolist()
    return out[: out.index(eos) + 1] if eos in out else out


@pytest.fixture(scope="module")
def pair():
    target = llama(LLAMA3_ROPE, seed=5).double()
    draft = copy.deepcopy(target)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.005 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    return target, draft


@pytest.mark.parametrize("drafter", ["model", "prompt-lookup"])
def test_every_prompt_decodes_as_it_would_alone(pair, drafter):
    target, draft = pair
    opts = dict(draft_model=draft) if drafter == "model" else dict(drafter="prompt-lookup")
    out = generate_continuous(target, PROMPTS, 3, max_new_tokens=12, **opts)
    assert out.generated == [alone(target, p, 12) for p in PROMPTS]
    assert out.tokens == 12 * len(PROMPTS) and out.steps == out.target_forwards
    # never more batch steps than fixed batches of three, each waiting for its slowest row
    waves = [paradecode.sample(target, PROMPTS[i : i + 3], "speculative", max_new_tokens=12, **opts).trace.steps
             for i in range(0, len(PROMPTS), 3)]
    assert out.steps <= sum(waves)
    assert drafter == "prompt-lookup" or out.accepted_drafts > len(PROMPTS)  # the close draft is accepted


def test_rows_ending_on_eos_take_the_next_prompt_early(pair):
    target, draft = pair
    m = copy.deepcopy(target)
    free = [alone(m, p, 16) for p in PROMPTS]
    eos = free[0][5]  # a token some rows generate early
    m.generation_config.eos_token_id = eos
    out = generate_continuous(m, PROMPTS, 2, max_new_tokens=16, draft_model=draft)
    assert out.generated == [alone(m, p, 16, eos) for p in PROMPTS]
    assert any(len(g) < 16 for g in out.generated)


def test_recorded_steps_with_refills_decode_the_same(pair, monkeypatch):
    """Refills write the kept buffers in place, so recorded steps (and the step queued before the
    read) replay on them unchanged."""
    target, draft = pair
    ref = generate_continuous(target, PROMPTS, 3, max_new_tokens=20, draft_model=draft, cuda_graphs=False)
    fake_cuda_graphs(monkeypatch)
    from .test_static_llama import step_graphs

    got = generate_continuous(target, PROMPTS, 3, max_new_tokens=20, draft_model=draft)
    assert got.generated == ref.generated == [alone(target, p, 20) for p in PROMPTS]
    assert step_graphs(target) and all(g.replays >= 1 for g in step_graphs(target))


def test_sampling_with_refills_is_reproducible_with_a_seed(pair, monkeypatch):
    target, draft = pair
    fake_cuda_graphs(monkeypatch)
    runs = [generate_continuous(target, PROMPTS, 3, max_new_tokens=10, draft_model=draft, do_sample=True,
                                temperature=0.8, seed=s) for s in (4, 4, 5)]
    assert runs[0].generated == runs[1].generated != runs[2].generated
    assert all(len(g) == 10 for g in runs[0].generated)


def test_a_refilled_row_holds_the_caches_a_step_expects(pair):
    """After a refill, the row's target cache holds every prompt token but the last and the
    draft's all but the last two: feeding those through the row gives the Hugging Face model's
    logits of the whole prompt, while the other row keeps its cache."""
    from paradecode.speculative import SpeculativeConfig, SpeculativeDecoding

    target, draft = pair
    out = paradecode.sample(target, [[5, 9, 2, 31, 7, 8], [3, 4, 5]], "speculative", draft_model=draft, max_new_tokens=6)
    state = out.state
    other = state.target_cache.k[0][0].clone()
    strat = SpeculativeDecoding(SpeculativeConfig(max_new_tokens=6))
    new = [7, 7, 1, 2, 9]
    strat.refill(state, 1, new, pad_id=0)
    assert not state.finished[1] and state.n_gen[1] == 0 and state.active.tolist() == [1]
    assert state.tokens[1, :6].tolist() == [0] + new and int(state.start[1]) == 1 and int(state.length[1]) == 6
    for role, lm, cache, unseen in (("target", target, state.target_cache, 1), ("draft", draft, state.draft_cache, 2)):
        view = cache.row(1)
        assert int(view.length) == 6 - unseen
        logits = state.models[role](torch.tensor([new[-unseen:]]), cache=view, num_logits=1)[0, -1]
        torch.testing.assert_close(logits, lm(torch.tensor([new])).logits[0, -1], rtol=0, atol=1e-9)
    assert torch.equal(state.target_cache.k[0][0], other)
    with pytest.raises(ValueError, match="still generating"):
        strat.refill(state, 1, new, pad_id=0)
    state.finished[1] = True
    with pytest.raises(ValueError, match="2 to 6 tokens"):
        strat.refill(state, 1, list(range(1, 9)), pad_id=0)


@pytest.mark.parametrize("refill_tokens, groups", [(256, [[2, 0, 1]]), (12, [[2, 0], [1]])])
def test_rows_refilled_together_hold_the_caches_a_step_expects(pair, monkeypatch, refill_tokens, groups):
    """Three rows refilled together (prompts of different lengths; a kept cache of four rows, or
    groups of two when REFILL_TOKENS caps a forward at 12 prompt tokens): each row's caches give
    the Hugging Face model's logits of its whole prompt."""
    from paradecode.caches.static_kv import StaticKVCache
    from paradecode.speculative import SpeculativeConfig, SpeculativeDecoding, strategy

    target, draft = pair
    out = paradecode.sample(target, [[5, 9, 2, 31, 7, 8], [3, 4, 5], [6, 6, 6, 6]], "speculative", draft_model=draft,
                            max_new_tokens=6)
    state = out.state
    strat = SpeculativeDecoding(SpeculativeConfig(max_new_tokens=6))
    new = [[7, 7, 1, 2, 9], [4, 40, 41, 42, 43, 44], [9, 8]]
    monkeypatch.setattr(strategy, "REFILL_TOKENS", refill_tokens)
    copied = []
    real = StaticKVCache.copy_rows
    monkeypatch.setattr(StaticKVCache, "copy_rows", lambda self, rows, src, n: copied.append(rows) or real(self, rows, src, n))
    strat.refill_rows(state, [2, 0, 1], new, pad_id=0)
    assert copied == groups * 2  # the target's fills, then the draft's
    assert state.active.tolist() == [0, 1, 2] and state.tokens[2, :6].tolist() == [0] + new[0]
    for row, prompt in ((2, new[0]), (0, new[1]), (1, new[2])):
        for role, lm, cache, unseen in (("target", target, state.target_cache, 1), ("draft", draft, state.draft_cache, 2)):
            view = cache.row(row)
            assert int(view.length) == 6 - unseen and int(view.start) == 6 - len(prompt)
            logits = state.models[role](torch.tensor([prompt[-unseen:]]), cache=view, num_logits=1)[0, -1]
            torch.testing.assert_close(logits, lm(torch.tensor([prompt])).logits[0, -1], rtol=0, atol=1e-9)
    state.finished[:] = True
    with pytest.raises(ValueError, match="a row more than once"):
        strat.refill_rows(state, [1, 1], new[:2], pad_id=0)
    with pytest.raises(ValueError, match="one prompt per row"):
        strat.refill_rows(state, [1], new[:2], pad_id=0)


@pytest.mark.parametrize("min_refill", [2, 3])
def test_finished_rows_wait_to_be_refilled_together(pair, monkeypatch, min_refill):
    """``min_refill``: rows are refilled in groups of at least that many (fewer only for the last
    waiting prompts), and every prompt still decodes as it would alone."""
    from paradecode.speculative import SpeculativeDecoding

    target, draft = pair
    groups = []
    real = SpeculativeDecoding.refill_rows
    monkeypatch.setattr(SpeculativeDecoding, "refill_rows",
                        lambda self, state, rows, prompts, pad: groups.append(len(rows)) or real(self, state, rows, prompts, pad))
    out = generate_continuous(target, PROMPTS, 3, max_new_tokens=12, draft_model=draft, min_refill=min_refill)
    assert out.generated == [alone(target, p, 12) for p in PROMPTS]
    assert sum(groups) == len(PROMPTS) - 3 and groups[:-1] and min(groups[:-1]) >= min_refill
    assert out.refills == len(groups)


def test_bad_input_is_a_clear_error(pair):
    target, draft = pair
    with pytest.raises(ValueError, match="at least 2 tokens"):
        generate_continuous(target, [[1, 2], [3]], 2, draft_model=draft)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        generate_continuous(target, [[1, 2]], 0, draft_model=draft)
    with pytest.raises(ValueError, match="min_refill must be an int from 1 to batch_size"):
        generate_continuous(target, [[1, 2]], 2, draft_model=draft, min_refill=3)
    with pytest.raises(ValueError, match="prompts is empty"):
        generate_continuous(target, [], 2, draft_model=draft)
    with pytest.raises(ValueError, match="unknown option"):
        generate_continuous(target, [[1, 2]], 2, draft_model=draft, bogus=1)
    V = target.config.vocab_size
    with pytest.raises(ValueError, match=rf"token ids in \[0, {V - 1}\].*got -3 at row 1, position 1"):
        generate_continuous(target, [[1, 2], [4, -3, 5]], 2, draft_model=draft)  # not an index error in the embedding
    with pytest.raises(ValueError, match=f"got {V} at row 2, position 0"):
        generate_continuous(target, [[1, 2], [3, 4], [V, 1]], 2, draft_model=draft)  # a later prompt, checked up front
    with pytest.raises(TypeError, match="tokenize"):
        generate_continuous(target, ["a prompt", "another"], 2, draft_model=draft)
    most = target.config.max_position_embeddings
    with pytest.raises(ValueError, match="use max_new_tokens <= 3"):
        generate_continuous(target, [[1, 2], [1] * (most - 3)], 2, draft_model=draft, max_new_tokens=8)


def test_refills_run_in_one_kept_cache_captured_once_it_repeats(pair, monkeypatch):
    """Every refill of a role fills the same one-row cache (so its forward is a graph from the
    second refill on) and copies it into the row: the tokens stay the target's own."""
    target, draft = pair
    fake_cuda_graphs(monkeypatch)
    prompts = [[5, 9, 2, 31, 7, 8], [3, 4, 9, 9, 1, 2], [12, 13, 14, 15, 16, 17]] * 3
    out = generate_continuous(target, prompts, 2, max_new_tokens=8, draft_model=draft)
    assert out.generated == [alone(target, p, 8) for p in prompts]
    from paradecode.speculative.causal_lm import CausalLM

    for model, role, width in ((target, "target", 5), (draft, "draft", 4)):
        lm = CausalLM.of(model)
        kept = [c for (r, b, _), c in lm._caches.items() if r == f"{role}-refill" and b == 1]
        assert len(kept) == 1 and (id(kept[0]), width, 1) in lm._graphs


def test_a_trimmed_draft_keeps_every_prompt_lossless(pair, monkeypatch):
    """``vocabtrim``: the draft proposes from half the vocabulary; refills and recorded steps
    still give every prompt the target's own greedy tokens, and drafts are still accepted."""
    from paradecode.speculative import VocabTrim

    target, draft = pair
    fake_cuda_graphs(monkeypatch)
    trim = VocabTrim(torch.arange(0, 64, 2), 64)
    out = generate_continuous(target, PROMPTS, 3, max_new_tokens=12, draft_model=draft, vocabtrim=trim, min_refill=2)
    assert out.generated == [alone(target, p, 12) for p in PROMPTS]
    assert out.accepted_drafts > 0
