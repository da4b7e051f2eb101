"""Turning what a user passes (prompts, seeds) into tensors, before any model work.

Strategies and the API import these; they depend on nothing else in paradecode.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

__all__ = ["PromptLike", "prepare_prompts", "model_device", "make_generator"]

PromptLike = Union[torch.Tensor, Sequence[Sequence[int]], Sequence[int]]


def model_device(model: Any) -> Optional[torch.device]:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        return p.device if p is not None else None
    return None


def prepare_prompts(
    prompt_ids: PromptLike,
    attention_mask: Optional[torch.Tensor],
    pad_id: int,
    device: Optional[torch.device],
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Turn a tensor or a list of token lists into a left-padded (batch, P) LongTensor and
    an attention mask (None when no row is padded)."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() == 1:
            prompt_ids = prompt_ids[None]
        if prompt_ids.dim() != 2:
            raise ValueError(f"prompt_ids must be (batch, length) or (length,), got shape {tuple(prompt_ids.shape)}.")
        if prompt_ids.dtype not in (torch.long, torch.int, torch.int32, torch.int16):
            raise ValueError(f"prompt_ids must hold integer token ids, got dtype {prompt_ids.dtype}.")
        if device is not None and prompt_ids.device != device:
            raise ValueError(
                f"prompt_ids are on {prompt_ids.device} but the model is on {device}; "
                f"move them with prompt_ids.to({str(device)!r})."
            )
        if prompt_ids.shape[1] == 0:
            raise ValueError("prompt_ids is empty; give at least one prompt token.")
        if attention_mask is not None:
            if attention_mask.shape != prompt_ids.shape:
                raise ValueError(
                    f"attention_mask {tuple(attention_mask.shape)} must match prompt_ids {tuple(prompt_ids.shape)}."
                )
            if bool((attention_mask[:, -1] == 0).any()):
                raise ValueError("prompts must be left-padded: attention_mask has padding at the right end.")
            if bool(attention_mask.all()):
                attention_mask = None
        return prompt_ids.long(), attention_mask
    rows = [list(map(int, r)) for r in (prompt_ids if prompt_ids and not isinstance(prompt_ids[0], int) else [prompt_ids])]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token.")
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r) :] = torch.tensor(r)
        mask[i, P - len(r) :] = 1
    ids, mask = ids.to(device or "cpu"), mask.to(device or "cpu")
    return ids, (None if bool(mask.all()) else mask)


def make_generator(seed: Optional[int], device: Optional[torch.device]) -> Optional[torch.Generator]:
    if seed is None:
        return None
    gen = torch.Generator(device=device or "cpu")
    gen.manual_seed(int(seed))
    return gen
