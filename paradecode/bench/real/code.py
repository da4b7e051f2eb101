"""HumanEval and MBPP: prompts, completion post-processing and programs to execute.

Conventions (kept because published pass@1 numbers depend on them):

* HumanEval, ``"completion"`` format (base models; the Codex paper, human-eval, lm-eval's
  ``humaneval``): the model continues the function's ``prompt`` (signature and docstring); the
  completion is cut at the first of :data:`HUMANEVAL_STOP` (a new top-level ``class`` / ``def``
  / ``#`` / ``if`` / ``print``), and the program is ``prompt + completion`` then the problem's
  ``test`` and ``check(entry_point)``.
* HumanEval, ``"chat"`` format (instruct models): the prompt goes in a fenced block inside one user
  turn of the chat template; the answer's first fenced block (or all of it when there is none)
  is taken. If it defines ``entry_point`` it replaces the prompt's function (the prompt's lines
  before that ``def`` -- imports, helpers -- are kept in front); otherwise it is a body and is
  appended to the prompt.
* MBPP (sanitized test split, 257 problems): ``"fewshot"`` is lm-eval's ``mbpp`` task layout (the
  description, the test asserts, ``[BEGIN]``; exemplars end in ``[DONE]``, the stop sequence);
  ``"chat"`` is its instruct layout in one user turn. The code is cut at ``[DONE]``, the first
  fenced block is taken when there is one, and the program is the problem's ``test_imports``,
  the code, then its ``test_list``.

Scoring is pass@1 of greedy decoding: the fraction of problems whose program passes
(:func:`~.execution.run_program`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .data import PathLike, load_records, take, truncate_at
from .execution import ExecResult, run_programs

__all__ = [
    "CodeProblem", "load_humaneval", "load_mbpp", "HUMANEVAL_STOP", "MBPP_STOP", "truncate_at",
    "extract_code_block", "humaneval_prompt", "humaneval_program", "mbpp_prompt", "mbpp_program",
    "build_prompt", "build_program", "evaluate", "PROMPT_FORMATS",
]

HUMANEVAL_STOP: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MBPP_STOP: tuple[str, ...] = ("[DONE]",)
PROMPT_FORMATS = {"humaneval": ("completion", "chat"), "mbpp": ("fewshot", "chat-fewshot", "chat")}
HUMANEVAL_INSTRUCTION = "Complete the following Python function. Reply with the whole function in one ```python code block."
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class CodeProblem:
    """One problem of either task. HumanEval: ``prompt`` is the function head the model completes,
    ``test`` defines ``check(candidate)``, ``entry_point`` names the function. MBPP: ``prompt`` is
    the description, ``tests`` the assert lines, ``setup`` the test imports. ``solution`` is the
    reference code (HumanEval: the body after ``prompt``; MBPP: the whole code)."""

    task: str
    task_id: str
    prompt: str
    solution: str
    test: str = ""
    entry_point: str = ""
    tests: tuple[str, ...] = ()
    setup: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _need(r: dict, keys: Sequence[str], task: str, i: int) -> None:
    missing = [k for k in keys if k not in r]
    if missing:
        raise ValueError(f"{task} record {i} lacks {missing}: keys {sorted(r)}.")


def load_humaneval(data: Optional[PathLike] = None, split: str = "test", limit: Optional[int] = None,
                   hub: bool = True) -> list[CodeProblem]:
    """HumanEval problems from a local JSONL (``HumanEval.jsonl[.gz]`` as human-eval ships it) or
    the hub; fields ``task_id, prompt, canonical_solution, test, entry_point``."""
    out = []
    for i, r in enumerate(take(load_records("humaneval", data, split, hub=hub), limit)):
        _need(r, ("task_id", "prompt", "canonical_solution", "test", "entry_point"), "humaneval", i)
        out.append(CodeProblem("humaneval", str(r["task_id"]), r["prompt"], r["canonical_solution"],
                               test=r["test"], entry_point=r["entry_point"]))
    return out


# MBPP's splits are task-id ranges (the paper's; the hub's splits follow them).
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def mbpp_split(records: Sequence[dict], split: str) -> list[dict]:
    """``records`` of one split. The MBPP repository's release files (``sanitized-mbpp.json``,
    ``mbpp.jsonl``) hold every split in one list: a file whose task ids span several of
    :data:`MBPP_SPLITS`' ranges is cut to ``split``'s range, so a directory with the release file
    evaluates the test split (257 sanitized problems), not all 427. A file of one range is kept."""
    ids = [r.get("task_id") for r in records]
    if split not in MBPP_SPLITS or not all(isinstance(t, int) for t in ids):
        return list(records)
    spans = {name for name, (lo, hi) in MBPP_SPLITS.items() for t in ids if lo <= t <= hi}
    if len(spans) <= 1:
        return list(records)
    lo, hi = MBPP_SPLITS[split]
    return [r for r in records if lo <= r["task_id"] <= hi]


def load_mbpp(data: Optional[PathLike] = None, split: str = "test", limit: Optional[int] = None,
              hub: bool = True) -> list[CodeProblem]:
    """MBPP problems, sanitized (``prompt``, ``test_imports``) or full (``text``,
    ``test_setup_code``) records; fields ``task_id, code, test_list`` in both. A release file
    holding every split is cut to ``split`` (:func:`mbpp_split`)."""
    out = []
    for i, r in enumerate(take(mbpp_split(load_records("mbpp", data, split, hub=hub), split), limit)):
        _need(r, ("task_id", "code", "test_list"), "mbpp", i)
        desc = r.get("prompt", r.get("text"))
        if desc is None:
            raise ValueError(f"mbpp record {i} has neither 'prompt' (sanitized) nor 'text' (full).")
        setup = r.get("test_imports", r.get("test_setup_code", "")) or ""
        if isinstance(setup, (list, tuple)):
            setup = "\n".join(setup)
        out.append(CodeProblem("mbpp", str(r["task_id"]), str(desc), r["code"], tests=tuple(r["test_list"]),
                               setup=setup))
    return out


def extract_code_block(text: str) -> Optional[str]:
    """The content of the first fenced block (```` ```python ```` or bare ```` ``` ````), up to its
    closing fence or the end of the text when the generation stopped inside it; None without one."""
    m = _FENCE.search(text)
    return m.group(1) if m else None


def _chat(tokenizer: Any, content: str) -> str:
    if not hasattr(tokenizer, "apply_chat_template"):
        raise TypeError(f"a chat prompt needs a tokenizer with apply_chat_template; got {type(tokenizer).__name__}.")
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


def humaneval_prompt(problem: CodeProblem, fmt: str = "completion", tokenizer: Any = None) -> str:
    """The text the model sees: the function head itself, or it in a chat turn."""
    if fmt == "completion":
        return problem.prompt
    if fmt == "chat":
        return _chat(tokenizer, f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{problem.prompt}```")
    raise ValueError(f"unknown HumanEval prompt format {fmt!r}; valid: {PROMPT_FORMATS['humaneval']}")


def _defines(code: str, name: str) -> Optional[re.Match[str]]:
    return re.search(rf"^(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE)


def humaneval_solution(problem: CodeProblem, generation: str, fmt: str = "completion") -> str:
    """The solution module (no tests) a generation stands for (see the module docstring)."""
    if fmt == "completion":
        return problem.prompt + truncate_at(generation, HUMANEVAL_STOP)
    if fmt != "chat":
        raise ValueError(f"unknown HumanEval prompt format {fmt!r}; valid: {PROMPT_FORMATS['humaneval']}")
    block = extract_code_block(generation)
    code = block if block is not None else generation
    if _defines(code, problem.entry_point):
        head = _defines(problem.prompt, problem.entry_point)
        prefix = problem.prompt[: head.start()] if head else ""
        return prefix + code
    return problem.prompt + code


def humaneval_program(problem: CodeProblem, generation: str, fmt: str = "completion") -> str:
    """Solution, the problem's test code, then ``check(entry_point)``."""
    return f"{humaneval_solution(problem, generation, fmt)}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def _mbpp_task(problem: CodeProblem, chat: bool) -> str:
    """The task statement: lm-eval's ``mbpp`` puts it on one line with a blank line before the
    asserts; its instruct variant puts each part on its own line."""
    tests = "\n".join(problem.tests)
    head = "You are an expert Python programmer, and here is your task:"
    if chat:
        return f"{head}\n{problem.prompt}\nYour code should pass these tests:\n{tests}"
    return f"{head} {problem.prompt} Your code should pass these tests:\n\n{tests}"


