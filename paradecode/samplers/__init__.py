"""Diffusion-LM strategies; importing this package registers them."""

from . import lowconf, threshold  # noqa: F401
from .base import BlockDiffusionStrategy, DiffusionConfig, DiffusionState

__all__ = ["BlockDiffusionStrategy", "DiffusionConfig", "DiffusionState"]
