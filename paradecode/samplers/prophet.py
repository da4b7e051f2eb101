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
from typing import Any, Literal, Optional

import torch

from ..config import build_config
from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, RuleState
from .common import add_gumbel_noise, forbid_token

BASES = ("lowconf", "threshold", "credit", "localleap", "learn2pd")
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

    base: Literal["lowconf", "threshold", "credit", "localleap", "learn2pd"] = "lowconf"
    base_options: dict[str, Any] = field(default_factory=dict)
    early_threshold: float = 7.5
    mid_threshold: float = 5.0
    late_threshold: float = 2.5
    answer_start: Optional[int] = None
    answer_length: int = 5
    max_steps: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base not in BASES:
            own = " (prophet cannot be its own base)" if self.base == "prophet" else ""
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}{own}.")
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


class Prophet(BlockDiffusionStrategy):
    name = "prophet"
    description = "Prophet: early-commit all remaining masks once the top-2 logit gap passes a stage threshold"
    Config = ProphetConfig
    needs_full_logits = True  # the exit fills later blocks, and the window may lie outside the block

    def __init__(self, config: ProphetConfig) -> None:
        super().__init__(config)
        base_cls = _base_class(config.base)
        options = {f.name: getattr(config, f.name) for f in dataclasses.fields(DiffusionConfig)}
        if "steps" in {f.name for f in dataclasses.fields(base_cls.Config)}:
            options["steps"] = config.gen_length  # full steps, as Prophet's evaluation runs its base
        options.update(config.base_options)
        base_config = build_config(base_cls.Config, f"prophet's base {config.base!r}", options)
        self.base = base_cls(base_config)
        self.fixed_schedule = self.base.fixed_schedule
        budget = config.max_steps or getattr(base_config, "steps", None) or config.gen_length
        self.step_budget = int(budget)

    @property
    def steps_per_block(self) -> int:
        return self.base.steps_per_block

    def setup(self, model: Any, **kw: Any) -> tuple[dict, dict]:
        self.base.setup(model, **kw)  # the base's own checks and runtime options (a Learn2PD filter)
        return super().setup(model, **kw)

    def needs_eos(self) -> bool:
        return super().needs_eos() or self.base.needs_eos()

    # ---- delegated to the base strategy (Prophet's state is the base's) -------------------------
    def new_state(self, batch_size, mask_id, eos_id, generator, device) -> RuleState:
        return self.base.new_state(batch_size, mask_id, eos_id, generator, device)

    def on_block_end(self, state: RuleState, rows: torch.Tensor) -> None:
        self.base.on_block_end(state, rows)

    def adjust_logits(self, view: BlockView, state: RuleState, logits: torch.Tensor) -> torch.Tensor:
        return self.base.adjust_logits(view, state, logits)

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        return self.base.select(view, state)

    def end_of_text(self, view: BlockView, state: RuleState, transfer: torch.Tensor) -> Optional[torch.Tensor]:
        return self.base.end_of_text(view, state, transfer)

    # ---- Prophet's own rule ---------------------------------------------------------------------
    def answer_gap(self, view: BlockView, mask_id: int) -> torch.Tensor:
        """(n,) mean top-1 minus top-2 logit over each row's answer window."""
        c = self.config
        P, full_logits = view.gen_start, view.full_logits
        top2 = torch.topk(full_logits[:, P:].float(), 2, dim=-1).values
        gap = top2[..., 0] - top2[..., 1]  # (n, gen_length)
        if c.answer_start is not None:
            return gap[:, c.answer_start : c.answer_start + c.answer_length].mean(-1)
        masked = view.canvas[:, P : P + gap.shape[1]] == mask_id  # llada2: the visible part
        window = masked & (masked.long().cumsum(-1) <= c.answer_length)
        count = window.sum(-1)
        mean = (gap * window).sum(-1) / count.clamp(min=1)
        return torch.where(count > 0, mean, torch.full_like(mean, float("-inf")))

    def early_exit(self, view: BlockView, state: RuleState) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        rows, full_logits = view.rows, view.full_logits
        progress = (state.steps + 1) / self.step_budget  # the reference counts steps from 1
        gap = self.answer_gap(view, state.mask_id).cpu()  # the decision is taken on the host, as the reference's .item()
        stop = gap >= c.threshold_at(progress)
        record = torch.full((state.batch_size,), float("nan"))
        record[rows] = gap
        state.extras["prophet_gap"] = record
        n_stop = int(stop.sum())
        state.extras["prophet_exit"] = n_stop
        if n_stop == 0:
            return None  # no noise drawn: without an exit the run equals the base's, seed for seed
        return stop, self._argmax(view, state)

    def _argmax(self, view: BlockView, state: RuleState) -> torch.Tensor:
        """The generation's predictions, as the step's own x0 (Gumbel noise at temperature > 0)."""
        gen_logits = forbid_token(view.full_logits[:, view.gen_start :], state.mask_id)
        if self.config.logits_eos_inf:
            gen_logits = forbid_token(gen_logits, state.eos_id)
        return add_gumbel_noise(gen_logits, self.config.temperature, state.generator).argmax(-1)


def _base_class(name: str) -> type:
    """The base rule's class (imported here, not through the registry: strategies sit below it)."""
    from .credit import CreditDecoding
    from .learn2pd import Learn2PD
    from .localleap import LocalLeap
    from .lowconf import LowConfidence
    from .threshold import ConfidenceThreshold

    classes = {c.name: c for c in (LowConfidence, ConfidenceThreshold, CreditDecoding, LocalLeap, Learn2PD)}
    return classes[name]
