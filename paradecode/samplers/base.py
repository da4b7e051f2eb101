"""The semi-autoregressive block machinery shared by every diffusion-LM strategy.

A canvas is ``[left-padded prompt | gen_length masks]``; generation is split into blocks
of ``block_length`` (or LLaDA2's layout, see :class:`DiffusionConfig`). Each row advances
through blocks on its own (rows finish blocks at different steps under threshold rules),
and finished rows leave the batch that is fed to the model. A subclass only says which
masked positions of the current block to commit (:meth:`BlockDiffusionStrategy.select`).
Optional hooks: ``on_start`` / ``on_block_end`` (per-row state), ``adjust_logits`` (logits
the step decides on, e.g. fused with history), ``early_exit`` (finish rows now, filling
their masks), ``revise`` (rewrite or re-mask committed positions of the block).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import torch
from torch import nn

from ..interfaces import CanvasRequest, ModelCall, Request, Strategy, block_columns, device_arange, to_device
from ..models.hf import HFDiffusionAdapter, resolve_mask_token_id
from .block import BlockStep, BlockView, NonFiniteLogitsError, Revision, RuleState, block_step, finish_step

__all__ = ["DiffusionConfig", "DiffusionState", "BlockDiffusionStrategy", "BlockStep", "BlockView", "Revision", "RuleState",
           "look_ahead"]

LAYOUTS = ("llada", "llada2")
MAX_CFG_SCALE = 1e4


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
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False  # LLaDA: never predict EOS (the model's eos_token_id)
    layout: Literal["llada", "llada2"] = "llada"

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
        if not 0 <= self.cfg_scale <= MAX_CFG_SCALE:
            raise ValueError(
                f"cfg_scale must be in [0, {MAX_CFG_SCALE:g}] (LLaDA uses 0-3; larger scales overflow the logits), "
                f"got {self.cfg_scale}."
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}.")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length


_look_ahead: Optional[bool] = None


def look_ahead(enable: Optional[bool] = None) -> None:
    """Whether a step that reads the device (every rule without a fixed schedule) plans the
    next step's forward while the read waits: the request and a cache's feed plan are host
    work, which would otherwise leave the device idle after each read. None (the default): on
    CUDA canvases only (on a CPU there is no device to overlap, and a plan thrown away at a
    block's end would cost time); True / False: always / never (tests, A/B runs). Process-wide;
    the tokens and forward counts are the same either way."""
    global _look_ahead
    _look_ahead = None if enable is None else bool(enable)


def _plans_ahead(x: torch.Tensor) -> bool:
    return x.is_cuda if _look_ahead is None else _look_ahead


@dataclass
class _Planned:
    """A next step's forward planned ahead: valid for the state whose :func:`_ahead_key` is ``key``."""

    key: tuple
    rows: torch.Tensor
    run: Any  # () -> the forward's output


def _ahead_key(state: "DiffusionState") -> tuple:
    """What a step's request depends on besides the canvas's device values: the step count, each
    row's block and step in it, writes outside commits, and the attention mask in use."""
    return (state.rule.steps, state.block.tolist(), state.step_in_block.tolist(), state.edits,
            id(state.attention_mask))


@dataclass
class DiffusionState:
    """The canvas a diffusion-LM generation decodes, and the rule's state.

    Row bookkeeping (block, step) lives on the CPU so the loop needs no device sync to know
    what to feed next.
    """

    x: torch.Tensor  # (B, L) canvas
    prompt_length: int  # column where generation starts (prompts are left-padded)
    attention_mask: Optional[torch.Tensor]  # (B, L) 1 = real token, or None without padding
    block: torch.Tensor  # (B,) CPU long, current block per row (num_blocks = finished)
    step_in_block: torch.Tensor  # (B,) CPU long
    commit_step: torch.Tensor  # (B, L - origin) step at which each column from `origin` was committed (-1: not yet)
    origin: int  # column where block 0 starts (prompt_length under the "llada" layout)
    num_blocks: int  # blocks to decode; rows with block == num_blocks are finished
    rule: RuleState
    # this step's rows, their block starts (CPU) and the shared block start (None: rows differ),
    # worked out once by request() for apply()
    plan: Optional[tuple] = dataclasses.field(default=None, repr=False)
    # active_rows()'s last answer and the blocks it was read from
    _active: Optional[tuple] = dataclasses.field(default=None, repr=False)
    # canvas writes outside a step's block commits (an early exit's fill, an end-of-text cut,
    # pinned tokens): a next step planned before them is planned on a stale canvas
    edits: int = 0
    # the next step's forward, planned while this step waited for its read (see look_ahead)
    ahead: Optional["_Planned"] = dataclasses.field(default=None, repr=False)
    # per row, the end-of-text cut written so far (canvas width: none; None: no cut yet); a cut
    # that has not moved is on the canvas already, so it is not written again (nor marked as an edit)
    cut_written: Optional[list[int]] = dataclasses.field(default=None, repr=False)
    # this step's caller, while apply() may still plan the next step with it
    _planner: Optional[Any] = dataclasses.field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def mask_id(self) -> int:
        return self.rule.mask_id

    @property
    def steps(self) -> int:
        return self.rule.steps

    @property
    def extras(self) -> dict[str, Any]:
        return self.rule.extras

    def active_rows(self) -> torch.Tensor:
        """(n,) CPU: the rows not finished. The same tensor while the rows' blocks are unchanged,
        so the per-step plan of those rows is reused (:meth:`BlockDiffusionStrategy._plan`): a
        step inside a block reads the small host tensor once here and makes no other host op.
        (Compared by value: tensors made under ``torch.inference_mode`` keep no version counter.)"""
        blocks, cached = self.block.tolist(), self._active
        if cached is not None and cached[0] == blocks:
            return cached[1]
        rows = torch.nonzero(self.block < self.num_blocks).flatten()
        self._active = (blocks, rows)
        return rows


class BlockDiffusionStrategy(Strategy[DiffusionState]):
    """Semi-autoregressive block decoding over a canvas; subclasses are the rules.

    A rule implements :meth:`select` and optionally the hooks :meth:`new_state` (its typed
    state), :meth:`adjust_logits`, :meth:`early_exit`, :meth:`end_of_text` and
    :meth:`on_block_end`; :func:`~paradecode.samplers.block.block_step` runs them.
    ``fixed_schedule`` rules finish a block after a known number of steps (no device sync to
    advance); others finish it when it has no mask left.
    """

    family = "dllm"
    fixed_schedule: ClassVar[bool] = False
    needs_full_logits: bool = False  # True: the rule reads logits beyond its block (the visible canvas from the first block on)
    cacheable: ClassVar[bool] = True  # False: its forward is its own (WINO's shadow block); canvas caches cannot plan it
    engine_forward: ClassVar[bool] = True  # False: an engine's plain block forward (diffusers, SGLang) cannot serve it

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
        if self.needs_eos() and eos_id is None:
            raise ValueError(
                f"strategy {self.name!r} with these options needs the model config's eos_token_id "
                f"(logits_eos_inf / confidence_eos_eot_inf / eot); set it or turn the option off."
            )
        context = {"mask_id": mask_id, "pad_id": int(pad_id), "eos_id": eos_id}
        return {"model": model}, context

    def needs_eos(self) -> bool:
        """True when the options read the model's end-of-text id."""
        return bool(self.config.logits_eos_inf or getattr(self.config, "confidence_eos_eot_inf", False))

    # ---- state -------------------------------------------------------------------------------
    def new_state(
        self, batch_size: int, mask_id: int, eos_id: Optional[int], generator: Optional[torch.Generator], device: torch.device
    ) -> RuleState:
        """The rule's typed per-generation state (override to add history)."""
        return RuleState(batch_size, mask_id, eos_id, generator)

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
        return DiffusionState(
            x=x,
            prompt_length=P,
            attention_mask=attention_mask,
            block=torch.zeros(B, dtype=torch.long),
            step_in_block=torch.zeros(B, dtype=torch.long),
            commit_step=torch.full((B, L - origin), -1, dtype=torch.long, device=x.device),
            origin=origin,
            num_blocks=num_blocks,
            rule=self.new_state(B, mask_id, eos_id, generator, x.device),
        )

    # ---- geometry ----------------------------------------------------------------------------
    def block_start(self, state: DiffusionState, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows),) CPU canvas column of each row's current block."""
        return state.origin + state.block[rows] * self.config.block_length

    def block_columns(self, state: DiffusionState, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), block_length) canvas columns of each row's current block."""
        return block_columns(self.block_start(state, rows), self.config.block_length, state.x.device)

    # ---- one step ----------------------------------------------------------------------------
    def step(self, state: DiffusionState, call: ModelCall) -> torch.Tensor:
        planned, state.ahead = state.ahead, None
        if planned is not None and planned.key == _ahead_key(state):
            rows, logits = planned.rows, planned.run()
        else:
            rows, request = self.request(state)
            logits = call("model", request)
        state._planner = call if _plans_ahead(state.x) and hasattr(call, "stage_forward") else None
        try:
            return self.apply(state, rows, logits)
        finally:
            state._planner = None

    def _plan_next(self, state: DiffusionState, rows: torch.Tensor) -> None:
        """Plan the next step's forward (its request, a cache's feed) as if no row of ``rows``
        ends its block in this step: called while the step's one read waits for the device,
        so the host's planning overlaps the step's device work instead of following it. The
        plan is used only if the state after the step matches the one assumed here
        (:func:`_ahead_key`); otherwise the next step plans again."""
        call, state._planner = state._planner, None
        steps, in_block = state.rule.steps, state.step_in_block.clone()
        state.rule.steps += 1
        state.step_in_block[rows] += 1  # what advance() does when the block goes on
        try:
            key = _ahead_key(state)
            next_rows, request = self.request(state)
            state.ahead = _Planned(key, next_rows, call.stage_forward("model", request))
        except Exception:  # a plan is a guess: a state it cannot plan is planned (or refused) by the step itself
            state.ahead = None
        finally:
            state.rule.steps = steps
            state.step_in_block.copy_(in_block)

    def request(self, state: DiffusionState) -> tuple[torch.Tensor, Request]:
        """The rows in play and the forward they need (in canvas terms, for caches)."""
        c = self.config
        rows = state.active_rows()
        x, am = state.x, state.attention_mask
        positions = None
        if c.layout == "llada2":
            # Rows wait for each other at block ends; the model sees the canvas up to the block's end.
            lead = state.block[rows].min()
            rows = rows[state.block[rows] == lead]
            end = state.origin + (int(lead) + 1) * c.block_length
            x, am = x[:, :end], am[:, :end]
            positions = torch.arange(end, device=x.device).expand(len(rows), end)
        if len(rows) < state.batch_size:
            x = x[to_device(rows, x.device)]
            am = am[to_device(rows, am.device)] if am is not None else None
        reps = 1
        if c.cfg_scale > 0:
            # LLaDA's unsupervised CFG: a second pass with the prompt masked out.
            un_x = x.clone()
            un_x[:, : state.prompt_length] = state.mask_id
            x = torch.cat([x, un_x])
            am = torch.cat([am, am]) if am is not None else None
            positions = torch.cat([positions] * 2) if positions is not None else None
            reps = 2
        L = x.shape[1]
        kwargs: dict[str, Any] = {}
        if positions is not None:
            kwargs["positions"] = positions
        if am is not None:
            kwargs["attention_mask"] = am
        starts, shared = self._plan(state, rows)
        if self.needs_full_logits:
            kwargs["logits_range"] = (state.origin, L)  # from the first block on: the prompt's logits are never read
        elif shared is not None:
            kwargs["logits_range"] = (shared, shared + c.block_length)
        block_columns(starts, c.block_length, x.device)  # a new block's columns go to the device now, not after the forward

        # Built only if a cache policy reads them (no device work per step without one).
        def all_positions() -> torch.Tensor:
            if positions is not None:
                return positions
            if am is not None:
                return (am.long().cumsum(-1) - 1).clamp_min(0)
            return device_arange(0, L, x.device).expand(x.shape[0], L)

        def committed_at() -> torch.Tensor:
            out = torch.full((len(rows), L), -1, dtype=torch.long, device=x.device)
            out[:, state.origin :] = state.commit_step[to_device(rows, x.device), : L - state.origin]
            return out

        canvas = CanvasRequest(
            tokens=x,
            attention_mask=am,
            rows=rows,
            reps=reps,
            batch_size=state.batch_size,
            window_start=torch.full_like(starts, state.origin) if self.needs_full_logits else starts,
            window_size=L - state.origin if self.needs_full_logits else c.block_length,
            block_start=starts,
            block_length=c.block_length,
            step_in_block=state.step_in_block[rows],
            step=state.steps,
            mask_id=state.mask_id,
            positions_fn=all_positions,
            committed_fn=committed_at,
        )
        return rows, Request(x, kwargs=kwargs, rows=rows, canvas=canvas)

    def apply(self, state: DiffusionState, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Turn the forward's logits into commits on the canvas; (batch,) tokens per row."""
        c = self.config
        if c.cfg_scale > 0:
            cond, uncond = logits.chunk(2)
            logits = uncond + (c.cfg_scale + 1) * (cond - uncond)
        starts, shared = self._plan(state, rows)
        cols = block_columns(starts, c.block_length, state.x.device)
        bl = c.block_length
        full_logits = None
        visible = self._visible_width(state, rows)
        full_start = 0
        if logits.shape[1] == bl and not self.needs_full_logits:
            block_logits = logits  # the block range, or each row's own block (a cache policy)
        else:
            full_logits = logits
            full_start = visible - logits.shape[1]  # the logits end where the visible canvas does
            if shared is not None:
                block_logits = logits[:, shared - full_start : shared - full_start + bl]
            else:
                block_logits = logits[torch.arange(len(rows), device=logits.device)[:, None], cols - full_start]
        dev_rows = to_device(rows, state.x.device)
        view = BlockView(
            rows=rows,
            logits=block_logits,
            tokens=state.x[dev_rows[:, None], cols],
            mask=None,  # type: ignore[arg-type]  (block_step sets it)
            step_in_block=state.step_in_block[rows],
            block_start=starts,
            full_logits=full_logits,
            full_start=full_start,
            canvas=state.x[dev_rows, :visible] if full_logits is not None else None,
            gen_start=state.prompt_length,
            canvas_length=state.x.shape[1],
            visible=visible,
        )
        # The step's device writes are launched before its one host read (finish_step), so the
        # host does not wait for the device between them.
        out = block_step(self, state.rule, view, finish=False)
        transfer = out.transfer
        commits = out.commits if out.commits is not None else transfer.sum(-1)
        written = transfer
        remasked = None
        if out.revised is not None:
            # A revised token is a fresh commit for the caches (dKV recomputes it next step, as any
            # token decoded now); a re-masked one is uncommitted again (-1).
            state.rule.extras["revised"] = out.revised.sum(-1)
            if out.remasks:
                remasked = out.revised & (out.tokens == state.mask_id)
                written = transfer | (out.revised & ~remasked)
                # Net commits: a re-masked token is taken back (WINO), so a row's commits still sum to its length.
                commits = commits - remasked.sum(-1)
            else:
                written = transfer | out.revised
        if shared is not None and len(rows) == state.batch_size:
            # every row in play, all in one block: plain slices, in-place fills
            s, e = shared, shared + bl
            state.x[:, s:e] = out.tokens
            steps_at = state.commit_step[:, s - state.origin : e - state.origin]
            if remasked is not None:
                steps_at.masked_fill_(remasked, -1)
            steps_at.masked_fill_(written, state.steps)
            committed = commits
        else:
            state.x[dev_rows[:, None], cols] = out.tokens
            gen_cols = cols - state.origin
            prev = state.commit_step[dev_rows[:, None], gen_cols]
            if remasked is not None:
                prev = torch.where(remasked, torch.full_like(prev, -1), prev)
            state.commit_step[dev_rows[:, None], gen_cols] = torch.where(written, state.steps, prev)
            committed = torch.zeros(state.batch_size, dtype=torch.long, device=state.x.device)
            committed[dev_rows] = commits
        if state._planner is not None and out.reads:
            self._plan_next(state, rows)
        finish_step(out)
        still_masked: Optional[torch.Tensor] = None  # made only where a step needs it (no launches otherwise)
        left = out.left
        stopped = None
        if out.stop is not None and bool(out.stop_host.any()):
            self._write_exit_fill(state, rows, dev_rows, out, committed)
            state.edits += 1  # written after the read: a next step planned during it missed the fill
            stop = out.stop.to(state.x.device)
            still_masked = (out.tokens == state.mask_id) & ~stop[:, None]
            if left is not None:
                left = left & ~out.stop_host
            if state.prompt_length + out.exit_fill().shape[1] >= state.x.shape[1]:
                stopped = rows[out.stop_host]
        state.rule.steps += 1
        if out.cut is not None:
            still_masked, left = self._apply_cut(state, rows, out, still_masked, committed)
        if still_masked is None and self.fixed_schedule and self.config.layout == "llada2":
            still_masked = out.tokens == state.mask_id  # a prompt-filled first block may end before its schedule
        moved = self.advance(state, rows, still_masked, left)
        if stopped is not None and len(stopped):
            state.block[stopped] = state.num_blocks
        if moved is not None and state.cut_written is not None:
            self._skip_finished_blocks(state, moved)
        return committed

    @staticmethod
    def _write_exit_fill(
        state: DiffusionState, rows: torch.Tensor, dev_rows: torch.Tensor, out: BlockStep, committed: torch.Tensor
    ) -> None:
        """The early exit's tokens into the still-masked generation positions of the rows that
        stop. The fill covers the generation, or (llada2) only its visible part: then the row
        goes on."""
        stop, fill_tokens = out.stop.to(state.x.device), out.exit_fill()
        P, O, n = state.prompt_length, state.origin, fill_tokens.shape[1]
        if len(rows) == state.batch_size:  # every row in play: views, written in place
            gen, steps_at = state.x[:, P : P + n], state.commit_step[:, P - O : P - O + n]
            fill = (gen == state.mask_id) & stop[:, None]
            gen.copy_(torch.where(fill, fill_tokens, gen))
            steps_at.masked_fill_(fill, state.steps)
            committed.add_(fill.sum(-1))
        else:
            gen = state.x[dev_rows, P : P + n]
            fill = (gen == state.mask_id) & stop[:, None]
            state.x[dev_rows, P : P + n] = torch.where(fill, fill_tokens, gen)
            steps_at = state.commit_step[dev_rows, P - O : P - O + n]
            state.commit_step[dev_rows, P - O : P - O + n] = torch.where(fill, state.steps, steps_at)
            committed[dev_rows] += fill.sum(-1)

    def _plan(self, state: DiffusionState, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[int]]:
        """(len(rows),) CPU block starts of ``rows`` and their common start (None when rows are in
        different blocks); worked out once per step (request, then apply)."""
        plan = state.plan
        if plan is not None and plan[0] is rows:
            return plan[1], plan[2]
        starts = self.block_start(state, rows)
        values = starts.tolist()
        shared = values[0] if values and values == values[:1] * len(values) else None
        state.plan = (rows, starts, shared)
        return starts, shared

    def _visible_width(self, state: DiffusionState, rows: torch.Tensor) -> int:
        """Columns the model saw this step: the canvas, or (llada2) up to the block's end."""
        if self.config.layout == "llada2":
            return int(self.block_start(state, rows).max()) + self.config.block_length
        return state.x.shape[1]

    def advance(
        self, state: DiffusionState, rows: torch.Tensor, still_masked: Optional[torch.Tensor], left: Optional[torch.Tensor] = None
    ) -> Optional[torch.Tensor]:
        """Move rows whose block is finished to their next block; returns those rows (CPU), or
        None when no row moved."""
        if len(rows) == state.batch_size:
            state.step_in_block += 1  # every row in play (rows are distinct)
        else:
            state.step_in_block[rows] += 1
        if self.fixed_schedule:
            finished = state.step_in_block[rows] >= self.steps_per_block
            if self.config.layout == "llada2":  # a prompt-filled first block runs out of masks early
                finished |= ~still_masked.any(-1).cpu()
        else:
            finished = ~(left if left is not None else still_masked.any(-1).cpu())
        if any(finished.tolist()):  # a host tensor: read as Python values (no host op)
            done_rows = rows[finished]
            state.block[done_rows] += 1
            state.step_in_block[done_rows] = 0
            self.on_block_end(state.rule, done_rows)
            return done_rows
        return None

    # ---- end-of-text cuts (Learn2PD's EoTP; any rule may return one) --------------------------------
    def _apply_cut(
        self, state: DiffusionState, rows: torch.Tensor, out: BlockStep, still_masked: Optional[torch.Tensor],
        committed: torch.Tensor,
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Write end-of-text after each row's cut (never into the prompt); returns the block's
        positions still masked (None where the step had not made them and the cut wrote nothing)
        and the rows with masks left."""
        L, dev = state.x.shape[1], state.x.device
        cut = out.cut_host if out.cut_host is not None else out.cut.cpu()
        if state.cut_written is None:
            state.cut_written = [L] * state.batch_size
        written, pairs = state.cut_written, list(zip(rows.tolist(), cut.tolist()))
        if out.revised is None and all(c >= written[r] for r, c in pairs):
            # No row's cut moved and the step revised nothing: what a cut writes is there (EOS after
            # it; commits fill masks only), so the block needs nothing more and nothing is edited.
            return still_masked, self._left_before_cut(out, still_masked, state.mask_id)
        for r, c in pairs:
            written[r] = min(written[r], c)
        state.edits += 1
        if still_masked is None:
            still_masked = out.tokens == state.mask_id
        cols = torch.arange(L, device=dev)[None, :]
        after = (cols > out.cut.to(dev)[:, None]) & (cols >= state.prompt_length)
        dev_rows = to_device(rows, dev)
        x = state.x[dev_rows]
        committed[dev_rows] += (after & (x == state.mask_id)).sum(-1)
        eos = state.rule.eos_id
        state.x[dev_rows] = torch.where(after, torch.full_like(x, eos), x)
        changed = (after & (x != eos))[:, state.origin :]
        cs = state.commit_step[dev_rows]
        state.commit_step[dev_rows] = torch.where(changed, state.steps - 1, cs)
        if out.hide_cut:
            if state.attention_mask is None:
                state.attention_mask = torch.ones_like(state.x)
            am = state.attention_mask[dev_rows]
            state.attention_mask[dev_rows] = torch.where(after, torch.zeros_like(am), am)
        still_masked = still_masked & ~after.gather(1, self.block_columns(state, rows))
        return still_masked, self._left_before_cut(out, still_masked, state.mask_id)

    @staticmethod
    def _left_before_cut(out: BlockStep, still_masked: Optional[torch.Tensor], mask_id: int) -> Optional[torch.Tensor]:
        """(n,) CPU: rows with masks left before their cut (None for a rule whose schedule says
        it): read in the step's sync when the step made one, else from the device."""
        if out.left is None:
            return None
        if out.cut_left is None:
            masked = still_masked if still_masked is not None else out.tokens == mask_id
            return masked.any(-1).cpu()
        return out.cut_left & ~out.stop_host if out.stop_host is not None else out.cut_left

    def _skip_finished_blocks(self, state: DiffusionState, moved: torch.Tensor) -> None:
        """Rows that moved to a new block skip the blocks that hold no mask (cut by end-of-text),
        for rows with a cut written: they are done. One device read, at such block ends only."""
        nb, bl, L = state.num_blocks, self.config.block_length, state.x.shape[1]
        moved = torch.tensor([r for r in moved.tolist() if state.block[r] < nb and state.cut_written[r] < L],
                             dtype=torch.long)
        if len(moved) == 0:
            return
        gen = state.x[to_device(moved, state.x.device), state.origin :] == state.mask_id
        has_mask = gen.view(len(moved), nb, bl).any(-1).cpu()  # (rows, blocks)
        for i, r in enumerate(moved.tolist()):
            b = int(state.block[r])
            while b < nb and not bool(has_mask[i, b]):
                b += 1
            state.block[r] = b

    # ---- the rule (hooks) ----------------------------------------------------------------------
    def adjust_logits(self, view: BlockView, state: RuleState, logits: torch.Tensor) -> torch.Tensor:
        """The block logits predictions and confidences are taken from (e.g. fused with a
        history of predictions); ``view.mask`` says which positions are still masked."""
        return logits

    def select(self, view: BlockView, state: RuleState) -> torch.Tensor:
        """(n, W) bool: which masked positions of each row's block to commit now."""
        raise NotImplementedError

    def early_exit(self, view: BlockView, state: RuleState) -> Optional[tuple[torch.Tensor, Any]]:
        """Rows that stop after this step: None, or ``(stop, fill)`` with ``stop`` (n,) bool (on
        the device: read with the step's flags) and ``fill`` (n, G) tokens for the generation's
        still-masked positions (G columns from ``view.gen_start``), or a function that makes
        them, called only once some row stops."""
        return None

    def end_of_text(self, view: BlockView, state: RuleState, transfer: torch.Tensor) -> Optional[torch.Tensor]:
        """(n,) canvas column after which each row's text ends, or None (no end-of-text rule)."""
        return None

    def revise(self, view: BlockView, state: RuleState, transfer: torch.Tensor) -> Optional[Revision]:
        """Committed positions of the block to rewrite in this step (``transfer``: the masked ones
        committed now), or None (the default: a committed token is final)."""
        return None

    def on_block_end(self, state: RuleState, rows: torch.Tensor) -> None:
        """Per-block state to reset (credit), for the given rows."""

    @property
    def post_block_steps(self) -> int:
        """Steps a block may take beyond one per position (post-edit steps); bounds ``max_steps``."""
        return 0

    @property
    def steps_per_block(self) -> int:
        raise NotImplementedError

    # ---- end ---------------------------------------------------------------------------------
    def done(self, state: DiffusionState) -> bool:
        n = state.num_blocks
        return all(b >= n for b in state.block.tolist())

    def max_steps(self, state: DiffusionState) -> int:
        # Every step commits at least one token in the block of each row it serves, and rows
        # (llada2: the leading block's rows) are served every step.
        # A rule that keeps full blocks open (post-edit steps) says how long (post_block_steps).
        return state.num_blocks * (self.config.block_length + self.post_block_steps)

    def result(self, state: DiffusionState) -> torch.Tensor:
        state.ahead = None  # the last step's plan for a step that never came
        if state.rule.saw_nonfinite():
            raise NonFiniteLogitsError()
        return state.x[:, : state.prompt_length + self.config.gen_length]  # llada2: drop the tail


def config_with(config: Any, **changes: Any) -> Any:
    """A copy of a config dataclass with some fields changed (validated again)."""
    return dataclasses.replace(config, **changes)
