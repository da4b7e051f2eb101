"""``paradecode.sample``: one call for every strategy, model family and cache policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .loop import Trace, run_loop
from .registry import build_config, get_cache_class, get_strategy_class

__all__ = ["SampleOutput", "sample", "prepare_prompts", "model_device"]

PromptLike = Union[torch.Tensor, Sequence[Sequence[int]], Sequence[int]]


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


def model_device(model: Any) -> Optional[torch.device]:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        return p.device if p is not None else None
    return None


def prepare_prompts(
    prompt_ids: PromptLike,
    attention_mask: Optional[torch.Tensor],
    pad_id: int,
    device: Optional[torch.device],
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Turn a tensor or a list of token lists into a left-padded (batch, P) LongTensor and
    an attention mask (None when no row is padded)."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() == 1:
            prompt_ids = prompt_ids[None]
        if prompt_ids.dim() != 2:
            raise ValueError(f"prompt_ids must be (batch, length) or (length,), got shape {tuple(prompt_ids.shape)}.")
        if prompt_ids.dtype not in (torch.long, torch.int, torch.int32, torch.int16):
            raise ValueError(f"prompt_ids must hold integer token ids, got dtype {prompt_ids.dtype}.")
        if device is not None and prompt_ids.device != device:
            raise ValueError(
                f"prompt_ids are on {prompt_ids.device} but the model is on {device}; "
                f"move them with prompt_ids.to({str(device)!r})."
            )
        if prompt_ids.shape[1] == 0:
            raise ValueError("prompt_ids is empty; give at least one prompt token.")
        if attention_mask is not None:
            if attention_mask.shape != prompt_ids.shape:
                raise ValueError(
                    f"attention_mask {tuple(attention_mask.shape)} must match prompt_ids {tuple(prompt_ids.shape)}."
                )
            if bool((attention_mask[:, -1] == 0).any()):
                raise ValueError("prompts must be left-padded: attention_mask has padding at the right end.")
            if bool(attention_mask.all()):
                attention_mask = None
        return prompt_ids.long(), attention_mask
    rows = [list(map(int, r)) for r in (prompt_ids if prompt_ids and not isinstance(prompt_ids[0], int) else [prompt_ids])]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token.")
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r) :] = torch.tensor(r)
        mask[i, P - len(r) :] = 1
    ids, mask = ids.to(device or "cpu"), mask.to(device or "cpu")
    return ids, (None if bool(mask.all()) else mask)


def make_generator(seed: Optional[int], device: Optional[torch.device]) -> Optional[torch.Generator]:
    if seed is None:
        return None
    gen = torch.Generator(device=device or "cpu")
    gen.manual_seed(int(seed))
    return gen


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
        strategy: a name from :func:`paradecode.strategies`.
        cache: a name from :func:`paradecode.cache_policies`, a policy object, or None.
        seed: makes sampling (temperature > 0, random remasking) reproducible.
        mask_token_id: overrides the model's/tokenizer's mask id.
        progress: show a tqdm bar per step.
        timing: synchronise the device at step ends for exact per-step times.
        cache_options: options of the cache policy (e.g. ``{"cache_reloading_step": 4}``).
        **options: strategy hyper-parameters; unknown or invalid ones raise ``ValueError``.
    """
    cls = get_strategy_class(strategy)
    runtime = {k: options.pop(k) for k in getattr(cls, "runtime_options", ()) if k in options}
    config = build_config(cls.Config, f"strategy {strategy!r}", options)
    strat = cls(config)
    device = model_device(model)
    models, context = strat.setup(model, mask_token_id=mask_token_id, **runtime)
    pad_id = context.get("pad_id", 0)
    ids, am = strat.prepare_inputs(prompt_ids, attention_mask, pad_id, device)
    policy = None
    if cache is not None and getattr(config, "layout", "llada") != "llada":
        raise ValueError(f"cache policies need layout='llada' (got layout={config.layout!r}); pass cache=None.")
    if cache is not None:
        if not getattr(models.get("model"), "supports_cache", False):
            raise ValueError(
                f"cache={cache!r} was asked for, but this model cannot take a cache policy "
                f"(only paradecode's LLaDAModel can); pass cache=None."
            )
        if isinstance(cache, str):
            ccls = get_cache_class(cache)
            policy = ccls(build_config(ccls.Config, f"cache policy {cache!r}", dict(cache_options or {})))
        else:
            policy = cache
    elif cache_options:
        raise ValueError("cache_options were given without a cache policy; pass cache=<name>.")
    generator = make_generator(seed, ids.device)
    if seed is not None and ids.device.type == "cpu":
        torch.manual_seed(int(seed))
    state = strat.start(ids, attention_mask=am, generator=generator, **context)
    if policy is not None and hasattr(policy, "attach"):
        policy.attach(strat, state)
    trace = run_loop(
        strat, state, models, ids.shape[0], device=ids.device, progress=progress, timing=timing, cache=policy
    )
    return SampleOutput(sequences=strat.result(state), trace=trace, prompt_length=ids.shape[1], state=state)
