"""Prophet early-commit decoding (Li et al., 2025, arXiv 2508.19982, "Diffusion Language Models Know the Answer
Before Decoding"; reference: pixeli99/Prophet ``generate_earlyexit.py``).

After each forward, the gap between the top-1 and top-2 logits is averaged over an answer
window; when it reaches the threshold of the current progress stage (7.5 / 5.0 / 2.5 for
progress = step / max_steps below 0.33 / 0.67 / above), every remaining mask of the whole
generation takes its argmax and the row stops. Otherwise the base strategy decides the step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..registry import build_config, get_strategy_class, register
from .base import BlockDiffusionStrategy, DiffusionConfig, DiffusionState
from .common import add_gumbel_noise, forbid_token

# Progress boundaries of the three stages (hard-coded in the reference's should_early_exit).
STAGE_BOUNDS = (0.33, 0.67)


@dataclass
class ProphetConfig(DiffusionConfig):
    """``base`` decides every step that does not exit, with ``base_options`` (its config fields
    other than the shared gen_length/block_length/temperature/...; a base with ``steps`` runs
    at full steps, ``steps = gen_length``, unless ``base_options`` set it).
    ``answer_start``: offset in the generation of the fixed gap window (the reference's
    ``answer_start_pos``, masked or not); None averages over the first ``answer_length``
    positions still masked (per row, each step). ``max_steps``: the step budget that
    progress is measured against; None takes the base's ``steps`` or else ``gen_length``."""

    base: str = "lowconf"
    base_options: dict[str, Any] = field(default_factory=dict)
    early_threshold: float = 7.5
    mid_threshold: float = 5.0
    late_threshold: float = 2.5
    answer_start: Optional[int] = None
    answer_length: int = 5
    max_steps: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base == "prophet":
            raise ValueError("prophet cannot be its own base; use base='lowconf', 'threshold', ...")
        if not isinstance(self.base_options, dict):
            raise ValueError(f"base_options must be a dict of the base's options, got {type(self.base_options).__name__}.")
        shared = sorted(set(self.base_options) & {f.name for f in dataclasses.fields(DiffusionConfig)})
        if shared:
            raise ValueError(f"give {shared} to prophet itself, not in base_options (they are shared with the base).")
        if self.answer_length <= 0:
            raise ValueError(f"answer_length must be positive, got {self.answer_length}.")
        if self.answer_start is not None and not 0 <= self.answer_start < self.gen_length:
            raise ValueError(
                f"answer_start ({self.answer_start}) is an offset into the generation: use 0 <= answer_start "
                f"< gen_length ({self.gen_length}), or None for the first masked positions."
            )
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}.")

    def threshold_at(self, progress: float) -> float:
        if progress < STAGE_BOUNDS[0]:
            return self.early_threshold
        if progress < STAGE_BOUNDS[1]:
            return self.mid_threshold
        return self.late_threshold


