"""Verifiable tasks for steps-to-quality curves: seeded generators with exact verifiers.

Every task makes character-level prompts and answers (the characters of
:data:`paradecode.bench.tokenizer.CHARS`), one valid reference answer per example, and a
verifier that accepts *any* valid answer, so tasks with many solutions (pick 3 words of a
category, a permutation ...) are scored by validity, not by string match.

Why these tasks (see the README's "Task suite" notes): short deterministic answers
(``add``, ``sort``) are solved in one forward by a small model and give no curve; tasks
whose valid answers are many and *coupled* (``words``, ``avoid``, ``lists``) lose accuracy
when several tokens are committed per step, because letters of different valid words mix
(``avoid`` has ~1,800 distinct prompts and 1-3 words per answer, so greedy decoding takes
many different paths and the fall is graded; ``words`` has only 6 distinct prompts);
``distinct`` / ``perm`` are ParallelBench-style tasks where every position shares the same
argmax, so committing two tokens at once tends to repeat a letter.

A task has ``gen_length`` (the answer canvas the shipped models were trained with: the
answer, then ``<eos>`` up to ``gen_length``) and ``block_length`` (for semi-autoregressive
decoding); ``max_answer_tokens`` bounds the answer before its ``<eos>`` padding.
"""

from __future__ import annotations

import random

from .cot_tasks import COT_TASKS
from .task_base import Example, Task, clean

__all__ = ["Example", "Task", "TASKS", "get_task", "synthetic_task_names", "LEXICON", "clean"]

# Six categories of twelve pronounceable made-up words (3 to 6 letters), fixed forever:
# the shipped models memorised them.
LEXICON: dict[str, tuple[str, ...]] = {
    "fruit": ("lig", "tedi", "kub", "moba", "fesip", "ziru", "pofek", "ketono", "nusa", "domab", "merizi", "rena"),
    "bird": ("gas", "buz", "puzu", "ramor", "dilop", "gemuka", "mugan", "fere", "dukudi", "kaba", "fulike", "zege"),
    "tool": ("bugu", "vinu", "vabuk", "marik", "fusam", "vivu", "naboz", "suf", "teso", "fetim", "bar", "vafok"),
    "stone": ("bepaf", "lik", "tafel", "fope", "sanum", "gen", "fit", "lasof", "gulo", "zuzori", "tonet", "kib"),
    "river": ("givid", "bubob", "lim", "label", "zeturo", "zirad", "dus", "difa", "gus", "gasilu", "bufuto", "ruma"),
    "star": ("regiz", "pitir", "bana", "sezit", "dopi", "sumab", "pogo", "sosif", "kugo", "gilupu", "rig", "dak"),
}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


# ---- words: 3 distinct words of a category --------------------------------------------------
def _make_words(rng: random.Random) -> Example:
    cat = rng.choice(sorted(LEXICON))
    words = rng.sample(LEXICON[cat], 3)
    return Example(f"words {cat}:", " ".join(words), {"category": cat})


def _valid_group(text: str, category: str, k: int = 3) -> bool:
    words = text.split(" ")
    lex = LEXICON[category]
    return len(words) == k and len(set(words)) == k and all(w in lex for w in words)


def _check_words(ex: Example, answer: str) -> bool:
    return _valid_group(answer, ex.data["category"])


# ---- avoid: k distinct words of a category, none of the excluded ones -------------------------
def _make_avoid(rng: random.Random) -> Example:
    cat = rng.choice(sorted(LEXICON))
    k = rng.randint(1, 3)
    banned = rng.sample(LEXICON[cat], rng.randint(1, 3))
    allowed = [w for w in LEXICON[cat] if w not in banned]
    return Example(f"avoid {k} {cat} {' '.join(banned)}:", " ".join(rng.sample(allowed, k)),
                   {"category": cat, "k": k, "banned": banned})


def _check_avoid(ex: Example, answer: str) -> bool:
    d = ex.data
    return _valid_group(answer, d["category"], d["k"]) and not set(answer.split(" ")) & set(d["banned"])


