"""A real benchmark task as the bench runner needs it: prompt texts, stop sequences and a scorer.

:func:`prepare_task` reads the problems (a local file or directory, or the hub), builds each
prompt in the chosen format with the model's tokenizer and returns a :class:`RealTask`;
``RealTask.score(generations)`` cuts every decoded generation at the task's stop sequences and
scores it with the task's own rules (GSM8K: lm-eval's strict and flexible filters, both kept;
HumanEval / MBPP: the program is executed, pass@1).

One ``--prompt-format`` names the setting for every task; it maps onto each task's formats:

=================  ================  ==============  =========================
format             gsm8k             humaneval       mbpp
=================  ================  ==============  =========================
``fewshot``        5-shot            ``completion``  3-shot ``[BEGIN]`` layout
``chat-fewshot``   5-shot in a turn  ``chat``        3-shot in one chat turn
``chat``           0-shot chat       ``chat``        ``chat``
=================  ================  ==============  =========================

``auto`` is ``chat-fewshot`` when the tokenizer has a chat template, else ``fewshot``.

``chat-fewshot`` is how Fast-dLLM's ``eval_llada.py`` feeds lm-eval's few-shot context to
instruct models (the whole context as one user turn), the setting of the published
LLaDA-Instruct numbers. Few-shot exemplars come from the task's exemplar split next to the
test file, or on the hub when the test set comes from there (GSM8K ``train``, MBPP ``prompt``;
their first k problems), or from a file given with ``task=PATH``; lm-eval draws its own with a seeded sampler, so exemplars may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from . import code, gsm8k
from .data import PathLike, find_file, truncate_at

__all__ = ["REAL_TASKS", "PROMPT_FORMATS", "DEFAULT_SHOTS", "DEFAULT_GEN", "RealTask", "prepare_task",
           "is_real_task", "task_format", "has_chat_template", "stop_token_ids", "cut_at_stop_ids"]

REAL_TASKS = ("gsm8k", "humaneval", "mbpp")
PROMPT_FORMATS = ("auto", "fewshot", "chat-fewshot", "chat")
DEFAULT_SHOTS = {"gsm8k": 5, "humaneval": 0, "mbpp": 3}  # lm-eval's gsm8k 5-shot, mbpp 3-shot
SHOT_SPLIT = {"gsm8k": "train", "mbpp": "prompt"}  # where exemplars come from
# gen_length / block_length of Fast-dLLM's evaluation scripts (eval_gsm8k.sh, eval_humaneval.sh)
DEFAULT_GEN = {"gen_length": 256, "block_length": 32}
# Chat-turn terminators of common instruct models; generation is cut at the first of their ids
# (LLaDA-Instruct <|eot_id|>, <|endoftext|>; Qwen/Dream <|im_end|>, <|endoftext|>; Llama </s>).
_END_TOKENS = ("<|eot_id|>", "<|endoftext|>", "<|im_end|>", "</s>", "<|end_of_text|>")
# --prompt-format value -> the format name each task's module uses
_FORMAT_MAP: dict[str, dict[str, str]] = {
    "gsm8k": {"fewshot": "fewshot", "chat-fewshot": "chat-fewshot", "chat": "chat"},
    "humaneval": {"fewshot": "completion", "chat-fewshot": "chat", "chat": "chat"},
    "mbpp": {"fewshot": "fewshot", "chat-fewshot": "chat-fewshot", "chat": "chat"},
}


def is_real_task(name: str) -> bool:
    return name in REAL_TASKS


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def task_format(task: str, fmt: str, tokenizer: Any) -> str:
    """The format name of ``task``'s module for the bench's ``fmt`` (see the module table)."""
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; valid: {PROMPT_FORMATS}.")
    if fmt == "auto":
        fmt = "chat-fewshot" if has_chat_template(tokenizer) else "fewshot"
    if fmt != "fewshot" and not has_chat_template(tokenizer):
        raise ValueError(f"{task}: prompt format {fmt!r} needs the tokenizer's chat template, and this tokenizer has "
                         f"none; use --prompt-format fewshot, or a checkpoint whose tokenizer_config.json has one.")
    return _FORMAT_MAP[task][fmt]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids after which nothing generated counts: the tokenizer's eos and the chat-turn
    terminators it knows (LLaDA fills the rest of its canvas with them)."""
    ids = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    ids.update(vocab[t] for t in _END_TOKENS if t in vocab)
    return sorted(ids)


