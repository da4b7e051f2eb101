"""LocalLeap (Kong et al., 2025, arXiv 2510.07081, "Accelerating Diffusion LLM Inference via Local Determinism
Propagation"; reference: friedrichor/LocalLeap ``generate.py``).

Anchors are masked block positions with confidence >= ``threshold``; within ``radius`` of any
anchor a position is committed at the relaxed threshold, elsewhere at ``threshold``; the most
confident position is always committed. With no anchor it is Fast-dLLM's threshold rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..interfaces import to_device
from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, RuleState
from .common import masked_confidence, topk_mask


@dataclass
class LocalLeapConfig(DiffusionConfig):
    threshold: float = 0.9
    relaxed_threshold: float = 0.75
    radius: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {self.radius}.")
        if self.relaxed_threshold > self.threshold:
            raise ValueError(
                f"relaxed_threshold ({self.relaxed_threshold}) must not exceed threshold ({self.threshold}): "
                f"it is the lower bar near anchors."
            )


def anchor_neighbourhood(anchors: torch.Tensor, radius: int) -> torch.Tensor:
    """(batch, L) bool: positions within ``radius`` of some anchor (the anchors included)."""
    if radius == 0:
        return anchors
    radius = min(radius, anchors.shape[-1])  # a wider window covers the same block
    hit = F.max_pool1d(anchors.float().unsqueeze(1), 2 * radius + 1, stride=1, padding=radius)
    return hit.squeeze(1) > 0


class LocalLeap(BlockDiffusionStrategy):
    name = "localleap"
    description = "LocalLeap: relaxed threshold within a radius of high-confidence anchors"
    Config = LocalLeapConfig
    # `paradecode bench`: Fast-dLLM's thresholds, each with the paper's relaxation (0.9 -> 0.75)
    sweep = [
        {"threshold": t, "relaxed_threshold": round(t - 0.15, 2)} for t in (0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3)
    ]

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        c = self.config
        mask, rows = view.mask, view.rows
        conf = masked_confidence(view.confidence, mask)
        anchors = (conf >= c.threshold) & mask
        near = anchor_neighbourhood(anchors, c.radius)
        counts = torch.zeros(state.batch_size, dtype=torch.long, device=anchors.device)
        counts[to_device(rows, anchors.device)] = anchors.sum(-1)
        state.extras["localleap_anchors"] = counts
        top1 = topk_mask(conf, mask.any(-1))
        bar = torch.where(near, c.relaxed_threshold, c.threshold)
        return (top1 | (conf >= bar)) & mask
