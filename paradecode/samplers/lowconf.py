"""LLaDA's baseline sampler (Nie et al., 2025, "Large Language Diffusion Models").

Semi-autoregressive blocks; inside a block each step commits a fixed number of tokens
(the masks the block has at its first step spread evenly over the block's steps, remainder
first), choosing the
most confident predictions (``low_confidence``) or random ones (``random``). Gumbel-noise
temperature and unsupervised classifier-free guidance as in LLaDA's ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..interfaces import to_device
from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, RuleState
from .common import masked_confidence, num_transfer_schedule, topk_mask


@dataclass
class LowConfConfig(DiffusionConfig):
    """LLaDA ``generate``'s options: ``steps`` over the whole generation, ``remasking``
    (which predictions a step keeps), and its EOS / EOT handling."""

    steps: int = 128
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    confidence_eos_eot_inf: bool = False  # LLaDA: commit EOS / EOT predictions last
    eot_token_id: Optional[int] = None  # LLaDA-8B-Instruct's <|eot_id|> is 126348

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"remasking must be 'low_confidence' or 'random', got {self.remasking!r}.")
        if self.eot_token_id is not None and not self.confidence_eos_eot_inf:
            raise ValueError("eot_token_id is read only with confidence_eos_eot_inf=True; pass both or neither.")
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}.")
        if self.steps % self.num_blocks:
            raise ValueError(
                f"steps ({self.steps}) must be a multiple of the number of blocks "
                f"(gen_length / block_length = {self.num_blocks})."
            )
        if self.steps // self.num_blocks > self.block_length:
            raise ValueError(
                f"steps per block ({self.steps // self.num_blocks}) exceeds block_length "
                f"({self.block_length}); use steps <= gen_length ({self.gen_length})."
            )


class LowConfidence(BlockDiffusionStrategy):
    name = "lowconf"
    description = "LLaDA baseline: fixed tokens per step per block, low-confidence or random remasking"
    Config = LowConfConfig
    fixed_schedule = True

    @property
    def steps_per_block(self) -> int:
        return self.config.steps // self.config.num_blocks

    def new_state(self, batch_size, mask_id, eos_id, generator, device) -> "LowConfState":
        return LowConfState(batch_size, mask_id, eos_id, generator)

    def select(self, view: BlockView, state: "LowConfState") -> torch.Tensor:
        return topk_mask(masked_confidence(view.confidence, view.mask), self.step_counts(view, state))

    def step_counts(self, view: BlockView, state: "LowConfState") -> torch.Tensor:
        """(n,) tokens each row commits in this step, on the device: its block's masks at the
        block's first step spread evenly over the block's steps, remainder first (LLaDA's
        ``get_num_transfer_tokens``). The llada2 layout spreads ``block_length`` instead, as
        LLaDA2's ``generate`` and diffusers' scheduler do (a block the prompt partly fills then
        finishes early). Kept on the device: no host read, no copy per step."""
        dev, n = view.mask.device, len(view.rows)
        if state.counts is None or state.counts.device != dev:
            state.counts = torch.zeros(state.batch_size, self.steps_per_block, dtype=torch.long, device=dev)
        rows = to_device(view.rows, dev)
        steps = view.step_in_block.tolist()  # host
        if 0 in steps:
            if self.config.layout == "llada2":
                masks = torch.full((n,), self.config.block_length, dtype=torch.long, device=dev)
            else:
                masks = view.mask.sum(-1)
            schedule = num_transfer_schedule(masks, self.steps_per_block)
            if any(steps):  # some rows are inside their block: they keep their counts
                starting = to_device(view.step_in_block == 0, dev)
                schedule = torch.where(starting[:, None], schedule, state.counts[rows])
            state.counts[rows] = schedule
        last = self.steps_per_block - 1
        if steps == steps[:1] * len(steps):
            return state.counts[rows, min(steps[0], last)]
        return state.counts[rows, to_device(view.step_in_block.clamp(max=last), dev)]


@dataclass
class LowConfState(RuleState):
    """Per row, the tokens each step of its current block commits (set at the block's first step)."""

    counts: Optional[torch.Tensor] = None  # (batch, steps per block) long, on the device
