"""Fast-dLLM's confidence-aware parallel decoding (Wu et al., 2025, "Fast-dLLM").

Inside the current block, every masked position whose confidence passes ``threshold`` is
committed, and at least the most confident one; the block ends when it has no mask left.
With ``factor`` set, the factor rule replaces the fixed threshold: the i-th most confident
position is committed while its confidence >= 1 - factor / (i + 2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, RuleState
from .common import factor_mask, masked_confidence, threshold_mask


@dataclass
class ThresholdConfig(DiffusionConfig):
    threshold: float = 0.9
    factor: Optional[float] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factor is not None and self.factor <= 0:
            raise ValueError(f"factor must be positive (Fast-dLLM uses 1.0), got {self.factor}.")

    def validate(self) -> None:
        """The factor rule replaces the threshold: refuse a threshold that would be ignored."""
        default = next(f.default for f in dataclasses.fields(self) if f.name == "threshold")
        if self.factor is not None and self.threshold != default:
            raise ValueError(
                f"threshold={self.threshold} has no effect with factor={self.factor} (the factor rule decides "
                f"instead); give one of threshold and factor."
            )


class ConfidenceThreshold(BlockDiffusionStrategy):
    name = "threshold"
    description = "Fast-dLLM: commit every masked block position above a confidence threshold (or factor rule)"
    Config = ThresholdConfig

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        if self.config.factor is not None:
            return factor_mask(masked_confidence(view.confidence, view.mask), view.mask, self.config.factor)
        return threshold_mask(view.confidence, view.mask, self.config.threshold)