def mbpp_prompt(problem: CodeProblem, fmt: str = "fewshot", shots: Sequence[CodeProblem] = (),
                tokenizer: Any = None) -> str:
    """lm-eval's MBPP layouts: ``fewshot`` (exemplars ``...[BEGIN]\\n<code>\\n[DONE]``, a blank line
    between, then the problem's ``...[BEGIN]\\n``), ``chat-fewshot`` (that text as one user turn,
    as Fast-dLLM feeds lm-eval's context to instruct models) or ``chat`` (one user turn, no
    exemplars)."""
    if fmt == "chat-fewshot":
        return _chat(tokenizer, mbpp_prompt(problem, "fewshot", shots))
    if fmt == "fewshot":
        parts = [f"{_mbpp_task(s, False)}\n[BEGIN]\n{s.solution}\n[DONE]" for s in shots]
        return "\n\n".join(parts + [f"{_mbpp_task(problem, False)}\n[BEGIN]\n"])
    if fmt == "chat":
        return _chat(tokenizer, _mbpp_task(problem, True))
    raise ValueError(f"unknown MBPP prompt format {fmt!r}; valid: {PROMPT_FORMATS['mbpp']}")


def mbpp_solution(generation: str) -> str:
    """The code of an MBPP generation: cut at ``[DONE]``, a leading ``[BEGIN]`` dropped, the first
    fenced block when there is one."""
    text = truncate_at(generation, MBPP_STOP)
    text = text.split("[BEGIN]", 1)[1] if text.lstrip().startswith("[BEGIN]") else text
    block = extract_code_block(text)
    return block if block is not None else text


