"""The semi-autoregressive block machinery shared by every diffusion-LM strategy.

A canvas is ``[left-padded prompt | gen_length masks]``; generation is split into blocks
of ``block_length`` (or LLaDA2's layout, see :class:`DiffusionConfig`). Each row advances
through blocks on its own (rows finish blocks at different steps under threshold rules),
and finished rows leave the batch that is fed to the model. A subclass only says which
masked positions of the current block to commit (:meth:`BlockDiffusionStrategy.select`).
Optional hooks: ``on_start`` / ``on_block_end`` (per-row state), ``adjust_logits`` (logits
the step decides on, e.g. fused with history), ``early_exit`` (finish rows now, filling
their masks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from ..loop import Request, Strategy
from ..models.hf import HFDiffusionAdapter, resolve_mask_token_id
from .common import demote_tokens, forbid_token, predict

__all__ = ["DiffusionConfig", "DiffusionState", "BlockDiffusionStrategy", "BlockStep"]

REMASKING = ("low_confidence", "random")
LAYOUTS = ("llada", "llada2")


@dataclass
class DiffusionConfig:
    """Options every diffusion-LM strategy takes (LLaDA ``generate`` defaults).

    ``layout="llada"``: block 0 starts right after the prompt and the model sees the whole
    canvas. ``layout="llada2"`` (LLaDA2's ``generate`` and diffusers' ``LLaDA2Pipeline``): blocks
    sit at multiples of ``block_length`` from column 0, so the prompt partly fills the first
    block and the last block may run past the generation (a tail of masks the attention mask
    hides, decoded and dropped); the model sees only the canvas up to the current block's end,
    with ``position_ids`` 0.., and all rows stay in the same block (as in the pipeline).
    """

    gen_length: int = 128
    block_length: int = 128
    temperature: float = 0.0
    remasking: str = "low_confidence"
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False  # LLaDA: never predict EOS (the model's eos_token_id)
    confidence_eos_eot_inf: bool = False  # LLaDA: commit EOS / EOT predictions last
    eot_token_id: Optional[int] = None  # LLaDA-8B-Instruct's <|eot_id|> is 126348
    layout: str = "llada"

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
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}.")

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
    commit_step: Optional[torch.Tensor] = None  # (B, L - origin) step at which each column from `origin` was committed
    extras: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)  # strategy-specific per-sequence state
    origin: int = -1  # column where block 0 starts (prompt_length under the "llada" layout)
    num_blocks: int = -1  # blocks to decode; rows with block == num_blocks are finished

    def __post_init__(self) -> None:
        if self.origin < 0:
            self.origin = self.prompt_length

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    def active_rows(self, num_blocks: int) -> torch.Tensor:
        return torch.nonzero(self.block < num_blocks).flatten()


class BlockStep(NamedTuple):
    """One step on one block (:meth:`BlockDiffusionStrategy.decide`), all (rows, block_length)."""

    tokens: torch.Tensor  # the block after this step: committed predictions written into it
    transfer: torch.Tensor  # bool, positions committed now
    x0: torch.Tensor  # predicted token at every position
    confidence: torch.Tensor  # confidence of x0 (its probability under low_confidence remasking)
    mask: torch.Tensor  # bool, positions that were masked before this step


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
        origin, num_blocks, L = P, c.num_blocks, P + c.gen_length
        if c.layout == "llada2":
            bl = c.block_length
            origin = P // bl * bl
            num_blocks = -(-(P + c.gen_length) // bl) - P // bl
            L = origin + num_blocks * bl
        x = torch.full((B, L), mask_id, dtype=torch.long, device=prompt_ids.device)
        x[:, :P] = prompt_ids
        if attention_mask is not None or L > P + c.gen_length or c.layout == "llada2":
            # llada2: always a mask, as the pipeline gives one; the tail past the generation is hidden.
            if attention_mask is None:
                attention_mask = torch.ones(B, P, dtype=torch.long, device=prompt_ids.device)
            rest = torch.zeros(B, L - P, dtype=attention_mask.dtype, device=attention_mask.device)
            rest[:, : c.gen_length] = 1
            attention_mask = torch.cat([attention_mask, rest], dim=1)
        state = DiffusionState(
            x=x,
            prompt_length=P,
            mask_id=mask_id,
            eos_id=eos_id,
            attention_mask=attention_mask,
            block=torch.zeros(B, dtype=torch.long),
            step_in_block=torch.zeros(B, dtype=torch.long),
            generator=generator,
            commit_step=torch.full((B, L - origin), -1, dtype=torch.long, device=x.device),
            origin=origin,
            num_blocks=num_blocks,
        )
        self.on_start(state)
        return state

    def on_start(self, state: DiffusionState) -> None:
        """Hook for per-sequence state (credit history, schedules)."""

    # ---- geometry ----------------------------------------------------------------------------
    def block_columns(self, state: DiffusionState, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), block_length) canvas columns of each row's current block."""
        bl = self.config.block_length
        start = state.origin + state.block[rows] * bl
        cols = start[:, None] + torch.arange(bl)[None, :]
        return cols.to(state.x.device)

    def _shared_block(self, state: DiffusionState, rows: torch.Tensor) -> Optional[int]:
        blocks = state.block[rows]
        return int(blocks[0]) if bool((blocks == blocks[0]).all()) else None

    # ---- propose -------------------------------------------------------------------------------
    def propose(self, state: DiffusionState) -> Request:
        rows = state.active_rows(state.num_blocks)
        x, am = state.x, state.attention_mask
        kwargs: dict[str, Any] = {}
        if self.config.layout == "llada2":
            # Rows wait for each other at block ends; the model sees the canvas up to the block's end.
            lead = state.block[rows].min()
            rows = rows[state.block[rows] == lead]
            end = state.origin + (int(lead) + 1) * self.config.block_length
            x, am = x[:, :end], am[:, :end]
            kwargs["positions"] = torch.arange(end, device=x.device).expand(len(rows), end)
        if len(rows) < state.batch_size:
            x = x[rows.to(x.device)]
            am = am[rows.to(am.device)] if am is not None else None
        if self.config.cfg_scale > 0:
            # LLaDA's unsupervised CFG: a second pass with the prompt masked out.
            un_x = x.clone()
            un_x[:, : state.prompt_length] = state.mask_id
            x = torch.cat([x, un_x])
            am = torch.cat([am, am]) if am is not None else None
            if "positions" in kwargs:
                kwargs["positions"] = torch.cat([kwargs["positions"]] * 2)
        if am is not None:
            kwargs["attention_mask"] = am
        shared = self._shared_block(state, rows)
        if shared is not None and not self.needs_full_logits:
            start = state.origin + shared * self.config.block_length
            kwargs["logits_range"] = (start, start + self.config.block_length)
        state.memo["_rows"] = rows
        state.memo["_logits_start"] = kwargs["logits_range"][0] if "logits_range" in kwargs else None
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
        step = self.decide(state, rows, block_logits, xb, full_logits)
        transfer = step.transfer
        exit_ = self.early_exit(state, rows, full_logits)
        state.x[dev_rows[:, None], cols] = step.tokens
        gen_cols = cols - state.origin
        prev = state.commit_step[dev_rows[:, None], gen_cols]
        state.commit_step[dev_rows[:, None], gen_cols] = torch.where(transfer, state.steps, prev)
        committed = torch.zeros(state.batch_size, dtype=torch.long, device=state.x.device)
        committed[dev_rows] = transfer.sum(-1)
        still_masked = step.mask & ~transfer
        stopped = None
        if exit_ is not None:
            stop, tokens = exit_
            stop = stop.to(state.x.device)
            # tokens cover the generation, or (llada2) only the visible part: then the row goes on.
            P, O, n = state.prompt_length, state.origin, tokens.shape[1]
            gen = state.x[dev_rows, P : P + n]
            fill = (gen == state.mask_id) & stop[:, None]
            state.x[dev_rows, P : P + n] = torch.where(fill, tokens, gen)
            steps_at = state.commit_step[dev_rows, P - O : P - O + n]
            state.commit_step[dev_rows, P - O : P - O + n] = torch.where(fill, state.steps, steps_at)
            committed[dev_rows] += fill.sum(-1)
            still_masked = still_masked & ~stop[:, None]
            if P + n >= state.x.shape[1]:
                stopped = rows[stop.cpu()]
        state.steps += 1
        self.advance(state, rows, still_masked)
        if stopped is not None and len(stopped):
            state.block[stopped] = state.num_blocks
        return committed

    def decide(
        self,
        state: DiffusionState,
        rows: torch.Tensor,
        block_logits: torch.Tensor,
        block_tokens: torch.Tensor,
        full_logits: Optional[torch.Tensor] = None,
    ) -> BlockStep:
        """One step on one block, with no canvas bookkeeping: predict, :meth:`select`, write.

        ``block_logits`` (rows, block_length, vocab) and ``block_tokens`` (rows, block_length)
        are the block of each of ``rows``. :meth:`commit` and the diffusers schedulers
        (``paradecode.diffusers``) both run a strategy through this method.
        """
        c = self.config
        mask = block_tokens == state.mask_id
        if c.logits_eos_inf:
            block_logits = forbid_token(block_logits, state.eos_id)
        block_logits = self.adjust_logits(state, rows, block_logits, mask)
        x0, conf = predict(block_logits, c.temperature, c.remasking, state.generator, state.mask_id)
        if c.confidence_eos_eot_inf:
            conf = demote_tokens(conf, x0, (state.eos_id, c.eot_token_id))
        transfer = self.select(state, rows, block_logits, x0, conf, mask, full_logits) & mask
        return BlockStep(torch.where(transfer, x0, block_tokens), transfer, x0, conf, mask)

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
            if self.config.layout == "llada2":  # a prompt-filled first block runs out of masks early
                finished |= ~still_masked.any(-1).cpu()
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
        return bool((state.block >= state.num_blocks).all())

    def result(self, state: DiffusionState) -> torch.Tensor:
        return state.x[:, : state.prompt_length + self.config.gen_length]  # llada2: drop the tail


def config_with(config: Any, **changes: Any) -> Any:
    """A copy of a config dataclass with some fields changed (validated again)."""
    return dataclasses.replace(config, **changes)
