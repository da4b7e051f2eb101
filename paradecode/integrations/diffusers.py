"""paradecode's diffusion-LM strategies as diffusers schedulers, for ``diffusers.LLaDA2Pipeline``.

>>> from diffusers import LLaDA2Pipeline
>>> import paradecode.diffusers as pd
>>> pipe = LLaDA2Pipeline(model=model, scheduler=pd.scheduler("threshold", threshold=0.9), tokenizer=tok)

Every diffusion strategy has a scheduler class here, written out with its options as
``__init__`` arguments (``@register_to_config``): :class:`LowConfScheduler`,
:class:`ThresholdScheduler`, :class:`CreditScheduler`, :class:`LocalLeapScheduler`,
:class:`ProphetScheduler`, :class:`Learn2PDScheduler`, :class:`EBScheduler`, :class:`EditingScheduler`,
:class:`DParallelScheduler`; ``scheduler(name, **config)`` picks one
by the strategy's registry name. A test checks that each class's arguments are its strategy's
config fields, so a new strategy option cannot be forgotten here.

A scheduler runs the strategy's own block step (:class:`~paradecode.samplers.block_decoder.BlockDecoder`
over :func:`~paradecode.samplers.block.block_step`), so it commits exactly what
``paradecode.sample(..., layout="llada2")`` commits.
Its config holds the strategy's hyper-parameters plus ``block_length``,
``eos_token_id`` (for the strategies' EOS options) and ``num_inference_steps`` (steps per block, the strategy's ``steps`` where it has one; None:
``block_length``, until the pipeline's ``set_timesteps`` gives its own); the
pipeline's ``set_timesteps`` resets the per-sequence state (credit, filters, counters).

What the pipeline passes per call and how it is used: ``temperature`` and ``generator`` drive
LLaDA's Gumbel-max sampling (``sampling_method="greedy"`` forces temperature 0);
``top_p`` / ``top_k`` raise (not part of these strategies); ``threshold``,
``editing_threshold`` and ``minimal_topk`` are ``BlockRefinementScheduler``'s knobs, which the
pipeline always passes (0.7 / 0.5 / 1 by default): they are ignored, the scheduler's config
decides. Committed tokens are rewritten only by a strategy that revises them (``editing``:
``editing_transfer_index`` reports its edits; ``prompt_mask`` keeps the prompt out of reach),
and such a strategy's block stays open while the strategy holds it (post-edit steps).

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
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_block_refinement import BlockRefinementScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..config import build_config, check_arguments, check_value, type_hints
from ..inputs import MAX_LENGTH
from ..registry import get_strategy_class
from ..samplers.base import BlockDiffusionStrategy
from ..samplers.block_decoder import BlockDecoder

__all__ = [
    "ParadecodeScheduler", "ParadecodeSchedulerOutput", "scheduler", "scheduler_class", "scheduler_names",
    "LowConfScheduler", "ThresholdScheduler", "CreditScheduler", "LocalLeapScheduler", "ProphetScheduler",
    "Learn2PDScheduler", "EBScheduler", "EditingScheduler", "DParallelScheduler",
]

# Strategy config fields a scheduler does not take in its config: the pipeline decides them
# (gen_length, temperature), they are per block here (steps -> num_inference_steps), or a
# scheduler cannot do them (cfg_scale needs a second forward; the layout is the pipeline's).
PIPELINE_FIELDS = ("gen_length", "block_length", "temperature", "cfg_scale", "layout", "steps")
# What a scheduler's own lengths may be: a block or a step count beyond MAX_LENGTH is a typo
# (and torch.arange(2**63) kills the interpreter with SIGFPE instead of raising).
LENGTH_RANGE = (1, MAX_LENGTH)
EOS_OPTIONS = ("logits_eos_inf", "confidence_eos_eot_inf")


def _check_range(owner: str, name: str, value: Optional[int], kind: str = "option") -> None:
    """``value`` (None passes) within :data:`LENGTH_RANGE`, else a ValueError naming ``name``."""
    lo, hi = LENGTH_RANGE
    if value is not None and not lo <= value <= hi:
        raise ValueError(f"{owner}: {kind} {name} must be in [{lo}, {hi}], got {value}.")


@dataclass
class ParadecodeSchedulerOutput(BaseOutput):
    """The fields of diffusers' ``BlockRefinementSchedulerOutput``, all (batch, block_length[, vocab]).

    ``sampled_probs`` is the strategy's confidence of ``sampled_tokens`` (their probability
    under ``low_confidence`` remasking); ``editing_transfer_index`` marks committed positions
    the strategy rewrote (only a revising strategy such as ``editing`` has any).
    """

    prev_sample: torch.LongTensor
    transfer_index: torch.BoolTensor
    editing_transfer_index: torch.BoolTensor
    sampled_tokens: torch.LongTensor
    sampled_probs: torch.Tensor
    pred_logits: torch.Tensor


class ParadecodeScheduler(SchedulerMixin, ConfigMixin):
    """What every paradecode scheduler shares; the subclasses below only declare their options."""

    order = 1
    strategy_name: str = ""

    def _setup(self) -> None:
        self._check_config()
        steps = self.config.num_inference_steps
        self.num_inference_steps = int(self.config.block_length if steps is None else steps)
        self.timesteps = torch.arange(self.num_inference_steps - 1, -1, -1, dtype=torch.long)
        self.strategy = self._build_strategy(self.num_inference_steps, int(self.config.block_length))
        self.decoder: Optional[BlockDecoder] = None
        self._rows_open: Optional[torch.Tensor] = None  # rows whose block is not finished

    def _check_config(self) -> None:
        """Every ``__init__`` argument checked against its annotation (:func:`check_value`) and
        the lengths against :data:`LENGTH_RANGE`, before any tensor is made. The converted
        values (numpy ints -> int) replace the registered ones, so ``save_pretrained`` writes
        plain JSON."""
        owner = type(self).__name__
        init = type(self).__init__
        hints = type_hints(init)
        names = [n for n in inspect.signature(init).parameters if n != "self" and n in self.config]
        values = {n: check_value(n, self.config[n], hints.get(n, Any), owner) for n in names}
        _check_range(owner, "block_length", values["block_length"])
        _check_range(owner, "num_inference_steps", values["num_inference_steps"])
        if values["eos_token_id"] is not None and values["eos_token_id"] < 0:
            raise ValueError(f"{owner}: option eos_token_id must be a token id >= 0 or None, got {values['eos_token_id']}.")
        self.register_to_config(**values)

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
            base_fields = {f.name for f in dataclasses.fields(get_strategy_class(options["base"]).Config)}
            if "steps" in base_fields and "steps" not in (options.get("base_options") or {}):
                options["base_options"] = {**(options.get("base_options") or {}), "steps": steps}
        try:
            strategy = cls(build_config(cls.Config, f"{type(self).__name__}", options))
            # logits_eos_inf / confidence_eos_eot_inf need the id; Learn2PD's EoTP is off without one.
            if BlockDiffusionStrategy.needs_eos(strategy) and self.config.eos_token_id is None:
                names = " and ".join(n for n in EOS_OPTIONS if getattr(strategy.config, n, False))
                raise ValueError(
                    f"{names} {'read' if ' and ' in names else 'reads'} the end-of-text id: give eos_token_id "
                    f"in the scheduler config, or leave {names} False."
                )
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
        owner = f"{type(self).__name__}.set_timesteps()"
        checked = check_arguments(
            self.set_timesteps, owner, num_inference_steps=num_inference_steps, device=device, block_length=block_length
        )
        num_inference_steps, block_length = checked["num_inference_steps"], checked["block_length"]
        _check_range(owner, "num_inference_steps", num_inference_steps, "argument")
        _check_range(owner, "block_length", block_length, "argument")
        block_length = int(self.config.block_length if block_length is None else block_length)
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.arange(self.num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)
        self.strategy = self._build_strategy(self.num_inference_steps, block_length)
        self.decoder = None
        self._rows_open = None

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
        sampling_method: Literal["auto", "greedy", "multinomial"] = "auto",
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
        starts a new block). Rows whose block is finished (no mask left, and not held open by
        the strategy's post-edit steps) are left alone.
        """
        owner = f"{type(self).__name__}.step()"
        checked = check_arguments(
            self.step, owner, mask_token_id=mask_token_id, temperature=temperature, top_p=top_p, top_k=top_k,
            sampling_method=sampling_method, threshold=threshold, editing_threshold=editing_threshold,
            minimal_topk=minimal_topk, return_dict=return_dict,
        )
        mask_token_id, temperature = checked["mask_token_id"], checked["temperature"]
        top_p, top_k, return_dict = checked["top_p"], checked["top_k"], checked["return_dict"]
        if mask_token_id is None:
            raise ValueError(
                "paradecode schedulers decode masked tokens: pass mask_token_id (the pipeline takes it "
                "from the tokenizer or its mask_token_id argument); uniform-noise mode is not supported."
            )
        if mask_token_id < 0:
            raise ValueError(f"{owner}: argument mask_token_id must be a token id >= 0, got {mask_token_id}.")
        if temperature < 0:
            raise ValueError(f"{owner}: argument temperature must be >= 0 (0 is greedy), got {temperature}.")
        if (top_p is not None and top_p < 1.0) or (top_k is not None and top_k > 0):
            raise ValueError(
                "paradecode strategies sample with LLaDA's Gumbel-max at `temperature`; top_p / top_k are "
                "not supported: leave them None."
            )
        if not isinstance(model_output, torch.Tensor) or model_output.dim() != 3:
            raise ValueError(f"model_output must be a (batch, block_length, vocab) tensor, got {type(model_output).__name__}.")
        if not isinstance(sample, torch.Tensor) or sample.shape != model_output.shape[:2]:
            raise ValueError(
                f"sample {tuple(getattr(sample, 'shape', ()))} must be the block of model_output {tuple(model_output.shape)}."
            )
        temperature = 0.0 if checked["sampling_method"] == "greedy" else temperature
        bl = sample.shape[1]
        if self.strategy.config.block_length != bl:
            self.strategy = self._build_strategy(self.num_inference_steps, bl, temperature)
            self.decoder = None
        elif self.strategy.config.temperature != temperature:
            self.strategy.config = dataclasses.replace(self.strategy.config, temperature=temperature)
        decoder = self._decoder_for(sample, int(mask_token_id), int(timestep), generator)

        mask = sample == mask_token_id
        open_rows = mask.any(-1)
        if int(timestep) != 0 and self._rows_open is not None and self._rows_open.shape == open_rows.shape:
            open_rows = open_rows | self._rows_open.to(open_rows.device)  # held open (post-edit steps)
        rows = torch.nonzero(open_rows).flatten().cpu()
        prev = sample.clone()
        transfer = torch.zeros_like(mask)
        editing = torch.zeros_like(mask)
        fixed = None
        if prompt_mask is not None:
            fixed = torch.as_tensor(prompt_mask, dtype=torch.bool, device=sample.device).expand_as(sample)
        sampled = model_output.argmax(-1)
        probs = torch.zeros(sample.shape, dtype=torch.float64, device=sample.device)
        if len(rows):
            dev_rows = rows.to(sample.device)
            out = decoder.step(sample[dev_rows], model_output[dev_rows], rows,
                               fixed=fixed[dev_rows] if fixed is not None else None)
            prev[dev_rows] = out.tokens
            transfer[dev_rows] = out.transfer
            if out.revised is not None:
                editing[dev_rows] = out.revised
                transfer[dev_rows] = out.transfer & ~out.revised
            sampled[dev_rows] = out.x0
            probs[dev_rows] = out.confidence.to(probs.dtype)
        decoder.state.extras.clear()
        self._rows_open = (prev == mask_token_id).any(-1)
        if len(rows) and out.left is not None:
            self._rows_open[rows.to(sample.device)] = out.left.to(sample.device)
        if not return_dict:
            return prev, transfer, editing, sampled, probs, model_output
        return ParadecodeSchedulerOutput(prev, transfer, editing, sampled, probs, model_output)

    def _decoder_for(
        self, sample: torch.Tensor, mask_id: int, step_index: int, generator: Optional[torch.Generator]
    ) -> BlockDecoder:
        """The per-sequence decoder, made at a generation's first step; ``step_index == 0`` starts a block."""
        B = sample.shape[0]
        decoder = self.decoder
        if decoder is None or decoder.state.batch_size != B or decoder.mask_id != mask_id:
            decoder = BlockDecoder(self.strategy, mask_id, self.config.eos_token_id)
            decoder.reset(B, sample.device, generator)
            self.decoder = decoder
        elif step_index == 0:
            decoder.start_block()
        decoder.rule = self.strategy
        decoder.state.generator = generator
        return decoder

    @property
    def state(self) -> Any:
        """The rule's per-sequence state (None before the first step)."""
        return None if self.decoder is None else self.decoder.state

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
        """Continue the block while an unfinished row's block is open after the last step (masks
        left, or held open by the strategy's post-edit steps).

        Unlike ``BlockRefinementScheduler`` this does not stop at ``num_inference_steps``: a
        threshold strategy finishes its block when the block is full, however many steps that
        takes (the fixed-schedule ones fill it in ``num_inference_steps``). The block step
        itself refuses a step that commits nothing; this bound is the second guard.
        """
        if self._rows_open is None:
            return bool(masks_remaining)
        left = self._rows_open.to(finished.device) & ~finished
        if not bool(left.any()):
            return False
        limit = self.strategy.config.block_length + self.num_inference_steps + self.strategy.post_block_steps
        if step_idx >= limit:
            raise RuntimeError(
                f"{type(self).__name__} left masks in a block after {step_idx} steps; its strategy must "
                "commit at least one token per step."
            )
        return True

    check_eos_finished = staticmethod(BlockRefinementScheduler.check_eos_finished)


