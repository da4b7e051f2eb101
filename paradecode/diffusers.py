"""paradecode's diffusion-LM strategies as diffusers schedulers, for ``diffusers.LLaDA2Pipeline``.

>>> from diffusers import LLaDA2Pipeline
>>> import paradecode.diffusers as pd
>>> pipe = LLaDA2Pipeline(model=model, scheduler=pd.scheduler("threshold", threshold=0.9), tokenizer=tok)

Every registered diffusion strategy has a scheduler class, made on first use from the
strategy's config dataclass (so strategies added later need no code here):
``pd.ThresholdScheduler``, ``pd.LowConfScheduler`` ... (the strategy's registry name or class
name + ``Scheduler``, any capitalisation), or ``pd.scheduler(name, **config)``.

A scheduler runs the strategy's own code (:meth:`BlockDiffusionStrategy.decide`: predict,
select, write), so it commits exactly what ``paradecode.sample(..., layout="llada2")`` commits.
Its config holds the strategy's hyper-parameters plus ``block_length``,
``eos_token_id`` (for the strategies' EOS options) and ``num_inference_steps`` (steps per block, the strategy's ``steps`` where it has one; None:
``block_length``, until the pipeline's ``set_timesteps`` gives its own); the
pipeline's ``set_timesteps`` resets the per-sequence state (credit, filters, counters).

What the pipeline passes per call and how it is used: ``temperature`` and ``generator`` drive
LLaDA's Gumbel-max sampling (``sampling_method="greedy"`` forces temperature 0);
``top_p`` / ``top_k`` raise (not part of these strategies); ``threshold``,
``editing_threshold`` and ``minimal_topk`` are ``BlockRefinementScheduler``'s knobs, which the
pipeline always passes (0.7 / 0.5 / 1 by default): they are ignored, the scheduler's config
decides, and committed tokens are never edited.

A scheduler sees one block at a time, so its strategy runs as a one-block generation
(``gen_length = block_length``, ``steps = num_inference_steps``, and so its base's steps for
a composite such as Prophet). What a strategy measures over the whole generation must be
given: Prophet's ``max_steps`` (progress; default here one block's steps) and its
``answer_start`` (an offset into the block here; the default window, the first masked
positions, means the same both ways). An early exit (Prophet) fills the rest of the current
block, as ``layout="llada2"`` does in ``paradecode.sample``, where later blocks are not visible.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_block_refinement import BlockRefinementScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from paradecode.registry import build_config, get_strategy_class, strategies
from paradecode.samplers.base import BlockDiffusionStrategy, DiffusionState

__all__ = ["ParadecodeScheduler", "ParadecodeSchedulerOutput", "scheduler", "scheduler_class", "scheduler_names"]

# Strategy config fields a scheduler does not take in its config: the pipeline decides them
# (gen_length, temperature), they are per block here (steps -> num_inference_steps), or a
# scheduler cannot do them (cfg_scale needs a second forward; the layout is the pipeline's).
PIPELINE_FIELDS = ("gen_length", "block_length", "temperature", "cfg_scale", "layout", "steps")
SAMPLING_METHODS = ("auto", "greedy", "multinomial")


@dataclass
class ParadecodeSchedulerOutput(BaseOutput):
    """The fields of diffusers' ``BlockRefinementSchedulerOutput``, all (batch, block_length[, vocab]).

    ``sampled_probs`` is the strategy's confidence of ``sampled_tokens`` (their probability
    under ``low_confidence`` remasking); ``editing_transfer_index`` is always False.
    """

    prev_sample: torch.LongTensor
    transfer_index: torch.BoolTensor
    editing_transfer_index: torch.BoolTensor
    sampled_tokens: torch.LongTensor
    sampled_probs: torch.Tensor
    pred_logits: torch.Tensor


class ParadecodeScheduler(SchedulerMixin, ConfigMixin):
    """Base of the generated per-strategy schedulers; use :func:`scheduler` or a class by name."""

    order = 1
    strategy_name: str = ""

    def _setup(self) -> None:
        steps = self.config.num_inference_steps
        self.num_inference_steps = int(self.config.block_length if steps is None else steps)
        self.timesteps = torch.arange(self.num_inference_steps - 1, -1, -1, dtype=torch.long)
        self.strategy = self._build_strategy(self.num_inference_steps, int(self.config.block_length))
        self.state: Optional[DiffusionState] = None
        self._rows_masked: Optional[torch.Tensor] = None

    @property
    def strategy_options(self) -> dict[str, Any]:
        """The strategy's own hyper-parameters (the config minus block_length / num_inference_steps)."""
        own = ("block_length", "num_inference_steps", "eos_token_id")
        return {k: v for k, v in self.config.items() if not k.startswith("_") and k not in own}

    def _build_strategy(self, steps: int, block_length: int, temperature: float = 0.0) -> BlockDiffusionStrategy:
        cls = get_strategy_class(self.strategy_name)
        fields = {f.name for f in dataclasses.fields(cls.Config) if f.init}
        options = dict(self.strategy_options)
        # The scheduler sees one block at a time: a one-block generation of the pipeline's layout.
        options.update(gen_length=block_length, block_length=block_length, temperature=temperature, layout="llada2")
        if "steps" in fields:
            options["steps"] = steps
        if {"base", "base_options"} <= fields:  # a composite (prophet): its base's steps are per block too
            base = options.get("base") or next(f.default for f in dataclasses.fields(cls.Config) if f.name == "base")
            base_fields = {f.name for f in dataclasses.fields(get_strategy_class(base).Config)}
            if "steps" in base_fields and "steps" not in (options.get("base_options") or {}):
                options["base_options"] = {**(options.get("base_options") or {}), "steps": steps}
        try:
            strategy = cls(build_config(cls.Config, f"{type(self).__name__}", options))
            needs_eos = getattr(strategy.config, "logits_eos_inf", False) or getattr(strategy.config, "confidence_eos_eot_inf", False)
            if needs_eos and self.config.eos_token_id is None:
                raise ValueError("logits_eos_inf / confidence_eos_eot_inf need eos_token_id in the scheduler config.")
            return strategy
        except ValueError as e:
            raise ValueError(
                f"{type(self).__name__}: {e} (a scheduler decodes one block at a time: its strategy runs with "
                f"gen_length = block_length = {block_length}, steps = num_inference_steps = {steps})"
            ) from e

    # ---- diffusers scheduler interface -----------------------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: int,
        device: Union[str, torch.device, None] = None,
        block_length: Optional[int] = None,
    ) -> None:
        """Steps per block and block length for the next generation; resets per-sequence state."""
        if num_inference_steps <= 0:
            raise ValueError(f"num_inference_steps must be > 0, got {num_inference_steps}.")
        block_length = int(self.config.block_length if block_length is None else block_length)
        if block_length <= 0:
            raise ValueError(f"block_length must be > 0, got {block_length}.")
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.arange(self.num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)
        self.strategy = self._build_strategy(self.num_inference_steps, block_length)
        self.state = None
        self._rows_masked = None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.LongTensor,
        *,
        mask_token_id: Optional[int] = None,
        temperature: float = 0.0,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        sampling_method: str = "auto",
        threshold: Optional[float] = None,
        editing_threshold: Optional[float] = None,
        minimal_topk: Optional[int] = None,
        prompt_mask: Optional[torch.BoolTensor] = None,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[ParadecodeSchedulerOutput, tuple]:
        """One step of the strategy on the current block.

        ``model_output`` (batch, block_length, vocab) are the block's logits, ``sample``
        (batch, block_length) its tokens, ``timestep`` the step index within the block (0
        starts a new block). Rows whose block has no mask left are left alone.
        """
        if mask_token_id is None:
            raise ValueError(
                "paradecode schedulers decode masked tokens: pass mask_token_id (the pipeline takes it "
                "from the tokenizer or its mask_token_id argument); uniform-noise mode is not supported."
            )
        if (top_p is not None and top_p < 1.0) or (top_k is not None and top_k > 0):
            raise ValueError(
                "paradecode strategies sample with LLaDA's Gumbel-max at `temperature`; top_p / top_k are "
                "not supported: leave them None."
            )
        if sampling_method not in SAMPLING_METHODS:
            raise ValueError(f"sampling_method must be one of {SAMPLING_METHODS}, got {sampling_method!r}.")
        if sample.shape != model_output.shape[:2]:
            raise ValueError(
                f"sample {tuple(sample.shape)} must be the block of model_output {tuple(model_output.shape)}."
            )
        temperature = 0.0 if sampling_method == "greedy" else float(temperature)
        bl = sample.shape[1]
        if self.strategy.config.block_length != bl:
            self.strategy = self._build_strategy(self.num_inference_steps, bl, temperature)
        elif self.strategy.config.temperature != temperature:
            self.strategy.config = dataclasses.replace(self.strategy.config, temperature=temperature)
        state = self._state_for(sample, int(mask_token_id), int(timestep))
        state.generator = generator
        state.x = sample.clone()

        mask = sample == mask_token_id
        rows = torch.nonzero(mask.any(-1)).flatten().cpu()
        prev = sample.clone()
        transfer = torch.zeros_like(mask)
        sampled = model_output.argmax(-1)
        probs = torch.zeros(sample.shape, dtype=torch.float64, device=sample.device)
        if len(rows):
            dev_rows = rows.to(sample.device)
            logits = model_output[dev_rows]
            # The visible canvas of a scheduler is the block: it is also the "full" logits.
            full = logits if self.strategy.needs_full_logits else None
            out = self.strategy.decide(state, rows, logits, sample[dev_rows], full)
            tokens, moved, still = out.tokens, out.transfer, out.mask & ~out.transfer
            exit_ = self.strategy.early_exit(state, rows, full)
            if exit_ is not None:  # e.g. Prophet: the rest of the block takes the exit's tokens
                stop = exit_[0].to(sample.device)
                fill = (tokens == mask_token_id) & stop[:, None]
                tokens = torch.where(fill, exit_[1][:, : tokens.shape[1]], tokens)
                moved, still = moved | fill, still & ~stop[:, None]
            prev[dev_rows] = tokens
            transfer[dev_rows] = moved
            sampled[dev_rows] = out.x0
            probs[dev_rows] = out.confidence.to(probs.dtype)
            state.x = prev.clone()
            state.steps += 1
            self.strategy.advance(state, rows, still)
        state.extras.clear()
        self._rows_masked = (prev == mask_token_id).any(-1)
        editing = torch.zeros_like(transfer)
        if not return_dict:
            return prev, transfer, editing, sampled, probs, model_output
        return ParadecodeSchedulerOutput(prev, transfer, editing, sampled, probs, model_output)

    def _state_for(self, sample: torch.Tensor, mask_id: int, step_index: int) -> DiffusionState:
        """The per-sequence state, made at a generation's first step; ``step_index == 0`` starts a block."""
        B, bl = sample.shape
        state = self.state
        if state is None or state.batch_size != B:
            state = DiffusionState(
                x=sample.clone(),
                prompt_length=0,
                mask_id=mask_id,
                eos_id=self.config.eos_token_id,
                attention_mask=None,
                block=torch.zeros(B, dtype=torch.long),
                step_in_block=torch.zeros(B, dtype=torch.long),
                num_blocks=1,
            )
            self.strategy.on_start(state)
            self.state = state
        elif step_index == 0:
            # A new block: rows the pipeline moved on from before their block ended end it now.
            open_rows = torch.nonzero(state.step_in_block > 0).flatten()
            if len(open_rows):
                state.block[open_rows] += 1
                self.strategy.on_block_end(state, open_rows)
            state.step_in_block.zero_()
        return state

    def check_block_should_continue(
        self,
        step_idx: int,
        masks_remaining: bool,
        editing_enabled: bool,
        editing_transfer_index: torch.BoolTensor,
        post_steps: int,
        max_post_steps: int,
        finished: torch.BoolTensor,
    ) -> bool:
        """Continue the block while an unfinished row has masks left after the last step.

        Unlike ``BlockRefinementScheduler`` this does not stop at ``num_inference_steps``: a
        threshold strategy finishes its block when the block is full, however many steps that
        takes (the fixed-schedule ones fill it in ``num_inference_steps``).
        """
        if self._rows_masked is None:
            return bool(masks_remaining)
        left = self._rows_masked.to(finished.device) & ~finished
        if not bool(left.any()):
            return False
        limit = self.strategy.config.block_length + self.num_inference_steps
        if step_idx >= limit:
            raise RuntimeError(
                f"{type(self).__name__} left masks in a block after {step_idx} steps; its strategy must "
                "commit at least one token per step."
            )
        return True

    check_eos_finished = staticmethod(BlockRefinementScheduler.check_eos_finished)


