"""dLLM-Cache (Liu et al., 2025, "dLLM-Cache: Accelerating Diffusion Large Language Models with
Adaptive Caching"; reference: maomaocun/dLLM-cache, ``cache_hook_LLaDA.py``).

A *feature* cache: every forward feeds the whole canvas, and each layer keeps, per canvas
column, what its attention and MLP added to the residual stream when the column was last
computed. A column a layer does not recompute gets ``input + cached delta`` (its input is
fresh: earlier layers changed it). Which columns a layer recomputes:

* forward ``n`` (1-based, counted over the generation) refreshes the prompt when
  ``(n - 1) % prompt_interval_steps == 0`` and the response when
  ``(n - 1) % gen_interval_steps == 0`` (long-interval prompt, short-interval response cache);
* layer 0 always recomputes everything (as the reference);
* between response refreshes, V-verify: the layer computes the value vectors of every
  response column from its current input, and recomputes the ``int(G * transfer_ratio)``
  response columns whose values are least cosine-similar to the cached ones. As in the
  reference, every response column's cached value is replaced by the fresh one, its key only
  for the recomputed columns.

Defaults are the reference's LLaDA-Instruct GSM8K settings (``prompt_interval_steps=50``,
``gen_interval_steps=7``, ``transfer_ratio=0.25``). The prompt/response split is the column
where the generation starts (the first forward's block start, as the reference's
``prompt_length``). Deltas are kept as one tensor per layer (attention + MLP; the reference
keeps the two and adds both: the same sum up to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..interfaces import CanvasRequest, Request
from .layered import LayeredCanvasCache, gather_rows, scatter_rows


@dataclass
class DLLMCacheConfig:
    prompt_interval_steps: int = 50
    gen_interval_steps: int = 7
    transfer_ratio: float = 0.25

    def __post_init__(self) -> None:
        for name in ("prompt_interval_steps", "gen_interval_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (1 = refresh every forward), got {value!r}.")
        r = self.transfer_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
            raise ValueError(
                f"transfer_ratio must be a number in [0, 1] (the share of response tokens V-verify "
                f"recomputes between refreshes; 0 turns it off), got {r!r}."
            )


class DLLMCache(LayeredCanvasCache):
    name = "dllm-cache"
    description = ("dLLM-Cache: long-interval prompt and short-interval response feature cache, "
                   "V-verify refresh of the least similar response tokens")
    Config = DLLMCacheConfig
    exact_options = {"prompt_interval_steps": 1, "gen_interval_steps": 1}

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._count = 0
        self._last_step = -1
        self._gen_start: Optional[int] = None

    def full_rows(self, canvas: CanvasRequest) -> torch.Tensor:
        return torch.ones(len(canvas.rows), dtype=torch.bool)  # the whole canvas is fed every forward

    def prepare(self, request: Request) -> Request:
        canvas = request.canvas
        L = int(request.inputs.shape[1])
        self._fresh = False
        out = super().prepare(request)
        first = canvas.step < self._last_step or self._gen_start is None or self._fresh
        delta0 = self.layer_tensor("delta", 1)
        if delta0 is not None and (delta0.shape[0] != self._R or delta0.shape[1] != L):
            first = True
        if first:
            self.reset_state()
            self._count = 0
            self._gen_start = int(canvas.block_start.min())
        self._last_step = canvas.step
        self._count += 1
        n = self._count - 1
        c = self.config
        self._refresh_prompt = first or n % c.prompt_interval_steps == 0
        self._refresh_gen = first or n % c.gen_interval_steps == 0
        self._positions = canvas.positions
        self._plan: Optional[torch.Tensor] = None
        return out

    def end_forward(self) -> None:
        super().end_forward()
        self._stats.update(refresh_prompt=float(self._refresh_prompt), refresh_gen=float(self._refresh_gen))

    def _compact(self, req_rows: torch.Tensor) -> bool:
        kept = super()._compact(req_rows)
        self._fresh = not kept
        return kept

    # ---- layer hooks ----------------------------------------------------------------------------
    def layer_input(self, layer: int, x: torch.Tensor, block: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        R, L, _ = x.shape
        P = min(self._gen_start, L)
        self._x_in = x
        self._plan = None
        if layer == 0 or (self._refresh_prompt and self._refresh_gen) or self.layer_tensor("delta", layer) is None:
            self.count_rows(layer, L)
            return x, None
        dev = x.device
        parts = []
        if self._refresh_prompt:
            parts.append(torch.arange(P, device=dev).expand(R, P))
        if self._refresh_gen:
            parts.append(torch.arange(P, L, device=dev).expand(R, L - P))
        elif self.config.transfer_ratio > 0 and L > P:
            parts.append(P + self._verify(layer, x[:, P:], block))
        if not parts:
            self.count_rows(layer, 0)
            self._plan = torch.zeros(R, 0, dtype=torch.long, device=dev)
            return x[:, :0], self._positions[:, :0]
        cols = torch.cat(parts, dim=1)
        self._plan = cols
        self.count_rows(layer, cols.shape[1])
        return gather_rows(x, cols), self._positions.gather(1, cols)

    def _verify(self, layer: int, x_gen: torch.Tensor, block: Any) -> torch.Tensor:
        """V-verify: (R, k) response offsets whose fresh values are least similar to the cached
        ones; the fresh values of every response column replace the cached ones."""
        P = self._gen_start
        vb = self._v[layer]  # (R, kv, L + 1, hd)
        R, kv, _, hd = vb.shape
        v_new = block.values(x_gen).view(R, -1, kv, hd).transpose(1, 2)  # (R, kv, G, hd)
        G = v_new.shape[2]
        old = vb[:, :, P : P + G]
        sim = F.cosine_similarity(v_new.transpose(1, 2).reshape(R, G, -1).float(),
                                  old.transpose(1, 2).reshape(R, G, -1).float(), dim=-1)
        k = int(G * self.config.transfer_ratio)
        vb[:, :, P : P + G] = v_new
        return torch.topk(sim, k=k, dim=1, largest=False).indices

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor]):
        if self._plan is None:
            return super().update(layer, k, v, attn_mask)
        L = self._L
        kb, vb = self._k[layer], self._v[layer]
        index = self._plan[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        kb.scatter_(2, index, k)
        vb.scatter_(2, index, v)
        return kb[:, :, :L], vb[:, :, :L], attn_mask

    def layer_output(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        x_in = self._x_in
        if self._plan is None:
            self.set_layer_tensor("delta", layer, x - x_in)
            return x
        delta = self.layer_tensor("delta", layer)
        out = x_in + delta
        if self._plan.shape[1]:
            scatter_rows(delta, self._plan, x - gather_rows(x_in, self._plan))
            scatter_rows(out, self._plan, x)
        return out