# ---- one class per strategy: the strategy's options (minus PIPELINE_FIELDS) as arguments --------------
class LowConfScheduler(ParadecodeScheduler):
    """LLaDA's baseline (``lowconf``): a fixed number of tokens per step, low-confidence or random remasking."""

    strategy_name = "lowconf"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        remasking: Literal["low_confidence", "random"] = "low_confidence",
        confidence_eos_eot_inf: bool = False,
        eot_token_id: Optional[int] = None,
    ) -> None:
        self._setup()


class ThresholdScheduler(ParadecodeScheduler):
    """Fast-dLLM's confidence threshold (``threshold``), or its factor rule."""

    strategy_name = "threshold"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        threshold: float = 0.9,
        factor: Optional[float] = None,
    ) -> None:
        self._setup()


class CreditScheduler(ParadecodeScheduler):
    """CreditDecoding (``credit``): the threshold rule on logits fused with trace credit."""

    strategy_name = "credit"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        threshold: float = 0.9,
        credit_alpha: float = 0.7,
        boost_gamma: float = 0.2,
        decay_beta: float = 0.8,
    ) -> None:
        self._setup()


class LocalLeapScheduler(ParadecodeScheduler):
    """LocalLeap (``localleap``): a relaxed threshold near high-confidence anchors."""

    strategy_name = "localleap"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        threshold: float = 0.9,
        relaxed_threshold: float = 0.75,
        radius: int = 4,
    ) -> None:
        self._setup()


