"""Adapter for any Hugging Face model whose forward returns ``.logits``.

It gives such a model paradecode's call ``model(tokens, positions=..., attention_mask=...,
logits_range=...) -> logits``. Caches are not supported: the model's own cache semantics
are unknown, so asking for one raises a clear error.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
from torch import nn

from .attention import attention_choice

__all__ = ["HFDiffusionAdapter", "resolve_mask_token_id", "dream_attention"]

ATTENTION_FORMATS = ("2d", "dream")


def dream_attention(attention_mask: Optional[torch.Tensor]) -> dict[str, Any]:
    """Dream's model inputs for a (batch, L) padding mask, as its ``diffusion_generate`` builds
    them: ``"full"`` attention without padding; with padding a (batch, 1, L, L) bool mask that
    lets real tokens attend to real tokens, and positions that skip the padding."""
    if attention_mask is None or bool(attention_mask.all()):
        return {"attention_mask": "full"}
    real = attention_mask.bool()
    positions = (real.long().cumsum(-1) - 1).masked_fill(~real, 1)
    pairs = real[:, None, None, :] & real[:, None, :, None]
    return {"attention_mask": pairs, "position_ids": positions}


def resolve_mask_token_id(model: Any, tokenizer: Any = None, explicit: Optional[int] = None) -> int:
    """The mask id: explicit > tokenizer.mask_token_id > model.config.mask_token_id."""
    if explicit is not None:
        return int(explicit)
    for source in (tokenizer, getattr(model, "config", None), model):
        value = getattr(source, "mask_token_id", None) if source is not None else None
        if value is not None:
            return int(value)
    raise ValueError(
        "no mask token id: the model config and tokenizer define no `mask_token_id`; "
        "pass mask_token_id=<id> (LLaDA uses 126336)."
    )


class HFDiffusionAdapter(nn.Module):
    """Wrap ``hf_model`` (e.g. ``AutoModel.from_pretrained(..., trust_remote_code=True)``).

    Args:
        hf_model: a module whose forward takes ``input_ids`` and returns an object with
            ``.logits`` (or a tensor).
        mask_token_id: explicit mask id; otherwise taken from ``tokenizer`` or the config.
        shift_logits: Dream's convention: the logits at position i predict token i + 1,
            so the adapter shifts them right by one (position i gets the logits of i - 1).
        attention_format: how a padding mask reaches the model. ``"2d"`` (LLaDA, LLaDA2,
            most HF models): the (batch, length) mask as ``attention_mask``, and positions as
            ``position_ids`` when given. ``"dream"`` (Dream's ``diffusion_generate``): without
            padding ``attention_mask="full"``; with padding a (batch, 1, L, L) bool mask of
            real-token pairs and ``position_ids`` counting real tokens only.

    Use :meth:`dream` for Dream checkpoints (both Dream conventions at once).
    """

    supports_cache = False

    def __init__(
        self,
        hf_model: nn.Module,
        mask_token_id: Optional[int] = None,
        tokenizer: Any = None,
        shift_logits: bool = False,
        attention_format: str = "2d",
    ) -> None:
        super().__init__()
        if attention_format not in ATTENTION_FORMATS:
            raise ValueError(f"attention_format must be one of {ATTENTION_FORMATS}, got {attention_format!r}.")
        self.hf_model = hf_model
        self.mask_token_id = resolve_mask_token_id(hf_model, tokenizer, mask_token_id)
        self.shift_logits = shift_logits
        self.attention_format = attention_format
        params = inspect.signature(hf_model.forward).parameters
        self._takes = {name for name in ("attention_mask", "position_ids") if name in params}
        self.config = getattr(hf_model, "config", None)

    @classmethod
    def dream(cls, hf_model: nn.Module, tokenizer: Any = None, mask_token_id: Optional[int] = None) -> "HFDiffusionAdapter":
        """Adapter for Dream (``Dream-org/Dream-v0-Instruct-7B``): shifted logits, Dream's masks."""
        return cls(hf_model, mask_token_id=mask_token_id, tokenizer=tokenizer, shift_logits=True, attention_format="dream")

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
        logits_range: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        if cache is not None:
            raise ValueError(
                "this Hugging Face model runs through HFDiffusionAdapter, which cannot take a "
                "cache policy; use paradecode's LLaDAModel or DreamModel (DreamModel.from_pretrained "
                "for a Dream checkpoint) for caches, or pass cache=None."
            )
        kwargs: dict[str, Any] = {}
        if attention_mask is not None and "attention_mask" not in self._takes:
            if not bool(attention_mask.all()):
                raise ValueError("this model's forward takes no attention_mask; give prompts of equal length.")
            attention_mask = None  # all ones: nothing to hide
        if self.attention_format == "dream":
            kwargs.update(dream_attention(attention_mask))
        else:
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask
            if positions is not None and "position_ids" in self._takes:
                kwargs["position_ids"] = positions
        with attention_choice(input_ids.device):  # transformers' SDPA calls, under paradecode's choice
            out = self.hf_model(input_ids=input_ids, **kwargs)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        if self.shift_logits:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        if logits_range is not None:
            logits = logits[:, logits_range[0] : logits_range[1]]
        return logits
