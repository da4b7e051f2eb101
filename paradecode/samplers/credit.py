"""CreditDecoding (Wang et al., 2025, arXiv 2510.06133, "CreditDecoding: Accelerating Parallel Decoding in
Diffusion Large Language Models with Trace Credits"; reference: inclusionAI/dInfer
``CreditThresholdParallelDecoder``).

Each masked position keeps a credit per vocabulary entry: every step it decays by
``decay_beta`` and the current top-1 token gains ``p_top1 ** boost_gamma``. The step decides on
fused logits ``logits + credit_alpha * log(1 + credit)`` with dInfer's threshold rule (the
threshold, or every candidate within 1e-5 of the best when none passes it).
Credit lives per row and block, and is reset when the row finishes its block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..interfaces import to_device
from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, RuleState
from . import common
from .common import masked_confidence
from .confidence_kernel import top1_confidence
from .credit_kernel import credit_kernel_applies, credit_step


@dataclass
class CreditConfig(DiffusionConfig):
    threshold: float = 0.9
    credit_alpha: float = 0.7
    boost_gamma: float = 0.2
    decay_beta: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.credit_alpha < 0:
            raise ValueError(f"credit_alpha must be >= 0 (0 turns credit off), got {self.credit_alpha}.")
        if self.boost_gamma < 0:
            raise ValueError(f"boost_gamma must be >= 0, got {self.boost_gamma}.")
        if not 0 <= self.decay_beta <= 1:
            raise ValueError(f"decay_beta must be in [0, 1], got {self.decay_beta}.")

    def validate(self) -> None:
        """credit_alpha=0 turns credit off: boost_gamma and decay_beta would then do nothing."""
        if self.credit_alpha == 0 and (self.boost_gamma != 0.2 or self.decay_beta != 0.8):
            raise ValueError(
                f"credit_alpha=0 turns credit off, so boost_gamma ({self.boost_gamma}) and decay_beta "
                f"({self.decay_beta}) have no effect; leave them at their defaults or set credit_alpha > 0."
            )


TIE = 1e-5  # dInfer's margin below the best confidence


def credit_threshold_mask(confidence: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """dInfer's threshold rule (``get_transfer_index_threshold``): commit every masked position
    with confidence >= min(threshold, best - 1e-5). When none passes the threshold this commits
    the best one and every candidate within 1e-5 of it (Fast-dLLM's rule commits only the top one)."""
    best = confidence.max(-1, keepdim=True).values
    bar = torch.clamp(best - TIE, min=-1000.0, max=threshold)
    return (confidence >= bar) & mask


@dataclass
class CreditState(RuleState):
    """Per row and block position, the accumulated credit of each vocabulary entry."""

    credit: Optional[torch.Tensor] = None  # (batch, block_length, vocab) float32, made at the first step


class CreditDecoding(BlockDiffusionStrategy):
    name = "credit"
    description = "CreditDecoding: threshold rule on logits fused with a decaying per-token trace credit"
    Config = CreditConfig
    # `paradecode bench`: the threshold sweep of Fast-dLLM's rule, so each point has its pair
    sweep = {"threshold": [0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1]}

    def new_state(self, batch_size, mask_id, eos_id, generator, device) -> CreditState:
        return CreditState(batch_size, mask_id, eos_id, generator)

    def adjust_logits(self, view: BlockView, state: CreditState, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        credit = state.credit
        if credit is None:
            B, V = state.batch_size, logits.shape[-1]
            credit = torch.zeros(B, c.block_length, V, dtype=torch.float32, device=logits.device)
            state.credit = credit
        mask = view.mask
        dev_rows = to_device(view.rows, credit.device)
        if common.sampler_kernels_run(logits) and credit_kernel_applies(logits, credit):
            top = top1_confidence(logits)  # the top-1 and its probability in one pass (credit_kernel.py)
            if top is not None:
                boost = top[1].float().pow(c.boost_gamma) * mask
                return credit_step(logits, credit, dev_rows, top[0], boost, c.decay_beta, c.credit_alpha)
        row_credit = credit[dev_rows] * c.decay_beta
        top_p, top_i = torch.softmax(logits.float(), dim=-1).max(dim=-1)
        boost = top_p.pow(c.boost_gamma) * mask  # only masked positions gather credit
        row_credit.scatter_add_(-1, top_i.unsqueeze(-1), boost.unsqueeze(-1))
        credit[dev_rows] = row_credit
        return logits + c.credit_alpha * torch.log1p(row_credit)

    def select(self, view: BlockView, state: CreditState) -> torch.Tensor:
        return credit_threshold_mask(masked_confidence(view.confidence, view.mask), view.mask, self.config.threshold)

    def on_block_end(self, state: CreditState, rows: torch.Tensor) -> None:
        credit = state.credit
        if credit is not None:
            # index_fill_ takes the value as a kernel argument: ``credit[idx] = 0.0`` showed up as a
            # CUDA sync per call on an H200 (sampler_ops.py --cuda-syncs --sites).
            credit.index_fill_(0, to_device(rows, credit.device), 0.0)
