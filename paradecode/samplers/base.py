"""The semi-autoregressive block machinery shared by every diffusion-LM strategy.

A canvas is ``[left-padded prompt | gen_length masks]``; generation is split into blocks
of ``block_length``. Each row advances through blocks on its own (rows finish blocks at
different steps under threshold rules), and finished rows leave the batch that is fed to
the model. A subclass only says which masked positions of the current block to commit
(:meth:`BlockDiffusionStrategy.select`), from the block's logits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from ..loop import Request, Strategy
from ..models.hf import HFDiffusionAdapter, resolve_mask_token_id
from .common import demote_tokens, forbid_token, predict

__all__ = ["DiffusionConfig", "DiffusionState", "BlockDiffusionStrategy"]

REMASKING = ("low_confidence", "random")


@dataclass
class DiffusionConfig:
    """Options every diffusion-LM strategy takes (LLaDA ``generate`` defaults)."""

    gen_length: int = 128
    block_length: int = 128
    temperature: float = 0.0
    remasking: str = "low_confidence"
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False  # LLaDA: never predict EOS (the model's eos_token_id)
    confidence_eos_eot_inf: bool = False  # LLaDA: commit EOS / EOT predictions last
    eot_token_id: Optional[int] = None  # LLaDA-8B-Instruct's <|eot_id|> is 126348

    def __post_init__(self) -> None:
        if self.gen_length <= 0 or self.block_length <= 0:
            raise ValueError(f"gen_length ({self.gen_length}) and block_length ({self.block_length}) must be positive.")
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length ({self.gen_length}) must be a multiple of block_length ({self.block_length}); "
                f"e.g. gen_length={self.block_length * max(1, round(self.gen_length / self.block_length))}."
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking must be one of {REMASKING}, got {self.remasking!r}.")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}.")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length


@dataclass
class DiffusionState:
    """Per-batch decoding state. Row bookkeeping (block, step) lives on the CPU so the
    loop needs no device sync to know what to feed next."""

    x: torch.Tensor  # (B, L) canvas
    prompt_length: int  # column where generation starts (prompts are left-padded)
    mask_id: int
    eos_id: Optional[int]
    attention_mask: Optional[torch.Tensor]  # (B, L) 1 = real token, or None without padding
    block: torch.Tensor  # (B,) CPU long, current block per row (num_blocks = finished)
    step_in_block: torch.Tensor  # (B,) CPU long
    steps: int = 0  # forwards so far (global, 0-based count of finished steps)
    generator: Optional[torch.Generator] = None
    commit_step: Optional[torch.Tensor] = None  # (B, gen_length) step at which each token was committed
    extras: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)  # strategy-specific per-sequence state

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    def active_rows(self, num_blocks: int) -> torch.Tensor:
        return torch.nonzero(self.block < num_blocks).flatten()


class BlockDiffusionStrategy(Strategy[DiffusionState]):
    """Semi-autoregressive block decoding; subclasses implement :meth:`select`.

    ``fixed_schedule`` strategies (LLaDA's) finish a block after a known number of steps,
    so no device sync is needed to advance; others finish a block when it has no mask left.
    """

    fixed_schedule: bool = False
    needs_full_logits: bool = False  # True: commit() gets logits of the whole canvas too

    # ---- setup -------------------------------------------------------------------------------
    def setup(self, model: Any, mask_token_id: Optional[int] = None, **_: Any) -> tuple[dict, dict]:
        if not callable(model):
            raise ValueError(f"model must be callable (a module or function), got {type(model).__name__}.")
        if isinstance(model, nn.Module) and not hasattr(model, "supports_cache"):
            model = HFDiffusionAdapter(model, mask_token_id=mask_token_id)
        mask_id = resolve_mask_token_id(model, None, mask_token_id)
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
        if pad_id is None or pad_id == mask_id:
            pad_id = 0 if mask_id != 0 else 1
        eos_id = getattr(getattr(model, "config", None), "eos_token_id", None)
        if isinstance(eos_id, (list, tuple)):
            eos_id = eos_id[0] if eos_id else None
        if (self.config.logits_eos_inf or self.config.confidence_eos_eot_inf) and eos_id is None:
            raise ValueError("logits_eos_inf / confidence_eos_eot_inf need the model config's eos_token_id.")
        context = {"mask_id": mask_id, "pad_id": int(pad_id), "eos_id": eos_id}
        return {"model": model}, context

    # ---- start -------------------------------------------------------------------------------
    def start(
        self,
        prompt_ids: torch.Tensor,
        *,
        mask_id: int,
        eos_id: Optional[int] = None,
        attention_mask: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        **_: Any,
    ) -> DiffusionState:
        c = self.config
        B, P = prompt_ids.shape
        x = torch.full((B, P + c.gen_length), mask_id, dtype=torch.long, device=prompt_ids.device)
        x[:, :P] = prompt_ids
        if attention_mask is not None:
            ones = torch.ones(B, c.gen_length, dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat([attention_mask, ones], dim=1)
        state = DiffusionState(
            x=x,
            prompt_length=P,
            mask_id=mask_id,
            eos_id=eos_id,
            attention_mask=attention_mask,
            block=torch.zeros(B, dtype=torch.long),
            step_in_block=torch.zeros(B, dtype=torch.long),
            generator=generator,
            commit_step=torch.full((B, c.gen_length), -1, dtype=torch.long, device=x.device),
        )
        self.on_start(state)
        return state

    def on_start(self, state: DiffusionState) -> None:
        """Hook for per-sequence state (credit history, schedules)."""

    # ---- geometry ----------------------------------------------------------------------------
    def block_columns(self, state: DiffusionState, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), block_length) canvas columns of each row's current block."""
        bl = self.config.block_length
        start = state.prompt_length + state.block[rows] * bl
        cols = start[:, None] + torch.arange(bl)[None, :]
        return cols.to(state.x.device)

    def _shared_block(self, state: DiffusionState, rows: torch.Tensor) -> Optional[int]:
        blocks = state.block[rows]
        return int(blocks[0]) if bool((blocks == blocks[0]).all()) else None

    # ---- propose -------------------------------------------------------------------------------
    def propose(self, state: DiffusionState) -> Request:
        rows = state.active_rows(self.config.num_blocks)
        x = state.x[rows] if len(rows) < state.batch_size else state.x
        am = state.attention_mask
        if am is not None and len(rows) < state.batch_size:
            am = am[rows]
        if self.config.cfg_scale > 0:
            # LLaDA's unsupervised CFG: a second pass with the prompt masked out.
            un_x = x.clone()
            un_x[:, : state.prompt_length] = state.mask_id
            x = torch.cat([x, un_x])
            am = torch.cat([am, am]) if am is not None else None
        kwargs: dict[str, Any] = {}
        if am is not None:
            kwargs["attention_mask"] = am
        shared = self._shared_block(state, rows)
        if shared is not None and not self.needs_full_logits:
            start = state.prompt_length + shared * self.config.block_length
            kwargs["logits_range"] = (start, start + self.config.block_length)
        state.memo["_rows"] = rows
        state.memo["_logits_start"] = kwargs.get("logits_range", (0, 0))[0] if "logits_range" in kwargs else None
        return Request(x, kwargs=kwargs, role="model", rows=rows)

    # ---- commit --------------------------------------------------------------------------------
    def commit(self, state: DiffusionState, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        rows: torch.Tensor = state.memo["_rows"]
        if c.cfg_scale > 0:
            cond, uncond = logits.chunk(2)
            logits = uncond + (c.cfg_scale + 1) * (cond - uncond)
        cols = self.block_columns(state, rows)
        start = state.memo["_logits_start"]
        full_logits = None
        bl = c.block_length
        if start is not None:
            # A plain callable may ignore logits_range and return the whole canvas.
            block_logits = logits if logits.shape[1] == bl else logits[:, start : start + bl]
        elif logits.shape[1] == bl and not self.needs_full_logits:
            # A cache policy may answer with each row's own block (rows in different blocks).
            block_logits = logits
        else:
            full_logits = logits
            block_logits = logits[torch.arange(len(rows), device=logits.device)[:, None], cols]
        dev_rows = rows.to(state.x.device)
        xb = state.x[dev_rows[:, None], cols]
        mask = xb == state.mask_id
        if c.logits_eos_inf:
            block_logits = forbid_token(block_logits, state.eos_id)
        block_logits = self.adjust_logits(state, rows, block_logits, mask)
        x0, conf = predict(block_logits, c.temperature, c.remasking, state.generator, state.mask_id)
        if c.confidence_eos_eot_inf:
            conf = demote_tokens(conf, x0, (state.eos_id, c.eot_token_id))
        transfer = self.select(state, rows, block_logits, x0, conf, mask, full_logits) & mask
        exit_ = self.early_exit(state, rows, full_logits)
        state.x[dev_rows[:, None], cols] = torch.where(transfer, x0, xb)
        gen_cols = cols - state.prompt_length
        prev = state.commit_step[dev_rows[:, None], gen_cols]
        state.commit_step[dev_rows[:, None], gen_cols] = torch.where(transfer, state.steps, prev)
        committed = torch.zeros(state.batch_size, dtype=torch.long, device=state.x.device)
        committed[dev_rows] = transfer.sum(-1)
        still_masked = mask & ~transfer
        stopped = None
        if exit_ is not None:
            stop, tokens = exit_
            stop = stop.to(state.x.device)
            P = state.prompt_length
            gen = state.x[dev_rows, P:]
            fill = (gen == state.mask_id) & stop[:, None]
            state.x[dev_rows, P:] = torch.where(fill, tokens, gen)
            state.commit_step[dev_rows] = torch.where(fill, state.steps, state.commit_step[dev_rows])
            committed[dev_rows] += fill.sum(-1)
            still_masked = still_masked & ~stop[:, None]
            stopped = rows[stop.cpu()]
        state.steps += 1
        self.advance(state, rows, still_masked)
        if stopped is not None and len(stopped):
            state.block[stopped] = c.num_blocks
        return committed

    def adjust_logits(
        self, state: DiffusionState, rows: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Hook: the block logits predictions and confidences are taken from (e.g. fused with
        a strategy's history of predictions). ``mask``: which block positions are still masked."""
        return logits

    def early_exit(
        self, state: DiffusionState, rows: torch.Tensor, full_logits: Optional[torch.Tensor]
    ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Hook: rows that stop after this step. Returns None, or ``(stop, tokens)`` with
        ``stop`` a (len(rows),) bool and ``tokens`` (len(rows), gen_length): every position of
        the generation a stopping row still has masked after this step's commit takes its token
        there, and the row is finished (it leaves the batch)."""
        return None

    def select(
        self,
        state: DiffusionState,
        rows: torch.Tensor,
        logits: torch.Tensor,
        x0: torch.Tensor,
        confidence: torch.Tensor,
        mask: torch.Tensor,
        full_logits: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """(rows, block_length) bool: which masked positions of the block to commit now."""
        raise NotImplementedError

    def advance(self, state: DiffusionState, rows: torch.Tensor, still_masked: torch.Tensor) -> None:
        """Move rows whose block is finished to their next block."""
        state.step_in_block[rows] += 1
        if self.fixed_schedule:
            finished = state.step_in_block[rows] >= self.steps_per_block
        else:
            finished = ~still_masked.any(-1).cpu()  # one small sync per step
        if bool(finished.any()):
            done_rows = rows[finished]
            state.block[done_rows] += 1
            state.step_in_block[done_rows] = 0
            self.on_block_end(state, done_rows)

    def on_block_end(self, state: DiffusionState, rows: torch.Tensor) -> None:
        """Hook: per-block state to reset (credit), for the given rows."""

    @property
    def steps_per_block(self) -> int:
        raise NotImplementedError

    # ---- end ---------------------------------------------------------------------------------
    def done(self, state: DiffusionState) -> bool:
        return bool((state.block >= self.config.num_blocks).all())

    def result(self, state: DiffusionState) -> torch.Tensor:
        return state.x


def config_with(config: Any, **changes: Any) -> Any:
    """A copy of a config dataclass with some fields changed (validated again)."""
    return dataclasses.replace(config, **changes)
