"""The shipped trained pair: its corpus verifies, and drafts are accepted on its tasks."""

import random

import pytest
import torch

import paradecode
from paradecode.speculative import pair


@pytest.mark.parametrize("task", sorted(pair.TASKS))
def test_corpus_answers_verify(task):
    rng = random.Random(0)
    for _ in range(20):
        prompt, answer = pair.make_example(rng, task)
        assert pair.verify(prompt, answer)
        assert not pair.verify(prompt, answer + "9")
        assert pair.decode(pair.encode(prompt + answer) + [pair.EOS, 7]) == prompt + answer


def test_tokenizer_matches_the_id_tables():
    tok = pair.build_tokenizer()
    text = "sort 3 1 2 > 1 2 3"
    assert tok.encode(text).ids == pair.encode(text)
    assert tok.decode(pair.encode(text)) == text


@pytest.mark.skipif(not (pair.PAIR_DIR / "target" / "config.json").exists(), reason="pair not shipped")
def test_trained_pair_is_lossless_and_accepts_drafts():
    target, draft = pair.load_pair()
    rng = random.Random(5)
    prompts = [[pair.BOS] + pair.encode(pair.make_example(rng)[0]) for _ in range(6)]
    out = paradecode.sample(target, prompts, "speculative", draft_model=draft, num_draft_tokens=4, max_new_tokens=40)
    for i, p in enumerate(prompts):
        ref = target.generate(torch.tensor([p]), max_new_tokens=40, do_sample=False)[0, len(p):]
        n = ref.numel()
        assert torch.equal(out.generated[i, :n], ref) and (out.generated[i, n:] == pair.PAD).all()
    tokens = int(out.trace.tokens_committed.sum())
    accepted = sum(int(a.sum()) for a in out.trace.extra("accepted"))
    assert accepted / (tokens - accepted) > 1.0  # more than one accepted draft per target forward on average
    solved = sum(pair.verify(pair.decode(p[1:]), pair.decode(out.generated[i])) for i, p in enumerate(prompts))
    assert solved >= 3
