"""Drafters: where speculative decoding's candidate tokens come from, separate from verification.

A drafter proposes up to ``k`` tokens per row (transformers' candidate generators play this
part):

* :class:`DraftModelDrafter` runs a smaller causal LM that shares the target's tokenizer, one
  forward per drafted token against its own static cache;
* :class:`PromptLookupDrafter` needs no model: it finds the text's last n-gram earlier in the
  prompt + generated text and proposes what followed it (transformers' prompt lookup).

After verification the strategy tells the drafter how far each row got (``accepted``), so a
drafter with a cache sets its lengths back. Any rule a drafter uses to stop early depends
only on its own outputs, so decoding stays lossless. No drafter syncs with the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..interfaces import ModelCall, Request
from .acceptance import first_eos, warp_probs
from .noise import sample_categorical

__all__ = ["Drafts", "DraftModelDrafter", "PromptLookupDrafter", "prompt_lookup", "DRAFTERS"]


@dataclass
class Drafts:
    """``tokens`` (b, k) drafted ids; ``probs`` (b, k, V) the draft distribution q over the
    target vocabulary (sampling only, else None); ``lengths`` (b,) tokens each row proposes."""

    tokens: torch.Tensor
    probs: Optional[torch.Tensor]
    lengths: Optional[torch.Tensor]

    @property
    def k(self) -> int:
        return int(self.tokens.shape[1])


def _tail(state: Any, width: int) -> torch.Tensor:
    """(B, width) the last ``width`` committed tokens of each row."""
    cols = state.length[:, None] - width + torch.arange(width, device=state.length.device)
    return state.tokens.gather(1, cols)


class DraftModelDrafter:
    """Candidates from a draft causal LM (role ``"draft"``), one forward per drafted token.

    Its cache holds every committed token but the last two; a step feeds those two (the whole
    prompt at the first step), then each drafted token but the last, so every forward after
    the first has one fixed shape. ``draft_confidence_threshold`` stops a row once the draft's
    probability of its token falls below it (transformers' ``assistant_confidence_threshold``;
    this rule reads the device once per drafted token); drafting ends when every row stopped.
    With VocabTrim the draft's head covers ``state.keep_ids`` only.
    """

    role = "draft"

    def __init__(self, config: Any) -> None:
        self.config = config

    def forward_tokens(self, k: int) -> list[int]:
        """Token counts of the forwards a step after the first runs: two tokens, then one per
        further draft."""
        return [2] + ([1] if k > 1 else [])

    def propose(self, state: Any, call: ModelCall, k: int) -> Drafts:
        c = self.config
        cache, dev = state.draft_cache, state.tokens.device
        b = state.tokens.shape[0]
        ids = state.tokens[:, : state.prompt_length] if state.steps == 0 else _tail(state, 2)
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        lengths = torch.zeros(b, dtype=torch.long, device=dev)
        drafting = torch.ones(b, dtype=torch.bool, device=dev)
        for i in range(k):
            logits = call(self.role, Request(ids, kwargs=dict(cache=cache, num_logits=1), rows=state.active))[:, -1]
            cache.advance(ids.shape[1])
            token, q, conf = self._pick(state, logits, i)
            tokens.append(token)
            if q is not None:
                probs.append(q)
            lengths = torch.where(drafting, lengths + 1, lengths)
            ids = token[:, None]
            if c.draft_confidence_threshold > 0:
                drafting = drafting & (conf >= c.draft_confidence_threshold)
                if not bool(drafting.any()):  # one small sync per draft token (this rule only)
                    break
        if not tokens:
            return Drafts(torch.zeros(b, 0, dtype=torch.long, device=dev), None, None)
        return Drafts(torch.stack(tokens, 1), torch.stack(probs, 1) if probs else None, lengths)

    def _pick(self, state: Any, logits: torch.Tensor,
              i: int) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Drafted token ``i`` per row, q over the full vocabulary (sampling: drawn with the
        step's noise, ``state.noise``), its confidence."""
        c, keep_ids = self.config, state.keep_ids
        conf = None
        q = None
        if c.do_sample:
            q = warp_probs(logits, c.temperature, c.top_k, c.top_p)
            idx = sample_categorical(q, state.noise.draft(i, q))
            conf = q.gather(1, idx[:, None]).squeeze(1)
            if keep_ids is not None:  # q over the full vocabulary: zero outside the kept tokens
                full = q.new_zeros(q.shape[0], state.vocab_size)
                q = full.index_copy_(1, keep_ids, q)
        else:
            idx = logits.argmax(-1)
            if c.draft_confidence_threshold > 0:
                conf = logits.float().softmax(-1).gather(1, idx[:, None]).squeeze(1)
        token = keep_ids[idx] if keep_ids is not None else idx
        return token, q, conf

    def accepted(self, state: Any, drafts: Drafts) -> None:
        """Roll the draft cache back: it keeps every committed token but the last two (the
        slots of rejected drafts are overwritten later). ``state.length`` is already updated."""
        state.draft_cache.set_length(state.length - 2)


