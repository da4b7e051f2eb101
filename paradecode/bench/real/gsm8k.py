"""GSM8K with the conventions published numbers use, so a score here means what it means there.

* Prompt formats:
  - ``"fewshot"``: lm-evaluation-harness's ``gsm8k`` task: exemplars as ``Question: q\\nAnswer: a``
    (the full worked answer, ending in ``#### N``) joined by a blank line, then
    ``Question: q\\nAnswer:``. lm-eval draws its 5 exemplars from the train split with its own
    seeded sampler; here the caller passes them (the first k of a train file by default), so the
    format matches and the exemplars may differ.
  - ``"chat-fewshot"``: the same text as the single user turn of the tokenizer's chat template
    with the generation prompt appended. This is how Fast-dLLM's ``eval_llada.py`` feeds
    lm-eval's 5-shot context to instruct models (``is_instruct``), i.e. the setting of the
    LLaDA-Instruct GSM8K numbers in Fast-dLLM, Prophet and dInfer.
  - ``"chat"``: zero-shot: the question and an instruction asking for ``#### N`` on the last line,
    in one user turn; for instruct models evaluated without exemplars.
* Stop sequences: lm-eval's ``until`` (``Question:``, ``</s>``, ``<|im_end|>``).
* Scoring: the two filters of lm-eval's gsm8k task, ``strict-match`` (the first ``#### N``) and
  ``flexible-extract`` (the last number-like run), compared after lm-eval's normalisation
  (drop ``,`` and ``$`` and a trailing ``.``, lower-case) and, unless ``exact=True``, also a
  trailing fractional zero (``72.0`` == ``72``; lm-eval itself counts that wrong).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .data import PathLike, load_records, take, truncate_at

__all__ = [
    "GSM8KProblem", "load_gsm8k", "gold_answer", "strict_match", "flexible_extract", "normalize",
    "is_correct", "score", "fewshot_prompt", "chat_prompt", "build_prompt", "truncate", "STOP",
    "INVALID", "DEFAULT_INSTRUCTION", "PROMPT_FORMATS",
]

INVALID = "[invalid]"  # lm-eval's fallback when a filter finds nothing
STOP: tuple[str, ...] = ("Question:", "</s>", "<|im_end|>")
PROMPT_FORMATS = ("fewshot", "chat-fewshot", "chat")
DEFAULT_INSTRUCTION = ("Solve this math word problem. Reason step by step, then write the final "
                       "answer alone on the last line in the form '#### <number>'.")

# lm-eval's gsm8k filter patterns (the regexes are the task's specification, not its code).
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval's ``regexes_to_ignore`` of the exact_match metric, applied in this order.
_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))
_TRAILING_ZEROS = re.compile(r"^(-?\d+)\.0+$|^(-?\d+\.\d*?)0+$")


@dataclass(frozen=True)
class GSM8KProblem:
    """One problem: the ``question``, the dataset's full ``answer`` (worked solution ending in
    ``#### N``) and its final number ``target``."""

    question: str
    answer: str
    target: str
    index: int = 0


def gold_answer(answer: str) -> str:
    """The final answer of a dataset solution: the text after its last ``####``, normalised."""
    if "####" not in answer:
        raise ValueError(f"a GSM8K answer must end in '#### N'; got {answer[-60:]!r}.")
    return normalize(answer.rsplit("####", 1)[1].strip())


def load_gsm8k(data: Optional[PathLike] = None, split: str = "test", limit: Optional[int] = None,
               hub: bool = True) -> list[GSM8KProblem]:
    """Problems from a local JSONL with ``question`` / ``answer`` fields (the HF dataset's and
    grade-school-math's format), or from the hub (see :func:`~.data.load_records`)."""
    records = take(load_records("gsm8k", data, split, hub=hub), limit)
    out = []
    for i, r in enumerate(records):
        if "question" not in r or "answer" not in r:
            raise ValueError(f"gsm8k record {i} lacks 'question' or 'answer': keys {sorted(r)}.")
        out.append(GSM8KProblem(str(r["question"]), str(r["answer"]), gold_answer(str(r["answer"])), i))
    return out