class ProphetScheduler(ParadecodeScheduler):
    """Prophet (``prophet``): early commit when the top-2 gap passes the stage threshold.

    A scheduler sees one block at a time: give ``max_steps`` (progress is measured against it;
    default one block's steps) and ``answer_start`` as an offset into the block.
    """

    strategy_name = "prophet"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        base: Literal["lowconf", "threshold", "credit", "localleap", "learn2pd"] = "lowconf",
        base_options: Optional[dict[str, Any]] = None,
        early_threshold: float = 7.5,
        mid_threshold: float = 5.0,
        late_threshold: float = 2.5,
        answer_start: Optional[int] = None,
        answer_length: int = 5,
        max_steps: Optional[int] = None,
        constraints: Optional[dict[int, int]] = None,
    ) -> None:
        self._setup()

    @property
    def strategy_options(self) -> dict[str, Any]:
        options = super().strategy_options
        options["base_options"] = dict(options.get("base_options") or {})
        return options

    def _check_config(self) -> None:
        # A saved config is JSON, whose object keys are strings: "3" -> 3 for the offsets.
        cons = self.config.get("constraints")
        if isinstance(cons, dict) and all(isinstance(k, str) and k.lstrip("-").isdigit() for k in cons):
            self.register_to_config(constraints={int(k): v for k, v in cons.items()})
        super()._check_config()


