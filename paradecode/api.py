"""``paradecode.sample``: one call for every strategy, model family and cache policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from .config import check_arguments, generation_defaults, validate_config
from .inputs import (  # noqa: F401  (prepare_prompts re-exported)
    PromptLike, check_length, make_generator, model_device, model_vocab_size, prepare_prompts,
)
from .interfaces import Strategy
from .loop import Trace, run_loop
from .registry import build_config, get_cache_class, get_strategy_class

# Config fields that set how many tokens a strategy generates (checked against the model's length).
LENGTH_OPTIONS = ("gen_length", "max_new_tokens")

__all__ = ["SampleOutput", "sample", "prepare_prompts", "model_device"]


@dataclass
class SampleOutput:
    """``sequences``: (batch, prompt + generation) LongTensor; ``trace``: the per-step record;
    ``prompt_length``: the column where generation starts (prompts are left-padded)."""

    sequences: torch.Tensor
    trace: Trace
    prompt_length: int
    state: Any = None

    @property
    def generated(self) -> torch.Tensor:
        """The generation part only: (batch, gen_length)."""
        return self.sequences[:, self.prompt_length :]


def sample(
    model: Any,
    prompt_ids: PromptLike,
    strategy: Union[str, Strategy] = "lowconf",
    *,
    cache: Union[str, Any, None] = None,
    seed: Optional[int] = None,
    attention_mask: Optional[torch.Tensor] = None,
    mask_token_id: Optional[int] = None,
    progress: bool = False,
    timing: bool = True,
    cache_options: Optional[dict[str, Any]] = None,
    **options: Any,
) -> SampleOutput:
    """Generate with ``strategy``; ``options`` are the strategy's config fields.

    Args:
        model: our ``LLaDAModel``, any Hugging Face model returning ``.logits`` (wrapped
            automatically), or a callable ``(tokens, **kw) -> logits``.
        prompt_ids: (batch, P) or (P,) LongTensor, or a list of token lists of varying
            length (left-padded, with an attention mask).
        strategy: a name from :func:`paradecode.strategies`, or a strategy instance.
        cache: a name from :func:`paradecode.cache_policies`, a policy object, or None.
        seed: makes sampling (temperature > 0, random remasking) reproducible.
        mask_token_id: overrides the model's/tokenizer's mask id.
        progress: show a tqdm bar per step.
        timing: synchronise the device at step ends for exact per-step times.
        cache_options: options of the cache policy (e.g. ``{"cache_reloading_step": 4}``).
        **options: strategy hyper-parameters; unknown or invalid ones raise ``ValueError``.
            ``gen_length`` / ``block_length`` left out come from ``model.generation_defaults``
            where the model has them (the shipped models do), and an unset ``steps`` is lowered
            to ``gen_length`` (:func:`paradecode.config.generation_defaults`).

    A wrong argument raises ``TypeError`` (wrong type) or ``ValueError`` naming it, before any
    tensor work: token ids (and the mask id) must lie in the model's vocabulary, and the
    prompt plus ``gen_length`` / ``max_new_tokens`` must fit the model's maximum length.
    """
    checked = check_arguments(
        sample, "sample()", progress=progress, timing=timing, mask_token_id=mask_token_id, cache_options=cache_options
    )
    progress, timing = checked["progress"], checked["timing"]
    mask_token_id, cache_options = checked["mask_token_id"], checked["cache_options"]
    runtime: dict[str, Any] = {}
    if isinstance(strategy, Strategy):
        strat = strategy
        if options:
            raise ValueError(
                f"options {sorted(options)} were given with a strategy instance; put them in its config instead."
            )
        validate_config(strat.config)  # a config built by hand gets the combination checks build_config runs
    else:
        cls = get_strategy_class(strategy)
        runtime = {k: options.pop(k) for k in getattr(cls, "runtime_options", ()) if k in options}
        options = generation_defaults(cls.Config, _model_generation_defaults(model), options)
        strat = cls(build_config(cls.Config, f"strategy {strategy!r}", options))
    if mask_token_id is not None:
        if strat.family != "dllm":
            raise ValueError(
                f"mask_token_id applies to diffusion-LM strategies; strategy {strat.name!r} decodes "
                f"{strat.family!r} models: leave mask_token_id out."
            )
        runtime["mask_token_id"] = mask_token_id
    device = model_device(model)
    models, context = strat.setup(model, **runtime)
    vocab = context.get("vocab_size") or model_vocab_size(model)
    _check_mask_id(context.get("mask_id"), vocab, given=mask_token_id is not None)
    ids, am = strat.prepare_inputs(prompt_ids, attention_mask, context.get("pad_id", 0), device, vocab_size=vocab)
    for name in LENGTH_OPTIONS:
        length = getattr(strat.config, name, None)
        if isinstance(length, int):
            check_length(name, length, ids.shape[1], model)
    caches = dict(strat.default_caches(models))
    if cache is not None:
        caches.update(_policy_caches(strat, models, cache, cache_options))
    elif cache_options:
        raise ValueError("cache_options were given without a cache policy; pass cache=<name>.")
    generator = make_generator(seed, ids.device)
    state = strat.start(ids, attention_mask=am, generator=generator, **context)
    trace = run_loop(
        strat, state, models, ids.shape[0], device=ids.device, progress=progress, timing=timing, caches=caches
    )
    return SampleOutput(sequences=strat.result(state), trace=trace, prompt_length=ids.shape[1], state=state)


def _model_generation_defaults(model: Any) -> Mapping[str, Any]:
    """``model.generation_defaults`` (set by ``zoo.load``: the canvas the model was trained
    with), or ``{}``; the values are checked as options afterwards."""
    defaults = getattr(model, "generation_defaults", None)
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise TypeError(
            f"model.generation_defaults must be a dict such as {{'gen_length': 32, 'block_length': 32}}, "
            f"got {type(defaults).__name__}."
        )
    return defaults


def _check_mask_id(mask_id: Optional[int], vocab: Optional[int], given: bool) -> None:
    """The mask id a diffusion strategy writes must be a token the model embeds."""
    if mask_id is None:
        return
    if mask_id < 0 or (vocab is not None and mask_id >= vocab):
        valid = f"[0, {vocab - 1}] (the model's vocabulary)" if vocab is not None else "a non-negative token id"
        source = "mask_token_id" if given else "the model config's mask_token_id"
        raise ValueError(f"sample(): {source} must be in {valid}, got {mask_id}.")


def _policy_caches(strategy: Strategy, models: dict, cache: Any, cache_options: Optional[dict]) -> dict[str, Any]:
    """The caches a policy gives the strategy's model roles, after checking it serves the strategy's family."""
    if not isinstance(cache, str) and not callable(getattr(cache, "caches_for", None)):
        raise TypeError(
            f"cache must be a policy name from paradecode.cache_policies(), a cache policy object or None, "
            f"got {type(cache).__name__} {cache!r}."
        )
    if isinstance(cache, str):
        ccls = get_cache_class(cache)
        policy = ccls(build_config(ccls.Config, f"cache policy {cache!r}", dict(cache_options or {})))
    else:
        if cache_options:
            raise ValueError("cache_options go with a cache policy name; configure a policy object directly.")
        policy = cache
    families = tuple(getattr(policy, "families", ()))
    name = getattr(policy, "name", type(policy).__name__)
    if strategy.family not in families:
        raise ValueError(
            f"cache policy {name!r} serves {list(families)} models, but strategy {strategy.name!r} decodes "
            f"{strategy.family!r} models; pass cache=None or a policy for {strategy.family!r} "
            f"(see paradecode.cache_policies())."
        )
    if not getattr(strategy, "cacheable", True):
        raise ValueError(
            f"strategy {strategy.name!r} runs its own forward (e.g. WINO's shadow block), which cache policy "
            f"{name!r} cannot plan; pass cache=None."
        )
    if strategy.family == "dllm":
        if getattr(strategy.config, "layout", "llada") != "llada":
            raise ValueError(
                f"cache policies need layout='llada' (got layout={strategy.config.layout!r}); pass cache=None."
            )
        if not getattr(models.get("model"), "supports_cache", False):
            raise ValueError(
                f"cache={name!r} was asked for, but this model cannot take a cache policy "
                f"(paradecode's LLaDAModel and DreamModel can); pass cache=None."
            )
    return policy.caches_for(strategy, models)
