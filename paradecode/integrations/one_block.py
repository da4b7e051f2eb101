"""A diffusion strategy built for an engine that hands over one block at a time.

diffusers' ``LLaDA2Pipeline`` and SGLang keep the canvas themselves and call the rule once per
forward on the current block, so the rule runs as a one-block generation of the llada2 layout:
``gen_length = block_length``, ``steps`` per block (a composite's base too). One function for
both integrations, so their options mean the same thing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ..config import build_config
from ..registry import get_strategy_class, strategies
from ..samplers.base import BlockDiffusionStrategy

__all__ = ["EOS_OPTIONS", "block_strategy_names", "one_block_strategy"]

EOS_OPTIONS = ("logits_eos_inf", "confidence_eos_eot_inf")


def block_strategy_names() -> list[str]:
    """Registered block rules an engine's block step can run: those that read the engine's own
    forward of the block (``engine_forward``; WINO's forward carries a verification block)."""
    return sorted(n for n in _block_rules() if get_strategy_class(n).engine_forward)


def _block_rules() -> list[str]:
    return [n for n in strategies() if issubclass(get_strategy_class(n), BlockDiffusionStrategy)]


def one_block_strategy(
    name: Any,
    options: dict[str, Any],
    *,
    block_length: int,
    steps: Optional[int],
    owner: str,
    temperature: float = 0.0,
    eos_token_id: Optional[int] = None,
    eos_hint: str = "eos_token_id",
    engine: str = "the engine",
) -> BlockDiffusionStrategy:
    """Strategy ``name`` with ``options``, as a one-block generation of ``block_length``.

    ``steps`` (None: the strategy's default) replaces the strategy's ``steps`` and its base's.
    Options are checked by :func:`~paradecode.config.build_config` (same messages as
    ``paradecode.sample``); a ValueError says the options were read per block, and an EOS
    option without ``eos_token_id`` is refused naming ``eos_hint`` (where to give the id).
    """
    valid = block_strategy_names()
    if isinstance(name, str) and name in _block_rules() and name not in valid:
        raise ValueError(
            f"{owner}: strategy {name!r} runs its own forward (beside the block, a verification block "
            f"the rule reads), which {engine}'s block forward does not give; decode it with "
            f"paradecode.sample, or pick one of {valid}."
        )
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"{owner}: strategy must be one of {valid} (the block strategies), got {name!r}.")
    cls = get_strategy_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config) if f.init}
    options = dict(options)
    options.update(gen_length=block_length, block_length=block_length, temperature=temperature, layout="llada2")
    if steps is not None and "steps" in fields:
        options["steps"] = steps
    if steps is not None and {"base", "base_options"} <= fields:  # a composite (prophet): its base's steps too
        base = options.get("base", cls.Config.base)
        base_fields = {f.name for f in dataclasses.fields(get_strategy_class(base).Config)} if base in valid else set()
        if "steps" in base_fields and "steps" not in (options.get("base_options") or {}):
            options["base_options"] = {**(options.get("base_options") or {}), "steps": steps}
    try:
        strategy = cls(build_config(cls.Config, owner, options))
        # logits_eos_inf / confidence_eos_eot_inf need the id; Learn2PD's EoTP is off without one.
        if strategy.needs_eos() and eos_token_id is None:
            names = " and ".join(n for n in EOS_OPTIONS if getattr(strategy.config, n, False))
            if not names:  # the strategy's own reason (Learn2PD's End-of-Text Prediction, eot=True)
                raise ValueError(f"{owner}: its end-of-text options read the end-of-text id: give {eos_hint}.")
            raise ValueError(
                f"{names} {'read' if ' and ' in names else 'reads'} the end-of-text id: give {eos_hint}, "
                f"or leave {names} False."
            )
        return strategy
    except ValueError as e:
        per_block = f"steps = {steps}" if steps is not None else "steps per block"
        raise ValueError(
            f"{e} ({engine} decodes one block at a time: the strategy runs with "
            f"gen_length = block_length = {block_length}, {per_block})"
        ) from e
