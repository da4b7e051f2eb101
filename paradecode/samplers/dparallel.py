"""dParallel's decoding rule (``dparallel``): an entropy threshold (Chen et al., 2025, arXiv 2509.26488,
"dParallel: Learnable Parallel Decoding for dLLMs"; reference: github czg1225/dParallel,
``LLaDA/generate.py`` ``get_transfer_index_entropy``, and ``alg="entropy_threshold"`` of its
Dream code).

Inside the current block, every masked position whose predictive entropy is at most
``threshold`` (nats) is committed, and always the single lowest-entropy one, so a step never
stalls; the block ends when it has no mask left. It is Fast-dLLM's threshold rule with the
entropy in place of the top-1 probability. A model distilled with certainty forcing
(``scripts/train_dparallel.py``) is meant to be decoded with it.

What the reference does, and what we follow:

- **Default**: its evaluation scripts pass ``threshold=0.5`` for LLaDA on GSM8K, MATH and
  HumanEval, 0.45 on MBPP (and 0.45 / 0.5 for Dream); we default to 0.5.
- **Bound**: LLaDA's code drops a candidate whose entropy is ``> threshold`` (so ``<=`` is
  committed); its Dream code commits ``< threshold``. We follow LLaDA's (``<=``).
- **Which distribution**: the reference takes the entropy of softmax over the whole
  vocabulary in float64. We take paradecode's usual distribution: the logits the step decides
  on (``logits_eos_inf`` applied) with the mask token excluded, in float32
  (:func:`~paradecode.samplers.eb.token_entropy`, shared with ``eb``). A trained model gives
  the mask token ~0 probability, so the two agree except within float error of the bound.
- **Tokens**: the argmax (``temperature=0``, the reference's setting); above that, LLaDA's
  Gumbel-max sample, while the entropy is read from the clean logits, as in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, RuleState
from .common import threshold_mask
from .eb import token_entropy


@dataclass
class EntropyThresholdConfig(DiffusionConfig):
    """``threshold``: the largest entropy (nats) a position may have to be committed in a step
    beside the lowest-entropy one (dParallel's evaluation: 0.5; 0 decodes one token per step
    unless some are certain)."""

    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if math.isnan(self.threshold) or self.threshold < 0:
            raise ValueError(
                f"threshold must be >= 0 nats (dParallel uses 0.5; 0 commits one token per step), got {self.threshold}."
            )


def entropy_threshold_mask(entropy: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n, W) bool: the masked positions with entropy <= ``threshold``, plus each row's
    lowest-entropy masked position (the threshold rule on ``-entropy``, so ties and the
    at-least-one guarantee are exactly those of ``threshold``)."""
    return threshold_mask(-entropy.float(), mask, -float(threshold))


class EntropyThreshold(BlockDiffusionStrategy):
    name = "dparallel"
    description = ("dParallel: commit every masked block position whose entropy is at most a threshold "
                   "(at least the lowest-entropy one)")
    Config = EntropyThresholdConfig
    # `paradecode bench`: our spread around the reference's 0.45 / 0.5 (the paper reports those only)
    sweep = {"threshold": [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2]}

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        entropy = token_entropy(view.logits, state.mask_id)
        return entropy_threshold_mask(entropy, view.mask, self.config.threshold)
