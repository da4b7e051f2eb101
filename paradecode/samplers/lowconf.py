"""LLaDA's baseline sampler (Nie et al., 2025, "Large Language Diffusion Models").

Semi-autoregressive blocks; inside a block each step commits a fixed number of tokens
(the block's masks spread evenly over the block's steps, remainder first), choosing the
most confident predictions (``low_confidence``) or random ones (``random``). Gumbel-noise
temperature and unsupervised classifier-free guidance as in LLaDA's ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..registry import register
from .base import BlockDiffusionStrategy, DiffusionConfig, DiffusionState
from .common import masked_confidence, num_transfer_schedule, topk_mask


@dataclass
class LowConfConfig(DiffusionConfig):
    steps: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
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


@register("lowconf")
class LowConfidence(BlockDiffusionStrategy):
    description = "LLaDA baseline: fixed tokens per step per block, low-confidence or random remasking"
    Config = LowConfConfig
    fixed_schedule = True

    @property
    def steps_per_block(self) -> int:
        return self.config.steps // self.config.num_blocks

    def on_start(self, state: DiffusionState) -> None:
        # Every block starts fully masked, so the per-step counts are known on the host.
        bl = torch.tensor([self.config.block_length])
        state.memo["schedule"] = num_transfer_schedule(bl, self.steps_per_block)[0].tolist()

    def select(self, state, rows, logits, x0, confidence, mask, full_logits) -> torch.Tensor:
        schedule = state.memo["schedule"]
        k = torch.tensor([schedule[int(s)] for s in state.step_in_block[rows]])
        return topk_mask(masked_confidence(confidence, mask), k)
