"""The types every layer shares: what a strategy asks a model to score, and the strategy contract.

This module sits at the bottom of the package (it imports only :mod:`paradecode.inputs`), so models,
caches, strategies and the loop can all speak in its terms without importing each other:

* :class:`Request` is one model call: the inputs, keyword arguments, and which batch rows it
  serves (the loop counts each row's forwards from it).
* :class:`CanvasRequest` describes a diffusion-LM forward in canvas terms. A canvas cache
  policy plans its feed from it and never looks at a strategy's state.
* :class:`Strategy` is what the loop drives: ``start``, then ``step(state, call)`` until
  ``done``. A step calls its models through ``call`` (the loop's instrumented caller), so a
  strategy that needs several model calls per step (speculative decoding) reads top to bottom.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Callable, ClassVar, Generic, Optional, Protocol, TypeVar

import torch

__all__ = ["Request", "CanvasRequest", "ModelCall", "Strategy", "LayerKV", "LayerHooks", "FAMILIES", "block_columns",
           "device_arange", "to_device", "staged_call"]

#: Model families a strategy belongs to and a cache policy may serve.
FAMILIES = ("dllm", "var", "causal-lm")


_DEVICE_COPIES: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_DEVICE_COPIES_KEPT = 64
_DEVICE_COPY_MAX = 4096  # elements: larger tensors are copied every time


def _kept(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor ``make()`` gave for ``key`` (made on the first call, kept among the last
    ``_DEVICE_COPIES_KEPT`` keys used)."""
    hit = _DEVICE_COPIES.get(key)
    if hit is None:
        hit = _DEVICE_COPIES[key] = make()
        if len(_DEVICE_COPIES) > _DEVICE_COPIES_KEPT:
            _DEVICE_COPIES.popitem(last=False)
    else:
        _DEVICE_COPIES.move_to_end(key)
    return hit


