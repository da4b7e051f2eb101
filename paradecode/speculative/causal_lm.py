"""A Hugging Face causal LM as paradecode calls it, and the KV-cache bookkeeping of one model.

Speculative decoding runs two causal LMs over the same text, each with its own
``DynamicCache``. Rows of a batch accept different numbers of drafted tokens, so their
caches would need different lengths. :class:`KVStream` keeps one rectangular cache per model
and a per-row validity mask over its slots instead: a slot a row rejected is cropped when
no row still needs it and masked out (``attention_mask`` 0) otherwise, and position ids are
counted per row from valid slots only. Left padding of prompts is the same mechanism.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalLM", "KVStream", "new_cache", "vocab_size"]


def _cache_kwarg(forward: Any) -> str:
    """transformers >= 5.2x names the cache argument ``cache``; older ones ``past_key_values``."""
    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def vocab_size(model: nn.Module) -> int:
    """Rows of the LM head: the size of the distribution the model predicts."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def new_cache(model: nn.Module) -> Any:
    """An empty ``DynamicCache`` for ``model`` (croppable: rejected drafts are removed)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


class CausalLM(nn.Module):
    """``(input_ids, attention_mask=, position_ids=, cache=, num_logits=) -> logits``.

    Wraps an ``AutoModelForCausalLM``. Only the last ``num_logits`` positions go through the
    LM head (``logits_to_keep``). With ``keep_ids`` (VocabTrim) the head is restricted to those
    rows: the model body runs as usual and the logits come back over ``len(keep_ids)`` tokens,
    in the order of ``keep_ids``.
    """

    def __init__(self, hf_model: nn.Module, keep_ids: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.config = hf_model.config
        self.vocab_size = vocab_size(hf_model)
        self._cache_kw = _cache_kwarg(hf_model.forward)
        params = inspect.signature(hf_model.forward).parameters
        self._keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        self.keep_ids: Optional[torch.Tensor] = None
        if keep_ids is not None:
            head = hf_model.get_output_embeddings()
            if head is None or not isinstance(head, nn.Linear):
                raise ValueError("vocabtrim needs a model whose output embedding is an nn.Linear LM head.")
            keep_ids = keep_ids.to(head.weight.device).long()
            self.keep_ids = keep_ids
            # A copy of the kept rows: the draft then reads K x d head weights per token, not V x d.
            self.register_buffer("trim_weight", head.weight.detach()[keep_ids].clone(), persistent=False)
            bias = head.bias.detach()[keep_ids].clone() if head.bias is not None else None
            self.register_buffer("trim_bias", bias, persistent=False)
            self._body = hf_model.base_model
            self._body_cache_kw = _cache_kwarg(self._body.forward)
            self._softcap = getattr(hf_model.config, "final_logit_softcapping", None)

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def out_size(self) -> int:
        """Size of the logits this call returns (the trimmed size under VocabTrim)."""
        return self.vocab_size if self.keep_ids is None else int(self.keep_ids.numel())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        cache: Any = None,
        num_logits: int = 1,
    ) -> torch.Tensor:
        kw: dict[str, Any] = dict(attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
        if self.keep_ids is None:
            kw[self._cache_kw] = cache
            if self._keep_kw is not None:
                kw[self._keep_kw] = num_logits
            return self.hf_model(input_ids=input_ids, **kw).logits[:, -num_logits:]
        kw[self._body_cache_kw] = cache
        hidden = self._body(input_ids=input_ids, **kw).last_hidden_state[:, -num_logits:]
        logits = F.linear(hidden, self.trim_weight, self.trim_bias)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits


@dataclass
class KVStream:
    """One model's cache plus which of its slots each row may attend to.

    ``mask`` (rows, slots) marks valid cache slots, ``pos`` (rows,) counts each row's valid
    tokens (the position id of its next token), ``pending`` / ``pending_valid`` (rows, m) are
    tokens of the text this model has not yet seen (fed first at its next forward).
    """

    cache: Any
    mask: torch.Tensor
    pos: torch.Tensor
    pending: torch.Tensor
    pending_valid: torch.Tensor
    dense: bool = True  # host-side: no invalid slot in the cache (then no attention mask is built)
    pending_dense: bool = True  # host-side: every pending token is valid

    @classmethod
    def start(cls, model: nn.Module, prompt: torch.Tensor, valid: torch.Tensor, dense: bool) -> "KVStream":
        """``dense``: the caller knows (without a device sync) that ``valid`` is all True."""
        b = prompt.shape[0]
        dev = prompt.device
        return cls(
            cache=new_cache(model),
            mask=torch.zeros(b, 0, dtype=torch.long, device=dev),
            pos=torch.zeros(b, dtype=torch.long, device=dev),
            pending=prompt,
            pending_valid=valid.long(),
            pending_dense=dense,
        )

    @property
    def slots(self) -> int:
        return self.mask.shape[1]

    def request_kwargs(self, valid: torch.Tensor, num_logits: int, dense: bool) -> dict[str, Any]:
        """Keyword arguments of a forward that appends tokens with validity ``valid`` (rows, m).

        While no slot is invalid (``dense``, tracked on the host) no attention mask is passed:
        the model then builds a plain causal mask, with no device sync to inspect ours.
        """
        valid = valid.long()
        positions = self.pos[:, None] + valid.cumsum(1) - valid  # invalid slots reuse the next position
        mask = None if (self.dense and dense) else torch.cat([self.mask, valid], dim=1)
        return dict(attention_mask=mask, position_ids=positions, cache=self.cache, num_logits=num_logits)

    def advance(self, valid: torch.Tensor, dense: bool) -> None:
        """The forward appended slots with validity ``valid`` to the cache."""
        valid = valid.long()
        self.mask = torch.cat([self.mask, valid], dim=1)
        self.pos = self.pos + valid.sum(1)
        self.dense = self.dense and dense

    def rollback(self, last: int, keep: torch.Tensor, keep_cpu: torch.Tensor) -> None:
        """Of the ``last`` slots appended, row r keeps the first ``keep[r]``; the rest are rejected.

        Slots no row keeps are cropped from the cache; the others are masked out for the rows
        that rejected them (``keep_cpu``: the same counts on the host).
        """
        if last <= 0 or keep_cpu.numel() == 0:
            return
        keep_max = int(keep_cpu.max())
        if bool((keep_cpu < keep_max).any()):
            self.dense = False
        start = self.slots - last
        j = torch.arange(last, device=self.mask.device)
        tail = self.mask[:, start:]
        rejected = (j[None, :] >= keep[:, None]) & (tail > 0)
        self.pos = self.pos - rejected.sum(1)
        self.mask = torch.cat([self.mask[:, :start], tail.masked_fill(rejected, 0)], dim=1)
        drop = last - keep_max
        if drop > 0:
            self.cache.crop(-drop)  # negative = remove this many (all transformers versions)
            self.mask = self.mask[:, : self.slots - drop]

    def feed_pending(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Take the pending tokens, their validity and whether all are valid (host flag)."""
        tokens, valid, dense = self.pending, self.pending_valid, self.pending_dense
        self.pending = tokens[:, :0]
        self.pending_valid = valid[:, :0]
        self.pending_dense = True
        return tokens, valid, dense

    def append_pending(self, tokens: torch.Tensor, valid: torch.Tensor, dense: bool = True) -> None:
        self.pending = torch.cat([self.pending, tokens], dim=1)
        self.pending_valid = torch.cat([self.pending_valid, valid.long()], dim=1)
        self.pending_dense = self.pending_dense and dense

    def select_rows(self, idx: torch.Tensor) -> None:
        """Keep only rows ``idx`` (finished rows leave the batch)."""
        self.cache.batch_select_indices(idx)
        self.mask, self.pos = self.mask[idx], self.pos[idx]
        self.pending, self.pending_valid = self.pending[idx], self.pending_valid[idx]
