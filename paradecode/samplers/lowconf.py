"""LLaDA's baseline sampler (Nie et al., 2025, "Large Language Diffusion Models").

Semi-autoregressive blocks; inside a block each step commits a fixed number of tokens
(the block's masks spread evenly over the block's steps, remainder first), choosing the
most confident predictions (``low_confidence``) or random ones (``random``). Gumbel-noise
temperature and unsupervised classifier-free guidance as in LLaDA's ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Optional

import torch

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

    @cached_property
    def schedule(self) -> list[int]:
        """Tokens per step of a block: every block starts fully masked, so the counts are
        known on the host."""
        bl = torch.tensor([self.config.block_length])
        return num_transfer_schedule(bl, self.steps_per_block)[0].tolist()

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        schedule = self.schedule
        k = torch.tensor([schedule[min(int(s), len(schedule) - 1)] for s in view.step_in_block])
        return topk_mask(masked_confidence(view.confidence, view.mask), k)
