"""Diffusion-LM strategies; importing this package registers them."""

from . import lowconf, threshold  # noqa: F401
from . import prophet  # noqa: F401
from . import credit  # noqa: F401
from . import localleap  # noqa: F401
from . import learn2pd  # noqa: F401
from .base import BlockDiffusionStrategy, DiffusionConfig, DiffusionState

__all__ = ["BlockDiffusionStrategy", "DiffusionConfig", "DiffusionState"]
