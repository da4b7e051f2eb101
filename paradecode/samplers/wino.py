"""WINO: revokable decoding, wide in and narrow out (Hong et al., 2025, arXiv 2507.18578,
"Wide-In, Narrow-Out: Revokable Decoding for Efficient and Effective DLLMs"; reference:
``decoding_wino`` in ``LLaDA/decoding.py`` of github.com/Feng-Hong/WINO-DLLM).

Each step drafts *wide*: every masked position of the current block above a low ``threshold``
(0.6) is committed, at most ``max_accept`` of them (the most confident), and at least the most
confident one. It verifies *narrow*: a committed token of the block whose verification
confidence falls below ``threshold_back`` (0.9) is re-masked.

The verification comes from the same forward: a **shadow block** of ``block_length`` mask
tokens is appended to the canvas, each at the position of one block column (same RoPE
position). A shadow query sees the whole canvas except its own column (so it predicts that
token from everything else, not from itself) and the other shadow positions; canvas queries
do not see the shadow block, so the draft logits are those of a plain forward. The
verification confidence of a committed token is the shadow position's probability of it.

Re-masking follows the reference exactly: it runs only in a step that accepts more than one
token; a token committed in this very step is not re-examined; and when as many tokens fall
below ``threshold_back`` as the previous step accepted (``last_accept``, 30 at a block's start),
only the ``last_accept - 1`` least confident ones are re-masked. So a step re-masks fewer
tokens than the step before committed, and a block of W positions takes at most W steps
(``max_steps`` is the usual bound).

Constants of the reference kept as they are (not options there): ``max_accept = min(max(
floor(0.7 * masks), 5), 20)`` per step and ``last_accept = 30`` at a block's start.

Where we differ from the reference (tested against it on a tiny model, see
``docs/dev-notes/issue-18-editing-wino.md``): the mask token is never predicted and its
probability is excluded from the softmax (paradecode's ``predict``; the reference softmaxes
the full vocabulary), rows of a batch are decoded independently (the reference takes one
prompt: its top-k runs over the flattened batch), and ties sort by ``torch.topk`` per row.
The shadow forward is WINO's own (a pair attention mask), so the canvas caches, the
diffusers schedulers and ``layout='llada2'`` are not offered; ``cfg_scale`` is refused (the
reference has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..interfaces import Request, to_device
from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, DiffusionState, Revision, RuleState
from .common import forbid_token, masked_confidence, topk_mask

# The reference's constants (decoding_wino): draft cap per step, and the re-mask bound at a block's start.
ACCEPT_FRACTION, ACCEPT_MIN, ACCEPT_MAX = 0.7, 5, 20
FIRST_LAST_ACCEPT = 30


@dataclass
class WINOConfig(DiffusionConfig):
    """``threshold``: the wide draft's confidence bar; ``threshold_back``: a committed token whose
    verification confidence is below it is re-masked (0: never)."""

    threshold: float = 0.6
    threshold_back: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("threshold", "threshold_back"):
            v = getattr(self, name)
            if v != v or v < 0:
                raise ValueError(f"{name} must be >= 0 (WINO's defaults: threshold 0.6, threshold_back 0.9), got {v}.")
        if self.layout != "llada":
            raise ValueError("wino appends a shadow block to the whole canvas (layout='llada'); got layout='llada2'.")
        if self.cfg_scale > 0:
            raise ValueError("wino's reference has no classifier-free guidance; leave cfg_scale at 0.")


@dataclass
class WINOState(RuleState):
    """``last_accept`` (batch,): tokens each row accepted in its previous step (30 at a block's
    start); ``back`` (n, W): this step's verification confidence of the block's tokens."""

    last_accept: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    back: Optional[torch.Tensor] = None


def draft_mask(confidence: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n, W) bool: the wide draft: masked positions above ``threshold``, capped at the
    reference's ``max_accept`` most confident, at least the most confident one."""
    conf = masked_confidence(confidence, mask)
    count = mask.sum(-1)
    cap = (count.double() * ACCEPT_FRACTION).floor().long().clamp(min=ACCEPT_MIN, max=ACCEPT_MAX)
    above = (conf > threshold) & mask
    n_above = above.sum(-1)
    k = torch.where(n_above > cap, cap, torch.where(n_above == 0, torch.ones_like(cap), torch.zeros_like(cap)))
    return torch.where((k > 0)[:, None], topk_mask(conf, k), above) & mask


def remask_mask(back: torch.Tensor, committed: torch.Tensor, accepted: torch.Tensor, last_accept: torch.Tensor,
                threshold_back: float) -> torch.Tensor:
    """(n, W) bool: the narrow verification: committed positions below ``threshold_back``, only in
    rows that accepted more than one token now, at most ``last_accept - 1`` (the least confident)."""
    back = torch.where(committed, back, torch.full_like(back, float("inf")))
    low = committed & (back < threshold_back)
    too_many = low.sum(-1) >= last_accept
    lowest = topk_mask(-back, (last_accept - 1).clamp_min(0)) & committed
    return torch.where(too_many[:, None], lowest, low) & (accepted > 1)[:, None]