class Learn2PDScheduler(ParadecodeScheduler):
    """Learn2PD (``learn2pd``): a learned filter plus the top-k schedule; End-of-Text Prediction
    inside the block (needs ``eos_token_id``). Uses the filter shipped for the block length."""

    strategy_name = "learn2pd"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        remasking: Literal["low_confidence", "random"] = "low_confidence",
        confidence_eos_eot_inf: bool = False,
        eot_token_id: Optional[int] = None,
        accept_threshold: float = 0.96,
        eot: bool = True,
        eot_truncate: bool = False,
    ) -> None:
        self._setup()


class EBScheduler(ParadecodeScheduler):
    """EB-Sampler (``eb``): the lowest-entropy masked positions while their summed entropy stays within ``gamma``.

    For masked diffusion LMs (SGLang's ``EBSampling`` semantics); diffusers' own
    ``EntropyBoundScheduler`` is the uniform-noise variant (see ``paradecode/samplers/eb.py``).
    """

    strategy_name = "eb"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        gamma: float = 0.15,
    ) -> None:
        self._setup()


class EditingScheduler(ParadecodeScheduler):
    """LLaDA2.1's draft-and-edit (``editing``): threshold commits plus edits of committed block
    tokens above ``editing_threshold``, with up to ``max_post_edit_steps`` edit-only steps.

    SGLang's ``JointThreshold`` semantics and defaults (see ``paradecode/samplers/editing.py``);
    the pipeline's own ``threshold`` / ``editing_threshold`` / ``max_post_steps`` arguments are
    ignored: this config decides.
    """

    strategy_name = "editing"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        threshold: float = 0.5,
        editing_threshold: float = 0.0,
        max_post_edit_steps: int = 16,
    ) -> None:
        self._setup()