def cut_at_stop_ids(row: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """``row`` up to (not including) the first of ``stop_ids``."""
    stops = set(stop_ids)
    for i, t in enumerate(row):
        if t in stops:
            return list(row[:i])
    return list(row)


@dataclass
class RealTask:
    """A prepared benchmark: ``prompts[i]`` is the text of ``problems[i]``; ``stop`` the text stop
    sequences; ``fmt`` the task module's format; ``metric`` names the score that ``accuracy`` is."""

    name: str
    fmt: str
    problems: list[Any]
    prompts: list[str]
    stop: tuple[str, ...]
    shots: int = 0
    metric: str = "accuracy"
    timeout: float = 10.0
    workers: Optional[int] = None
    gen_length: int = DEFAULT_GEN["gen_length"]
    block_length: int = DEFAULT_GEN["block_length"]

    def cut(self, text: str) -> str:
        """A decoded generation up to the earliest of the task's stop sequences."""
        return truncate_at(text, self.stop)

    def score(self, generations: Sequence[str]) -> dict[str, Any]:
        """``{"accuracy": float, <metric>: float ..., "per_sample": [dict]}`` for one generation per
        problem, each cut at the stop sequences first."""
        if len(generations) != len(self.problems):
            raise ValueError(f"{self.name}: {len(self.problems)} problems but {len(generations)} generations.")
        texts = [self.cut(g) for g in generations]
        if self.name == "gsm8k":
            verdicts = [gsm8k.score(p, t) for p, t in zip(self.problems, texts)]
            n = max(len(verdicts), 1)
            strict = sum(v["strict"] for v in verdicts) / n
            flexible = sum(v["flexible"] for v in verdicts) / n
            return {"accuracy": flexible, "accuracy_strict": strict, "accuracy_flexible": flexible,
                    "per_sample": [{"text": t, **v} for t, v in zip(texts, verdicts)]}
        result = code.evaluate(self.problems, texts, self.fmt, timeout=self.timeout, workers=self.workers)
        return {"accuracy": result["pass@1"], "pass@1": result["pass@1"],
                "per_sample": [{"text": t, "passed": r.passed, "status": r.status}
                               for t, r in zip(texts, result["results"])]}


def _data_path(task: str, data: Union[PathLike, Mapping[str, PathLike], None]) -> Optional[Path]:
    if isinstance(data, Mapping):
        return Path(data[task]) if task in data else None
    return Path(data) if data is not None else None


def _shot_source(task: str, path: Optional[Path], shot_data: Optional[Mapping[str, PathLike]],
                 hub: bool) -> Optional[Path]:
    """Where the exemplars come from: ``shot_data[task]``, the exemplar split beside the test data,
    or None for the hub's exemplar split (when the test set comes from the hub too)."""
    if shot_data and task in shot_data:
        return Path(shot_data[task])
    split = SHOT_SPLIT[task]
    where = path.parent if path is not None and path.is_file() else path
    if where is None:
        if hub:
            return None
        raise ValueError(f"{task}: few-shot prompts need exemplars ({split} split), and no data directory was "
                         f"given; pass --data-dir DIR holding the {split} file, --shots {task}=FILE, or --num-fewshot 0.")
    try:
        return find_file(task, where, split)
    except FileNotFoundError as e:
        raise ValueError(f"{e} Few-shot prompts take their exemplars from it; pass --shots {task}=FILE, "
                         f"--num-fewshot 0 or --prompt-format chat.") from None


def prepare_task(
    name: str,
    tokenizer: Any,
    *,
    data: Union[PathLike, Mapping[str, PathLike], None] = None,
    prompt_format: str = "auto",
    limit: Optional[int] = None,
    num_fewshot: Optional[int] = None,
    shot_data: Optional[Mapping[str, PathLike]] = None,
    hub: bool = True,
    timeout: float = 10.0,
    workers: Optional[int] = None,
) -> RealTask:
    """Read ``name``'s test problems (``data``: a file or directory, or ``{task: path}``; the hub
    when None and ``hub``), keep the first ``limit``, and build their prompts in ``prompt_format``.

    ``num_fewshot`` defaults to :data:`DEFAULT_SHOTS` for few-shot formats; exemplars come from
    ``shot_data[name]`` or the task's exemplar split found beside the test data.
    """
    if not is_real_task(name):
        raise ValueError(f"unknown real task {name!r}; valid: {REAL_TASKS}.")
    if tokenizer is None:
        raise ValueError(f"{name}: a real task needs the model's tokenizer (a checkpoint with tokenizer.json).")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of problems, got {limit}.")
    fmt = task_format(name, prompt_format, tokenizer)
    path = _data_path(name, data)
    if path is not None and not path.exists():
        raise ValueError(f"{name}: data path {path} does not exist; pass --data-dir with the directory (or file) "
                         f"holding the {name} test set.")
    if isinstance(data, Mapping) and path is None and not hub:
        raise ValueError(f"{name}: no data path given for it; add --data-dir {name}=FILE.")
    try:
        if name == "gsm8k":
            problems = gsm8k.load_gsm8k(path, limit=limit, hub=hub)
        elif name == "humaneval":
            problems = code.load_humaneval(path, limit=limit, hub=hub)
        else:
            problems = code.load_mbpp(path, limit=limit, hub=hub)
    except FileNotFoundError as e:
        raise ValueError(f"{e} Pass --data-dir DIR (or {name}=FILE).") from None
    fewshot = fmt in ("fewshot", "chat-fewshot") and name != "humaneval"
    k = (DEFAULT_SHOTS[name] if num_fewshot is None else int(num_fewshot)) if fewshot else 0
    if k < 0:
        raise ValueError(f"num_fewshot must be >= 0, got {k}.")
    shots: list[Any] = []
    if k:
        shot_path = _shot_source(name, path, shot_data, hub)
        loader = gsm8k.load_gsm8k if name == "gsm8k" else code.load_mbpp
        shots = loader(shot_path, split=SHOT_SPLIT[name], limit=k, hub=shot_path is None)
        if len(shots) < k:
            where = shot_path or f"the hub's {SHOT_SPLIT[name]} split"
            raise ValueError(f"{name}: {where} holds {len(shots)} exemplars, {k} asked for; lower --num-fewshot.")
    if name == "gsm8k":
        prompts = [gsm8k.build_prompt(p, fmt, shots=shots, tokenizer=tokenizer) for p in problems]
        stop, metric = gsm8k.STOP, "flexible-extract"
    elif name == "humaneval":
        prompts = [code.humaneval_prompt(p, fmt, tokenizer) for p in problems]
        stop, metric = (code.HUMANEVAL_STOP if fmt == "completion" else ()), "pass@1"
    else:
        prompts = [code.mbpp_prompt(p, fmt, shots, tokenizer) for p in problems]
        stop, metric = code.MBPP_STOP, "pass@1"
    return RealTask(name, fmt, problems, prompts, tuple(stop), shots=k, metric=metric, timeout=timeout, workers=workers)
