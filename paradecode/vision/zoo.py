"""The shipped tiny image models, trained by ``scripts/train_var.py`` on the procedural shapes
data (:mod:`paradecode.vision.shapes`, 32x32, 10 classes): a multi-scale VQ-VAE, a large VAR
(the CoDe drafter / full model), a small VAR (the CoDe refiner) and the classifier used for
accuracy and Fréchet distance; optionally ``var_refiner``, the small VAR fine-tuned on the
fine scales only (CoDe's specialised refiner, ``--refiner-from``)."""

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
    refiner: Optional[VAR] = None  # the small VAR fine-tuned on the fine scales (CoDe's specialised refiner)

    @property
    def code_refiner(self) -> VAR:
        """The refiner CoDe uses: the specialised one when shipped, else the small VAR."""
        return self.refiner if self.refiner is not None else self.small


def load_shapes_models(directory: Optional[str | Path] = None, device: str | torch.device = "cpu") -> ShapesModels:
    """Load ``vae/``, ``var_large/``, ``var_small/``, ``classifier/`` (and ``var_refiner/`` when
    present) from ``directory`` (default: the checkpoints shipped in the package)."""
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
        refiner=VAR.from_pretrained(root / "var_refiner", vae=vae, device=device)
        if (root / "var_refiner" / "config.json").exists() else None,
    )