def mbpp_program(problem: CodeProblem, generation: str) -> str:
    """Test imports, the extracted code, then the test asserts."""
    tests = "\n".join(problem.tests)
    return f"{problem.setup}\n{mbpp_solution(generation)}\n\n{tests}\n"


def build_prompt(problem: CodeProblem, fmt: Optional[str] = None, *, shots: Sequence[CodeProblem] = (),
                 tokenizer: Any = None) -> str:
    """The prompt of either task (``fmt`` defaults to the task's base-model format)."""
    if problem.task == "humaneval":
        return humaneval_prompt(problem, fmt or "completion", tokenizer)
    return mbpp_prompt(problem, fmt or "fewshot", shots, tokenizer)


def build_program(problem: CodeProblem, generation: str, fmt: Optional[str] = None) -> str:
    """The program to execute for a generation of either task."""
    if problem.task == "humaneval":
        return humaneval_program(problem, generation, fmt or "completion")
    return mbpp_program(problem, generation)


def evaluate(problems: Sequence[CodeProblem], generations: Sequence[str], fmt: Optional[str] = None,
             timeout: float = 10.0, workers: Optional[int] = None) -> dict[str, Any]:
    """Execute one greedy generation per problem: ``{"pass@1": float, "results": [ExecResult]}``."""
    if len(problems) != len(generations):
        raise ValueError(f"{len(problems)} problems but {len(generations)} generations.")
    results: list[ExecResult] = run_programs(
        [build_program(p, g, fmt) for p, g in zip(problems, generations)], timeout=timeout, workers=workers)
    return {"pass@1": sum(r.passed for r in results) / len(results) if results else 0.0, "results": results}