@register("prophet")
class Prophet(BlockDiffusionStrategy):
    description = "Prophet: early-commit all remaining masks once the top-2 logit gap passes a stage threshold"
    Config = ProphetConfig
    needs_full_logits = True  # the exit fills later blocks, and the window may lie outside the block

    @staticmethod
    def sweep(gen_length: int, block_length: int) -> list[dict[str, Any]]:
        """`paradecode bench`: the paper's thresholds over the lowconf base's steps (full,
        1/2, 1/4 ...), and over Fast-dLLM's threshold rule at 0.9 and 0.7."""
        from ..bench.runner import halving_steps

        over_steps = [{"base_options": s} for s in halving_steps(gen_length, block_length)]
        return over_steps + [{"base": "threshold", "base_options": {"threshold": t}} for t in (0.9, 0.7)]

    def __init__(self, config: ProphetConfig) -> None:
        super().__init__(config)
        base_cls = get_strategy_class(config.base)
        if not issubclass(base_cls, BlockDiffusionStrategy):
            raise ValueError(f"prophet's base must be a diffusion-LM strategy; {config.base!r} is not.")
        options = {f.name: getattr(config, f.name) for f in dataclasses.fields(DiffusionConfig)}
        if "steps" in {f.name for f in dataclasses.fields(base_cls.Config)}:
            options["steps"] = config.gen_length  # full steps, as Prophet's evaluation runs its base
        options.update(config.base_options)
        base_config = build_config(base_cls.Config, f"prophet's base {config.base!r}", options)
        self.base = base_cls(base_config)
        self.fixed_schedule = self.base.fixed_schedule
        budget = config.max_steps or getattr(base_config, "steps", None) or config.gen_length
        self.max_steps = int(budget)

    @property
    def steps_per_block(self) -> int:
        return self.base.steps_per_block

    # ---- delegated to the base strategy ---------------------------------------------------------
    def on_start(self, state: DiffusionState) -> None:
        self.base.on_start(state)

    def on_block_end(self, state: DiffusionState, rows: torch.Tensor) -> None:
        self.base.on_block_end(state, rows)

    def adjust_logits(self, state, rows, logits, mask) -> torch.Tensor:
        return self.base.adjust_logits(state, rows, logits, mask)

    def select(self, state, rows, logits, x0, confidence, mask, full_logits) -> torch.Tensor:
        return self.base.select(state, rows, logits, x0, confidence, mask, full_logits)

    # ---- Prophet's own rule ---------------------------------------------------------------------
    def answer_gap(self, state: DiffusionState, rows: torch.Tensor, full_logits: torch.Tensor) -> torch.Tensor:
        """(len(rows),) mean top-1 minus top-2 logit over each row's answer window."""
        c = self.config
        P = state.prompt_length
        top2 = torch.topk(full_logits[:, P:].float(), 2, dim=-1).values
        gap = top2[..., 0] - top2[..., 1]  # (n, gen_length)
        if c.answer_start is not None:
            return gap[:, c.answer_start : c.answer_start + c.answer_length].mean(-1)
        masked = state.x[rows.to(state.x.device), P : P + gap.shape[1]] == state.mask_id  # llada2: the visible part
        window = masked & (masked.long().cumsum(-1) <= c.answer_length)
        count = window.sum(-1)
        mean = (gap * window).sum(-1) / count.clamp(min=1)
        return torch.where(count > 0, mean, torch.full_like(mean, float("-inf")))

    def early_exit(self, state, rows, full_logits) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        progress = (state.steps + 1) / self.max_steps  # the reference counts steps from 1
        gap = self.answer_gap(state, rows, full_logits).cpu()  # the decision is taken on the host, as the reference's .item()
        stop = gap >= c.threshold_at(progress)
        record = torch.full((state.batch_size,), float("nan"))
        record[rows] = gap
        state.extras["prophet_gap"] = record
        inner = self.base.early_exit(state, rows, full_logits)
        if inner is not None:  # a base that stops rows itself (end-of-text) keeps its own fill
            inner_stop, inner_tokens = inner
            state.extras["prophet_exit"] = int(stop.sum())
            return stop.to(inner_stop.device) | inner_stop, torch.where(inner_stop[:, None], inner_tokens, self._argmax(state, full_logits))
        n_stop = int(stop.sum())
        state.extras["prophet_exit"] = n_stop
        if n_stop == 0:
            return None  # no noise drawn: without an exit the run equals the base's, seed for seed
        return stop, self._argmax(state, full_logits)

    def _argmax(self, state: DiffusionState, full_logits: torch.Tensor) -> torch.Tensor:
        """The generation's predictions, as the step's own x0 (Gumbel noise at temperature > 0)."""
        gen_logits = forbid_token(full_logits[:, state.prompt_length :], state.mask_id)
        if self.config.logits_eos_inf:
            gen_logits = forbid_token(gen_logits, state.eos_id)
        return add_gumbel_noise(gen_logits, self.config.temperature, state.generator).argmax(-1)
