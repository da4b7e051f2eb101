"""The step loop, the strategy interface and the Trace every model family shares.

The loop is the only place that calls a model. A strategy never does: it answers
``propose`` with a :class:`Request` (which model role, which inputs) and turns the model's
output into commits in ``commit``. That is what lets any strategy run with any cache
policy, and lets traces count forwards the same way for diffusion LMs, VAR and
speculative decoding.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, Mapping, Optional, TypeVar

import torch

__all__ = ["Request", "StepRecord", "Trace", "Strategy", "run_loop"]


@dataclass
class Request:
    """What the strategy wants scored next.

    ``role`` names the model (``"model"`` for single-model strategies, ``"draft"`` /
    ``"target"`` for speculative decoding, ``"drafter"`` / ``"refiner"`` for CoDe).
    ``inputs`` is passed positionally first, ``kwargs`` as keyword arguments:
    ``models[role](inputs, **kwargs)``. ``rows`` lists the batch rows the forward serves
    (each row's own NFE is counted from it); None means all rows.
    ``ends_step`` is False for a sub-call that does not finish a step (a draft token).
    """

    inputs: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    role: str = "model"
    rows: Optional[torch.Tensor] = None
    ends_step: bool = True


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
        if rows is None:
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


StateT = TypeVar("StateT")


class Strategy(ABC, Generic[StateT]):
    """A decoding strategy: ``start -> (propose -> model -> commit)* until done``.

    Subclasses set ``name``, ``description`` and ``Config`` (a dataclass of hyper-parameters
    with the paper's defaults) and are registered with :func:`paradecode.registry.register`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type]

    runtime_options: ClassVar[tuple[str, ...]] = ()  # non-config kwargs of sample(), e.g. draft_model

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def setup(self, model: Any, **runtime: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return ``(models by role, context for start())`` for ``paradecode.sample``."""

    def prepare_inputs(
        self, prompt_ids: Any, attention_mask: Optional[torch.Tensor], pad_id: int, device: Optional[torch.device]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Turn the user's prompt into the (batch, P) tensor and mask that :meth:`start` takes.

        Default: token ids, left-padded (:func:`paradecode.api.prepare_prompts`); a strategy
        whose prompt is something else (VAR's class labels) overrides this.
        """
        from .api import prepare_prompts

        return prepare_prompts(prompt_ids, attention_mask, pad_id, device)

    @abstractmethod
    def start(self, prompt_ids: torch.Tensor, **context: Any) -> StateT:
        """Build the per-sequence state (canvas, credit, drafts ...) for a batch of prompts."""

    @abstractmethod
    def propose(self, state: StateT) -> Request:
        """What to score next."""

    @abstractmethod
    def commit(self, state: StateT, output: Any) -> Optional[torch.Tensor]:
        """Use the model output; return (batch,) tokens committed per row, or None mid-step.

        A strategy may put per-step values for the trace into ``state.extras`` (a dict);
        the loop moves them into the step's record.
        """

    @abstractmethod
    def done(self, state: StateT) -> bool:
        """True once every row has finished."""

    @abstractmethod
    def result(self, state: StateT) -> torch.Tensor:
        """The final sequences (batch, prompt + generation)."""


ModelFn = Callable[..., Any]


def _sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def run_loop(
    strategy: Strategy,
    state: Any,
    models: Mapping[str, ModelFn],
    batch_size: int,
    device: Optional[torch.device] = None,
    progress: bool = False,
    timing: bool = True,
    cache: Any = None,
) -> Trace:
    """Drive ``strategy`` until done; the one place where models are called.

    ``cache`` is a cache policy (``paradecode.caches.CachePolicy``): it may shrink each
    request to the positions it recomputes, and its ``stats()`` go into the trace.
    ``timing`` synchronises the device at step ends so per-step wall time is exact; turn it
    off to measure end-to-end throughput without per-step syncs.
    """
    trace = Trace(batch_size)
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"{strategy.name}", unit="step")
    t0 = time.perf_counter()
    with torch.inference_mode():
        while not strategy.done(state):
            request = strategy.propose(state)
            if request.role not in models:
                raise ValueError(
                    f"strategy {strategy.name!r} asks for a model with role {request.role!r}, "
                    f"but only {sorted(models)} were given."
                )
            if cache is not None and request.role == getattr(cache, "role", "model"):
                request = cache.prepare(request, state)
                output = models[request.role](request.inputs, **request.kwargs)
                output = cache.restore(output, request)
            else:
                output = models[request.role](request.inputs, **request.kwargs)
            trace.count_forward(request.role, request.rows)
            committed = strategy.commit(state, output)
            if committed is None:
                continue
            if timing:
                _sync(device)
            t1 = time.perf_counter()
            peak = torch.cuda.max_memory_allocated(device) if cuda else None
            extras = getattr(state, "extras", None) or {}
            record_extras = dict(extras)
            if cache is not None:
                record_extras.update(cache.stats())
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
