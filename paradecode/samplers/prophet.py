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
from ..interfaces import device_arange, to_device
from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, DiffusionState, RuleState
from . import common
from .prophet_kernel import answer_window_gap

BASES = ("lowconf", "threshold", "credit", "localleap", "learn2pd")
# Progress boundaries of the three stages (hard-coded in the reference's should_early_exit).
STAGE_BOUNDS = (0.33, 0.67)


@dataclass
class ProphetConfig(DiffusionConfig):
    """``base`` decides every step that does not exit, with ``base_options`` (its config fields
    other than the shared gen_length/block_length/temperature/...; a base with ``steps`` runs
    at full steps, ``steps = gen_length``, unless ``base_options`` set it).
    ``constraints``: ``{generation offset: token id}`` written into the canvas before decoding
    and written again after every step (Prophet's ``eval_llada.py`` pins "The answer is" this
    way), so the answer follows a known place. ``answer_start``: offset in the generation of
    the fixed gap window (the reference's ``answer_start_pos``, masked or not); with
    constraints and no ``answer_start`` it is two past the last constrained offset, as the
    reference derives it; None without constraints averages over the first ``answer_length``
    positions still masked (per row, each step). ``max_steps``: the step budget that progress
    is measured against; None takes the base's ``steps`` or else ``gen_length``."""

    base: Literal["lowconf", "threshold", "credit", "localleap", "learn2pd"] = "lowconf"
    base_options: dict[str, Any] = field(default_factory=dict)
    early_threshold: float = 7.5
    mid_threshold: float = 5.0
    late_threshold: float = 2.5
    answer_start: Optional[int] = None
    answer_length: int = 5
    max_steps: Optional[int] = None
    constraints: Optional[dict[int, int]] = None

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
        if self.constraints is not None:
            bad = {k: v for k, v in self.constraints.items() if not 0 <= k < self.gen_length or v < 0}
            if bad or not self.constraints:
                raise ValueError(
                    f"constraints map generation offsets 0 <= offset < gen_length ({self.gen_length}) to token "
                    f"ids >= 0; got {bad or 'an empty dict'}. Pass None for no constraint."
                )

    @property
    def window_start(self) -> Optional[int]:
        """The fixed answer window's offset: ``answer_start``, or two past the last constraint."""
        if self.answer_start is None and self.constraints:
            return max(self.constraints) + 2
        return self.answer_start

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
        try:
            base_config = build_config(base_cls.Config, f"prophet's base_options (base {config.base!r})", options)
        except ValueError as e:  # a value the base refuses: say it came from base_options
            if "base_options" in str(e):
                raise
            raise ValueError(f"prophet's base_options {config.base_options} for base {config.base!r}: {e}") from None
        self.base = base_cls(base_config)
        self.fixed_schedule = self.base.fixed_schedule
        budget = config.max_steps or getattr(base_config, "steps", None) or config.gen_length
        self.step_budget = int(budget)

    @property
    def steps_per_block(self) -> int:
        return self.base.steps_per_block

    # ---- constraints: pinned tokens, written before decoding and after every step -----------------
    def start(self, prompt_ids: torch.Tensor, **context: Any) -> DiffusionState:
        state = super().start(prompt_ids, **context)
        pinned_masks = sorted(k for k, v in (self.config.constraints or {}).items() if v == state.mask_id)
        if pinned_masks:
            raise ValueError(
                f"prophet's constraints pin the mask token ({state.mask_id}) at offsets {pinned_masks}: a constraint "
                "is a token the answer must hold; leave a position out of constraints to let the model decode it."
            )
        self._pin(state)
        return state

    def apply(self, state: DiffusionState, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        committed = super().apply(state, rows, logits)
        self._pin(state)
        return committed

    def _pin(self, state: DiffusionState) -> None:
        """Write the constraints. Their columns never hold a mask, so a step's commits and exit
        fill leave them as they are; only an end-of-text cut (a Learn2PD base) overwrites them,
        and a cut marks its own edit of the canvas. So pinning again after a step changes
        nothing a next step planned during the step's read has seen, and is no edit."""
        for offset, token in (self.config.constraints or {}).items():
            col = state.prompt_length + offset
            if col < state.x.shape[1]:
                state.x[:, col] = token

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
        """(n,) mean top-1 minus top-2 logit over each row's answer window.

        The top-2 search runs over the window's positions alone (each position's gap is its
        own), not over the whole generation: a vocabulary-wide ``topk`` per position is most of
        the rule's device time per step. The mean is taken over the same (n, G) layout as a
        whole-generation gap would be, zeros outside the window, so its value is the same."""
        c = self.config
        gen_logits = view.full_logits[:, view.gen_start - view.full_start :]  # (n, G, V); llada2: the visible part
        start = c.window_start
        if common.sampler_kernels_run(gen_logits):  # two launches on a GPU (prophet_kernel.py)
            G = gen_logits.shape[1]
            canvas = None if start is not None else view.canvas[:, view.gen_start : view.gen_start + G]
            fused = answer_window_gap(gen_logits, c.answer_length, start, canvas, mask_id)
            if fused is not None:
                return fused
        if start is not None:
            window = gen_logits[:, start : start + c.answer_length]  # positions past the generation are left out
            if window.shape[1] == 0:
                return torch.full(gen_logits.shape[:1], float("-inf"), device=gen_logits.device)
            return _top2_gap(window).mean(-1)
        n, G = gen_logits.shape[:2]
        if G == 0:
            return torch.full((n,), float("-inf"), device=gen_logits.device)
        masked = view.canvas[:, view.gen_start : view.gen_start + G] == mask_id
        window = masked & (masked.long().cumsum(-1) <= c.answer_length)
        # The window's columns, in order, padded with G: the first answer_length masked ones.
        k = min(c.answer_length, G)
        cols = device_arange(0, G, masked.device).expand(n, G)
        picked = torch.topk(torch.where(window, cols, G), k, dim=-1, largest=False).values
        inside = picked < G
        picked = picked.clamp(max=G - 1)  # padding reads a real column; its gap is dropped below
        gap = _top2_gap(gen_logits.gather(1, picked[..., None].expand(n, k, gen_logits.shape[-1])))
        gap = torch.where(inside, gap, torch.zeros_like(gap))
        spread = torch.zeros((n, G), dtype=gap.dtype, device=gap.device).scatter_add_(1, picked, gap)
        count = window.sum(-1)
        mean = spread.sum(-1) / count.clamp(min=1)
        return torch.where(count > 0, mean, torch.full_like(mean, float("-inf")))

    def early_exit(self, view: BlockView, state: RuleState) -> Optional[tuple[torch.Tensor, Any]]:
        """Every step: (n,) device flags of the rows whose gap passes the stage's threshold, and
        how to make the generation's predictions that fill their masks. The reference decides
        on the host (``.item()``) before the step's writes; here the decision stays on the
        device and is read with the step's flags, after the writes, so the next step can be
        planned during that read. The predictions are made only once a row stops, from the
        step's own draws (no noise is drawn for them, so without an exit the run equals the
        base's, seed for seed)."""
        c = self.config
        progress = (state.steps + 1) / self.step_budget  # the reference counts steps from 1
        gap = self.answer_gap(view, state.mask_id)
        stop = gap >= c.threshold_at(progress)
        if len(view.rows) == state.batch_size:
            record = gap
        else:
            record = torch.full((state.batch_size,), float("nan"), device=gap.device)
            record[to_device(view.rows, gap.device)] = gap
        state.extras["prophet_gap"] = record  # per step, on the device: read when the trace is
        state.extras["prophet_exit"] = stop.sum()
        # The generation's predictions from this step's own draws, as the reference fills
        # every mask with the step's x0.
        return stop, lambda: view.full_predictions(state, self.config, view.gen_start, confidence=False)[0]


def _top2_gap(logits: torch.Tensor) -> torch.Tensor:
    """(..., V) -> (...): the top-1 minus the top-2 logit (in float32, as the reference)."""
    top2 = torch.topk(logits.float(), 2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def _base_class(name: str) -> type:
    """The base rule's class (imported here, not through the registry: strategies sit below it)."""
    from .credit import CreditDecoding
    from .learn2pd import Learn2PD
    from .localleap import LocalLeap
    from .lowconf import LowConfidence
    from .threshold import ConfidenceThreshold

    classes = {c.name: c for c in (LowConfidence, ConfidenceThreshold, CreditDecoding, LocalLeap, Learn2PD)}
    return classes[name]
