"""A rule driven one block at a time by an engine that owns the canvas.

diffusers' ``LLaDA2Pipeline`` (through our schedulers) and SGLang's ``DllmAlgorithm.step``
keep the tokens themselves and hand over one block and its logits per forward.
:class:`BlockDecoder` runs the same :func:`~paradecode.samplers.block.block_step` as
``paradecode.sample`` on that block and keeps the per-sequence rule state between calls.
An early exit fills the rest of the block; an end-of-text cut writes EOS after the cut.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .block import BlockStep, BlockView, NonFiniteLogitsError, RuleState, block_step

__all__ = ["BlockDecoder"]


class BlockDecoder:
    """``step(tokens, logits) -> BlockStep`` over the rows of one block, per-row state kept.

    ``rule`` is a diffusion-LM strategy instance (its config's ``block_length`` is the block's
    width). Call :meth:`start_block` when the engine moves to a new block.
    """

    def __init__(self, rule: Any, mask_id: int, eos_id: Optional[int] = None, prompt_from_block_start: bool = False) -> None:
        self.rule = rule
        self.mask_id = int(mask_id)
        self.eos_id = eos_id
        #: With no ``fixed`` given, the positions already filled at a block's first step are its
        #: prompt (an engine such as SGLang without a prompt mask): a revising rule leaves them alone.
        self.prompt_from_block_start = prompt_from_block_start
        self._start_filled: Optional[torch.Tensor] = None
        self.state: Optional[RuleState] = None
        self.step_in_block: Optional[torch.Tensor] = None
        #: (batch,) CPU bool: rows whose block has no mask left but which the rule holds open
        #: (``editing``'s post-edit steps): an engine keeps stepping them although nothing is masked.
        self.held: Optional[torch.Tensor] = None

    def reset(self, batch_size: int, device: torch.device, generator: Optional[torch.Generator] = None) -> None:
        """A new generation of ``batch_size`` sequences."""
        self.state = self.rule.new_state(batch_size, self.mask_id, self.eos_id, generator, device)
        self.step_in_block = torch.zeros(batch_size, dtype=torch.long)
        self.held = torch.zeros(batch_size, dtype=torch.bool)

    def start_block(self) -> None:
        """The engine moved on: rows that had started their block end it (per-block state resets)."""
        open_rows = torch.nonzero(self.step_in_block > 0).flatten()
        if len(open_rows):
            self.rule.on_block_end(self.state, open_rows)
        self.step_in_block.zero_()
        self.held.zero_()

    def step(
        self, tokens: torch.Tensor, logits: torch.Tensor, rows: Optional[torch.Tensor] = None,
        fixed: Optional[torch.Tensor] = None,
    ) -> BlockStep:
        """One step on the block ``tokens`` (n, W) with its ``logits`` (n, W, V) for batch
        ``rows`` (CPU; default all); ``fixed`` (n, W) marks prompt positions in the block (a
        revising rule leaves them alone). Returns the step with ``tokens`` the block afterwards
        (exit fills and end-of-text cuts applied) and ``transfer`` everything written
        (revisions of committed positions included; ``revised`` says which)."""
        if self.state is None:
            raise RuntimeError("BlockDecoder.reset(batch_size, device) must be called before step().")
        if rows is None:
            rows = torch.arange(tokens.shape[0])
        if fixed is None and self.prompt_from_block_start:
            fixed = self._block_prompt(tokens, rows)
        full = self.rule.needs_full_logits
        view = BlockView(
            rows=rows,
            logits=logits,
            tokens=tokens,
            mask=None,  # type: ignore[arg-type]  (block_step sets it)
            step_in_block=self.step_in_block[rows],
            block_start=torch.zeros(len(rows), dtype=torch.long),
            full_logits=logits if full else None,
            canvas=tokens if full else None,
            gen_start=0,
            canvas_length=tokens.shape[1],
            fixed=fixed,
        )
        out = block_step(self.rule, self.state, view)
        if self.state.saw_nonfinite():  # fixed rules: checked here per step
            raise NonFiniteLogitsError()
        new, moved = out.tokens, out.transfer
        if out.revised is not None:
            moved = moved | out.revised
        if out.stop is not None and bool(out.stop_host.any()):  # e.g. Prophet: the rest of the block takes the exit's tokens
            fill = (new == self.mask_id) & out.stop.to(new.device)[:, None]
            new = torch.where(fill, out.exit_fill()[:, : new.shape[1]], new)
            moved = moved | fill
        if out.cut is not None and self.eos_id is not None:  # Learn2PD's end-of-text, inside the block
            cols = torch.arange(new.shape[1], device=new.device)[None, :]
            after = cols > out.cut.to(new.device)[:, None]
            moved = moved | (after & (new == self.mask_id))
            new = torch.where(after, torch.full_like(new, self.eos_id), new)
        out.tokens, out.transfer = new, moved
        self.state.steps += 1
        self.step_in_block[rows] += 1
        return out

    def _block_prompt(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(n, W) bool: what rows ``rows`` held before their block's first step."""
        n_all = len(self.step_in_block)
        if self._start_filled is None or self._start_filled.shape != (n_all, tokens.shape[1]):
            self._start_filled = torch.zeros(n_all, tokens.shape[1], dtype=torch.bool)
        first = (self.step_in_block[rows] == 0).nonzero().flatten()
        if len(first):
            self._start_filled[rows[first]] = (tokens[first] != self.mask_id).cpu()
        return self._start_filled[rows].to(tokens.device)

    def step_inplace(self, tokens: torch.Tensor, logits: torch.Tensor, rows: Optional[torch.Tensor] = None,
                     fixed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SGLang's shape of a step: write the step into ``tokens`` (n, W) and return (n,) bool,
        True for rows whose block is done: no mask left and not held open by the rule (the
        post-edit steps of ``editing``)."""
        out = self.step(tokens, logits, rows, fixed)
        tokens.copy_(out.tokens)
        full = ~(tokens == self.mask_id).any(-1)
        done = full
        if out.revised is not None and out.left is not None:  # a revising rule may hold a full block open
            done = full & ~out.left.to(full.device)
        idx = rows if rows is not None else torch.arange(tokens.shape[0])
        self.held[idx] = (full & ~done).cpu()
        return done
