"""Which SDPA kernels the diffusion LMs' attention may use on CUDA (one setting for the process).

The default leaves cuDNN out. PyTorch 2.11 picks it for bf16 on Hopper, and it builds an
execution plan for every new (rows, queries, keys, mask) shape: 6.3 ms of host time per call on
an H200, where a known shape costs 0.13 ms. Batched decoding makes new shapes at almost every
step (rows leave the batch as they finish, a split refresh feeds a varying row count), so a
500-row ``cot-free-8m`` generation spent 4.6 s of 6.7 s building plans, and a new batch of
prompts paid again (``benchmarks/README.md``, "cuDNN attention and changing shapes"). Where
shapes repeat (CUDA graphs) cuDNN was up to 4% faster at the LLaDA-8B shape: put ``"cudnn"``
first, or pass None, to have it back.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, ContextManager, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["SDPA_BACKENDS", "attention_backends", "attention_choice", "sdpa", "set_attention_backends"]

SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "math": SDPBackend.MATH, "cudnn": SDPBackend.CUDNN_ATTENTION}
_DEFAULT = ("flash", "efficient", "math")
_backends: Optional[list[Any]] = [SDPA_BACKENDS[n] for n in _DEFAULT]
_CHOOSING_DEVICES = ("cuda",)  # cuDNN is CUDA-only: on a CPU PyTorch's own choice stands
# PyTorch < 2.6 takes the back ends as a set (no priority order); the default leaves one order anyway
_kernel = (functools.partial(sdpa_kernel, set_priority=True)
           if "set_priority" in inspect.signature(sdpa_kernel).parameters else sdpa_kernel)


def set_attention_backends(names: Optional[Sequence[str]] = _DEFAULT) -> None:
    """Allow these SDPA back ends, in priority order (``"flash"``, ``"efficient"``, ``"math"``,
    ``"cudnn"``); None leaves the choice to PyTorch. Applies to paradecode's LLaDA and Dream
    models and to Hugging Face diffusion LMs run through ``HFDiffusionAdapter``."""
    global _backends
    if names is None:
        _backends = None
        return
    if isinstance(names, str) or not names or any(n not in SDPA_BACKENDS for n in names):
        raise ValueError(f"attention back ends {names!r}: give a non-empty list from {sorted(SDPA_BACKENDS)}, "
                         "or None for PyTorch's own choice.")
    _backends = [SDPA_BACKENDS[n] for n in names]


def attention_backends() -> Optional[list[str]]:
    """The names :func:`set_attention_backends` set (None: PyTorch's own choice)."""
    if _backends is None:
        return None
    by_backend = {b: n for n, b in SDPA_BACKENDS.items()}
    return [by_backend[b] for b in _backends]


def attention_choice(device: torch.device) -> ContextManager[Any]:
    """A context in which SDPA on ``device`` uses the chosen back ends (a no-op elsewhere)."""
    if _backends is None or device.type not in _CHOOSING_DEVICES:
        return contextlib.nullcontext()
    return _kernel(_backends)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Bidirectional ``scaled_dot_product_attention`` under the chosen back ends."""
    with attention_choice(q.device):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
