"""The task suite: seeded generators, verifiers that accept every valid answer and reject
corrupted ones, and the character tokenizer that covers them."""

import random

import pytest

from paradecode.bench.tasks import LEXICON, TASKS, get_task
from paradecode.bench.tokenizer import CHARS, build_tokenizer

N = 300


@pytest.mark.parametrize("name", sorted(TASKS))
def test_verifier_accepts_references_and_fits_the_canvas(name):
    task = get_task(name)
    tok = build_tokenizer()
    for ex in task.examples(N, seed=3):
        assert task.verify(ex, ex.answer), ex
        assert task.verify(ex, ex.answer + "  "), "trailing whitespace before <eos> is ignored"
        assert set(ex.prompt + ex.answer) <= set(CHARS)
        assert len(tok.encode(ex.answer)) <= task.max_answer_tokens < task.gen_length
        assert task.gen_length % task.block_length == 0


def _corruptions(answer: str, rng: random.Random) -> list[str]:
    """Edits that make any answer of these tasks invalid."""
    i = rng.randrange(len(answer))
    out = [
        "",
        answer[:-1],  # truncated
        answer + answer[-1],  # one token too many
        answer[:i] + answer[i] + answer[i:],  # a duplicated character
    ]
    return out


@pytest.mark.parametrize("name", sorted(TASKS))
def test_verifier_rejects_corrupted_answers(name):
    task = get_task(name)
    rng = random.Random(0)
    for ex in task.examples(N, seed=4):
        for bad in _corruptions(ex.answer, rng):
            assert not task.verify(ex, bad), (ex, bad)


def test_task_specific_rejections():
    words = get_task("words")
    ex = words.examples(1, seed=0)[0]
    cat = ex.data["category"]
    w = ex.answer.split(" ")
    other = next(c for c in LEXICON if c != cat)
    assert not words.verify(ex, " ".join([w[0], w[0], w[1]]))  # repeated word
    assert not words.verify(ex, " ".join([w[0], w[1], LEXICON[other][0]]))  # wrong category
    assert not words.verify(ex, " ".join(w[:2]) + "  " + w[2])  # double space
    assert not words.verify(ex, (w[0] + w[1])[:-1] + " " + w[2])  # letters of two words mixed
    avoid = get_task("avoid")
    ex = next(e for e in avoid.examples(50, seed=0) if e.data["k"] >= 2)
    banned = ex.data["banned"][0]
    assert not avoid.verify(ex, " ".join([banned] + ex.answer.split(" ")[1:]))  # an excluded word
    assert not avoid.verify(ex, ex.answer.split(" ")[0])  # too few words
    lists = get_task("lists")
    ex = lists.examples(1, seed=0)[0]
    groups = ex.answer.split("; ")
    assert lists.verify(ex, "; ".join(groups))
    assert not lists.verify(ex, "; ".join(groups[::-1]))  # groups in the wrong order
    assert not lists.verify(ex, "; ".join(groups[:-1]))  # a group missing
    add = get_task("add")
    ex = add.examples(1, seed=0)[0]
    assert not add.verify(ex, str(int(ex.answer) + 1))
    distinct = get_task("distinct")
    ex = distinct.examples(1, seed=0)[0]
    outside = next(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in ex.data["pool"])
    assert not distinct.verify(ex, outside + ex.answer[1:])
    perm = get_task("perm")
    ex = perm.examples(1, seed=0)[0]
    assert not perm.verify(ex, ex.data["letters"])  # the given order is not a shuffle


def test_verifier_ignores_text_after_eos_and_accepts_other_valid_answers():
    words = get_task("words")
    ex = words.examples(1, seed=5)[0]
    assert words.verify(ex, ex.answer + "<eos>garbage")
    lex = LEXICON[ex.data["category"]]
    others = [w for w in lex if w not in ex.answer.split(" ")][:3]
    assert words.verify(ex, " ".join(others))


def test_examples_are_seeded_and_prefix_stable():
    for task in TASKS.values():
        a = task.examples(20, seed=7)
        assert a == task.examples(20, seed=7)
        assert a[:5] == task.examples(5, seed=7)
        assert a != task.examples(20, seed=8)


def test_lists_answers_are_long():
    lengths = [len(e.answer) for e in get_task("lists").examples(N, seed=0)]
    assert min(lengths) >= 63 and get_task("lists").gen_length >= 96


def test_unknown_task_and_bad_n():
    with pytest.raises(ValueError, match="valid tasks"):
        get_task("nope")
    with pytest.raises(ValueError):
        get_task("words").examples(-1)


def test_tokenizer_round_trip_and_specials():
    tok = build_tokenizer()
    text = "lists bird star:\nab 12+3=;"
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    specials = [tok.pad_token_id, tok.eos_token_id, tok.mask_token_id]
    assert len(set(specials)) == 3 and None not in specials
    assert tok.decode(ids + [tok.eos_token_id, tok.mask_token_id], skip_special_tokens=True) == text
