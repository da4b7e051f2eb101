"""Small diffusion LMs shipped with paradecode, trained on the task suite.

Each model is a directory under ``paradecode/zoo/``: ``config.json`` and
``model.safetensors`` (our ``LLaDAModel``, stored in bf16), ``tokenizer.json`` (the
character-level tokenizer of :mod:`paradecode.bench.tokenizer`) and ``info.json``
(the tasks it was trained on, the answer canvas to decode with, how it was trained and its
held-out accuracy). ``scripts/train_dllm.py`` reproduces them.

>>> from paradecode import zoo
>>> model, tok = zoo.load(zoo.available()[0])
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["available", "load", "info", "model_dir", "generation_defaults", "ZOO_DIR"]

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


def _dirs() -> dict[str, Path]:
    if not ZOO_DIR.is_dir():
        return {}
    return {d.name: d for d in ZOO_DIR.iterdir() if (d / "config.json").exists() and (d / "info.json").exists()}


def available() -> list[str]:
    """Names of the shipped models, best first (by the ``rank`` in their info.json)."""
    dirs = _dirs()
    return sorted(dirs, key=lambda n: (info(n).get("rank", 100), n))


def model_dir(name: str) -> Path:
    """The directory of a shipped model."""
    dirs = _dirs()
    if name not in dirs:
        raise ValueError(f"unknown model {name!r}; shipped models: {available()}")
    return dirs[name]


@lru_cache(maxsize=None)
def _info(path: str) -> dict[str, Any]:
    return json.loads((Path(path) / "info.json").read_text())


def info(name: str) -> dict[str, Any]:
    """The model's info.json: ``tasks`` (main task first), ``gen_length`` and ``block_length``
    for its main task, ``task_gen_length`` / ``task_block_length`` per task, training command,
    held-out accuracy."""
    return dict(_info(str(model_dir(name))))


def generation_defaults(name_or_dir: str | Path) -> dict[str, int]:
    """``{"gen_length": ..., "block_length": ...}`` of the model's main task, read from the
    info.json of a shipped model (by name) or of a checkpoint directory; ``{}`` when there is
    no info.json or it names neither length."""
    path = Path(name_or_dir)
    if not path.is_dir():
        path = model_dir(str(name_or_dir))
    if not (path / "info.json").is_file():
        return {}
    meta = _info(str(path))
    return {k: int(meta[k]) for k in ("gen_length", "block_length") if k in meta}


def load(name: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """``(LLaDAModel in float32, eval mode, on device; PreTrainedTokenizerFast)``.

    The model carries ``generation_defaults`` (see :func:`generation_defaults`): the answer
    canvas it was trained with, e.g. ``{"gen_length": 32, "block_length": 32}``."""
    from transformers import PreTrainedTokenizerFast

    from .models.llada import LLaDAModel

    path = model_dir(name)
    model = LLaDAModel.from_pretrained(path, torch_dtype=torch.float32, device=device)
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    if tok.mask_token_id != model.config.mask_token_id:
        raise ValueError(f"{path}: tokenizer mask id {tok.mask_token_id} != model mask id {model.config.mask_token_id}.")
    model.generation_defaults = generation_defaults(path)
    return model, tok