class DParallelScheduler(ParadecodeScheduler):
    """dParallel's decoding rule (``dparallel``): every masked block position whose entropy is at
    most ``threshold`` (nats), and at least the lowest-entropy one (see
    ``paradecode/samplers/dparallel.py``); the pipeline's own ``threshold`` is ignored."""

    strategy_name = "dparallel"

    @register_to_config
    def __init__(
        self,
        block_length: int = 32,
        num_inference_steps: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        logits_eos_inf: bool = False,
        threshold: float = 0.5,
    ) -> None:
        self._setup()


SCHEDULERS: dict[str, type[ParadecodeScheduler]] = {
    cls.strategy_name: cls
    for cls in (LowConfScheduler, ThresholdScheduler, CreditScheduler, LocalLeapScheduler, ProphetScheduler,
                Learn2PDScheduler, EBScheduler, EditingScheduler, DParallelScheduler)
}


def scheduler_names() -> list[str]:
    """Registry names of the strategies that have a scheduler."""
    return sorted(SCHEDULERS)


def scheduler_class(name: str) -> type[ParadecodeScheduler]:
    """The scheduler class of the diffusion strategy registered as ``name``."""
    if name not in SCHEDULERS:
        raise ValueError(f"no scheduler for strategy {name!r}; schedulers exist for {scheduler_names()}.")
    return SCHEDULERS[name]


def scheduler(name: str, **config: Any) -> ParadecodeScheduler:
    """A scheduler for strategy ``name``; ``config``: block_length, num_inference_steps,
    eos_token_id and the strategy's options (unknown or invalid ones raise ``ValueError``)."""
    cls = scheduler_class(name)
    import inspect

    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ValueError(f"{cls.__name__} got unknown option(s) {unknown}; valid: {valid}")
    return cls(**config)
