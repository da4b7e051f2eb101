"""Where benchmark problems come from: a local file (JSONL, a JSON list, or either gzipped) or,
only when asked for and only then, the Hugging Face hub through ``datasets``.

Nothing here touches the network at import time; tests read fixture files. A local path is the
default route because evaluation machines are often offline and because a pinned file makes
runs reproducible.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

__all__ = ["read_records", "find_file", "load_records", "take", "truncate_at", "HUB"]

PathLike = Union[str, Path]

# task -> (dataset id, config name or None, the split its test set is called)
HUB: dict[str, tuple[str, Optional[str]]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "humaneval": ("openai/openai_humaneval", None),
    "mbpp": ("google-research-datasets/mbpp", "sanitized"),
}

# File names looked for in a data directory, per (task, split); the first that exists wins.
# They cover the names the datasets ship under (grade-school-math's test.jsonl, human-eval's
# HumanEval.jsonl.gz, the MBPP repository's sanitized-mbpp.json) and a plain ``<task>/<split>``.
_CANDIDATES: dict[str, tuple[str, ...]] = {
    "gsm8k": ("gsm8k/{split}.jsonl", "gsm8k_{split}.jsonl", "{split}.jsonl"),
    "humaneval": ("humaneval/{split}.jsonl", "HumanEval.jsonl", "HumanEval.jsonl.gz", "humaneval_{split}.jsonl"),
    "mbpp": ("mbpp/{split}.jsonl", "mbpp_sanitized_{split}.jsonl", "sanitized-mbpp.json", "mbpp_{split}.jsonl"),
}


def read_records(path: PathLike) -> list[dict[str, Any]]:
    """The records of a ``.jsonl`` (one object a line), or a ``.json`` holding a list, either
    optionally ``.gz``; a bad line is reported with its number, not skipped, so a truncated
    download cannot silently shrink a test set."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    stem = path.name[:-3] if path.suffix == ".gz" else path.name
    if stem.endswith(".json"):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of problems, got {type(data).__name__}.")
        return [dict(r) for r in data]
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not a JSON object ({e.msg}).") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}.")
        out.append(rec)
    return out


def find_file(task: str, data: PathLike, split: str = "test") -> Path:
    """``data`` itself when it is a file, else the first known file name of ``task`` / ``split``
    inside the directory ``data``."""
    path = Path(data)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{task}: no such file or directory: {path}")
    tried = [path / c.format(split=split) for c in _CANDIDATES.get(task, ("{split}.jsonl",))]
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(f"{task}: none of {[str(p) for p in tried]} exists; pass the file itself.")


def load_records(task: str, data: Optional[PathLike] = None, split: str = "test",
                 hub: bool = True) -> list[dict[str, Any]]:
    """The raw records of ``task``: from ``data`` (a file or a directory, see :func:`find_file`)
    when given, else from the hub through ``datasets`` when ``hub`` is true and it is installed.
    Only this call reaches the network, never an import."""
    if data is not None:
        return read_records(find_file(task, data, split))
    if not hub:
        raise ValueError(f"{task}: no data path given and hub loading is off; pass a local file (--data-dir).")
    if task not in HUB:
        raise ValueError(f"{task}: no hub dataset known; pass a local file.")
    try:
        import datasets  # optional, heavy: imported only on this path
    except ImportError:
        raise ImportError(f"{task}: loading from the hub needs `pip install datasets`; "
                          "or pass a local file (--data-dir).") from None
    name, config = HUB[task]
    ds = datasets.load_dataset(name, config, split=split)
    return [dict(r) for r in ds]


def take(records: Sequence[Any], limit: Optional[int]) -> list[Any]:
    """The first ``limit`` records (all when None); the order of the file is kept so a
    ``--limit`` run is a prefix of the full one."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}.")
    return list(records if limit is None else records[:limit])


def truncate_at(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest of the ``stop`` sequences (lm-eval's ``until``): the earliest
    wins, not the first listed, so the order of a stop list does not change a score."""
    cut = len(text)
    for s in stop:
        i = text.find(s) if s else -1
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
