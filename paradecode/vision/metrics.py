"""Image quality without downloaded weights.

* :class:`ShapesClassifier`: a small CNN trained on the procedural shapes data; its accuracy on
  generated images says whether they show the asked class, and its penultimate features give a
  Fréchet distance (:func:`frechet_distance`, FID's formula in a feature space we can train).
* :func:`psnr` and :func:`ssim` measure fidelity of an accelerated image to the full model's
  image from the same seed (ScaleKV's and CoDe's pixel-level comparisons).
* :func:`inception_fid` uses ``torchmetrics``' Inception FID when a user has it and its weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoints import ConfigDict

__all__ = [
    "ClassifierConfig", "ShapesClassifier", "frechet_distance", "feature_stats", "psnr", "ssim", "inception_fid",
]


@dataclass
class ClassifierConfig(ConfigDict):
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 128
    image_size: int = 32


class ShapesClassifier(nn.Module):
    """Conv net: images in [-1, 1] -> class logits; ``features`` gives the penultimate layer."""

    def __init__(self, config: Optional[ClassifierConfig] = None) -> None:
        super().__init__()
        c = self.config = config or ClassifierConfig()
        w = c.width

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU())

        self.body = nn.Sequential(block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w))
        self.proj = nn.Linear(4 * w, c.feature_dim)
        self.fc = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, img: torch.Tensor) -> torch.Tensor:
        h = self.body(img).mean(dim=(2, 3))
        return F.silu(self.proj(h))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(img))

    def save_pretrained(self, directory: str | os.PathLike, dtype: Optional[torch.dtype] = None) -> None:
        from .checkpoints import save_module

        save_module(self, self.config.to_dict(), directory, dtype)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "ShapesClassifier":
        from .checkpoints import load_module

        return load_module(cls, ClassifierConfig, directory, device)


def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = features.detach().double().cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(a: torch.Tensor | tuple, b: torch.Tensor | tuple) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two feature sets (or their stats)."""
    from scipy import linalg

    mu1, s1 = a if isinstance(a, tuple) else feature_stats(a)
    mu2, s2 = b if isinstance(b, tuple) else feature_stats(b)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0, data_range]; identical images give +inf."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: Gaussian window 11 / 1.5, K1 0.01, K2 0.03), channels averaged."""
    a, b = a.float(), b.float()
    C = a.shape[1]
    win = min(win, a.shape[-1], a.shape[-2])
    g = _gaussian(win, sigma, a.device)
    kernel = (g[:, None] * g[None, :]).expand(C, 1, win, win)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=C)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    saa, sbb, sab = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.flatten(1).mean(1)


def inception_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID with Inception features via ``torchmetrics`` (needs it and its downloaded weights)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ValueError("inception_fid needs `pip install torchmetrics[image]` (and Inception weights).") from err
    fid = FrechetInceptionDistance(normalize=True)
    fid.update(real.float().clamp(0, 1), real=True)
    fid.update(fake.float().clamp(0, 1), real=False)
    return float(fid.compute())
