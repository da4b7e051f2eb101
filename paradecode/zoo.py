"""Small diffusion LMs shipped with paradecode, trained on the task suite.

Each model is a directory under ``paradecode/zoo/``: ``config.json`` and
``model.safetensors``, or shards of it with an index (our ``LLaDAModel``, stored in bf16), ``tokenizer.json`` (the
character-level tokenizer of :mod:`paradecode.bench.tokenizer`) and ``info.json``
(the tasks it was trained on, the answer canvas to decode with, how it was trained and its
held-out accuracy). ``scripts/train_dllm.py`` reproduces them.

A directory may instead hold a LoRA adapter (``adapter_config.json`` and
``adapter_model.safetensors``, :mod:`paradecode.models.lora`) with an info.json whose ``base``
names the model it was trained on (a shipped model's name, or a directory, absolute or relative
to the adapter's): it loads as the base model with the adapter merged into its weights, and the
base's tokenizer (``scripts/train_dparallel.py --lora-rank R`` writes such directories).

>>> from paradecode import zoo
>>> model, tok = zoo.load(zoo.available()[0])
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["available", "load", "load_dir", "adapter_base", "info", "model_dir", "generation_defaults", "ZOO_DIR"]

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


def _dirs() -> dict[str, Path]:
    from .models.lora import is_adapter_dir

    if not ZOO_DIR.is_dir():
        return {}
    return {d.name: d for d in ZOO_DIR.iterdir()
            if ((d / "config.json").exists() or is_adapter_dir(d)) and (d / "info.json").exists()}


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


def info(name_or_dir: str | Path) -> dict[str, Any]:
    """The model's info.json: ``tasks`` (main task first), ``gen_length`` and ``block_length``
    for its main task, ``task_gen_length`` / ``task_block_length`` per task, training command,
    held-out accuracy. Of a shipped model (by name) or of a model directory (read afresh, since
    training scripts rewrite theirs; ``{}`` when the directory has none)."""
    path = Path(name_or_dir)
    if path.is_dir():
        return json.loads((path / "info.json").read_text()) if (path / "info.json").is_file() else {}
    return dict(_info(str(model_dir(str(name_or_dir)))))


def generation_defaults(name_or_dir: str | Path) -> dict[str, int]:
    """``{"gen_length": ..., "block_length": ...}`` of the model's main task, read from the
    info.json of a shipped model (by name) or of a checkpoint directory; ``{}`` when there is
    no info.json or it names neither length."""
    meta = info(name_or_dir)
    return {k: int(meta[k]) for k in ("gen_length", "block_length") if k in meta}


def load(name: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """``(LLaDAModel in float32, eval mode, on device; PreTrainedTokenizerFast)``.

    The model carries ``generation_defaults`` (see :func:`generation_defaults`): the answer
    canvas it was trained with, e.g. ``{"gen_length": 32, "block_length": 32}``."""
    return load_dir(model_dir(name), device=device)


def adapter_base(directory: str | Path) -> Path:
    """The base model directory of adapter directory ``directory``: its info.json's ``base`` (else
    adapter_config.json's ``base_model_name_or_path``), a shipped model's name or a directory
    (absolute, or relative to the adapter directory)."""
    from .models.lora import is_adapter_dir, read_adapter_config

    path = Path(directory)
    base = info(path).get("base") or read_adapter_config(path).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path} holds a LoRA adapter but names no base model; add \"base\": <shipped model name "
                         f"or directory> to its info.json.")
    shipped = _dirs()
    if base in shipped:
        return shipped[base]
    for candidate in (path / base, Path(base)):
        if candidate.is_dir() and ((candidate / "config.json").exists() or is_adapter_dir(candidate)):
            if candidate.resolve() == path.resolve():
                break
            return candidate.resolve()
    raise ValueError(f"{path}: the adapter's base {base!r} is neither a shipped model ({available()}) nor a model "
                     f"directory; put the base there or set info.json's \"base\" to where it is.")


def load_dir(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """:func:`load` of a model directory (a shipped model's or one written by the training scripts):
    a full checkpoint, or a LoRA adapter merged into its base (:func:`adapter_base`)."""
    from transformers import PreTrainedTokenizerFast

    from .models.llada import LLaDAModel
    from .models.lora import is_adapter_dir, load_adapter

    path = Path(directory)
    if is_adapter_dir(path):
        model, base_tok = load_dir(adapter_base(path), device=device)
        load_adapter(model, path)
        model.config.name_or_path = str(path)  # companions saved next to the adapter (a Learn2PD filter)
        tok = PreTrainedTokenizerFast.from_pretrained(str(path)) if (path / "tokenizer.json").exists() else base_tok
    else:
        model = LLaDAModel.from_pretrained(path, torch_dtype=torch.float32, device=device)
        tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    if tok.mask_token_id != model.config.mask_token_id:
        raise ValueError(f"{path}: tokenizer mask id {tok.mask_token_id} != model mask id {model.config.mask_token_id}.")
    model.generation_defaults = generation_defaults(path)
    return model, tok
