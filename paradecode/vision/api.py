"""Class-conditional image generation, the vision family's entry point (above the strategies:
it runs :func:`paradecode.sample` and decodes the images).

>>> out = paradecode.vision.generate(var, class_labels, seed=0, cfg=4.0, top_k=900, top_p=0.95)
>>> out.images, out.trace.extra("kv_bytes")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..api import sample
from ..config import check_arguments
from ..loop import Trace
from .generate import VARState
from .var import VAR
from .vqvae import VQVAE

__all__ = ["VisionOutput", "generate"]


@dataclass
class VisionOutput:
    """``images`` (B, 3, H, W) in [0, 1]; ``tokens`` per scale; the loop's ``trace``."""

    images: Optional[torch.Tensor]
    tokens: list
    f_hat: torch.Tensor
    trace: Trace
    labels: torch.Tensor


def generate(
    model: VAR,
    class_labels: Any,
    strategy: str = "var",
    *,
    vae: Optional[VQVAE] = None,
    seed: Optional[int] = None,
    cache: Any = None,
    cache_options: Optional[dict[str, Any]] = None,
    decode: bool = True,
    progress: bool = False,
    timing: bool = True,
    **options: Any,
) -> VisionOutput:
    """Class-conditional image generation through :func:`paradecode.sample`.

    ``strategy`` is ``"var"`` or ``"code"`` (give ``refiner=`` and ``draft_steps=``);
    ``cache="scalekv"`` (with ``cache_options={"budget": 0.1}``) or a policy object
    compresses the KV cache. Returns decoded images unless ``decode=False``.
    """
    decode = check_arguments(generate, "vision.generate()", decode=decode)["decode"]
    out = sample(
        model, class_labels, strategy, vae=vae if vae is not None else getattr(model, "vae", None), seed=seed,
        cache=cache, cache_options=cache_options, progress=progress, timing=timing, **options,
    )
    state: VARState = out.state
    images = None
    if decode:
        with torch.inference_mode():
            images = state.vae.fhat_to_img(state.f_hat).add(1).mul(0.5)
    return VisionOutput(images=images, tokens=state.tokens, f_hat=state.f_hat, trace=out.trace, labels=state.labels)
