"""Drafters: where speculative decoding's candidate tokens come from, separate from verification.

A drafter proposes up to ``k`` tokens per row (transformers' candidate generators play this
part): :class:`DraftModelDrafter` runs a smaller causal LM that shares the target's tokenizer.
After verification the strategy tells the drafter how many of its tokens each row kept, so it
can roll its own cache back. Any rule a drafter uses to stop early depends only on its own
outputs, so decoding stays lossless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..interfaces import ModelCall, Request
from .acceptance import warp_probs

__all__ = ["Drafts", "DraftModelDrafter"]


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


class DraftModelDrafter:
    """Candidates from a draft causal LM (role ``"draft"``), one forward per drafted token.

    ``draft_confidence_threshold`` stops a row once the draft's probability of its token falls
    below it (transformers' ``assistant_confidence_threshold``); drafting ends when every row
    stopped. With VocabTrim the draft's head covers ``state.keep_ids`` only.
    """

    role = "draft"

    def __init__(self, config: Any) -> None:
        self.config = config

    def propose(self, state: Any, call: ModelCall, k: int) -> Drafts:
        c = self.config
        b, dev = len(state.active), state.tokens.device
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        lengths = torch.zeros(b, dtype=torch.long, device=dev)
        drafting = torch.ones(b, dtype=torch.bool, device=dev)
        for _ in range(k):
            if not tokens:
                ids, valid, dense = state.draft.feed_pending()
            else:
                ids = tokens[-1][:, None]
                valid, dense = torch.ones_like(ids), True
            kwargs = state.draft.request_kwargs(valid, num_logits=1, dense=dense)
            logits = call(self.role, Request(ids, kwargs=kwargs, rows=state.active))[:, -1]
            state.draft.advance(valid, dense)
            token, q, conf = self._pick(state, logits)
            tokens.append(token)
            if q is not None:
                probs.append(q)
            lengths = torch.where(drafting, lengths + 1, lengths)
            if c.draft_confidence_threshold > 0:
                drafting = drafting & (conf >= c.draft_confidence_threshold)
                if not bool(drafting.any()):  # one small sync per draft token
                    break
        if not tokens:
            return Drafts(torch.zeros(b, 0, dtype=torch.long, device=dev), None, None)
        return Drafts(torch.stack(tokens, 1), torch.stack(probs, 1) if probs else None, lengths)

    def _pick(self, state: Any, logits: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """The drafted token per row, q over the full vocabulary (sampling), its confidence."""
        c, keep_ids = self.config, state.keep_ids
        conf = None
        q = None
        if c.do_sample:
            q = warp_probs(logits, c.temperature, c.top_k, c.top_p)
            idx = torch.multinomial(q, 1, generator=state.generator).squeeze(1)
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

    def accepted(self, state: Any, drafts: Drafts, n: torch.Tensor, n_cpu: torch.Tensor, nxt: torch.Tensor) -> None:
        """Roll the draft cache back to the accepted drafts and queue the target's token.

        The draft saw d_1..d_{k-1}; a row that accepted all k still has to show d_k next step.
        """
        k = drafts.k
        if k:
            state.draft.rollback(k - 1, torch.clamp(n, max=k - 1), torch.clamp(n_cpu, max=k - 1))
            all_in = n_cpu == k
            if bool(all_in.any()):
                state.draft.append_pending(drafts.tokens[:, -1:], (n == k)[:, None], dense=bool(all_in.all()))
        state.draft.append_pending(nxt[:, None], torch.ones_like(nxt)[:, None])
