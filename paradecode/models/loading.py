"""Load a model (and its tokenizer) from a zoo name or a checkpoint directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .llada import LLaDAModel


def load_tokenizer(directory: Path) -> Optional[Any]:
    """``tokenizer.json`` in ``directory`` as a ``PreTrainedTokenizerFast``, or None; a file
    the tokenizers library cannot read raises ``ValueError`` naming it."""
    file = Path(directory) / "tokenizer.json"
    if not file.exists():
        return None
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(directory))
    except Exception as e:  # the Rust tokenizers library raises a bare Exception for a bad file
        raise ValueError(
            f"{file} is not a readable tokenizer ({type(e).__name__}: {str(e)[:200]}); restore it from the "
            f"original checkpoint or save the tokenizer again."
        ) from None


def load_model_and_tokenizer(name_or_dir: str, device: str = "cpu") -> tuple[Any, Optional[Any]]:
    """A checkpoint directory (``LLaDAModel.from_pretrained``) or a shipped model's name."""
    path = Path(name_or_dir)
    if not path.is_dir():
        try:
            from .. import zoo  # shipped models: the same layer as the models
        except ImportError:
            zoo = None
        if zoo is not None and name_or_dir in zoo.available():
            return zoo.load(name_or_dir, device=device)
        shipped = zoo.available() if zoo is not None else []
        what = "a file, not a checkpoint directory" if path.exists() else "neither a checkpoint directory nor a shipped model name"
        raise ValueError(f"{name_or_dir!r} is {what}; give a directory with config.json and weights, or one of {shipped}.")
    return LLaDAModel.from_pretrained(path, device=device), load_tokenizer(path)
