"""Prompts, attention masks and seeds checked at the door and turned into tensors.

Users hand over tensors, numpy arrays or (ragged) lists of numpy ints; what cannot be token
ids (floats, bools, strings, negative or out-of-vocabulary ids, 3-D input, a mask that is
not 0/1 left padding) is refused here with a message that names the argument, instead of
failing later inside an embedding lookup or an attention kernel.

Convention: a wrong Python type (a string, a float in a list) raises ``TypeError``; a tensor
or array of the wrong shape, dtype or values raises ``ValueError``.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "PromptLike", "prepare_prompts", "model_device", "make_generator", "model_vocab_size", "model_max_length",
    "check_length", "MAX_LENGTH",
]

PromptLike = Union[torch.Tensor, np.ndarray, Sequence[Sequence[int]], Sequence[int]]

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed takes
# Tokens in one sequence (prompt + generation) when the model declares no limit: beyond this a
# length is a typo, and refusing it beats a terabyte allocation or an overflow inside torch.
MAX_LENGTH = 2**20
_LENGTH_FIELDS = ("max_sequence_length", "max_position_embeddings", "n_positions")  # ours, HF's, GPT-2's


def model_device(model: Any) -> Optional[torch.device]:
    """The device of ``model`` (its ``.device`` or its first parameter's), or None for a callable."""
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        return p.device if p is not None else None
    return None


def _positive_int(value: Any) -> Optional[int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value > 0:
        return int(value)
    return None


def model_vocab_size(model: Any) -> Optional[int]:
    """How many token ids ``model`` takes: its config's ``vocab_size`` (ours and Hugging Face's),
    else the rows of its input embedding; None for a plain callable. Prompt ids and the mask id
    are checked against it, so a bad id is named at the door rather than as an ``IndexError``
    inside ``F.embedding``."""
    size = _positive_int(getattr(getattr(model, "config", None), "vocab_size", None))
    if size is not None:
        return size
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            size = _positive_int(getattr(get(), "num_embeddings", None))
        except (NotImplementedError, AttributeError):
            size = None
    return size


def model_max_length(model: Any) -> Optional[tuple[str, int]]:
    """``(config field, value)`` of the longest sequence ``model``'s config declares
    (``max_sequence_length``, ``max_position_embeddings`` or ``n_positions``), or None."""
    config = getattr(model, "config", None)
    for name in _LENGTH_FIELDS:
        value = _positive_int(getattr(config, name, None))
        if value is not None:
            return name, value
    return None


def check_length(name: str, length: int, prompt_length: int, model: Any) -> None:
    """Refuse ``length`` new tokens after a ``prompt_length``-token prompt when the sequence
    would not fit the model's declared maximum, or :data:`MAX_LENGTH` when it declares none;
    checked before the canvas is allocated. ``name`` is the option that set ``length``."""
    limit = model_max_length(model)
    if limit is not None:
        field, most = limit
        bound = f"the model takes at most {most} (its config's {field})"
    else:
        most = MAX_LENGTH
        bound = f"the model declares no maximum and paradecode takes at most {most} (MAX_LENGTH)"
    if prompt_length + length <= most:
        return
    room = most - prompt_length
    fix = f"use {name} <= {room}" if room > 0 else "shorten the prompt"
    raise ValueError(
        f"{name}={length} after a {prompt_length}-token prompt makes a sequence of {prompt_length + length} "
        f"tokens, but {bound}; {fix}."
    )


def make_generator(seed: Optional[int], device: Optional[torch.device]) -> Optional[torch.Generator]:
    """A generator seeded with ``seed`` on ``device`` (None without a seed); torch's global
    RNG is left alone, so seeding one call does not change the random stream of the caller."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}.")
    if not SEED_MIN <= int(seed) <= SEED_MAX:
        raise ValueError(f"seed must be an int in [-2**63, 2**64 - 1] (what torch takes), got {int(seed)}.")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator(device="cpu" if dev.type == "meta" else dev)
    gen.manual_seed(int(seed))
    return gen


# ---- prompts ------------------------------------------------------------------------------------


def _is_id(x: Any) -> bool:
    """A single token id: a Python/numpy int (not a bool) or a 0-d integer tensor."""
    if isinstance(x, torch.Tensor):
        return x.dim() == 0 and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _is_row(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray)) or (isinstance(x, torch.Tensor) and x.dim() > 0)


def _row(values: Any, where: str) -> list[int]:
    """One prompt as a list of ints; ``where`` says which one for the messages."""
    if isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim != 1:
            raise ValueError(f"{where} must be a 1-D list of token ids, got shape {tuple(values.shape)}.")
        _check_dtype(values, where)
        return [int(v) for v in values.tolist()]
    out = []
    for j, v in enumerate(values):
        if _is_id(v):
            out.append(int(v))
        elif _is_row(v):
            raise ValueError(f"{where} is nested too deep at position {j}: give (batch, length) token ids, not 3-D input.")
        else:
            raise TypeError(
                f"{where} must hold integer token ids, got {type(v).__name__} {v!r} at position {j}"
                + ("; tokenize text first (e.g. tokenizer(text).input_ids)." if isinstance(v, str) else ".")
            )
    return out


def _rows(prompt_ids: Sequence[Any], name: str = "prompt_ids") -> list[list[int]]:
    """A list of ids (one prompt) or a list of rows (several) as lists of ints."""
    if len(prompt_ids) == 0:
        raise ValueError(f"{name} is empty; give at least one prompt with at least one token.")
    kinds = {"id" if _is_id(x) else "row" if _is_row(x) else "other" for x in prompt_ids}
    if kinds == {"row"}:
        rows = [_row(r, f"{name}[{i}]") for i, r in enumerate(prompt_ids)]
    elif "row" in kinds:
        raise ValueError(
            f"{name} mixes token ids and lists; give one prompt (a list of ids) or a list of prompts (lists of ids)."
        )
    else:
        rows = [_row(prompt_ids, name)]
    for i, r in enumerate(rows):
        if not r:
            raise ValueError(f"{name}[{i}] is empty; every prompt needs at least one token.")
    return rows


def prompt_rows(prompts: Sequence[Any], vocab_size: Optional[int] = None) -> list[list[int]]:
    """Prompts (a list of ids, or a list of rows of ids of any lengths) as lists of ints, each
    id checked against ``vocab_size``: the checks :func:`prepare_prompts` makes, for callers
    that keep the rows apart (continuous batching pads each row only when it enters the batch)."""
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts must be token ids, got a string; tokenize it first (e.g. tokenizer(text).input_ids).")
    rows = _rows(list(prompts), "prompts")
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)  # right-padded: positions are the rows'
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    _check_ids(ids, vocab_size, "prompts")
    return rows


def _check_dtype(ids: Union[torch.Tensor, np.ndarray], name: str) -> None:
    if isinstance(ids, np.ndarray):
        ok = ids.dtype.kind in "iu"
    else:
        ok = not (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool)
    if not ok:
        raise ValueError(
            f"{name} must hold integer token ids, got dtype {ids.dtype}; pass ids (e.g. tokenizer output), "
            f"not logits, embeddings or a mask."
        )


def _from_numpy(arr: np.ndarray, name: str) -> torch.Tensor:
    _check_dtype(arr, name)
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds id {int(arr.max())}, beyond any vocabulary.")
    return torch.from_numpy(np.ascontiguousarray(arr).astype(np.int64))


def _check_ids(ids: torch.Tensor, vocab_size: Optional[int], name: str = "prompt_ids") -> None:
    """Every id in [0, vocab_size): name the first one that is not."""
    if ids.device.type == "meta":
        return  # no values to look at
    bad = ids < 0
    if vocab_size is not None:
        bad |= ids >= vocab_size
    if bool(bad.any()):
        r, c = (int(i) for i in bad.nonzero()[0])
        valid = f"[0, {vocab_size - 1}] (the model's vocabulary)" if vocab_size is not None else "non-negative"
        raise ValueError(f"{name} must hold token ids in {valid}, got {int(ids[r, c])} at row {r}, position {c}.")


def _mask_tensor(mask: Any) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        if mask.dtype.kind not in "biu":
            raise ValueError(f"attention_mask must hold 0/1 (bool or integer), got dtype {mask.dtype}.")
        return torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
    if isinstance(mask, (list, tuple)):
        try:
            mask = torch.tensor(mask)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"attention_mask must be a (batch, length) 0/1 tensor, array or list of lists: {e}") from None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor, array or list of 0/1, got {type(mask).__name__}.")
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"attention_mask must hold 0/1 (bool or integer), got dtype {mask.dtype}.")
    return mask


def _check_mask(mask: Any, ids: torch.Tensor, one_row: bool) -> Optional[torch.Tensor]:
    """A left-padding 0/1 mask of ``ids``' shape as a long tensor, or None when nothing is padded."""
    mask = _mask_tensor(mask)
    if one_row and mask.dim() == 1:
        mask = mask[None]
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {tuple(mask.shape)} must match prompt_ids {tuple(ids.shape)}.")
    mask = mask.to(ids.device).long()
    if ids.device.type == "meta":
        return mask
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (token), got values {sorted(set(mask.unique().tolist()))}.")
    if bool((mask[:, -1] == 0).any()):
        raise ValueError(
            "prompts must be left-padded: attention_mask has padding at the right end (rows "
            f"{(mask[:, -1] == 0).nonzero()[:, 0].tolist()}); put the pad tokens before the prompt."
        )
    holes = (mask[:, 1:] < mask[:, :-1]).any(dim=1)
    if bool(holes.any()):
        raise ValueError(
            f"attention_mask rows {holes.nonzero()[:, 0].tolist()} have padding between tokens; "
            "only left padding (zeros, then ones) is supported."
        )
    return None if bool(mask.all()) else mask


def prepare_prompts(
    prompt_ids: PromptLike,
    attention_mask: Any,
    pad_id: int,
    device: Optional[torch.device],
    vocab_size: Optional[int] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Turn prompts into a left-padded (batch, P) LongTensor and an attention mask (None when no
    row is padded).

    ``prompt_ids``: a (batch, P) or (P,) integer tensor or numpy array, a list of ids (numpy
    ints too), or a list of rows of varying length (lists, tuples, 1-D arrays), which are
    left-padded with ``pad_id``. ``vocab_size``, when given, bounds the ids.
    """
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 1):
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}.")
    if isinstance(prompt_ids, (str, bytes)):
        raise TypeError("prompt_ids must be token ids, got a string; tokenize it first (e.g. tokenizer(text).input_ids).")
    if isinstance(prompt_ids, np.ndarray) and prompt_ids.dtype == object:
        prompt_ids = list(prompt_ids)  # a ragged array of rows
    if isinstance(prompt_ids, np.ndarray):
        if prompt_ids.ndim not in (1, 2):
            raise ValueError(f"prompt_ids must be (batch, length) or (length,), got shape {tuple(prompt_ids.shape)}.")
        prompt_ids = _from_numpy(prompt_ids, "prompt_ids")
    if isinstance(prompt_ids, torch.Tensor):
        return _prepare_tensor(prompt_ids, attention_mask, device, vocab_size)
    if not isinstance(prompt_ids, (list, tuple)):
        raise TypeError(
            f"prompt_ids must be a tensor, a numpy array or a list of token ids, got {type(prompt_ids).__name__}."
        )
    rows = _rows(prompt_ids)
    lengths = {len(r) for r in rows}
    if len(lengths) == 1:  # rectangular: the tensor path, which also takes a mask
        one_row = not _is_row(prompt_ids[0])
        ids = torch.tensor(rows, dtype=torch.long)
        _check_ids(ids, vocab_size)  # here, before a move to a device (meta) where values cannot be read
        ids = ids.to(device or "cpu")
        return _prepare_tensor(ids[0] if one_row else ids, attention_mask, ids.device, vocab_size)
    if attention_mask is not None:
        raise ValueError(
            "attention_mask was given with prompts of different lengths; pass the lists alone (they are "
            "left-padded for you) or a padded tensor with its mask."
        )
    P = max(lengths)
    ids = torch.full((len(rows), P), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, P - len(r) :] = 1
    # padding is pad_id, a token the model knows; only the real ids are bounded by the vocabulary
    _check_ids(torch.where(mask.bool(), ids, torch.zeros_like(ids)), vocab_size)
    return ids.to(device or "cpu"), mask.to(device or "cpu")


def _prepare_tensor(
    ids: torch.Tensor, attention_mask: Any, device: Optional[torch.device], vocab_size: Optional[int]
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    one_row = ids.dim() == 1
    if one_row:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"prompt_ids must be (batch, length) or (length,), got shape {tuple(ids.shape)}.")
    _check_dtype(ids, "prompt_ids")
    if device is not None and ids.device != torch.device(device):
        raise ValueError(
            f"prompt_ids are on {ids.device} but the model is on {device}; move them with prompt_ids.to({str(device)!r})."
        )
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"prompt_ids is empty (shape {tuple(ids.shape)}); give at least one prompt token.")
    mask = None if attention_mask is None else _check_mask(attention_mask, ids, one_row)
    _check_ids(ids if mask is None else torch.where(mask.bool(), ids, torch.zeros_like(ids)), vocab_size)
    return ids.long(), mask
