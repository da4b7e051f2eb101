"""What the layer-adaptive cache policies (``elastic``, ``dllm-cache``) share on top of
:class:`~paradecode.caches.canvas.CanvasKVCache`.

They decide *per layer* which canvas rows to recompute, through the model's optional layer
hooks (:class:`~paradecode.interfaces.LayerHooks`). This base keeps their per-layer state
(tensors with the request rows first, compacted with the K/V buffers when rows finish),
counts the layer-token work each forward recomputes (the NFE-equivalent figure of the
trace: ``recompute_fraction`` = recomputed layer x row pairs / (layers x canvas columns)),
and opts out of CUDA graphs (the row sets depend on the data).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..interfaces import to_device
from .canvas import CanvasKVCache

__all__ = ["LayeredCanvasCache", "gather_rows", "scatter_rows"]


def gather_rows(x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``x[r, cols[r]]`` for (R, N, D) ``x`` and (R, T) ``cols``."""
    return x.gather(1, cols[:, :, None].expand(-1, -1, x.shape[-1]))


def scatter_rows(x: torch.Tensor, cols: torch.Tensor, src: torch.Tensor) -> None:
    """``x[r, cols[r]] = src[r]`` in place."""
    x.scatter_(1, cols[:, :, None].expand(-1, -1, x.shape[-1]), src.to(x.dtype))


class LayeredCanvasCache(CanvasKVCache):
    layer_hooks = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self._layer_state: dict[str, list[Optional[torch.Tensor]]] = {}
        self._row_state: dict[str, Optional[torch.Tensor]] = {}
        self._work = 0.0  # layer x row pairs recomputed in this forward
        self._n_layers = 0

    # ---- per-layer and per-row state, compacted with the K/V buffers ----------------------------
    def layer_tensor(self, name: str, layer: int) -> Optional[torch.Tensor]:
        buf = self._layer_state.setdefault(name, [])
        return buf[layer] if layer < len(buf) else None

    def set_layer_tensor(self, name: str, layer: int, value: torch.Tensor) -> None:
        buf = self._layer_state.setdefault(name, [])
        if len(buf) <= layer:
            buf.extend([None] * (layer + 1 - len(buf)))
        buf[layer] = value

    def reset_state(self) -> None:
        self._layer_state, self._row_state = {}, {}

    def _compact(self, req_rows: torch.Tensor) -> bool:
        old = self._rows.tolist()
        kept = super()._compact(req_rows)
        if not kept:
            self.reset_state()
            return False
        pos = {r: i for i, r in enumerate(old)}
        keep = torch.tensor([pos[int(r)] for r in req_rows])

        def pick(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.index_select(0, to_device(keep, t.device))

        self._layer_state = {n: [pick(t) for t in ts] for n, ts in self._layer_state.items()}
        self._row_state = {n: pick(t) for n, t in self._row_state.items()}
        return True

    def forward(self, model, request):
        """Refuse a model without the per-layer hooks before any state is built (the hooks are
        what this policy decides through; without them the model would ignore it)."""
        if not getattr(model, "supports_layer_hooks", False):
            raise ValueError(
                f"cache policy {self.name!r} decides per layer through the model's layer hooks, which "
                f"{type(model).__name__} does not have (paradecode's LLaDAModel and DreamModel do); use cache='dual' "
                f"or 'prefix' with this model, or cache=None."
            )
        return super().forward(model, request)

    def kept_index(self) -> torch.Tensor:
        """(R, T) canvas column each fed row's state is kept under: the fed column, or the trash
        slot ``L`` for a query-only row (:meth:`read_only`, and a shifted model's predecessors),
        whose state the policy did not ask to keep."""
        return self._idx if self._write is None else self._write

    # ---- work accounting ------------------------------------------------------------------------
    def count_rows(self, layer: int, rows: int) -> None:
        """Record that ``layer`` computes ``rows`` canvas columns (per request row) this forward."""
        self._n_layers = max(self._n_layers, layer + 1)
        self._work += rows

    def begin_forward(self, positions: torch.Tensor) -> None:
        self._work = 0.0

    def end_forward(self) -> None:
        if self._n_layers and self._L:
            frac = self._work / (self._n_layers * self._L)
            self._stats = {**self._stats, "recompute_fraction": frac, "reuse_rate": 1.0 - frac}

    def graph_signature(self) -> Optional[tuple]:
        return None  # the rows each layer computes depend on the data: no fixed-shape replay

    # ---- default hooks (a policy overrides what it uses) ----------------------------------------
    def layer_input(self, layer: int, x: torch.Tensor, block) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return x, None

    def layer_queries(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        pass

    def layer_output(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x
