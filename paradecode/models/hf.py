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

__all__ = ["HFDiffusionAdapter", "resolve_mask_token_id"]


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
    """

    supports_cache = False

    def __init__(
        self,
        hf_model: nn.Module,
        mask_token_id: Optional[int] = None,
        tokenizer: Any = None,
        shift_logits: bool = False,
    ) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.mask_token_id = resolve_mask_token_id(hf_model, tokenizer, mask_token_id)
        self.shift_logits = shift_logits
        params = inspect.signature(hf_model.forward).parameters
        self._takes = {name for name in ("attention_mask", "position_ids") if name in params}
        self.config = getattr(hf_model, "config", None)

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
                "cache policy; use paradecode's LLaDAModel for caches, or pass cache=None."
            )
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            if "attention_mask" not in self._takes:
                raise ValueError("this model's forward takes no attention_mask; give prompts of equal length.")
            kwargs["attention_mask"] = attention_mask
        if positions is not None and "position_ids" in self._takes:
            kwargs["position_ids"] = positions
        out = self.hf_model(input_ids=input_ids, **kwargs)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        if self.shift_logits:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        if logits_range is not None:
            logits = logits[:, logits_range[0] : logits_range[1]]
        return logits
