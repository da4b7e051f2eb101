"""The step loop, the instrumented model caller and the Trace every model family shares.

The loop drives a :class:`~paradecode.interfaces.Strategy` one step at a time. A step calls
its models only through :class:`ModelCaller`, which applies each role's cache, counts
forwards per role and per row, and collects the caches' figures; the loop times each step,
records it, and stops a strategy that runs past its own step bound (no hang, whatever the
rule does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Optional, Union

import torch

from .interfaces import Request, Strategy, staged_call

__all__ = ["StepRecord", "Trace", "ModelCaller", "StepLimitError", "run_loop", "synchronize"]


class StepLimitError(RuntimeError):
    """A strategy ran past the number of steps its generation can take."""


@dataclass
class StepRecord:
    """One finished step: forwards per role, tokens committed per row, time, memory."""

    nfe: dict[str, int]
    committed: torch.Tensor  # (batch,) tokens committed per row in this step (long)
    seconds: float
    peak_memory_bytes: Optional[int] = None
    extras: dict[str, Any] = field(default_factory=dict)


class Trace:
    """Per-step record of a generation; benchmarks and plots read only this."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.records: list[StepRecord] = []
        self.row_nfe = torch.zeros(batch_size, dtype=torch.long)
        self._pending_nfe: dict[str, int] = {}

    # -- recording (the loop calls these) --------------------------------------------------
    def count_forward(self, role: str, rows: Optional[torch.Tensor]) -> None:
        self._pending_nfe[role] = self._pending_nfe.get(role, 0) + 1
        if rows is None or len(rows) == self.batch_size:  # every row (rows are distinct)
            self.row_nfe += 1
        else:
            self.row_nfe[rows] += 1  # rows is a CPU index: no device sync

    def add(self, committed: torch.Tensor, seconds: float, peak: Optional[int], extras: dict) -> None:
        self.records.append(
            StepRecord(dict(self._pending_nfe), committed.detach(), seconds, peak, extras)
        )
        self._pending_nfe = {}

    def finalize(self) -> None:
        """Move per-step tensors to the CPU once, after the loop (no sync inside it)."""
        for r in self.records:
            r.committed = r.committed.cpu().long()

    # -- reading ---------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return len(self.records)

    @property
    def nfe(self) -> int:
        """Total model forwards (a batched forward counts once; every role counted)."""
        return sum(sum(r.nfe.values()) for r in self.records)

    @property
    def nfe_by_role(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            for k, v in r.nfe.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def tokens_per_step(self) -> list[float]:
        """Mean tokens committed per row in each step (rows already finished excluded)."""
        return [float(r.committed.float().mean()) for r in self.records]

    @property
    def tokens_committed(self) -> torch.Tensor:
        """(batch,) total tokens committed per row."""
        if not self.records:
            return torch.zeros(self.batch_size, dtype=torch.long)
        return torch.stack([r.committed for r in self.records]).sum(0)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    @property
    def peak_memory_bytes(self) -> Optional[int]:
        peaks = [r.peak_memory_bytes for r in self.records if r.peak_memory_bytes is not None]
        return max(peaks) if peaks else None

    def extra(self, key: str) -> list[Any]:
        """The per-step values a strategy or cache stored under ``key`` (missing steps skipped)."""
        return [r.extras[key] for r in self.records if key in r.extras]

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "nfe": self.nfe,
            "nfe_by_role": self.nfe_by_role,
            "mean_row_nfe": float(self.row_nfe.float().mean()) if self.batch_size else 0.0,
            "tokens": int(self.tokens_committed.sum()),
            "seconds": self.seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
        }

    def __repr__(self) -> str:
        return f"Trace({self.summary()})"


