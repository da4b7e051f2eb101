"""CoDe: collaborative decoding of a large drafter and a small refiner VAR (czg1225/CoDe).

Algorithm (``infer_CoDe.py``, ``autoregressive_infer_cfg_draft`` / ``_refine``):

1. The large model generates scales 0..N-1 as plain VAR does (its own KV cache).
2. Hand-over: the drafter passes ``f_hat`` and the next-scale *inputs* it computed
   (area-downsampled f_hat after each scale) -- not token ids and not its KV cache, which is
   dropped (that is where the memory saving comes from).
3. The small model re-encodes that whole prefix (its own class token, then the inputs of
   scales 1..N) in one block-causal pass, which fills its own cache and gives the logits of
   scale N; it then continues scale by scale with that cache.

N (``draft_steps``, default 8 of 10 as in the reference script) is the speed knob: N = number
of scales is the drafter alone. One random stream drives both models, so scale k draws the
same random numbers as the drafter alone would (the reference re-seeds the refiner and
replays the draws of the earlier scales, which leaves its generator where ours already is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..interfaces import ModelCall, Request
from .generate import VARSampleConfig, VARState, VARStep, VARStrategy, _check_var
from .vqvae import VQVAE

__all__ = ["CoDeConfig", "CoDeStrategy"]


@dataclass
class CoDeConfig(VARSampleConfig):
    """VAR's sampling options plus ``draft_steps``: scales the large model generates."""

    draft_steps: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.draft_steps < 0:
            raise ValueError(f"draft_steps must be >= 0, got {self.draft_steps}.")
        if not self.use_cache:
            raise ValueError("CoDe hands over a prefix to the refiner's KV cache; use_cache=False is not supported.")


class CoDeStrategy(VARStrategy):
    """CoDe: a large VAR drafts the first ``draft_steps`` scales, a small VAR refines the rest."""

    name = "code"
    roles = ("drafter", "refiner")
    description = "CoDe: large VAR drafts the first N scales, small VAR refines the rest (N = draft_steps)"
    Config = CoDeConfig
    runtime_options = ("vae", "refiner")

    def setup(self, model: Any, vae: Optional[VQVAE] = None, refiner: Any = None, **_: Any) -> tuple[dict, dict]:
        drafter = _check_var(model, "model (the drafter)")
        if refiner is None:
            raise ValueError("strategy 'code' needs refiner=<a small VAR> beside the drafter model.")
        refiner = _check_var(refiner, "refiner")
        dc, rc = drafter.config, refiner.config
        for name in ("patch_nums", "vocab_size", "Cvae", "num_classes"):
            if getattr(dc, name) != getattr(rc, name):
                raise ValueError(f"drafter and refiner differ in {name}: {getattr(dc, name)} vs {getattr(rc, name)}.")
        S = len(dc.patch_nums)
        if self.config.draft_steps > S:
            raise ValueError(f"draft_steps ({self.config.draft_steps}) must be at most the number of scales ({S}).")
        vae = self._resolve_vae(drafter, vae)
        self._check_top_k_len(drafter)
        self._num_classes = drafter.num_classes
        self._vae = vae
        return {"drafter": VARStep(drafter), "refiner": VARStep(refiner)}, {"vae": vae}

    def model_role(self, state: VARState) -> str:
        return "drafter" if state.si < self.config.draft_steps else "refiner"

    def step(self, state: VARState, call: ModelCall) -> torch.Tensor:
        N = self.config.draft_steps
        if state.si != N or N == 0:
            return super().step(state, call)
        # Hand-over: drop the drafter's cache; the refiner re-encodes the prefix into its own.
        call.release("drafter")
        inputs = torch.cat(state.hub, dim=1)
        kwargs: dict[str, Any] = dict(si=state.si, label_B=state.labels, prefix=True)
        return self.commit(state, call("refiner", Request(inputs, kwargs=kwargs)))