# ---- one class per strategy, made from its config dataclass --------------------------------------
_CLASSES: dict[str, type] = {}


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[-_\s]+", name) if p)


def scheduler_class(name: str) -> type:
    """The scheduler class of the diffusion strategy registered as ``name``."""
    if name in _CLASSES:
        return _CLASSES[name]
    cls = get_strategy_class(name)
    if not (isinstance(cls, type) and issubclass(cls, BlockDiffusionStrategy)):
        valid = scheduler_names()
        raise ValueError(f"strategy {name!r} is not a diffusion-LM strategy; schedulers exist for {valid}.")
    params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("block_length", inspect.Parameter.KEYWORD_ONLY, default=32, annotation=int),
        inspect.Parameter("num_inference_steps", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[int]),
        inspect.Parameter("eos_token_id", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[int]),
    ]
    for f in dataclasses.fields(cls.Config):
        if not f.init or f.name in PIPELINE_FIELDS:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = inspect.Parameter.empty
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    signature = inspect.Signature(params)

    def __init__(self, **kwargs: Any) -> None:
        # register_to_config (below) has stored every argument with its default in self.config.
        unknown = sorted(set(kwargs) - set(signature.parameters))
        if unknown:
            raise ValueError(f"{type(self).__name__} got unknown option(s) {unknown}; valid: {list(signature.parameters)[1:]}")
        self._setup()  # builds the strategy once: invalid values raise its ValueError here

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__doc__ = f"Scheduler config: block_length, num_inference_steps and {cls.__name__}'s options."
    class_name = f"{cls.__name__}Scheduler"
    new = type(
        class_name,
        (ParadecodeScheduler,),
        {
            "__init__": register_to_config(__init__),
            "__doc__": f"diffusers scheduler running paradecode's {name!r} strategy: {cls.description}.",
            "__module__": __name__,
            "strategy_name": name,
        },
    )
    _CLASSES[name] = new
    globals()[class_name] = new  # importable by its name, e.g. for pickling
    return new


def scheduler_names() -> list[str]:
    """Registry names of the strategies that have a scheduler (every diffusion-LM strategy)."""
    out = []
    for name in strategies():
        cls = get_strategy_class(name)
        if isinstance(cls, type) and issubclass(cls, BlockDiffusionStrategy):
            out.append(name)
    return out


def scheduler(name: str, **config: Any) -> ParadecodeScheduler:
    """A scheduler for strategy ``name``; ``config``: block_length, num_inference_steps and the
    strategy's options (unknown or invalid ones raise ``ValueError``)."""
    return scheduler_class(name)(**config)


def __getattr__(attr: str) -> type:
    # ThresholdScheduler, LowConfScheduler, ConfidenceThresholdScheduler ... (any capitalisation)
    if attr.endswith("Scheduler") and not attr.startswith("_"):
        want = attr.lower()
        for name in scheduler_names():
            cls = get_strategy_class(name)
            if want in (f"{_camel(name)}Scheduler".lower(), f"{cls.__name__}Scheduler".lower()):
                return scheduler_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}; schedulers exist for {scheduler_names()}")
