"""EB-Sampler: entropy-bounded unmasking (Ben-Hamu et al., 2025, arXiv 2505.24857, "Accelerated
Sampling from Masked Diffusion Models via Entropy Bounded Unmasking"; references: SGLang's
``EBSampling`` in ``sglang/srt/dllm/algorithm/eb_sampling.py`` and diffusers 0.42's
``EntropyBoundScheduler``).

Each step sorts the block's masked positions by the entropy of their predictive distribution,
ascending, and commits the k lowest with the largest k such that the entropies of the first
k - 1 sum to at most ``gamma``: ``sum_{i<=k} H_i - max_{i<=k} H_i <= gamma`` (the paper's bound
on the joint dependence of the tokens committed together). The lowest-entropy position is
always committed, so a step never stalls. Entropies are >= 0, so the accepted set is a prefix.

What the references do, and what we follow:

- **The bound**: both references accept the j-th sorted position when the entropies *before*
  it sum to ``<= gamma`` (inclusive; the candidate's own entropy is not counted). So does this
  rule. (The candidate's entropy is not in the sum: ``gamma = 0`` still commits one token.)
  SGLang sums the preceding entropies (its current code: a cumulative sum of all but the
  last; its earlier code: a Python float loop); diffusers subtracts the candidate from the
  inclusive cumulative sum. These agree in exact arithmetic but may round differently when a
  sum lies within float error of ``gamma``; we sum the preceding entropies, as SGLang does,
  and compare in float32 (``gamma`` rounded to float32, as a tensor comparison in both
  references does; SGLang's earlier Python loop compared in float64).
- **Which positions**: SGLang ranks the block's masked positions only; diffusers'
  scheduler is written for a uniform-noise model (no mask token) and ranks every position of
  the block, re-noising the rest. Ours is a masked-diffusion rule: masked positions only, as
  SGLang. On a fully masked block the two rank the same set.
- **Which distribution**: SGLang takes the entropy of the model's clean softmax, with the mask
  token suppressed (current code; its earlier code left it in), and commits the argmax.
  diffusers divides the logits by a temperature annealed from ``t_max=0.8`` to ``t_min=0.4``
  over the steps and uses that distribution both to sample candidates and for the entropy.
  We follow SGLang: the entropy of softmax(logits) over the logits the step decides on
  (``logits_eos_inf`` applied, the mask token excluded), in float32 as both references compute
  it. Tokens are paradecode's usual prediction (argmax at ``temperature=0``, which is SGLang's;
  LLaDA's Gumbel-max sample above it), so the bound never depends on the sampling noise.
- **Default bound**: SGLang's current ``gamma`` default is 0.15 (its earlier code: 0.0);
  diffusers' ``entropy_bound`` default is 0.1. We take SGLang's 0.15: it is the reference for
  masked diffusion LMs, the family this rule serves.
- **Ties**: both references sort without a stable order; we sort stably (equal entropies:
  lower column first), so the result is deterministic.

Special cases (tested): ``gamma = 0`` commits all positions of exactly zero entropy plus one
more, so one token per step whenever no masked position is certain in float32; a
``gamma`` at or above the block's total entropy commits the whole block in one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, RuleState
from . import common
from .common import forbid_token
from .confidence_kernel import softmax_entropy


@dataclass
class EBConfig(DiffusionConfig):
    """``gamma``: the entropy budget of one step (nats); 0 decodes one token per step, larger
    values commit more tokens per step."""

    gamma: float = 0.15

    def __post_init__(self) -> None:
        super().__post_init__()
        if math.isnan(self.gamma) or self.gamma < 0:
            raise ValueError(f"gamma must be >= 0 (SGLang's default is 0.15; 0 commits one token per step), got {self.gamma}.")


def token_entropy(logits: torch.Tensor, mask_id: Optional[int] = None) -> torch.Tensor:
    """(..., V) logits -> (...) float32 entropy (nats) of softmax(logits), ``mask_id`` excluded.

    Excluded and -inf logits have probability 0 and add nothing (0 * log 0 is taken as 0,
    not NaN). On a GPU one Triton pass per vocabulary chunk gives it
    (:func:`~paradecode.samplers.confidence_kernel.softmax_entropy`, float64 sums: equal to this
    float32 path to float32 rounding) instead of ~6 passes over a float32 copy."""
    if common.sampler_kernels_run(logits):
        fused = softmax_entropy(logits, mask_id)
        if fused is not None:
            return fused
    logp = torch.log_softmax(forbid_token(logits, mask_id).float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def entropy_bound_mask(entropy: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """(n, W) bool: per row, the masked positions EB-Sampler commits (see the module docstring).

    Sorted ascending (stably), the j-th masked position is taken when the masked entropies
    before it sum to <= ``gamma``; the first always is. One sort for the batch, no host sync.
    """
    h = torch.where(mask, entropy, torch.full_like(entropy, math.inf))
    sorted_h, order = torch.sort(h, dim=-1, stable=True)
    live = torch.isfinite(sorted_h)  # the masked positions come first
    summed = torch.where(live, sorted_h, torch.zeros_like(sorted_h)).cumsum(-1)
    before = torch.cat([torch.zeros_like(summed[:, :1]), summed[:, :-1]], dim=-1)
    take = live & (before <= gamma)
    take[:, 0] = live[:, 0]
    return torch.zeros_like(take).scatter(-1, order, take)


class EntropyBounded(BlockDiffusionStrategy):
    name = "eb"
    description = "EB-Sampler: commit the lowest-entropy masked positions while their summed entropy stays within gamma"
    Config = EBConfig
    # `paradecode bench`: our spread of budgets (the paper sweeps gamma; these values are not its own)
    sweep = {"gamma": [0.0, 0.01, 0.05, 0.15, 0.5, 1.0, 2.0]}

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        entropy = token_entropy(view.logits, state.mask_id)
        return entropy_bound_mask(entropy, view.mask, self.config.gamma)