# ---- lists: 3 distinct words for each of 5 categories (long answers, 63-108 characters) ------
def _make_lists(rng: random.Random) -> Example:
    cats = rng.sample(sorted(LEXICON), 5)
    groups = [" ".join(rng.sample(LEXICON[c], 3)) for c in cats]
    return Example(f"lists {' '.join(cats)}:", "; ".join(groups), {"categories": cats})


def _check_lists(ex: Example, answer: str) -> bool:
    groups = answer.split("; ")
    cats = ex.data["categories"]
    return len(groups) == len(cats) and all(_valid_group(g, c) for g, c in zip(groups, cats))


# ---- add: a + b with up to 6 digits each -----------------------------------------------------
def _number(rng: random.Random, digits: int) -> int:
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)


def _make_add(rng: random.Random) -> Example:
    a, b = (_number(rng, rng.randint(1, 6)) for _ in range(2))
    return Example(f"{a}+{b}=", str(a + b), {"a": a, "b": b})


def _check_add(ex: Example, answer: str) -> bool:
    return answer == str(ex.data["a"] + ex.data["b"])


# ---- sort: the letters of a word in alphabetical order ---------------------------------------
def _make_sort(rng: random.Random) -> Example:
    letters = "".join(rng.choice(LETTERS) for _ in range(rng.randint(5, 12)))
    return Example(f"sort {letters}:", "".join(sorted(letters)), {"letters": letters})


def _check_sort(ex: Example, answer: str) -> bool:
    return answer == "".join(sorted(ex.data["letters"]))


# ---- distinct: pick k distinct letters from a set (ParallelBench-style) ----------------------
def _make_distinct(rng: random.Random) -> Example:
    k = rng.randint(3, 8)
    pool = "".join(rng.sample(LETTERS, rng.randint(k + 1, 12)))
    return Example(f"pick {k} of {pool}:", "".join(rng.sample(pool, k)), {"k": k, "pool": pool})


def _check_distinct(ex: Example, answer: str) -> bool:
    k, pool = ex.data["k"], ex.data["pool"]
    return len(answer) == k and len(set(answer)) == k and all(c in pool for c in answer)


# ---- perm: a shuffle of distinct letters, different from the given order ---------------------
def _make_perm(rng: random.Random) -> Example:
    letters = "".join(rng.sample(LETTERS, rng.randint(4, 8)))
    order = list(letters)
    while "".join(order) == letters:
        rng.shuffle(order)
    return Example(f"perm {letters}:", "".join(order), {"letters": letters})


def _check_perm(ex: Example, answer: str) -> bool:
    letters = ex.data["letters"]
    return sorted(answer) == sorted(letters) and answer != letters


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("words", "3 distinct words of a named category (12-word lexicons), space separated",
             _make_words, _check_words, max_answer_tokens=20),
        Task("avoid", "k (1-3) distinct words of a named category, none of the 1-3 words the prompt excludes",
             _make_avoid, _check_avoid, max_answer_tokens=20),
        Task("lists", "3 distinct words for each of 5 named categories, groups separated by '; '",
             _make_lists, _check_lists, max_answer_tokens=108, gen_length=128, block_length=32),
        Task("add", "sum of two numbers of 1 to 6 digits", _make_add, _check_add, max_answer_tokens=7),
        Task("sort", "the letters of a 5-12 letter string in alphabetical order",
             _make_sort, _check_sort, max_answer_tokens=12),
        Task("distinct", "pick k (3-8) distinct letters from a given set (ParallelBench-style)",
             _make_distinct, _check_distinct, max_answer_tokens=8),
        Task("perm", "a permutation of 4-8 distinct letters, other than the given order",
             _make_perm, _check_perm, max_answer_tokens=8),
    ]
}


def synthetic_task_names() -> list[str]:
    """Every seeded task :func:`get_task` serves: the character tasks, then the chain-of-thought ones."""
    return sorted(TASKS) + sorted(COT_TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``: a character task of :data:`TASKS` or a chain-of-thought task
    of :data:`paradecode.bench.cot_tasks.COT_TASKS` (256-word canvases, word tokenizer)."""
    task = TASKS.get(name) or COT_TASKS.get(name)
    if task is None:
        raise ValueError(f"unknown task {name!r}; valid tasks: {synthetic_task_names()}")
    return task
