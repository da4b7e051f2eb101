"""Learn2PD (Bao et al., 2025, "Learning to Parallel: Accelerating Diffusion LLMs via
Learnable Parallel Decoding"; ims-kdks/Learning-to-Parallel-Decoding ``generate_l2p_eot``).

Per step, inside the current block:

1. the filter f_theta (``learn2pd_filter.py``) reads the block's confidences and accepts
   the masked positions whose prediction it deems final (sigmoid > ``accept_threshold``);
2. those are committed together with LLaDA's scheduled top-k (``steps`` spread over the
   blocks), so a step commits at least what the baseline would; the block ends when it has
   no mask left.

End-of-Text Prediction (``eot``): once a filter-accepted position predicts end-of-text, it
is committed and everything after it becomes end-of-text; otherwise, if any masked position
of the canvas predicts end-of-text, the sequence is cut after the most confident one. Cut
positions are committed as EOS, and a row stops as soon as no mask is left before its cut.
The reference also drops the cut positions from the sequence (``eot_truncate=True`` hides
them from the attention, which is the same); by default they stay visible as EOS, which is
what a model trained on EOS-padded canvases expects: on the shipped model, hiding them makes
it predict ever shorter answers (see the README's Learn2PD figures).

The filter is loaded from ``filter=`` (a :class:`Learn2PDFilter` or a directory), or from
``<model dir>/learn2pd_filter`` next to the model; ``scripts/train_learn2pd.py`` trains one.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..interfaces import to_device
from . import common
from .base import BlockView, RuleState
from .learn2pd_filter import FILTER_DIRNAME, Learn2PDFilter, find_filter, shipped_filter
from .learn2pd_kernel import end_of_text_cut, filter_accept
from .lowconf import LowConfConfig, LowConfidence, LowConfState


@dataclass
class Learn2PDConfig(LowConfConfig):
    gen_length: int = 256
    block_length: int = 32
    steps: Optional[int] = None  # the top-k schedule's steps; None = gen_length (the paper: 256)
    accept_threshold: float = 0.96
    eot: bool = True  # End-of-Text Prediction
    eot_truncate: bool = False  # True: cut positions also leave the attention (the reference truncates)

    def __post_init__(self) -> None:
        if self.steps is None:
            self.steps = self.gen_length
        super().__post_init__()
        if not 0.0 <= self.accept_threshold <= 1.0:
            raise ValueError(f"accept_threshold must be in [0, 1] (the paper uses 0.96), got {self.accept_threshold}.")

    def validate(self) -> None:
        """``eot_truncate`` shapes End-of-Text Prediction's cut: without ``eot`` there is none."""
        if self.eot_truncate and not self.eot:
            raise ValueError("eot_truncate=True has no effect with eot=False (no end-of-text cut to hide); "
                             "pass eot=True, or leave eot_truncate out.")


@dataclass
class Learn2PDState(LowConfState):
    """Per row, the canvas column after which end-of-text prediction ended the text."""

    cut: Optional[torch.Tensor] = None  # (batch,) long on the device; the canvas length = no cut yet
    # this step's filter verdict, kept from ``select`` for ``end_of_text`` (the same view): one filter run a
    # step; a weak reference, so the view (its logits) is not kept alive past its step
    accepted: Optional[tuple[weakref.ref, torch.Tensor]] = None


