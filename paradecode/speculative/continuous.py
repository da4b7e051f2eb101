"""Continuous batching for speculative decoding: a finished row takes the next prompt.

A batch decodes until its slowest row is done, so as the batch grows more of it idles (the
benchmark's speedup falls from 1.69x at batch 1 to 1.05x at 32). Here a row that finishes
leaves its output and takes the next waiting prompt: its canvas and counts reset in place and
both caches are filled for the refilled rows alone (:meth:`SpeculativeDecoding.refill_rows`),
while the other rows keep decoding. The batch keeps its shape, so recorded steps replay as
before. Each prompt decodes as it would alone (greedy: the target's own greedy tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..config import build_config
from ..inputs import check_length, make_generator, model_vocab_size, prompt_rows
from ..loop import ModelCaller, Trace
from .strategy import SpeculativeConfig, SpeculativeDecoding

__all__ = ["ContinuousOutput", "generate_continuous"]


@dataclass
class ContinuousOutput:
    """``generated[i]``: prompt i's new tokens (up to its EOS, which is kept); ``steps``: batch
    steps run; ``target_forwards``: verify forwards (one per step); ``accepted_drafts``: drafts
    accepted over all prompts; ``seconds``: wall time; ``refills``: refill forwards (one per
    model for each group of rows refilled together)."""

    generated: list[list[int]]
    steps: int
    target_forwards: int
    accepted_drafts: int
    seconds: float
    refills: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(g) for g in self.generated)


def generate_continuous(
    target: nn.Module,
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    *,
    draft_model: Optional[nn.Module] = None,
    vocabtrim: Any = None,
    seed: Optional[int] = None,
    min_refill: int = 1,
    **options: Any,
) -> ContinuousOutput:
    """Decode every prompt with speculative decoding, ``batch_size`` rows at a time, finished
    rows taking the next prompts. ``options`` are the ``speculative`` strategy's
    (``max_new_tokens``, ``num_draft_tokens``, ``drafter`` ...). Prompts are lists of ids, 2 or
    more tokens each.

    ``min_refill``: finished rows wait until at least this many (or every waiting prompt) can
    be refilled together. A refill is one forward of each model for all its rows and reads
    every weight, as a step does; an idle row costs a step little at a large batch. 1 refills
    after every step that finishes a row. On an H200 at the 8B/1B shapes (``benchmarks/README.md``,
    "Refills grouped"), 1 was best at batch 4 (1.27x fixed batches; 4 gave 0.99x) and 4 at
    batch 16 and 32 (1.29x / 1.26x, against 1.23x / 1.15x with 1)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if not isinstance(min_refill, int) or not 1 <= min_refill <= batch_size:
        raise ValueError(f"min_refill must be an int from 1 to batch_size ({batch_size}), got {min_refill!r}.")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt (a list of token ids).")
    rows = prompt_rows(prompts, model_vocab_size(target))
    if min(len(r) for r in rows) < 2:
        raise ValueError("every prompt needs at least 2 tokens (a refilled row's draft cache keeps all but the last two).")
    strat = SpeculativeDecoding(build_config(SpeculativeConfig, "strategy 'speculative'", options))
    models, context = strat.setup(target, draft_model=draft_model, vocabtrim=vocabtrim)
    pad = context["pad_id"]
    device = next(target.parameters()).device
    P = max(len(r) for r in rows)  # one prompt width for every prompt that will pass through the batch
    check_length("max_new_tokens", strat.config.max_new_tokens, P, target)
    B = min(batch_size, len(rows))
    first = rows[:B]
    ids = torch.tensor([[pad] * (P - len(r)) + r for r in first], device=device)
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in first], device=device)
    state = strat.start(ids, attention_mask=mask, generator=make_generator(seed, device), **context)
    owner: list[Optional[int]] = list(range(B))  # the prompt each row decodes (None: idle)
    waiting = list(range(B, len(rows)))
    # finished rows' tokens, copied on the device and read once at the end: reading them as rows
    # finish would wait for the step queued ahead of the read (launch_ahead) every time
    finished: list[tuple[int, torch.Tensor]] = []
    trace = Trace(B)
    call = ModelCaller(models, {}, trace, strat.name)
    refills = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        while True:
            committed = strat.step(state, call)
            trace.add(committed, 0.0, None, dict(state.extras))
            state.extras.clear()
            for b in range(B):
                if owner[b] is not None and state.finished[b]:
                    finished.append((owner[b], state.tokens[b, P : P + int(state.n_gen[b])].clone()))
                    owner[b] = None
            idle = [b for b in range(B) if owner[b] is None]
            if waiting and len(idle) >= min(min_refill, len(waiting)):
                take = idle[: len(waiting)]
                for b in take:
                    owner[b] = waiting.pop(0)
                strat.refill_rows(state, take, [rows[owner[b]] for b in take], pad)
                refills += 1
            if all(o is None for o in owner):
                break
        flat = torch.cat([t for _, t in finished]).tolist()  # the one read of the generated tokens
    seconds = time.perf_counter() - t0
    generated: list[list[int]] = [[] for _ in rows]
    at = 0
    for i, t in finished:
        generated[i], at = flat[at : at + len(t)], at + len(t)
    trace.finalize()
    accepted = sum(int(a.sum()) for a in trace.extra("accepted"))
    return ContinuousOutput(generated, trace.steps,
                            trace.nfe_by_role.get("target", 0), accepted, seconds, refills)