class ModelCaller:
    """``call(role, request) -> output``: the one place where models are called.

    Each role may have a cache (a canvas cache policy, a VAR KV cache); a cache with a
    ``forward(model, request)`` method runs the call itself (it may shrink the feed), so a
    strategy's requests do not change with the cache. Forwards are counted per role and per row.
    """

    def __init__(self, models: Mapping[str, Any], caches: Mapping[str, Any], trace: Trace, strategy: str = "") -> None:
        self.models = dict(models)
        self.caches = dict(caches)
        self.trace = trace
        self.strategy = strategy
        self._used: dict[str, Any] = {}

    def __call__(self, role: str, request: Request) -> Any:
        return self.stage_forward(role, request)()

    def stage_forward(self, role: str, request: Request) -> Callable[[], Any]:
        """The forward of ``role`` on ``request``, split in two: what can be worked out before
        the forward runs (a canvas cache's feed plan) is done now, and the returned call runs
        the forward (counted then, not now). A step that must wait for the device anyway plans
        its successor's forward this way while it waits; a plan never run costs nothing else."""
        model = self.models.get(role)
        if model is None:
            raise ValueError(
                f"strategy {self.strategy!r} asks for a model with role {role!r}, but only {sorted(self.models)} were given."
            )
        cache = self.caches.get(role)
        if cache is None:
            run = staged_call(model, request.inputs, **request.kwargs)
        elif hasattr(cache, "stage_forward"):
            run = cache.stage_forward(model, request)
        else:
            run = partial(cache.forward, model, request)

        def forward() -> Any:
            output = run()
            if cache is not None:
                self._used[role] = cache
            self.trace.count_forward(role, request.rows)
            return output

        return forward

    def count_forward(self, role: str, rows: Optional[torch.Tensor]) -> None:
        """Count a forward that ran outside :meth:`__call__` (a step replayed as one graph)."""
        self.trace.count_forward(role, rows)

    def release(self, role: str) -> None:
        """Drop the cache of ``role``: its memory is freed once the strategy holds no reference."""
        self.caches.pop(role, None)
        self._used.pop(role, None)

    def step_stats(self) -> dict[str, Any]:
        """Figures of the caches used since the last call (per-step trace extras)."""
        out: dict[str, Any] = {}
        for cache in self._used.values():
            out.update(cache.stats())
        self._used = {}
        return out


def synchronize(device: Optional[Union[str, torch.device]]) -> None:
    """Wait for ``device``'s queued work (CUDA); a no-op on a CPU or None. Timers call it around
    what they time, since CUDA kernels run asynchronously to the host."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_loop(
    strategy: Strategy,
    state: Any,
    models: Mapping[str, Any],
    batch_size: int,
    device: Optional[torch.device] = None,
    progress: bool = False,
    timing: bool = True,
    caches: Optional[Mapping[str, Any]] = None,
) -> Trace:
    """Drive ``strategy`` until done; returns the trace.

    ``caches`` maps model roles to caches. ``timing`` synchronises the device at step ends so
    per-step wall time is exact; turn it off to measure end-to-end throughput without syncs.
    Raises :class:`StepLimitError` when the strategy takes more steps than its
    ``max_steps(state)`` bound (a rule that stops committing tokens).
    """
    trace = Trace(batch_size)
    call = ModelCaller(models, caches or {}, trace, strategy.name)
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    limit = int(strategy.max_steps(state))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"{strategy.name}", unit="step", total=limit)
    t0 = time.perf_counter()
    with torch.inference_mode():
        while not strategy.done(state):
            if trace.steps >= limit:
                raise StepLimitError(
                    f"strategy {strategy.name!r} did not finish within {limit} steps (its bound for this "
                    f"generation); a step must commit at least one token per unfinished row."
                )
            committed = strategy.step(state, call)
            if timing:
                synchronize(device)
            t1 = time.perf_counter()
            peak = torch.cuda.max_memory_allocated(device) if cuda else None
            extras = getattr(state, "extras", None)
            record_extras = dict(extras) if extras else {}
            record_extras.update(call.step_stats())
            trace.add(committed, t1 - t0, peak, record_extras)
            if extras:
                extras.clear()
            t0 = t1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    trace.finalize()
    return trace
