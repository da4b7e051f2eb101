"""Diffusion-LM strategies: the block machinery (:mod:`.base`), the pure block step
(:mod:`.block`) and one file per rule. The registry finds the rules by name, lazily."""

from .base import BlockDiffusionStrategy, DiffusionConfig, DiffusionState
from .block import BlockStep, BlockView, NoProgressError, RuleState, block_step

__all__ = [
    "BlockDiffusionStrategy", "DiffusionConfig", "DiffusionState",
    "BlockStep", "BlockView", "NoProgressError", "RuleState", "block_step",
]
