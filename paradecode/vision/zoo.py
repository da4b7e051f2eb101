"""The shipped tiny image models, trained by ``scripts/train_var.py`` on the procedural shapes
data (:mod:`paradecode.vision.shapes`, 32x32, 10 classes): a multi-scale VQ-VAE, a large VAR
(the CoDe drafter / full model), a small VAR (the CoDe refiner) and the classifier used for
accuracy and Fréchet distance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .metrics import ShapesClassifier
from .var import VAR
from .vqvae import VQVAE

__all__ = ["SHAPES32_DIR", "ShapesModels", "load_shapes_models"]

SHAPES32_DIR = Path(__file__).parent / "shipped" / "shapes32"


@dataclass
class ShapesModels:
    vae: VQVAE
    large: VAR
    small: VAR
    classifier: ShapesClassifier


def load_shapes_models(directory: Optional[str | Path] = None, device: str | torch.device = "cpu") -> ShapesModels:
    """Load ``vae/``, ``var_large/``, ``var_small/`` and ``classifier/`` from ``directory``
    (default: the checkpoints shipped in the package)."""
    root = Path(directory) if directory is not None else SHAPES32_DIR
    missing = [d for d in ("vae", "var_large", "var_small", "classifier") if not (root / d / "config.json").exists()]
    if missing:
        raise ValueError(f"{root} lacks {missing}; train them with `python scripts/train_var.py --out {root}`.")
    vae = VQVAE.from_pretrained(root / "vae", device=device)
    return ShapesModels(
        vae=vae,
        large=VAR.from_pretrained(root / "var_large", vae=vae, device=device),
        small=VAR.from_pretrained(root / "var_small", vae=vae, device=device),
        classifier=ShapesClassifier.from_pretrained(root / "classifier", device=device),
    )
