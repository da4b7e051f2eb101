"""Which SDPA kernels the diffusion LMs' attention may use on CUDA (one setting for the process).

The default leaves cuDNN out. PyTorch 2.11 picks it for bf16 on Hopper, and it builds an
execution plan for every new (rows, queries, keys, mask) shape: 6.3 ms of host time per call on
an H200, where a known shape costs 0.13 ms. Batched decoding makes new shapes at almost every
step (rows leave the batch as they finish, a split refresh feeds a varying row count), so a
500-row ``cot-free-8m`` generation spent 4.6 s of 6.7 s building plans, and a new batch of
prompts paid again (``benchmarks/README.md``, "cuDNN attention and changing shapes"). Where
shapes repeat (CUDA graphs) cuDNN was up to 4% faster at the LLaDA-8B shape: put ``"cudnn"``
first, or pass None, to have it back.

Forwards captured as CUDA graphs (:class:`~paradecode.models.graphs.CUDAGraphModel`) build each
shape's plan once, at capture: :func:`set_graph_attention_backends` gives them their own choice
(``["cudnn", "flash", "efficient", "math"]`` was 1.4-6.9% faster in tokens/s at LLaDA-8B's shape,
batch 1 to 32, every cache: ``benchmarks/README.md``, "cuDNN attention inside CUDA graphs"),
while eager forwards keep the eager choice. The default is the eager choice for both, so that
graphed and eager forwards run the same kernels and give the same tokens.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, ContextManager, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["SDPA_BACKENDS", "attention_backends", "attention_choice", "graph_attention_backends", "graph_capture",
           "sdpa", "set_attention_backends", "set_graph_attention_backends"]

SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "math": SDPBackend.MATH, "cudnn": SDPBackend.CUDNN_ATTENTION}
_DEFAULT = ("flash", "efficient", "math")
_backends: Optional[list[Any]] = [SDPA_BACKENDS[n] for n in _DEFAULT]
_graph_backends: Optional[list[Any]] = None  # None: the eager choice
_capturing = False  # inside graph_capture(): forwards being captured (and their warm-up run)
_CHOOSING_DEVICES = ("cuda",)  # cuDNN is CUDA-only: on a CPU PyTorch's own choice stands
# PyTorch < 2.6 takes the back ends as a set (no priority order); the default leaves one order anyway
_kernel = (functools.partial(sdpa_kernel, set_priority=True)
           if "set_priority" in inspect.signature(sdpa_kernel).parameters else sdpa_kernel)


def _parse(names: Sequence[str], none_means: str) -> list[Any]:
    if isinstance(names, str) or not names or any(n not in SDPA_BACKENDS for n in names):
        raise ValueError(f"attention back ends {names!r}: give a non-empty list from {sorted(SDPA_BACKENDS)}, "
                         f"or None for {none_means}.")
    return [SDPA_BACKENDS[n] for n in names]


def _names(backends: Optional[list[Any]]) -> Optional[list[str]]:
    if backends is None:
        return None
    by_backend = {b: n for n, b in SDPA_BACKENDS.items()}
    return [by_backend[b] for b in backends]


def set_attention_backends(names: Optional[Sequence[str]] = _DEFAULT) -> None:
    """Allow these SDPA back ends, in priority order (``"flash"``, ``"efficient"``, ``"math"``,
    ``"cudnn"``); None leaves the choice to PyTorch. Applies to paradecode's LLaDA and Dream
    models and to Hugging Face diffusion LMs run through ``HFDiffusionAdapter``."""
    global _backends
    _backends = None if names is None else _parse(names, "PyTorch's own choice")


def attention_backends() -> Optional[list[str]]:
    """The names :func:`set_attention_backends` set (None: PyTorch's own choice)."""
    return _names(_backends)


def set_graph_attention_backends(names: Optional[Sequence[str]] = None) -> None:
    """The SDPA back ends of forwards captured as CUDA graphs, in priority order; None (the
    default): the same as eager forwards (:func:`set_attention_backends`). cuDNN pays its plan
    once per captured shape there; graphed and eager forwards then run different kernels, so
    their tokens may differ where two predictions are within rounding of each other."""
    global _graph_backends
    _graph_backends = None if names is None else _parse(names, "the eager choice")


def graph_attention_backends() -> Optional[list[str]]:
    """The names :func:`set_graph_attention_backends` set (None: the eager choice applies)."""
    return _names(_graph_backends)


@contextlib.contextmanager
def graph_capture() -> Iterator[None]:
    """The context :class:`~paradecode.models.graphs.CUDAGraphModel` captures a forward in
    (its warm-up run too, which builds what the capture then records)."""
    global _capturing
    saved, _capturing = _capturing, True
    try:
        yield
    finally:
        _capturing = saved


def attention_choice(device: torch.device) -> ContextManager[Any]:
    """A context in which SDPA on ``device`` uses the chosen back ends (a no-op elsewhere): the
    graph choice inside :func:`graph_capture` when one is set, else the eager one."""
    backends = _graph_backends if _capturing and _graph_backends is not None else _backends
    if backends is None or device.type not in _CHOOSING_DEVICES:
        return contextlib.nullcontext()
    return _kernel(backends)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Bidirectional ``scaled_dot_product_attention`` under the chosen back ends."""
    with attention_choice(q.device):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
