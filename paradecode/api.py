"""``paradecode.sample``: one call for every strategy, model family and cache policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from .inputs import PromptLike, make_generator, model_device, prepare_prompts  # noqa: F401  (re-exported)
from .interfaces import Strategy
from .loop import Trace, run_loop
from .registry import build_config, get_cache_class, get_strategy_class

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
    strategy: str = "lowconf",
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
    """
    runtime: dict[str, Any] = {}
    if isinstance(strategy, Strategy):
        strat = strategy
        if options:
            raise ValueError(
                f"options {sorted(options)} were given with a strategy instance; put them in its config instead."
            )
    else:
        cls = get_strategy_class(strategy)
        runtime = {k: options.pop(k) for k in getattr(cls, "runtime_options", ()) if k in options}
        strat = cls(build_config(cls.Config, f"strategy {strategy!r}", options))
    device = model_device(model)
    models, context = strat.setup(model, mask_token_id=mask_token_id, **runtime)
    ids, am = strat.prepare_inputs(prompt_ids, attention_mask, context.get("pad_id", 0), device)
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


def _policy_caches(strategy: Strategy, models: dict, cache: Any, cache_options: Optional[dict]) -> dict[str, Any]:
    """The caches a policy gives the strategy's model roles, after checking it serves the strategy's family."""
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
    if strategy.family == "dllm":
        if getattr(strategy.config, "layout", "llada") != "llada":
            raise ValueError(
                f"cache policies need layout='llada' (got layout={strategy.config.layout!r}); pass cache=None."
            )
        if not getattr(models.get("model"), "supports_cache", False):
            raise ValueError(
                f"cache={name!r} was asked for, but this model cannot take a cache policy "
                f"(only paradecode's LLaDAModel can); pass cache=None."
            )
    return policy.caches_for(strategy, models)