def _copy_in(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A device copy of a small host tensor, never an alias of it; on CUDA from pinned memory
    with no wait (PyTorch keeps the pinned block until the copy has run)."""
    if torch.device(device).type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    out = host.to(device)
    return out.clone() if out.data_ptr() == host.data_ptr() else out


def staged_call(model: Any, inputs: torch.Tensor, **kwargs: Any) -> Callable[[], Any]:
    """``model(inputs, **kwargs)`` as a call to make later. A model with ``stage_forward`` (a CUDA
    graph wrapper) does what it can now (queues its graph's input copies); any other is simply
    called then. The one place callers that plan a forward ahead reach a model."""
    stage = getattr(model, "stage_forward", None)
    return stage(inputs, **kwargs) if stage is not None else partial(model, inputs, **kwargs)


def to_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``index.to(device)`` for a small host index (rows in play, block columns), kept while its
    values repeat. PyTorch copies a pageable host tensor to a GPU and then waits for the whole
    stream, so a per-step copy would wait for the step's forward; rows and blocks change once
    per block, so the copy is made once, and on CUDA from pinned memory without waiting. Rows
    ``0..n-1`` (every row in play; batch 1 always) are made on the device: no copy at all.
    **Read-only**: never write into the result."""
    if index.numel() > _DEVICE_COPY_MAX or index.device.type != "cpu":
        return index.to(device)
    values = index.flatten().tolist()

    def make() -> torch.Tensor:
        if index.dim() == 1 and not index.dtype.is_floating_point and index.dtype != torch.bool \
                and values == list(range(len(values))):
            return torch.arange(len(values), dtype=index.dtype, device=device)
        return _copy_in(index, device)

    return _kept((str(device), index.dtype, tuple(index.shape), tuple(values)), make)


def device_arange(start: int, end: int, device: torch.device) -> torch.Tensor:
    """``torch.arange(start, end, device=device)``, kept while it repeats (the fed columns of a
    block, the canvas's positions): made once per block instead of a launch per step.
    **Read-only** (views of it too: ``expand`` it, never write into it)."""
    return _kept(("arange", str(device), start, end), lambda: torch.arange(start, end, device=device))


def block_columns(block_start: torch.Tensor, width: int, device: torch.device) -> torch.Tensor:
    """(n, width) canvas columns of blocks starting at ``block_start`` (n,), on ``device``
    (kept while the blocks do not move: see :func:`to_device`; read-only). Rows in one block
    (batch 1 always) get them made on the device, with no host->device copy."""
    if block_start.device.type != "cpu":
        return (block_start[:, None] + torch.arange(width, device=block_start.device)[None, :]).to(device)
    starts = block_start.tolist()
    if starts and starts == starts[:1] * len(starts):
        return device_arange(starts[0], starts[0] + width, device).expand(len(starts), width)
    key = ("block_columns", str(device), width, tuple(starts))
    return _kept(key, lambda: _copy_in(block_start[:, None] + torch.arange(width)[None, :], device))


@dataclass
class CanvasRequest:
    """A diffusion-LM forward in canvas terms (what a canvas cache policy plans from).

    ``tokens`` / ``positions`` / ``attention_mask`` are the rows fed, ``(R, L)`` where
    ``R = reps * len(rows)`` (``reps`` is 2 with classifier-free guidance: conditional rows,
    then unconditional ones). The other fields describe the ``len(rows)`` sequences:

    * ``window_start`` / ``window_size``: the columns whose logits the step needs (each row's
      current block, or the whole canvas for a rule that reads it all);
    * ``block_start`` / ``block_length`` / ``step_in_block``: where each row's block is and
      how many steps it has had;
    * ``committed_at``: ``(len(rows), L)`` global step at which each column was committed
      (-1: prompt or still masked), and ``step``: the global step about to run.
    """

    tokens: torch.Tensor
    attention_mask: Optional[torch.Tensor]
    rows: torch.Tensor
    reps: int
    batch_size: int
    window_start: torch.Tensor
    window_size: int
    block_start: torch.Tensor
    block_length: int
    step_in_block: torch.Tensor
    step: int
    mask_id: int
    # Built only when a cache reads them (no device work per step without a cache).
    positions_fn: Callable[[], torch.Tensor] = field(repr=False, default=None)  # type: ignore[assignment]
    committed_fn: Callable[[], torch.Tensor] = field(repr=False, default=None)  # type: ignore[assignment]

    @cached_property
    def positions(self) -> torch.Tensor:
        """(R, L) position ids of the fed rows."""
        return self.positions_fn()

    @cached_property
    def committed_at(self) -> torch.Tensor:
        """(len(rows), L) global step at which each column was committed (-1: prompt or masked)."""
        return self.committed_fn()

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    def masked(self) -> torch.Tensor:
        """(len(rows), L) bool: positions still masked (conditional rows)."""
        return self.tokens[: len(self.rows)] == self.mask_id

    def block_columns(self) -> torch.Tensor:
        """(len(rows), block_length) canvas columns of each row's current block (on the tokens' device)."""
        return block_columns(self.block_start, self.block_length, self.tokens.device)


@dataclass
class Request:
    """One model call: ``model(inputs, **kwargs)``.

    ``rows`` lists the batch rows the forward serves (None: all), so each row's NFE is
    counted. ``canvas`` is set by diffusion-LM strategies: a canvas cache policy replaces the
    call by the feed it plans from it.
    """

    inputs: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    rows: Optional[torch.Tensor] = None
    canvas: Optional[CanvasRequest] = None


class ModelCall(Protocol):
    """The loop's instrumented caller, as a strategy sees it: ``call(role, request) -> output``."""

    def __call__(self, role: str, request: Request) -> Any: ...

    def release(self, role: str) -> None:
        """Drop the cache of ``role`` (a model that is done, e.g. CoDe's drafter after hand-over)."""

    def count_forward(self, role: str, rows: Optional[torch.Tensor]) -> None:
        """Count a forward of ``role`` that ran outside ``call`` (inside a step replayed as one
        CUDA graph), so the trace's forward counts stay the same."""


class LayerKV(Protocol):
    """The one layer-level KV protocol every attention layer calls (canvas, VAR and causal-LM
    caches): merge this forward's keys/values of ``layer`` with the kept ones and return what
    to attend to, with the key mask to use (None: attend to all)."""

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]: ...


class LayerHooks(Protocol):
    """Optional per-layer hooks of a cache (one with ``layer_hooks = True``), for policies that
    decide per layer what to reuse (Elastic-Cache, dLLM-Cache). A model without them ignores
    the attribute; one with them calls, for layer ``i``:

    * ``layer_input(i, x, block) -> (x, positions)`` before the layer: the cache may record the
      layer's input ``x`` (rows fed, hidden size), read its value vectors (``block.values(x)``)
      and return other rows to compute (a subset, or the whole canvas from recorded inputs)
      with their positions (None: unchanged);
    * ``layer_queries(i, q, k)`` after ``update``: the layer's queries (RoPE applied) and the
      keys attended (what attention statistics are computed from);
    * ``layer_output(i, x) -> x`` after the layer: the rows the next layer takes.
    A cache without ``layer_hooks`` costs the model nothing."""

    layer_hooks: bool

    def layer_input(self, layer: int, x: torch.Tensor, block: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]: ...

    def layer_queries(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None: ...

    def layer_output(self, layer: int, x: torch.Tensor) -> torch.Tensor: ...


StateT = TypeVar("StateT")


class Strategy(ABC, Generic[StateT]):
    """A decoding strategy: ``start``, then ``step`` until ``done``.

    Subclasses set ``name``, ``description``, ``family`` (one of :data:`FAMILIES`), ``roles``
    (the model roles it calls) and ``Config`` (a dataclass of hyper-parameters with the
    paper's defaults).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    family: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ("model",)
    Config: ClassVar[type]
    runtime_options: ClassVar[tuple[str, ...]] = ()  # non-config kwargs of sample(), e.g. draft_model

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def setup(self, model: Any, **runtime: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return ``(models by role, context for start())``."""

    def prepare_inputs(
        self,
        prompt_ids: Any,
        attention_mask: Optional[torch.Tensor],
        pad_id: int,
        device: Optional[torch.device],
        vocab_size: Optional[int] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Turn the user's prompt into the (batch, P) tensor and mask :meth:`start` takes:
        token ids, left-padded, each below ``vocab_size`` (the model's, when known). A strategy
        whose prompt is something else (VAR's class labels) overrides this."""
        from .inputs import prepare_prompts

        return prepare_prompts(prompt_ids, attention_mask, pad_id, device, vocab_size=vocab_size)

    def default_caches(self, models: dict[str, Any]) -> dict[str, Any]:
        """Caches the strategy runs with when the user gives no policy (VAR's full KV cache)."""
        return {}

    @abstractmethod
    def start(self, prompt_ids: torch.Tensor, **context: Any) -> StateT:
        """Per-sequence state for a batch of prompts."""

    @abstractmethod
    def step(self, state: StateT, call: ModelCall) -> torch.Tensor:
        """Run one step; return (batch,) tokens committed per row. Models are called only
        through ``call``. Per-step values for the trace go into ``state.extras``."""

    @abstractmethod
    def done(self, state: StateT) -> bool:
        """True once every row has finished."""

    @abstractmethod
    def max_steps(self, state: StateT) -> int:
        """An upper bound on the steps this generation can take (the loop guard)."""

    @abstractmethod
    def result(self, state: StateT) -> torch.Tensor:
        """The final sequences (batch, prompt + generation)."""