def _regex_filter(pattern: re.Pattern[str], text: str, select: int) -> str:
    """lm-eval's regex filter: all matches, pick ``select`` (0 first, -1 last); for a pattern
    with alternative groups the first non-empty group; ``[invalid]`` when nothing matches."""
    found = pattern.findall(text)
    if not found:
        return INVALID
    match = found[select]
    if isinstance(match, tuple):
        groups = [g for g in match if g]
        match = groups[0] if groups else INVALID
    return match.strip()


def strict_match(text: str) -> str:
    """lm-eval's ``strict-match``: the number after the first ``#### `` (raw, not normalised)."""
    return _regex_filter(_STRICT, text, 0)


def flexible_extract(text: str) -> str:
    """lm-eval's ``flexible-extract``: the last run of digits / ``$.,`` of length >= 2, or the last
    lone digit. Faithful, quirks included: ``... 7...`` ends in ``...``, which is extracted."""
    return _regex_filter(_FLEXIBLE, text, -1)


def normalize(text: str, exact: bool = False) -> str:
    """lm-eval's exact_match normalisation (drop ``,`` ``$``, everything up to ``#### ``, a trailing
    ``.``; lower-case); unless ``exact``, also drop a zero fraction (``72.0`` -> ``72``,
    ``1.50`` -> ``1.5``) so a model that writes decimals is not penalised for it."""
    for pat in _IGNORE:
        text = pat.sub("", text)
    text = text.strip().lower()
    if not exact:
        m = _TRAILING_ZEROS.match(text)
        if m:
            text = m.group(1) if m.group(1) is not None else m.group(2)
            if text.endswith("."):
                text = text[:-1]
        if text.startswith("-0") and text.strip("-0.") == "":
            text = "0"
    return text


def is_correct(extracted: str, target: str, exact: bool = False) -> bool:
    """Whether an extracted answer equals the target after :func:`normalize`; ``[invalid]``
    never does."""
    if extracted == INVALID:
        return False
    return normalize(extracted, exact) == normalize(target, exact)


def truncate(text: str, stop: Sequence[str] = STOP) -> str:
    """The generation up to the earliest stop sequence (lm-eval's ``until`` for gsm8k)."""
    return truncate_at(text, stop)


def score(problem: GSM8KProblem, generation: str, exact: bool = False) -> dict[str, Any]:
    """Both filters' verdicts on one generation (truncated at :data:`STOP` first):
    ``{"strict": bool, "flexible": bool, "strict_answer": str, "flexible_answer": str}``."""
    text = truncate(generation)
    s, f = strict_match(text), flexible_extract(text)
    return {"strict": is_correct(s, problem.target, exact), "flexible": is_correct(f, problem.target, exact),
            "strict_answer": s, "flexible_answer": f}


def _qa(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def fewshot_prompt(question: str, shots: Sequence[GSM8KProblem] = ()) -> str:
    """lm-eval's gsm8k context: each exemplar as ``Question: q\\nAnswer: <full answer>``, a blank
    line between, then the question with an open ``Answer:``."""
    parts = [f"{_qa(s.question)} {s.answer}" for s in shots]
    return "\n\n".join(parts + [_qa(question)])


def _chat(tokenizer: Any, content: str) -> str:
    if not hasattr(tokenizer, "apply_chat_template"):
        raise TypeError(f"a chat prompt needs a tokenizer with apply_chat_template; got {type(tokenizer).__name__}.")
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


def chat_prompt(question: str, tokenizer: Any, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """Zero-shot for instruct models: question, a blank line, the instruction, as one user turn
    of the tokenizer's chat template, ending where the assistant's answer starts."""
    return _chat(tokenizer, f"{question}\n\n{instruction}" if instruction else question)


def build_prompt(problem: GSM8KProblem, fmt: str = "fewshot", *, shots: Sequence[GSM8KProblem] = (),
                 tokenizer: Any = None, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The prompt text of ``problem`` in format ``fmt`` (see the module docstring)."""
    if fmt == "fewshot":
        return fewshot_prompt(problem.question, shots)
    if fmt == "chat-fewshot":
        return _chat(tokenizer, fewshot_prompt(problem.question, shots))
    if fmt == "chat":
        return chat_prompt(problem.question, tokenizer, instruction)
    raise ValueError(f"unknown GSM8K prompt format {fmt!r}; valid: {PROMPT_FORMATS}")
