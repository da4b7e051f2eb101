"""The pure block step every diffusion-LM rule is: one forward's logits in, commits out.

A rule (``lowconf``, ``threshold``, ``credit`` ...) sees a :class:`BlockView` of the rows in
play and answers which masked positions of each row's current block to commit. A rule may
also revise positions committed earlier in the current block (its ``revise`` hook returns a
:class:`Revision`: token edits as LLaDA2.1's ``editing``, re-masking as WINO's), and keep a
block open after its last mask is filled (post-edit steps). The step
around it is :func:`block_step`, with no canvas bookkeeping, so every engine runs the same
code: paradecode's loop (:class:`~paradecode.samplers.base.BlockDiffusionStrategy`), the
diffusers schedulers and the SGLang-style :class:`~paradecode.samplers.block_decoder.BlockDecoder`.

Per-rule state is a typed dataclass (:class:`RuleState` and its subclasses), made by the
rule's ``new_state`` and passed in explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch

from ..interfaces import block_columns
from . import common
from .common import StepNoise, demote_tokens, forbid_token, predict
from .confidence_kernel import token_confidence

__all__ = ["RuleState", "BlockView", "BlockStep", "Revision", "NoProgressError", "NonFiniteLogitsError", "block_step",
           "finish_step"]


class NoProgressError(RuntimeError):
    """A rule committed nothing in a step for a row that still had masks in its block."""


class NonFiniteLogitsError(ValueError):
    """The model returned NaN or +inf logits: no prediction can be taken from them."""

    def __init__(self) -> None:
        super().__init__(
            "the model returned NaN or +inf logits for the block being decoded; check the model's dtype "
            "(bf16/fp16 overflow), its weights and the attention mask (a row that attends to nothing gives NaN)."
        )


@dataclass
class RuleState:
    """What every rule's state holds; rules with history subclass it (credit, cuts).

    ``steps`` counts the steps taken so far (global); ``extras`` collects per-step values for
    the trace (the loop moves them into the step's record).
    """

    batch_size: int
    mask_id: int
    eos_id: Optional[int] = None
    generator: Optional[torch.Generator] = None
    steps: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    nonfinite: list = field(default_factory=list)  # per-step device flags of NaN / +inf logits (fixed rules: read at the end)

    def saw_nonfinite(self) -> bool:
        """True when some step's logits held NaN / +inf (one sync, for the flags kept so far)."""
        if not self.nonfinite:
            return False
        seen = bool(torch.stack(self.nonfinite).any())
        self.nonfinite = []  # read: the caller raises when seen
        return seen


@dataclass
class BlockView:
    """What a rule sees for the ``n`` rows in play; per-position fields are (n, W) over
    each row's current block of W = block_length positions.

    ``logits`` are the logits the step decides on (after the rule's ``adjust_logits``);
    ``x0`` / ``confidence`` the predictions and their confidence; ``mask`` the positions
    masked before the step. ``canvas`` (n, C) is the visible canvas (C columns from column 0)
    and ``full_logits`` (n, C - full_start, V) its logits from column ``full_start`` on (the
    first block's column: a rule never reads the prompt's logits, so they are not computed),
    given when the rule reads beyond its block (``needs_full_logits``); ``block_start`` is each
    row's block column in the canvas and
    ``gen_start`` the column where the generation starts, ``canvas_length`` the whole
    canvas's width (columns past the visible ones included), ``visible`` the width the model
    saw (0: the block alone). ``noise`` holds the step's random draws over the visible canvas.
    """

    rows: torch.Tensor
    logits: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    step_in_block: torch.Tensor
    block_start: torch.Tensor
    x0: Optional[torch.Tensor] = None
    confidence: Optional[torch.Tensor] = None
    full_logits: Optional[torch.Tensor] = None
    canvas: Optional[torch.Tensor] = None
    gen_start: int = 0
    canvas_length: int = 0
    visible: int = 0
    noise: Optional[StepNoise] = None
    fixed: Optional[torch.Tensor] = None
    full_start: int = 0
    _full: Optional[tuple[int, tuple[torch.Tensor, torch.Tensor]]] = None
    _revisable: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def revisable(self) -> torch.Tensor:
        """(n, W) bool: the committed positions of the block a rule may revise: not masked,
        not prompt (columns before ``gen_start``, or ``fixed``, the prompt an engine marks).
        Made once per ``mask`` (a revising rule reads it, then the step applying its revision)."""
        if self._revisable is not None and self._revisable[0] is self.mask:
            return self._revisable[1]
        out = ~self.mask & (self.block_columns >= self.gen_start)
        out = out & ~self.fixed if self.fixed is not None else out
        self._revisable = (self.mask, out)
        return out

    @property
    def block_columns(self) -> torch.Tensor:
        """(n, W) canvas columns of each row's block (on the logits' device)."""
        return block_columns(self.block_start, self.tokens.shape[1], self.tokens.device)

    def full_predictions(
        self, state: "RuleState", config: Any, start: int = 0, confidence: bool = True
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(x0, confidence) over the visible canvas from column ``start`` on, from ``full_logits``,
        with the same draws as the block's predictions (LLaDA's step predicts the whole canvas
        at once). Each column's prediction is its own, so a rule that reads only the columns
        from ``start`` (where masks can be) pays for those alone. ``confidence=False``: a rule
        that needs the tokens alone may get None for the confidence (no softmax made for it)."""
        if self._full is None or self._full[0] != start or (confidence and self._full[1][1] is None):
            if start < self.full_start:
                raise ValueError(f"full_predictions from column {start}: the logits start at column {self.full_start}.")
            logits = self.full_logits[:, start - self.full_start :]
            if config.logits_eos_inf:
                logits = forbid_token(logits, state.eos_id)
            remasking = getattr(config, "remasking", "low_confidence")
            noise = self.noise
            if noise is not None and start:
                noise = StepNoise(None if noise.gumbel is None else noise.gumbel[:, start:],
                                  None if noise.remask is None else noise.remask[:, start:])
            self._full = (start, predict(logits, config.temperature, remasking, state.generator, state.mask_id, noise,
                                         confidence))
        return self._full[1]

    def full_token_confidence(
        self, state: "RuleState", config: Any, start: int, token: int, where: torch.Tensor
    ) -> torch.Tensor:
        """(n, C - start) float64: over the visible canvas from column ``start`` on, the
        confidence of the positions whose prediction (:meth:`full_predictions`) is ``token`` and
        where ``where`` holds, -1 at the others. Greedy low-confidence steps on a GPU take it from
        :func:`~paradecode.samplers.confidence_kernel.token_confidence`, which sums the softmax
        only where the argmax is ``token``, not at every position."""
        remasking = getattr(config, "remasking", "low_confidence")
        if (common.greedy_kernel_runs(config.temperature, remasking, self.full_logits) and not config.logits_eos_inf
                and start >= self.full_start):
            out = token_confidence(self.full_logits[:, start - self.full_start :], token, where, state.mask_id)
            if out is not None:
                return out
        x, conf = self.full_predictions(state, config, start)
        return torch.where(where & (x == token), conf, torch.full_like(conf, -1.0))


@dataclass
class Revision:
    """What a rule's ``revise`` hook returns: committed positions of the block it rewrites.

    ``where`` (n, W) bool: the positions (only :attr:`BlockView.revisable` ones are taken);
    ``tokens`` (n, W): their new tokens, the mask id to re-mask (WINO). ``hold`` (n,) bool:
    rows whose block stays open after the step although no mask is left (LLaDA2.1's
    post-edit steps); the rule bounds them (its ``post_block_steps``). ``remasks``: whether
    ``tokens`` may hold the mask id; a rule whose new tokens are the step's predictions (which
    never are the mask) says False, and the step counts no re-masked positions.
    """

    where: torch.Tensor
    tokens: torch.Tensor
    hold: Optional[torch.Tensor] = None
    remasks: bool = True


@dataclass
class BlockStep:
    """The outcome of one step on each row's block, (n, W) unless said otherwise.

    ``tokens``: the block after the step; ``transfer``: positions committed now.
    ``stop`` (n,) bool: rows that finish now (an early exit), whose still masked generation
    positions take :meth:`exit_fill` (n, G: G columns from ``gen_start``); ``stop_host`` is
    ``stop`` on the CPU, read with the step's flags (the decision is made on the device).
    ``cut`` (n,) canvas column after which a row's text ends (end-of-text prediction; the
    canvas length means no cut); ``hide_cut`` also removes cut positions from attention.
    ``left`` (n,) CPU bool: rows whose block is not finished after the step: masks left (re-masked
    ones included) or held open by the rule's revision (None when the rule's schedule says it
    without a device sync). ``revised`` (n, W): committed positions the step rewrote (None: none).
    ``cut_host`` / ``cut_left`` (n,) CPU: ``cut``, and the rows with masks left before their cut
    (read in the step's one sync; None when not read there).
    """

    tokens: torch.Tensor
    transfer: torch.Tensor
    x0: torch.Tensor
    confidence: torch.Tensor
    mask: torch.Tensor
    stop: Optional[torch.Tensor] = None
    fill: Optional[Union[torch.Tensor, Callable[[], torch.Tensor]]] = None  # the tokens, or how to make them
    cut: Optional[torch.Tensor] = None
    hide_cut: bool = False
    left: Optional[torch.Tensor] = None
    revised: Optional[torch.Tensor] = None
    remasks: bool = False  # whether ``revised`` may put masks back (the revision's ``remasks``)
    commits: Optional[torch.Tensor] = None  # (n,) transfer.sum(-1) on the device, when the step made it
    cut_host: Optional[torch.Tensor] = None
    cut_left: Optional[torch.Tensor] = None
    stop_host: Optional[torch.Tensor] = None
    _finish: Optional[Any] = field(default=None, repr=False)  # the pending host read (finish_step)

    def exit_fill(self) -> torch.Tensor:
        """(n, G) the early exit's tokens; a rule may give them as a function, made only once a
        row stops (after the read: on a step without an exit they cost nothing)."""
        if callable(self.fill):
            self.fill = self.fill()
        return self.fill

    @property
    def reads(self) -> bool:
        """Whether the step's host read of its flags is still to come (:func:`finish_step`)."""
        return self._finish is not None


def block_step(rule: Any, state: RuleState, view: BlockView, finish: bool = True) -> BlockStep:
    """One step of ``rule`` on each row's block: predict, select, and the rule's exits.

    Enforces the one invariant every non-fixed rule shares: a row whose block has a mask
    commits at least one masked position (else :class:`NoProgressError`). Revisions of
    committed positions come on top of that commit; a rule that re-masks (WINO) or holds a
    full block open (post-edit steps) bounds its own steps per block (``post_block_steps``),
    and the loop's step bound stops any rule that does not. ``finish=False`` leaves the step's
    one host read to :func:`finish_step`, so that a caller can launch its own device writes
    before the host waits for the device.
    """
    c = rule.config
    mask = view.tokens == state.mask_id
    logits = view.logits
    if c.logits_eos_inf:
        logits = forbid_token(logits, state.eos_id)
    view.mask = mask
    logits = rule.adjust_logits(view, state, logits)
    remasking = getattr(c, "remasking", "low_confidence")
    n, W, V = logits.shape
    view.noise = StepNoise.draw(n, view.visible or W, V, c.temperature, remasking, state.generator, logits.device)
    block_noise = view.noise.at(view.block_columns) if view.noise is not None else None
    x0, conf = predict(logits, c.temperature, remasking, state.generator, state.mask_id, block_noise)
    if getattr(c, "confidence_eos_eot_inf", False):
        conf = demote_tokens(conf, x0, (state.eos_id, c.eot_token_id))
    view.logits, view.x0, view.confidence = logits, x0, conf
    # Per row, positions whose logits hold NaN / +inf: they make the softmax confidence NaN (and
    # argmax picks them), so the step's confidences (or chosen logits) tell; no sync here.
    if remasking == "low_confidence":
        bad = torch.isnan(conf).sum(-1)
    else:
        bad = (~torch.isfinite(logits.gather(-1, x0.unsqueeze(-1)))).sum((-2, -1))
    transfer = rule.select(view, state) & mask
    out = BlockStep(torch.where(transfer, x0, view.tokens), transfer, x0, conf, mask)
    hold = None
    revision = rule.revise(view, state, transfer)
    if revision is not None:
        if rule.fixed_schedule:
            raise TypeError(f"strategy {rule.name!r}: a fixed-schedule rule cannot revise committed tokens.")
        out.revised = revision.where & view.revisable
        out.tokens = torch.where(out.revised, revision.tokens, out.tokens)
        out.remasks = revision.remasks
        hold = revision.hold
    exit_ = rule.early_exit(view, state)
    if exit_ is not None:
        out.stop, out.fill = exit_
    cut = rule.end_of_text(view, state, transfer)
    if cut is not None:
        out.cut, out.hide_cut = cut, bool(getattr(c, "eot_truncate", False))
    # The step's one sync, launched now and read by :func:`finish_step` (here, or later by a
    # caller that launches its writes first). Per row: an exit's decision (made on the device);
    # and for a rule that ends its blocks by their masks, masks before, tokens committed
    # (transfer is within mask), masks after (re-masking adds some), the rule's hold on a full
    # block, and with an end-of-text cut the cut and the masks left before it.
    read: dict[str, torch.Tensor] = {}
    if out.stop is not None:
        read["stop"] = out.stop.to(mask.device).long()
    if rule.fixed_schedule:  # no per-step sync for these: the flags are read when the generation ends
        state.nonfinite.append(bad.any())
    else:
        n_masks, n_commits = mask.sum(-1), transfer.sum(-1)
        out.commits = n_commits
        read.update(masks=n_masks, commits=n_commits, nonfinite=bad)
        read["left"] = (out.tokens == state.mask_id).sum(-1) if out.remasks else n_masks - n_commits
        if hold is not None:
            read["hold"] = hold.to(mask.device).long()
        if cut is not None:
            cols = view.block_columns
            before_cut = (cols <= cut[:, None]) | (cols < view.gen_start)  # what the cut leaves of the block
            read.update(cut=cut, cut_left=((out.tokens == state.mask_id) & before_cut).sum(-1))
    if not read:
        return out
    names, flags = tuple(read), torch.stack(list(read.values()))
    out._finish = lambda: _read_flags(rule, view, out, names, flags)
    if finish:
        finish_step(out)
    return out


def finish_step(out: BlockStep) -> BlockStep:
    """Read the step's flags (its one device->host sync) and raise what they show; sets
    ``out.left`` (and ``stop_host``, ``cut_host`` / ``cut_left``). A no-op when read already or
    when the step needs no read (a fixed schedule and no exit test)."""
    pending, out._finish = out._finish, None
    if pending is not None:
        pending()
    return out


def _read_flags(rule: Any, view: BlockView, out: BlockStep, names: tuple[str, ...], flags: torch.Tensor) -> None:
    values = dict(zip(names, flags.tolist()))
    if "stop" in values:
        out.stop_host = torch.tensor(values["stop"], dtype=torch.bool)
    if "masks" not in values:  # a fixed schedule: the exit's decision alone
        return
    masks, commits, left = values["masks"], values["commits"], values["left"]
    held = values.get("hold", [0] * len(masks))
    if "cut" in values:
        out.cut_host = torch.tensor(values["cut"])
        out.cut_left = torch.tensor([v > 0 for v in values["cut_left"]])
    if any(values["nonfinite"]):
        raise NonFiniteLogitsError()
    stopped = out.stop_host.tolist() if out.stop_host is not None else [False] * len(masks)
    if not getattr(rule, "may_stall", False):  # a rule that bounds its own steps (Learn2PD's oracle) may stall
        stalled = [r for r, m, t, s in zip(view.rows.tolist(), masks, commits, stopped) if m > 0 and t == 0 and not s]
        if stalled:
            raise NoProgressError(
                f"strategy {rule.name!r} committed no token for row(s) {stalled} whose block still has masks; "
                f"a rule must commit at least one masked position per step (e.g. the most confident one)."
            )
    out.left = torch.tensor([a > 0 or h > 0 for a, h in zip(left, held)])
