"""One speculative step — draft k, verify, accept — recorded as one CUDA graph.

With one graph per forward (:class:`.causal_lm.CausalLM`), a step still launches k + 1 graphs
and some sixty small kernels between them (the draft's argmax, the acceptance rule, the
canvas write, the caches' rollback), each a launch and a gap on the device. A step of fixed
shape (a constant draft length) repeats exactly, so all of it can be one graph: the
host replays it and reads the step's counts through :class:`CountsCopy`, which lets it queue
the next step's replay before that read.

A graph records memory addresses, so everything a step reads or writes must stay allocated
from one generation to the next: the models' caches (kept by ``CausalLM.cache``) and the
strategy's device buffers (:class:`StepBuffers`, kept by ``CausalLM.workspace``). The graphs
recorded on them live with the buffers. As with the caches, two generations must not run
interleaved on the same buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..interfaces import Request

__all__ = ["StepBuffers", "CountsCopy", "InlineCall", "StepGraph", "record_step"]


class CountsCopy:
    """A recorded step's counts, copied to the host without waiting: the host can queue the
    next step before it reads this one's. Two buffers, so a step's counts survive the next
    replay; a GPU copies into pinned memory and marks the copy with an event."""

    def __init__(self, rows: int, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = [torch.empty(4, rows, dtype=torch.long, pin_memory=self.cuda) for _ in range(2)]
        self.events = [torch.cuda.Event() if self.cuda else None for _ in range(2)]
        self.next = 0

    def start(self, counts: torch.Tensor) -> int:
        """Queue the copy of ``counts`` (n, B), n <= 4; returns the slot to :meth:`wait` on."""
        slot, self.next = self.next, 1 - self.next
        self.host[slot][: counts.shape[0]].copy_(counts, non_blocking=self.cuda)
        if self.cuda:
            self.events[slot].record()
        return slot

    def wait(self, slot: int) -> torch.Tensor:
        """The counts of ``slot`` once copied (a copy of the buffer, which is reused)."""
        if self.cuda:
            self.events[slot].synchronize()
        return self.host[slot].clone()


@dataclass
class StepBuffers:
    """A generation's device tensors that a recorded step reads or writes, kept between
    generations of one shape (batch, canvas width, EOS ids)."""

    tokens: torch.Tensor  # (B, width) canvas
    length: torch.Tensor  # (B,) committed tokens per row
    start: torch.Tensor  # (B,) left padding per row
    budget_end: torch.Tensor  # (B,) the length at which a row has its max_new_tokens
    finished: torch.Tensor  # (B,) bool
    eos_ids: Optional[torch.Tensor]
    copies: Optional[CountsCopy] = None  # where recorded steps' counts reach the host
    pool: Any = None  # the CUDA graph memory pool its steps share (they never run at once)
    graphs: dict = field(default_factory=dict)  # step key -> StepGraph
    error: Optional[str] = None  # a failed recording: never try again on these buffers


class InlineCall:
    """A :class:`~paradecode.interfaces.ModelCall` for use while a step is recorded: each
    role's forward runs inline (``CausalLM.inline``: its kernels join the step's graph, no
    graph of its own). It remembers the roles it ran, in order, for the loop's forward counts."""

    def __init__(self, models: dict) -> None:
        self.models = models
        self.roles: list[str] = []

    def __call__(self, role: str, request: Request) -> Any:
        self.roles.append(role)
        return self.models[role].inline(request.inputs, **request.kwargs)

    def release(self, role: str) -> None:
        """Nothing to release: recording a step drops no cache."""


class StepGraph:
    """``fn(call) -> counts`` recorded as one CUDA graph in the memory pool of ``buffers`` (shared
    by the steps recorded on them: one runs at a time, and each one's counts are copied out
    before the next replay). Recording executes nothing; :meth:`replay` runs the step and
    returns its counts tensor (overwritten by the next replay). ``roles``: the forwards one step
    runs, by role. ``noise``: a sampled step's :class:`~.noise.KeptNoise`, which the strategy
    fills before each replay (None: greedy)."""

    noise: Any = None

    def __init__(self, fn: Callable[[InlineCall], torch.Tensor], models: dict, buffers: StepBuffers) -> None:
        if buffers.pool is None:
            buffers.pool = torch.cuda.graph_pool_handle()
        call = InlineCall(models)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=buffers.pool):
            self.out = fn(call)
        self.roles = tuple(call.roles)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.out


def record_step(fn: Callable[[InlineCall], torch.Tensor], models: dict, buffers: StepBuffers) -> Any:
    """The recording the strategy uses (a seam: tests replace it with an eager stand-in that
    reruns ``fn`` at each replay)."""
    return StepGraph(fn, models, buffers)
