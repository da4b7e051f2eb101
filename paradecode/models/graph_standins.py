"""CUDA graphs on a CPU, for tests and ``--smoke`` runs: what a capture records, re-run.

A real capture needs a GPU. :class:`ReplayedGraphs` is a :class:`~.graphs.CUDAGraphModel` whose
"capture" records the body and whose replay re-runs it on the *static* tensors and a snapshot of
the cache's Python state taken at capture (what a graph freezes). An input the wrapper forgets
to copy in before a replay, or a graph replayed on buffers it no longer owns, then gives other
tokens than the eager model. Both run under :class:`NoHostReads`, which refuses the ops a capture
cannot hold, so a read of the device slipped into a captured path fails on a CPU too.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .graphs import CUDAGraphModel

__all__ = ["NoHostReads", "ReplayedGraphs"]


class NoHostReads(TorchDispatchMode):
    """Refuses the ops a CUDA graph cannot record: those whose output shape or value the host
    must read (nonzero, unique, boolean indexing, ``.item()``, multinomial's checks, repeats
    given as a tensor) and ``isin``, which sorts with ``unique`` once its id set is larger than
    about 10 n^0.145 (on a GPU that broke the recording of a speculative step with 40 EOS ids)."""

    REFUSED = {"nonzero", "_unique", "_unique2", "unique_dim", "unique_consecutive", "masked_select", "isin",
               "_local_scalar_dense", "item", "equal", "is_nonzero", "multinomial"}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        name, kwargs = func.overloadpacket.__name__, kwargs or {}
        indices = args[1] if name in ("index", "index_put", "index_put_") else ()
        bool_index = any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices)
        sized_by_data = name == "repeat_interleave" and func._overloadname != "self_int" and kwargs.get("output_size") is None
        if name in self.REFUSED or bool_index or sized_by_data:
            raise AssertionError(f"{func} reads the device from the host: a CUDA graph cannot record it")
        return func(*args, **kwargs)


class _Replay:
    """A recorded call: each replay re-runs it into the recorded output."""

    def __init__(self, body: Callable[..., torch.Tensor], args: tuple, out: torch.Tensor) -> None:
        self.body, self.args, self.out = body, args, out

    def replay(self) -> None:
        with NoHostReads():
            self.out.copy_(self.body(*self.args))


class ReplayedGraphs(CUDAGraphModel):
    """:class:`~.graphs.CUDAGraphModel` on any device: captures are recorded calls (see the module doc)."""

    def _graphable(self, input_ids: torch.Tensor) -> bool:
        return True

    def _record(self, body: Callable[..., torch.Tensor], args: tuple, pool_name: str) -> tuple[Any, torch.Tensor]:
        ids, pos, cache, mask = args
        frozen = None
        if cache is not None:
            frozen = copy.copy(cache)  # the control flow a graph bakes in: this forward's
            frozen._k, frozen._v = list(cache._k), list(cache._v)
        with NoHostReads():
            out = body(ids, pos, cache, mask)
        return _Replay(body, (ids, pos, frozen, mask), out), out
