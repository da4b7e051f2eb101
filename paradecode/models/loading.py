"""Load a model (and its tokenizer) from a zoo name or a checkpoint directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .llada import LLaDAModel


def load_tokenizer(directory: Path) -> Optional[Any]:
    """``tokenizer.json`` in ``directory`` as a ``PreTrainedTokenizerFast``, or None."""
    if not (Path(directory) / "tokenizer.json").exists():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def load_model_and_tokenizer(name_or_dir: str, device: str = "cpu") -> tuple[Any, Optional[Any]]:
    path = Path(name_or_dir)
    if not path.is_dir():
        try:
            from .. import zoo
        except ImportError:
            zoo = None
        if zoo is not None and name_or_dir in zoo.available():
            return zoo.load(name_or_dir, device=device)
        raise ValueError(f"{name_or_dir!r} is neither a checkpoint directory nor a shipped model name.")
    return LLaDAModel.from_pretrained(path, device=device), load_tokenizer(path)
