"""The task interface: an :class:`Example` and a seeded :class:`Task` with an exact verifier
(one place for it, so task families in several modules share it without import cycles)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Example", "Task", "clean"]


@dataclass(frozen=True)
class Example:
    """One problem: ``prompt`` (what the model sees), ``answer`` (one valid reference) and
    ``data`` (what the verifier needs: the category, the operands, the set to pick from ...)."""

    prompt: str
    answer: str
    data: dict[str, Any] = field(default_factory=dict, compare=False)


def clean(text: str) -> str:
    """The answer part of a generation: cut at the first end-of-text / pad marker (in case
    the text was decoded with special tokens) and strip surrounding whitespace."""
    for marker in ("<eos>", "<pad>", "<mask>"):
        text = text.split(marker, 1)[0]
    return text.strip()


@dataclass(frozen=True)
class Task:
    """A seeded problem generator with an exact verifier.

    ``make(rng) -> Example`` draws one problem; ``check(example, answer) -> bool`` says
    whether a cleaned answer is valid. Use :meth:`examples` and :meth:`verify`.
    """

    name: str
    description: str
    make: Callable[[random.Random], Example]
    check: Callable[[Example, str], bool]
    max_answer_tokens: int
    gen_length: int = 32
    block_length: int = 32

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        """``n`` problems; the same ``(n, seed)`` always gives the same list, and the first
        ``k`` of ``examples(n, seed)`` equal ``examples(k, seed)``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}.")
        rng = random.Random(f"{self.name}/{int(seed)}")
        return [self.make(rng) for _ in range(n)]

    def verify(self, example: Example, generated_text: str) -> bool:
        """True if ``generated_text`` (the decoded generation after the prompt) is a valid
        answer to ``example``; text after an end-of-text marker is ignored."""
        return bool(self.check(example, clean(generated_text)))
