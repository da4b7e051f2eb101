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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..registry import register
from .base import DiffusionState
from .common import masked_confidence, predict, topk_mask
from .learn2pd_filter import FILTER_DIRNAME, Learn2PDFilter, find_filter, shipped_filter
from .lowconf import LowConfConfig, LowConfidence


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


@register("learn2pd")
class Learn2PD(LowConfidence):
    description = "Learn2PD: a learned filter commits predictions it deems final, plus the top-k schedule; End-of-Text Prediction"
    Config = Learn2PDConfig
    fixed_schedule = False
    runtime_options = ("filter",)
    sweep = {"accept_threshold": [0.99, 0.96, 0.9, 0.8, 0.6]}

    @property
    def needs_full_logits(self) -> bool:  # EoTP looks for end-of-text over the whole canvas
        return self.config.eot

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
        if self.config.eot and context.get("eos_id") is None:
            raise ValueError("eot=True needs the model config's eos_token_id; pass eot=False or set it.")
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

    def on_start(self, state: DiffusionState) -> None:
        super().on_start(state)
        if getattr(self, "filter", None) is None:  # built without setup() (diffusers scheduler)
            self.filter = self._fallback_filter()
        self.filter.to(state.x.device)
        state.memo["cut"] = torch.full((state.batch_size,), state.x.shape[1], dtype=torch.long)

    def commit(self, state: DiffusionState, logits: torch.Tensor) -> torch.Tensor:
        committed = super().commit(state, logits)
        filled = state.memo.pop("_cut_filled", None)  # masks turned into end-of-text by a cut
        return committed if filled is None else committed + filled

    def select(self, state, rows, logits, x0, confidence, mask, full_logits) -> torch.Tensor:
        scheduled = super().select(state, rows, logits, x0, confidence, mask, full_logits)
        accepted = self.filter.accept(confidence, self.config.accept_threshold) & mask
        if self.config.eot and state.eos_id is not None:  # sample() checked eos; a scheduler may have none
            state.memo["_cut"] = self._end_of_text(state, rows, x0, accepted, full_logits)
        return accepted | scheduled

    def _end_of_text(self, state, rows, x0, accepted, full_logits) -> torch.Tensor:
        """(len(rows),) canvas column after which each row ends (L = no cut)."""
        L, eos = state.x.shape[1], state.eos_id
        cols = self.block_columns(state, rows)
        # 1. the filter accepted an end-of-text prediction: the first one in the block
        hit = accepted & (x0 == eos)
        first = torch.where(hit, cols, L).min(-1).values
        # 2. otherwise the most confident end-of-text prediction among all masked positions
        c = self.config
        x_all, conf_all = predict(full_logits, c.temperature, c.remasking, state.generator, state.mask_id)
        # the positions the model scored (LLaDA2's layout shows only the canvas up to the block)
        masked = state.x[rows.to(state.x.device), : full_logits.shape[1]] == state.mask_id
        eot_conf = torch.where(masked & (x_all == eos), conf_all, torch.full_like(conf_all, -1.0))
        best_conf, best = eot_conf.max(-1)
        return torch.where(first < L, first, torch.where(best_conf >= 0, best, L))

    def advance(self, state: DiffusionState, rows: torch.Tensor, still_masked: torch.Tensor) -> None:
        if "_cut" in state.memo:
            still_masked = self._apply_cut(state, rows, still_masked)
        super().advance(state, rows, still_masked)
        self._skip_finished_blocks(state, rows)

    def _apply_cut(self, state, rows, still_masked) -> torch.Tensor:
        cut = state.memo.pop("_cut").cpu()
        cut = torch.minimum(cut, state.memo["cut"][rows])
        state.memo["cut"][rows] = cut
        if bool((cut >= state.x.shape[1]).all()):
            return still_masked
        L, dev = state.x.shape[1], state.x.device
        after = torch.arange(L, device=dev)[None, :] > cut.to(dev)[:, None]
        dev_rows = rows.to(dev)
        x = state.x[dev_rows]
        filled = torch.zeros(state.batch_size, dtype=torch.long, device=dev)
        filled[dev_rows] = (after & (x == state.mask_id)).sum(-1)
        state.memo["_cut_filled"] = filled
        state.x[dev_rows] = torch.where(after, torch.full_like(x, state.eos_id), x)
        changed = (after & (x != state.eos_id))[:, state.origin :]
        cs = state.commit_step[dev_rows]
        state.commit_step[dev_rows] = torch.where(changed, state.steps - 1, cs)
        if self.config.eot_truncate:
            if state.attention_mask is None:
                state.attention_mask = torch.ones_like(state.x)
            am = state.attention_mask[dev_rows]
            state.attention_mask[dev_rows] = torch.where(after, torch.zeros_like(am), am)
        return still_masked & ~after.gather(1, self.block_columns(state, rows))

    def _skip_finished_blocks(self, state: DiffusionState, rows: torch.Tensor) -> None:
        """Rows whose next blocks hold no mask (cut by end-of-text) skip them: they are done."""
        nb, bl = state.num_blocks, self.config.block_length
        moved = rows[(state.step_in_block[rows] == 0) & (state.block[rows] < nb)]
        if len(moved) == 0:
            return
        gen = state.x[moved.to(state.x.device), state.origin :] == state.mask_id
        has_mask = gen.view(len(moved), nb, bl).any(-1).cpu()  # (rows, blocks)
        for i, r in enumerate(moved.tolist()):
            b = int(state.block[r])
            while b < nb and not bool(has_mask[i, b]):
                b += 1
            state.block[r] = b