def prompt_lookup(
    tokens: torch.Tensor, length: torch.Tensor, start: torch.Tensor, k: int, max_ngram: int,
    eos_ids: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-lookup candidates for every row, on the device.

    Row r's text is ``tokens[r, start[r]:length[r]]``. For n from ``max_ngram`` down to 1 (at
    most the text length - 1), find the first (leftmost) earlier occurrence of the text's last
    n tokens whose continuation is not empty, and propose up to ``k`` tokens of that
    continuation, cut before the first EOS, as transformers' ``PromptLookupCandidateGenerator``
    does. Returns (drafts (B, k), lengths (B,)); a row without a match proposes 0 tokens.
    """
    B, W = tokens.shape
    dev = tokens.device
    chosen = torch.zeros(B, dtype=torch.long, device=dev)  # where the continuation starts
    have = torch.zeros(B, dtype=torch.bool, device=dev)
    text = length - start
    for n in range(min(max_ngram, W - 1), 0, -1):
        tail = tokens.gather(1, (length[:, None] - n + torch.arange(n, device=dev)).clamp(min=0))
        windows = tokens.unfold(1, n, 1)  # (B, W - n + 1, n): window i covers [i, i + n)
        i = torch.arange(windows.shape[1], device=dev)[None, :]
        ok = (windows == tail[:, None, :]).all(-1) & (i >= start[:, None]) & (i + n < length[:, None])
        ok &= (n <= text - 1)[:, None]
        first = torch.where(ok, i, W).min(1).values
        found = ok.any(1) & ~have
        chosen = torch.where(found, first + n, chosen)
        have |= found
    j = torch.arange(k, device=dev)
    drafts = tokens.gather(1, (chosen[:, None] + j).clamp(max=W - 1))
    lengths = torch.where(have, torch.clamp(length - chosen, max=k), 0)
    if eos_ids is not None and k:
        lengths = torch.minimum(lengths, first_eos(drafts, eos_ids, lengths))
    return drafts, lengths


class PromptLookupDrafter:
    """Candidates from the text itself (prompt lookup decoding; transformers'
    ``prompt_lookup_num_tokens``, vLLM's ``ngram`` method): no draft model, no forward.

    Greedy: exactly the target's greedy output. Sampling: the proposal is deterministic
    (q is one-hot), so speculative sampling's acceptance rule keeps it lossless.
    """

    role = None

    def __init__(self, config: Any) -> None:
        self.config = config

    def forward_tokens(self, k: int) -> list[int]:
        """No forwards: the drafts come from the text."""
        return []

    def propose(self, state: Any, call: ModelCall, k: int) -> Drafts:
        drafts, lengths = prompt_lookup(
            state.tokens, state.length, state.start, k, self.config.prompt_lookup_max_ngram, state.eos_ids
        )
        probs = None
        if self.config.do_sample and k:
            probs = torch.zeros(*drafts.shape, state.vocab_size, device=drafts.device)
            probs.scatter_(2, drafts[..., None], 1.0)
        return Drafts(drafts, probs, lengths)

    def accepted(self, state: Any, drafts: Drafts) -> None:
        """Nothing to roll back: the drafter reads only the committed text."""


DRAFTERS = {"model": DraftModelDrafter, "prompt-lookup": PromptLookupDrafter}
