"""The character-level tokenizer of the shipped task models.

One token per character of :data:`CHARS`, plus the special tokens LLaDA-style decoding
needs: ``<pad>`` (left padding of prompts), ``<eos>`` (end-of-text padding of the answer
canvas, predicted like any token), ``<mask>`` (the diffusion mask) and ``<unk>``.
Built with the ``tokenizers`` library and wrapped as a ``PreTrainedTokenizerFast`` so it
saves to / loads from ``tokenizer.json`` like any Hugging Face tokenizer.
"""

from __future__ import annotations

from typing import Any, Sequence

SPECIALS = {"pad": "<pad>", "eos": "<eos>", "mask": "<mask>", "unk": "<unk>"}
# Every character a task prompt or answer may contain.
CHARS = " abcdefghijklmnopqrstuvwxyz0123456789:;,.+-=*|>()\n"

__all__ = ["CHARS", "SPECIALS", "build_tokenizer", "build_word_tokenizer", "char_ids"]


def char_ids() -> dict[str, int]:
    """Character -> id of the tokenizer :func:`build_tokenizer` makes (specials come first)."""
    return {c: i + len(SPECIALS) for i, c in enumerate(CHARS)}


def build_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` with one token per character and pad/eos/mask/unk tokens.

    Ids: ``<pad>`` 0, ``<eos>`` 1, ``<mask>`` 2, ``<unk>`` 3, then :data:`CHARS` in order.
    Decoding concatenates characters (no spaces are inserted between tokens).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
    vocab.update(char_ids())
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIALS["unk"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIALS["pad"],
        eos_token=SPECIALS["eos"],
        mask_token=SPECIALS["mask"],
        unk_token=SPECIALS["unk"],
        padding_side="left",
    )
    return tok


def build_word_tokenizer(words: Sequence[str]) -> Any:
    """A ``PreTrainedTokenizerFast`` with one token per word of ``words`` (text is split on
    whitespace) and the same special tokens and ids 0-3 as :func:`build_tokenizer`.

    Decoding joins tokens with single spaces, so a space-separated text round-trips exactly.
    Used by the chain-of-thought tasks, whose 256-token canvases would need about four times
    as many positions at the character level.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
    for w in words:
        if not w or any(c.isspace() for c in w):
            raise ValueError(f"vocabulary words must be non-empty and contain no whitespace, got {w!r}.")
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIALS["unk"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIALS["pad"],
        eos_token=SPECIALS["eos"],
        mask_token=SPECIALS["mask"],
        unk_token=SPECIALS["unk"],
        padding_side="left",
    )
