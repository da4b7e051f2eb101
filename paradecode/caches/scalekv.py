"""ScaleKV: scale-aware KV cache compression for VAR (Li et al., arXiv 2505.19602).

Layers play two roles, and the roles change with the scale:

* **drafters** attend dispersedly over many earlier scales and need a large cache;
* **refiners** attend mostly to the current token map (or to a few earlier tokens) and can
  work with a small one.

Calibration (:func:`paradecode.vision.calibrate_scalekv`) runs a few full-cache generations and computes, per scale k
and layer l, the Attention Selectivity Index ``ASI = E[attention mass on the current scale +
mass of the top-m earlier tokens]`` over the scale's queries (m = ``asi_topk``). The
``num_drafters`` layers with the lowest ASI at a scale are its drafters.

Budget: ``budget`` is the average cache a layer may keep, as a fraction of the full cache
(all scales' tokens). While a scale's prefix fits it, nothing is dropped. Beyond, the layers
share ``depth * budget * L`` entries: drafters keep up to their whole prefix, refiners split
the rest (never less than the observation window) -- the allocation of the released budget
files, where drafters keep nearly everything and refiners' budgets shrink with the scale.

Selection (the reference ``ScaleKVCluster.update_kv``, run on each layer right after it has
attended at a scale): an observation window of ``window_size`` queries on a regular grid of
patch centres of the current token map (the most recent tokens when the map is smaller than
the grid); each key is scored by the summed attention logits of those queries, smoothed by a
1-D max (or avg) pool of ``kernel_size``; per head, the window's own entries plus the
top-scoring others up to the layer's capacity are kept, in position order.

With ``budget=1.0`` nothing is ever dropped: generation equals the full cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch.nn import functional as F

from .var_kv import VARKVCache

__all__ = ["ScaleKVConfig", "ScaleKVPlan", "ScaleKV", "ASIRecorder", "layer_capacities"]


@dataclass
class ScaleKVConfig:
    """ScaleKV options (reference defaults: window 16, max-pool kernel 5; budget 10%)."""

    budget: float = 0.1
    window_size: int = 16
    kernel_size: int = 5
    pooling: str = "maxpool"
    num_drafters: Optional[int] = None  # per scale; None: about 1 in 16 layers (2 of 32 in the reference)
    asi_topk: int = 16
    calibration_samples: int = 4
    calibration_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget must be in (0, 1] (a fraction of the full KV cache), got {self.budget}.")
        g = math.isqrt(self.window_size) if self.window_size > 0 else 0
        if self.window_size <= 0 or g * g != self.window_size:
            raise ValueError(f"window_size must be a positive square (16 = a 4x4 grid), got {self.window_size}.")
        if self.kernel_size <= 0 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}.")
        if self.pooling not in ("maxpool", "avgpool"):
            raise ValueError(f"pooling must be 'maxpool' or 'avgpool', got {self.pooling!r}.")
        if self.num_drafters is not None and self.num_drafters < 0:
            raise ValueError(f"num_drafters must be >= 0, got {self.num_drafters}.")
        if self.asi_topk <= 0 or self.calibration_samples <= 0:
            raise ValueError("asi_topk and calibration_samples must be positive.")

    def drafters_for(self, depth: int) -> int:
        n = self.num_drafters if self.num_drafters is not None else max(1, round(depth / 16))
        return min(n, depth)


@dataclass
class ScaleKVPlan:
    """Per scale, the drafter layers; ``asi`` is the calibrated (scales, depth) index."""

    drafters: list
    asi: torch.Tensor
    depth: int
    patch_nums: tuple

    def fits(self, depth: int, patch_nums: Sequence[int]) -> bool:
        return depth == self.depth and tuple(patch_nums) == tuple(self.patch_nums)

    def check(self, depth: int, patch_nums: Sequence[int]) -> None:
        if not self.fits(depth, patch_nums):
            raise ValueError(
                f"this ScaleKV plan was calibrated for depth {self.depth} / patch nums {self.patch_nums}, "
                f"not depth {depth} / {tuple(patch_nums)}; calibrate again for this model."
            )


def layer_capacities(plan: ScaleKVPlan, config: ScaleKVConfig) -> list[list[int]]:
    """Per scale, the entries each layer keeps after attending at that scale."""
    pns = plan.patch_nums
    L = sum(p * p for p in pns)
    avg = max(1, round(config.budget * L))
    total = plan.depth * avg
    caps, T = [], 0
    for si, pn in enumerate(pns):
        T += pn * pn
        if T <= avg:
            caps.append([T] * plan.depth)
            continue
        drafters = set(plan.drafters[si])
        nd, nr = len(drafters), plan.depth - len(drafters)
        if nr == 0 or nd == 0:
            caps.append([avg] * plan.depth)
            continue
        floor_r = min(config.window_size, avg)
        c_d = min(T, (total - nr * floor_r) // nd)
        c_r = max(floor_r, (total - nd * c_d) // nr)
        caps.append([c_d if layer in drafters else c_r for layer in range(plan.depth)])
    return caps


class ASIRecorder(VARKVCache):
    """A full cache that accumulates the Attention Selectivity Index per (scale, layer)."""

    def __init__(self, depth: int, patch_nums: Sequence[int], topk: int) -> None:
        super().__init__()
        self.patch_nums, self.topk = tuple(patch_nums), topk
        self.sum = torch.zeros(len(self.patch_nums), depth, dtype=torch.float64)
        self.count = torch.zeros(len(self.patch_nums), depth, dtype=torch.float64)
        self._si = 0

    def begin_forward(self, positions: torch.Tensor) -> None:
        super().begin_forward(positions)
        self._si = _scale_of(self.patch_nums, int(positions[-1]) + 1)

    def after_attention(self, layer: int, q: torch.Tensor, scale: float) -> None:
        s = self.patch_nums[self._si] ** 2
        k = self.k[layer]
        T = k.shape[2]
        start = T - s
        if start == 0:
            return
        attn = torch.softmax((q[:, :, -s:].float() @ k.float().transpose(-1, -2)) * scale, dim=-1)
        current = attn[..., start:].sum(-1)
        history = attn[..., :start].topk(min(self.topk, start), dim=-1).values.sum(-1)
        self.sum[self._si, layer] += float((current + history).mean())
        self.count[self._si, layer] += 1


def _scale_of(patch_nums: Sequence[int], end: int) -> int:
    cum = 0
    for si, pn in enumerate(patch_nums):
        cum += pn * pn
        if cum == end:
            return si
    raise ValueError(f"a forward ending at token {end} does not end a scale of {tuple(patch_nums)}.")


class ScaleKV(VARKVCache):
    """ScaleKV cache policy for VAR: drafter/refiner budgets per scale, window-scored selection.

    Give a ``plan`` from :func:`paradecode.vision.calibrate_scalekv` to reuse a calibration; without one, the first
    generation calibrates on ``calibration_samples`` samples with its own sampling options.
    """

    name = "scalekv"
    description = "ScaleKV: per-scale drafter/refiner KV budgets for VAR (budget = fraction of the full cache)"
    Config = ScaleKVConfig
    exact_options = {"budget": 1.0}

    def __init__(self, config: Optional[ScaleKVConfig] = None, plan: Optional[ScaleKVPlan] = None) -> None:
        self.config = config or ScaleKVConfig()
        self.plan = plan
        self.capacities: Optional[list[list[int]]] = None
        self.patch_nums: tuple = ()
        super().__init__()

    # ---- set-up per generation -------------------------------------------------------------------
    # A cache per model role comes from VARKVCache.caches_for (CoDe: budgets for the drafter's
    # and the refiner's caches), each with a plan calibrated for its model by the strategy.
    def fresh(self) -> "ScaleKV":
        return ScaleKV(self.config, self.plan)

    def prepare_for(self, var: Any, strategy: Any = None) -> None:
        several = strategy is not None and len(strategy.roles) > 1
        if strategy is not None and (self.plan is None or (several and not self.plan.fits(var.depth, var.patch_nums))):
            self.plan = strategy.calibrate_scalekv(var, self.config)
        self.plan.check(var.depth, var.patch_nums)
        self.patch_nums = tuple(var.patch_nums)
        self.capacities = layer_capacities(self.plan, self.config)
        self.reset()

    def begin_forward(self, positions: torch.Tensor) -> None:
        super().begin_forward(positions)
        self._si = _scale_of(self.patch_nums, int(positions[-1]) + 1)

    # ---- compression -------------------------------------------------------------------------------
    def after_attention(self, layer: int, q: torch.Tensor, scale: float) -> None:
        if self.capacities is None:
            raise ValueError("ScaleKV was used before it was prepared for a model; pass it as cache= to paradecode.sample/generate.")
        cap = self.capacities[self._si][layer]
        k, v = self.k[layer], self.v[layer]
        T = k.shape[2]
        if T <= cap:
            return
        keep = self._select(q, k, scale, cap)
        idx = keep.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1])
        self.replace(layer, k.gather(2, idx), v.gather(2, idx))

    def _window(self, T: int, device: torch.device) -> torch.Tensor:
        """Key positions of the observation window (a grid of patch centres of the current map)."""
        pn = self.patch_nums[self._si]
        g = math.isqrt(self.config.window_size)
        if pn < g:
            return torch.arange(max(0, T - self.config.window_size), T, device=device)
        step = pn // g
        centres = torch.arange(g, device=device) * step + (step - 1) // 2
        start = T - pn * pn
        return (start + centres[:, None] * pn + centres[None, :]).flatten()

    def _select(self, q: torch.Tensor, k: torch.Tensor, scale: float, cap: int) -> torch.Tensor:
        B, H, T, _ = k.shape
        l = q.shape[2]
        window = self._window(T, k.device)
        w = window.numel()
        if cap <= w:
            return window.view(1, 1, -1).expand(B, H, -1).sort(dim=-1).values
        local = (window - (T - l)).clamp(0, l - 1)
        scores = (q[:, :, local].float() @ k.float().transpose(-1, -2)) * scale  # (B, H, w, T)
        scores[..., window] = float("-inf")
        scores = scores.sum(2)
        pool = F.max_pool1d if self.config.pooling == "maxpool" else F.avg_pool1d
        ks = self.config.kernel_size
        pooled = pool(scores, ks, stride=1, padding=ks // 2)
        pooled[..., window] = float("-inf")
        rest = pooled.topk(min(cap - w, T - w), dim=-1).indices
        keep = torch.cat((rest, window.view(1, 1, -1).expand(B, H, -1)), dim=-1)
        return keep.sort(dim=-1).values

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out["kv_budget"] = self.config.budget
        return out