class WINO(BlockDiffusionStrategy):
    name = "wino"
    description = "WINO: wide draft by a low threshold, verified by a shadow block; low-confidence commits are re-masked"
    Config = WINOConfig
    cacheable = False  # its forward carries a shadow block with its own attention pattern
    engine_forward = False  # an engine's forward (diffusers, SGLang) has no shadow block
    sweep = {"threshold": [0.5, 0.6, 0.7], "threshold_back": [0.0, 0.8, 0.9]}

    def setup(self, model: Any, mask_token_id: Optional[int] = None, **kw: Any) -> tuple[dict, dict]:
        models, context = super().setup(model, mask_token_id, **kw)
        if not getattr(models["model"], "supports_pair_mask", False):
            raise ValueError(
                "wino's verification forward needs a per-query attention mask (paradecode's LLaDAModel takes one); "
                f"this model ({type(model).__name__}) does not."
            )
        return models, context

    def new_state(self, batch_size, mask_id, eos_id, generator, device) -> WINOState:
        last = torch.full((batch_size,), FIRST_LAST_ACCEPT, dtype=torch.long, device=device)
        return WINOState(batch_size, mask_id, eos_id, generator, last_accept=last)

    # ---- the shadow-block forward ---------------------------------------------------------------
    def request(self, state: DiffusionState) -> tuple[torch.Tensor, Request]:
        """The canvas of the rows in play with a shadow block appended (see the module docstring)."""
        rows = state.active_rows()
        dev_rows = to_device(rows, state.x.device)
        x = state.x[dev_rows]
        n, L = x.shape
        W = self.config.block_length
        cols = self.block_columns(state, rows)
        am = state.attention_mask[dev_rows].bool() if state.attention_mask is not None else torch.ones_like(x, dtype=torch.bool)
        positions = (am.long().cumsum(-1) - 1).clamp_min(0)
        tokens = torch.cat([x, torch.full((n, W), state.mask_id, dtype=x.dtype, device=x.device)], dim=1)
        positions = torch.cat([positions, positions.gather(1, cols)], dim=1)
        pair = torch.zeros(n, L + W, L + W, dtype=torch.bool, device=x.device)
        pair[:, :, :L] = am[:, None, :]  # everyone sees the real canvas tokens; the canvas not the shadow
        pair[:, L:, L:] = True  # the shadow block sees itself
        own = torch.zeros(n, W, L, dtype=torch.bool, device=x.device).scatter_(2, cols[:, :, None], True)
        pair[:, L:, :L] &= ~own  # ... but not the column it verifies
        kwargs: dict[str, Any] = {"positions": positions, "attention_mask": pair}
        starts = self.block_start(state, rows)
        if bool((starts == starts[0]).all()):
            kwargs["logits_range"] = (int(starts[0]), L + W)
        return rows, Request(tokens, kwargs=kwargs, rows=rows)

    def apply(self, state: DiffusionState, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Split the forward's logits into the block's (draft) and the shadow's (verification)."""
        W = self.config.block_length
        L = state.x.shape[1]
        offset = L + W - logits.shape[1]  # 0, or the logits range's start
        cols = self.block_columns(state, rows) - offset
        n = len(rows)
        block_logits = logits[torch.arange(n, device=logits.device)[:, None], cols]
        shadow = logits[:, -W:]
        if self.config.logits_eos_inf:
            shadow = forbid_token(shadow, state.rule.eos_id)
        p = torch.softmax(forbid_token(shadow, state.mask_id).double(), dim=-1)
        current = state.x[to_device(rows, state.x.device)[:, None], self.block_columns(state, rows)]
        state.rule.back = p.gather(-1, current.clamp_min(0)[..., None]).squeeze(-1)
        return super().apply(state, rows, block_logits)

    # ---- the rule ------------------------------------------------------------------------------
    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        return draft_mask(view.confidence, view.mask, self.config.threshold)

    def revise(self, view: BlockView, state: WINOState, transfer: torch.Tensor) -> Optional[Revision]:
        rows = to_device(view.rows, state.last_accept.device)
        accepted = transfer.sum(-1)
        remask = remask_mask(state.back, view.revisable, accepted, state.last_accept[rows], self.config.threshold_back)
        state.last_accept[rows] = accepted
        return Revision(remask, torch.full_like(view.tokens, state.mask_id))

    def on_block_end(self, state: WINOState, rows: torch.Tensor) -> None:
        state.last_accept[to_device(rows, state.last_accept.device)] = FIRST_LAST_ACCEPT
