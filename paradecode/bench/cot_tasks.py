"""Chain-of-thought tasks shaped like GSM8K decoding: a reasoning chain, then a short answer.

A problem states what a few people have, most of it relative to others ("bob has 3 more
than ann .", "cal has as many as ann and bob together ."), with distractors the question
does not need, and asks for one person's count. The answer is a chain of thought, one step
per person the question needs ("bob has 7 + 3 = 10 ." or "bob = ann + 3 = 7 + 3 = 10 ."),
in any order that computes a person after the people it uses, then a final answer line
("the answer is 10"). The canvas is 256 words decoded in blocks of 32 and the answer is
followed by ``<eos>`` up to the end of the canvas, as LLaDA is evaluated on GSM8K.

The ambiguity is on purpose: several steps are usually ready at once (their order is free),
each step has two phrasings and a sum two operand orders, and the answer length (where the
``<eos>`` run starts) follows from those choices. A model trained on this data spreads its
confidence over the valid continuations, so the confidences a decoder sees are not all
near 0 or 1 (the shipped character tasks' are).

Text is words separated by single spaces (names, numbers 0-49, operators and a few words);
:func:`cot_vocabulary` lists them for the word-level tokenizer
(:func:`paradecode.bench.tokenizer.build_word_tokenizer`).

The verifier is exact: :func:`check_chain` replays the chain against the problem (every
step must be a person the question needs, not yet computed, whose operands are given or
computed earlier, with the prompt's relation and the right values), and the final line must
give the asked value. A step is valid when every equality in it is true: a long-phrased sum
may substitute its operands' values in either order ("cal = ann + bob = 9 + 7 = 16 ." with
ann 7 and bob 9: ann + bob = 9 + 7 holds), which the data never writes but is not an error.
``strict=True`` accepts only the phrasings the data writes. :func:`diagnose` says what is
wrong with an answer.

Free choices (``CotSpec.free_choice``, off by default; the ``cot-free*`` tasks): most of the
ambiguity above is gone by the time a masked-diffusion decoder commits the token that makes the
choice, because the choices change lengths and a decoder commits tokens at absolute positions
(later commits, e.g. the final line, pin them). With ``free_choice = p``, each step also makes
two choices that change no length and that no other token of the answer determines, each taking
its minority form with probability ``p`` (the analogue of a free choice between synonyms):
the step's verb ("bob is 7 + 3 = 10 ." for "bob has ...", "bob is ann + 3 = ..." for
"bob = ann + 3 = ..."), and, for a commutative step (``plus`` and ``sum``), the operand order
("bob has 3 + 7 = 10 ."; a sum then takes the swapped order with probability ``p`` instead of
1/2). A calibrated model's confidence for such a token is ``1 - p`` (0.7 at ``p = 0.3``). The
examples' ``data`` then carries ``"free_choice"``, and the verifiers accept those forms.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from .task_base import Example, Task

__all__ = ["NAMES", "MAX_VALUE", "CotSpec", "COT_TASKS", "FREE_CHOICE_SHARE", "FREE_CHOICE_TASKS", "cot_vocabulary",
           "diagnose", "check_chain", "check_final", "valid_chains", "make_problem", "split_of", "step_distribution"]

NAMES = ("ann", "bob", "cal", "dan", "eve", "fay", "gus", "hal", "ida", "jon", "kim", "lee",
         "max", "ned", "oli", "pam", "quin", "rob", "sue", "tom")
MAX_VALUE = 49  # every given and computed count lies in 0..MAX_VALUE (one word per number)
WORDS = ("has", "more", "fewer", "than", "as", "many", "and", "together", "minus", "how", "does",
         "have", "the", "answer", "is", "=", "+", "-", ".", "?")
GEN_LENGTH, BLOCK_LENGTH = 256, 32


def cot_vocabulary() -> list[str]:
    """Every word a cot prompt or answer may contain (the tokenizer's vocabulary)."""
    return list(NAMES) + [str(v) for v in range(MAX_VALUE + 1)] + list(WORDS)


@dataclass(frozen=True)
class CotSpec:
    """Sizes of a problem: how many given counts, needed steps and distractor steps."""

    givens: tuple[int, int] = (2, 3)
    steps: tuple[int, int] = (2, 6)
    distractors: tuple[int, int] = (1, 2)
    # "dependency": givens, then the needed people in an order that computes each after the
    # people it uses (the asked one last), then the distractors; "shuffled": any order (the
    # first GPU run's data, which a 9M model did not learn: docs/dev-notes/issue-17.md).
    prompt_order: str = "dependency"
    # probability of the minority form of each free choice (the module docstring): 0 = off (the
    # shipped data, drawn exactly as before the option existed); at most 0.5
    free_choice: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.free_choice <= 0.5:  # (not nan: a nan fails both comparisons)
            raise ValueError(f"CotSpec.free_choice must lie in [0, 0.5] (the probability of a free choice's "
                             f"minority form, e.g. 0.3; 0 turns the option off), got {self.free_choice!r}")


# A relation: (kind, operands). kinds: "const" (value), "plus" / "minus" (name, k),
# "sum" / "diff" (name, name).
Relation = tuple


def _value(rel: Relation, values: dict[str, int]) -> int:
    kind, a, b = rel
    if kind == "const":
        return a
    if kind == "plus":
        return values[a] + b
    if kind == "minus":
        return values[a] - b
    if kind == "sum":
        return values[a] + values[b]
    return values[a] - values[b]


def _uses(rel: Relation) -> list[str]:
    kind, a, b = rel
    return [] if kind == "const" else [a] if kind in ("plus", "minus") else [a, b]


def _draw_relation(rng: random.Random, known: list[str], values: dict[str, int],
                   first: Optional[str] = None) -> Optional[Relation]:
    """A relation over already-defined people whose value stays in 0..MAX_VALUE (or None);
    ``first``, if given, is one of its operands."""
    for _ in range(20):
        kind = rng.choice(("plus", "minus", "sum", "diff", "plus", "sum"))
        a = first if first is not None else rng.choice(known)
        if first is not None and kind in ("sum", "diff") and rng.random() < 0.5:
            # the given operand second: swap after drawing the other one
            others = [n for n in known if n != a]
            if others:
                b = rng.choice(others)
                if kind == "sum" and values[a] + values[b] <= MAX_VALUE:
                    return ("sum", b, a)
                if kind == "diff" and values[b] >= values[a]:
                    return ("diff", b, a)
            continue
        if kind == "plus":
            room = MAX_VALUE - values[a]
            if room >= 1:
                return ("plus", a, rng.randint(1, min(9, room)))
        elif kind == "minus":
            if values[a] >= 1:
                return ("minus", a, rng.randint(1, min(9, values[a])))
        else:
            others = [n for n in known if n != a]
            if not others:
                continue
            b = rng.choice(others)
            if kind == "sum" and values[a] + values[b] <= MAX_VALUE:
                return ("sum", a, b)
            if kind == "diff" and values[a] >= values[b]:
                return ("diff", a, b)
    return None


def _needed(target: str, rels: dict[str, Relation]) -> set[str]:
    """The non-given people ``target`` depends on (itself included)."""
    out, todo = set(), [target]
    while todo:
        n = todo.pop()
        if rels[n][0] != "const" and n not in out:
            out.add(n)
            todo += _uses(rels[n])
    return out


def make_problem(rng: random.Random, spec: CotSpec = CotSpec()) -> tuple[dict[str, Relation], list[str], str]:
    """(relations by name, the order the prompt states them in, the asked name).

    The question's person needs exactly ``steps`` computed people (drawn in ``spec.steps``);
    the distractors are computed people it does not need."""
    if spec.prompt_order == "dependency":
        return _make_ordered_problem(rng, spec)
    if spec.prompt_order != "shuffled":
        raise ValueError(f"CotSpec.prompt_order must be 'dependency' or 'shuffled', got {spec.prompt_order!r}")
    while True:
        n_given, n_steps, n_dist, names, rels, values = _draw_givens(rng, spec)
        ok = True
        for n in names[n_given:]:
            rel = _draw_relation(rng, list(rels), values)
            if rel is None:
                ok = False
                break
            rels[n], values[n] = rel, _value(rel, values)
        if not ok:
            continue
        # the asked person: one whose dependency set has exactly n_steps computed people
        cands = [n for n in names[n_given:] if len(_needed(n, rels)) == n_steps]
        if not cands:
            continue
        target = rng.choice(cands)
        needed = _needed(target, rels)
        extra = [n for n in names[n_given:] if n not in needed]
        if len(extra) < n_dist:
            continue
        # keep the givens the chain uses plus n_dist distractors; drop the rest
        keep_dist = set(rng.sample(extra, n_dist))
        used = {u for n in needed for u in _uses(rels[n])}
        keep = [n for n in names if n in needed or n in keep_dist or (rels[n][0] == "const" and n in used)]
        # distractors may use people that were dropped: keep their dependencies too
        closure, todo = set(keep), list(keep)
        while todo:
            for u in _uses(rels[todo.pop()]):
                if u not in closure:
                    closure.add(u)
                    todo.append(u)
        kept = {n: rels[n] for n in names if n in closure}
        order = list(kept)
        rng.shuffle(order)
        return kept, order, target


def _draw_givens(rng: random.Random, spec: CotSpec) -> tuple[int, int, int, list[str], dict[str, Relation], dict[str, int]]:
    """The sizes of a problem (givens, steps, distractors), its people, and the givens' counts
    (the first draws of every problem layout, in this order, so a seed gives the same people)."""
    n_given = rng.randint(*spec.givens)
    n_steps = rng.randint(*spec.steps)
    n_dist = rng.randint(*spec.distractors)
    names = rng.sample(NAMES, n_given + n_steps + n_dist)
    rels: dict[str, Relation] = {}
    values: dict[str, int] = {}
    for n in names[:n_given]:
        rels[n] = ("const", rng.randint(1, 20), None)
        values[n] = rels[n][1]
    return n_given, n_steps, n_dist, names, rels, values


def _make_ordered_problem(rng: random.Random, spec: CotSpec) -> tuple[dict[str, Relation], list[str], str]:
    """A problem stated in dependency order (see :class:`CotSpec`): the givens, the needed
    people (each after the people it uses; the asked one, which needs all of them, last), then
    the distractors (which may use anyone before them). A valid chain follows a visible order,
    while several steps are still often ready at once (the chain's order stays ambiguous).

    A needed person often uses a computed person no one has used yet (always when there are two
    such loose ends), and the last one uses all that are left, so all of them end up needed by
    the asked person; a draw that cannot is redrawn."""
    while True:
        n_given, n_steps, n_dist, names, rels, values = _draw_givens(rng, spec)
        unused: list[str] = []  # computed people no later relation uses yet
        ok = True
        for k, n in enumerate(names[n_given : n_given + n_steps]):
            rel = None
            last = k == n_steps - 1
            for _ in range(20):
                if last and len(unused) == 2:  # the asked person joins the two loose ends
                    a, b = rng.sample(unused, 2)
                    rel = ("sum", a, b) if values[a] + values[b] <= MAX_VALUE else ("diff", *sorted((a, b), key=values.get, reverse=True))
                else:
                    # building on a loose end only half the time (always when there are two)
                    # leaves independent steps, so the chain's order stays ambiguous
                    tie = unused and (last or len(unused) >= 2 or rng.random() < 0.5)
                    rel = _draw_relation(rng, list(rels), values, first=rng.choice(unused) if tie else None)
                if rel is not None and (not last or set(unused) <= set(_uses(rel))):
                    break
                rel = None
            if rel is None:
                ok = False
                break
            unused = [u for u in unused if u not in _uses(rel)] + [n]
            rels[n], values[n] = rel, _value(rel, values)
        if not ok:
            continue
        target = names[n_given + n_steps - 1]
        for n in names[n_given + n_steps :]:
            rel = _draw_relation(rng, list(rels), values)
            if rel is None:
                ok = False
                break
            rels[n], values[n] = rel, _value(rel, values)
        if not ok or len(_needed(target, rels)) != n_steps:
            continue
        givens = names[:n_given]
        rng.shuffle(givens)
        return rels, givens + _random_topological(rng, names[n_given : n_given + n_steps], rels) + \
            names[n_given + n_steps :], target


def _random_topological(rng: random.Random, people: list[str], rels: dict[str, Relation]) -> list[str]:
    """``people`` in a random order that puts everyone after the people (of the list) they use."""
    order: list[str] = []
    left = list(people)
    while left:
        ready = [n for n in left if all(u in order or u not in people for u in _uses(rels[n]))]
        n = rng.choice(ready)
        order.append(n)
        left.remove(n)
    return order


def evaluate_all(rels: dict[str, Relation]) -> dict[str, int]:
    values: dict[str, int] = {}
    pending = list(rels)
    while pending:
        for n in list(pending):
            if all(u in values for u in _uses(rels[n])):
                values[n] = _value(rels[n], values)
                pending.remove(n)
    return values


def _state(rel: Relation, name: str) -> str:
    kind, a, b = rel
    if kind == "const":
        return f"{name} has {a} ."
    if kind == "plus":
        return f"{name} has {b} more than {a} ."
    if kind == "minus":
        return f"{name} has {b} fewer than {a} ."
    if kind == "sum":
        return f"{name} has as many as {a} and {b} together ."
    return f"{name} has {a} minus {b} ."


def prompt_text(rels: dict[str, Relation], order: list[str], target: str) -> str:
    return " ".join(_state(rels[n], n) for n in order) + f" how many does {target} have ?"


def _commutative(rel: Relation, free: bool) -> bool:
    """Whether the data writes this step's operands in either order: a sum always, a ``plus``
    (name + k) only with free choices on."""
    return rel[0] == "sum" or (free and rel[0] == "plus")


def _operands(rel: Relation, values: dict[str, int], swap: bool) -> tuple[tuple[str, str], tuple[str, str]]:
    """(the operands' words as names, as values) of a step, in the prompt's order or swapped."""
    kind, a, b = rel
    if kind in ("plus", "minus"):
        names, vals = (a, str(b)), (str(values[a]), str(b))
    else:
        names, vals = (a, b), (str(values[a]), str(values[b]))
    return (names[::-1], vals[::-1]) if swap else (names, vals)


def _phrase(name: str, rel: Relation, values: dict[str, int], names: tuple[str, str], vals: tuple[str, str],
            long: bool, alt_verb: bool) -> str:
    """One step: short ("x has 4 + 2 = 6 .") or long ("x = y + 2 = 4 + 2 = 6 ."), with the
    free-choice verb "is" in place of "has" / the first "=" when ``alt_verb``."""
    op = "+" if rel[0] in ("plus", "sum") else "-"
    v = _value(rel, values)
    if long:
        return f"{name} {'is' if alt_verb else '='} {names[0]} {op} {names[1]} = {vals[0]} {op} {vals[1]} = {v} ."
    return f"{name} {'is' if alt_verb else 'has'} {vals[0]} {op} {vals[1]} = {v} ."


def _step_variants(name: str, rel: Relation, values: dict[str, int], free: bool = False) -> list[str]:
    """Every phrasing the data writes of the step that computes ``name`` (``free``: with the
    free choices of :class:`CotSpec`)."""
    out = []
    for swap in (False, True) if _commutative(rel, free) else (False,):
        names, vals = _operands(rel, values, swap)
        for long in (False, True):
            for alt in (False, True) if free else (False,):
                out.append(_phrase(name, rel, values, names, vals, long, alt))
    return list(dict.fromkeys(out))  # a sum of equal values has one short phrasing per verb


def _true_steps(name: str, rel: Relation, values: dict[str, int], free: bool = False) -> list[str]:
    """Every step computing ``name`` whose equalities all hold: the data's phrasings, plus a
    long-phrased commutative step whose values come in the other order than its names."""
    out = _step_variants(name, rel, values, free)
    if _commutative(rel, free):
        for swap in (False, True):
            names, _ = _operands(rel, values, swap)
            _, vals = _operands(rel, values, not swap)
            for alt in (False, True) if free else (False,):
                out.append(_phrase(name, rel, values, names, vals, True, alt))
    return list(dict.fromkeys(out))


def _draw_step(rng: random.Random, name: str, rel: Relation, values: dict[str, int], free_choice: float) -> str:
    """A step with free choices: the phrasing (short / long) 1/2 each as in the default data,
    the operand order of a commutative step and the verb each in their minority form with
    probability ``free_choice``, independently."""
    swap = _commutative(rel, True) and rng.random() < free_choice
    long = rng.random() < 0.5
    alt = rng.random() < free_choice
    names, vals = _operands(rel, values, swap)
    return _phrase(name, rel, values, names, vals, long, alt)


def step_distribution(name: str, rel: Relation, values: dict[str, int], free_choice: float = 0.0) -> dict[str, float]:
    """{step text: probability} as :func:`answer_text` draws the step computing ``name`` (uniform
    over :func:`_step_variants` by default; :func:`_draw_step`'s choices with ``free_choice``)."""
    if not free_choice:
        variants = _step_variants(name, rel, values)
        return {v: 1 / len(variants) for v in variants}
    swaps = {False: 1 - free_choice, True: free_choice} if _commutative(rel, True) else {False: 1.0}
    out: dict[str, float] = {}
    for swap, p_swap in swaps.items():
        names, vals = _operands(rel, values, swap)
        for long in (False, True):
            for alt in (False, True):
                text = _phrase(name, rel, values, names, vals, long, alt)
                out[text] = out.get(text, 0.0) + p_swap * 0.5 * (free_choice if alt else 1 - free_choice)
    return out


PROMPT_ORDER_SHARE = 0.7  # the share of training steps that take the first ready person of the prompt


def answer_text(rng: random.Random, rels: dict[str, Relation], target: str,
                order: Optional[list[str]] = None, free_choice: float = 0.0) -> str:
    """One valid answer: a valid order of the needed steps, random phrasings.

    With the prompt's ``order``, each step is the first ready person of the prompt with
    probability ``PROMPT_ORDER_SHARE``, else any ready one: the data keeps several valid orders
    (the ambiguity a decoder sees) while most steps follow the text, which a small model
    learns to align with far sooner than a free order (docs/dev-notes/issue-17.md).
    ``free_choice`` > 0 draws each step with :class:`CotSpec`'s free choices (0: the default
    draws, unchanged)."""
    values = evaluate_all(rels)
    needed = _needed(target, rels)
    rank = {n: i for i, n in enumerate(order)} if order is not None else None
    done: set[str] = set()
    steps = []
    while len(done) < len(needed):
        ready = sorted(n for n in needed - done
                       if all(u in done or rels[u][0] == "const" for u in _uses(rels[n])))
        if rank is not None and rng.random() < PROMPT_ORDER_SHARE:
            n = min(ready, key=rank.__getitem__)
        else:
            n = rng.choice(ready)
        steps.append(_draw_step(rng, n, rels[n], values, free_choice) if free_choice
                     else rng.choice(_step_variants(n, rels[n], values)))
        done.add(n)
    return " ".join(steps) + f" the answer is {values[target]}"


def _parse_steps(text: str) -> tuple[list[list[str]], Optional[list[str]]]:
    """(steps as word lists, the final line's words or None) of a cleaned answer."""
    words = text.split(" ")
    steps, cur = [], []
    final = None
    i = 0
    while i < len(words):
        if words[i : i + 3] == ["the", "answer", "is"] and not cur:
            final = words[i:]
            break
        cur.append(words[i])
        if words[i] == ".":
            steps.append(cur)
            cur = []
        i += 1
    if cur:
        steps.append(cur)
    return steps, final


def diagnose(data: dict, answer: str, strict: bool = False) -> Optional[str]:
    """None if ``answer`` is a valid chain with the right final line, else what is wrong
    (``strict``: a step must be one of the phrasings the data writes; ``data["free_choice"]``,
    when present and non-zero: the free-choice forms are valid too)."""
    rels = {n: tuple(r) for n, r in data["relations"].items()}
    free = bool(data.get("free_choice"))
    target = data["target"]
    values = evaluate_all(rels)
    needed = _needed(target, rels)
    if not answer.strip():
        return "empty answer"
    steps, final = _parse_steps(answer)
    done: set[str] = set()
    for k, words in enumerate(steps):
        if not words or words[0] not in rels:
            return f"step {k + 1} does not start with a person: {' '.join(words)!r}"
        name = words[0]
        if name not in needed:
            return f"step {k + 1} computes {name}, whom the question does not need"
        if name in done:
            return f"step {k + 1} computes {name} again"
        missing = [u for u in _uses(rels[name]) if rels[u][0] != "const" and u not in done]
        if missing:
            return f"step {k + 1} ({name}) uses {missing} before computing them"
        if " ".join(words) not in (_step_variants if strict else _true_steps)(name, rels[name], values, free):
            return f"step {k + 1} is not a valid computation of {name}: {' '.join(words)!r}"
        done.add(name)
    if done != needed:
        return f"the chain skips {sorted(needed - done)}"
    if final is None:
        return "no final line 'the answer is N'"
    if final != ["the", "answer", "is", str(values[target])]:
        return f"final line {' '.join(final)!r} is wrong (expected 'the answer is {values[target]}')"
    return None


def check_chain(data: dict, answer: str, strict: bool = False) -> bool:
    """The whole answer is valid: every step and the final line (see :func:`diagnose`)."""
    return diagnose(data, answer, strict) is None


def check_final(data: dict, answer: str) -> bool:
    """Only the final line: the last 'the answer is N' gives the asked value (the chain is
    not read), as GSM8K is usually scored."""
    words = answer.split(" ")
    idx = [i for i in range(len(words) - 2) if words[i : i + 3] == ["the", "answer", "is"]]
    if not idx:
        return False
    rels = {n: tuple(r) for n, r in data["relations"].items()}
    return words[idx[-1] + 3 :] == [str(evaluate_all(rels)[data["target"]])]


def valid_chains(data: dict, limit: int = 10_000) -> list[str]:
    """Every answer the data may write (up to ``limit``): all orders and phrasings (for tests)."""
    rels = {n: tuple(r) for n, r in data["relations"].items()}
    free = bool(data.get("free_choice"))
    target = data["target"]
    values = evaluate_all(rels)
    needed = _needed(target, rels)
    out: list[str] = []

    def walk(done: list[str], prefix: list[str]) -> None:
        if len(out) >= limit:
            return
        if len(done) == len(needed):
            out.append(" ".join(prefix + [f"the answer is {values[target]}"]))
            return
        for n in sorted(needed - set(done)):
            if all(u in done or rels[u][0] == "const" for u in _uses(rels[n])):
                for v in _step_variants(n, rels[n], values, free):
                    walk(done + [n], prefix + [v])

    walk([], [])
    return out


def split_of(prompt: str) -> str:
    """'train' or 'test': a fixed hash of the prompt, so held-out prompts never appear in
    training data whatever the seed (about 1 in 16 prompts is held out)."""
    import zlib

    return "test" if zlib.crc32(prompt.encode()) % 16 == 0 else "train"


def _maker(spec: CotSpec, split: str):
    def make(rng: random.Random) -> Example:
        while True:
            rels, order, target = make_problem(rng, spec)
            prompt = prompt_text(rels, order, target)
            if split_of(prompt) == split:
                data = {"relations": {n: list(r) for n, r in rels.items()}, "target": target}
                if spec.free_choice:
                    data["free_choice"] = spec.free_choice
                order_hint = order if spec.prompt_order == "dependency" else None
                return Example(prompt, answer_text(rng, rels, target, order_hint, spec.free_choice), data)

    return make


def _check(ex: Example, answer: str) -> bool:
    return check_chain(ex.data, answer)


def _task(name: str, description: str, spec: CotSpec, split: str) -> Task:
    return Task(name, description, _maker(spec, split), _check, max_answer_tokens=GEN_LENGTH,
                gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH)


_DESC = ("arithmetic word problem over {} given counts, {} needed steps and {} distractors: a chain of "
         "thought (any valid order and phrasing), then 'the answer is N'; canvas 256 in blocks of 32")
_SPEC = CotSpec()
FREE_CHOICE_SHARE = 0.3  # the cot-free* tasks' CotSpec.free_choice: a calibrated confidence of 0.7
_FREE = "; free choices 70/30: the verb 'is', a sum's or plus's operand order"
# "cot" (held-out prompts) is what benchmarks use; "cot-train" draws the complementary prompts.
COT_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _task("cot", _DESC.format("2-3", "2-6", "1-2") + " (held-out prompts)", _SPEC, "test"),
        _task("cot-train", _DESC.format("2-3", "2-6", "1-2") + " (training prompts)", _SPEC, "train"),
        # a warm-up share of the training mix: the one-step chain names the asked person, so
        # copying a name from the prompt pays off from the first steps of training
        _task("cot-short-train", _DESC.format("2-3", "1-2", "1-2") + " (training prompts)",
              CotSpec(steps=(1, 2)), "train"),
        # the same problems with free choices (CotSpec.free_choice): a verb and a commutative
        # step's operand order, each 70/30, that no other token of the answer pins
        _task("cot-free", _DESC.format("2-3", "2-6", "1-2") + _FREE + " (held-out prompts)",
              CotSpec(free_choice=FREE_CHOICE_SHARE), "test"),
        _task("cot-free-train", _DESC.format("2-3", "2-6", "1-2") + _FREE + " (training prompts)",
              CotSpec(free_choice=FREE_CHOICE_SHARE), "train"),
        _task("cot-free-short-train", _DESC.format("2-3", "1-2", "1-2") + _FREE + " (training prompts)",
              CotSpec(steps=(1, 2), free_choice=FREE_CHOICE_SHARE), "train"),
    ]
}
# each default task's free-choice counterpart (scripts/train_cot.py --free-choice)
FREE_CHOICE_TASKS = {"cot": "cot-free", "cot-train": "cot-free-train", "cot-short-train": "cot-free-short-train"}