class Learn2PD(LowConfidence):
    name = "learn2pd"
    description = "Learn2PD: a learned filter commits predictions it deems final, plus the top-k schedule; End-of-Text Prediction"
    Config = Learn2PDConfig
    fixed_schedule = False
    runtime_options = ("filter",)
    sweep = {"accept_threshold": [0.99, 0.96, 0.9, 0.8, 0.6]}

    @property
    def needs_full_logits(self) -> bool:  # EoTP looks for end-of-text over the whole canvas
        return self.config.eot

    def needs_eos(self) -> bool:
        return super().needs_eos() or self.config.eot

    def setup(self, model: Any, mask_token_id: Optional[int] = None, filter: Any = None, **kw: Any):
        models, context = super().setup(model, mask_token_id=mask_token_id, **kw)
        if filter is None:
            filter = find_filter(model)
        if filter is None:
            filter = self._fallback_filter()
        if isinstance(filter, (str, Path)):
            filter = Learn2PDFilter.from_pretrained(filter)
        if not isinstance(filter, Learn2PDFilter):
            raise ValueError(f"filter must be a Learn2PDFilter or a directory, got {type(filter).__name__}.")
        if filter.block_length != self.config.block_length:
            raise ValueError(
                f"the filter was trained for blocks of {filter.block_length}, but block_length="
                f"{self.config.block_length}; pass block_length={filter.block_length} or train a filter for it."
            )
        self.filter = filter
        return models, context

    def _fallback_filter(self) -> Learn2PDFilter:
        """Without a filter for this model: the one shipped with paradecode for this block
        length, else one that accepts nothing (learn2pd is then its top-k schedule + EoTP)."""
        path = shipped_filter(self.config.block_length)
        if path is not None:
            warnings.warn(
                f"no Learn2PD filter next to this model; using the one shipped with paradecode ({path}), trained "
                f"on another model's trajectories. Train one for your model: scripts/train_learn2pd.py.",
                stacklevel=5,
            )
            return Learn2PDFilter.from_pretrained(path)
        warnings.warn(
            f"no Learn2PD filter for block_length={self.config.block_length} (none next to the model, none "
            f"shipped): the filter accepts nothing, so learn2pd decodes as its top-k schedule (+ EoTP). Train one "
            f"with scripts/train_learn2pd.py and pass filter= or save it as <model dir>/{FILTER_DIRNAME}.",
            stacklevel=5,
        )
        return Learn2PDFilter.rejecting(self.config.block_length)

    def new_state(self, batch_size, mask_id, eos_id, generator, device) -> Learn2PDState:
        if getattr(self, "filter", None) is None:  # built without setup() (a diffusers scheduler)
            self.filter = self._fallback_filter()
        self.filter.to(device)
        return Learn2PDState(batch_size, mask_id, eos_id, generator)

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        scheduled = super().select(view, state)
        accepted = self._accepted(view)
        if isinstance(state, Learn2PDState):
            state.accepted = (weakref.ref(view), accepted)
        return accepted | scheduled

    def _accepted(self, view: BlockView, state: Optional[Learn2PDState] = None) -> torch.Tensor:
        """Positions the filter accepts among the block's masked ones (``state``: reuse the verdict
        ``select`` computed for this same view)."""
        if state is not None and state.accepted is not None and state.accepted[0]() is view:
            return state.accepted[1]
        layer = self.filter.linear
        if layer is not None and common.selection_kernels_run(view.confidence):
            out = filter_accept(view.confidence, layer.weight, layer.bias, self.config.accept_threshold, view.mask)
            if out is not None:
                return out
        return self.filter.accept(view.confidence, self.config.accept_threshold) & view.mask

    def end_of_text(self, view: BlockView, state: Learn2PDState, transfer: torch.Tensor) -> Optional[torch.Tensor]:
        """(n,) canvas column after which each row ends (the canvas width = no cut), kept as the
        smallest cut seen so far per row; None without EoTP."""
        if not self.config.eot or state.eos_id is None:  # sample() checked eos; a scheduler may have none
            return None
        eos = state.eos_id
        L = view.canvas_length
        cols = view.block_columns
        if state.cut is None or state.cut.device != cols.device:
            state.cut = torch.full((state.batch_size,), L, dtype=torch.long, device=cols.device)
        # 1. the filter accepted an end-of-text prediction: the first one in the block;
        # 2. otherwise the most confident end-of-text prediction among the generation's masked
        # positions: those from the earliest current block on (earlier blocks are finished, their
        # masks filled or cut), so only those columns are predicted.
        accepted = self._accepted(view, state)
        lo = int(view.block_start.min())
        masked = view.canvas[:, lo:] == state.mask_id  # the positions the model scored (llada2: up to the block)
        masked[:, : max(0, view.gen_start - lo)] = False  # a mask id inside the prompt is not a place to end
        eot_conf = view.full_token_confidence(state, self.config, lo, eos, masked)
        rows = to_device(view.rows, cols.device)
        if common.sampler_kernels_run(eot_conf):
            cut = end_of_text_cut(eot_conf, accepted, view.x0, cols, eos, lo, L, state.cut, rows)
            if cut is not None:
                return cut
        first = torch.where(accepted & (view.x0 == eos), cols, L).min(-1).values
        best_conf, best = eot_conf.max(-1)
        cut = torch.where(first < L, first, torch.where(best_conf >= 0, best + lo, L))
        cut = torch.minimum(cut, state.cut[rows])
        state.cut[rows] = cut
        return cut  # on the device: the step's one sync reads it
