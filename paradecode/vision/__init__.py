"""Visual autoregressive generation: VAR (next-scale prediction), its multi-scale VQ-VAE,
CoDe (drafter/refiner collaboration) and the ScaleKV cache policy.

Importing this package registers the ``var`` and ``code`` strategies and the ``scalekv``
cache policy.
"""

from ..caches import scalekv as _scalekv  # noqa: F401  (registers "scalekv")
from .code import CoDeConfig, CoDeStrategy
from .generate import VARSampleConfig, VARStrategy, VisionOutput, generate, sample_top_k_top_p
from .kvcache import VARKVCache
from .var import OFFICIAL_VAR_FILES, VAR, VARConfig
from .vqvae import OFFICIAL_VAE_FILE, VQVAE, VQVAEConfig

__all__ = [
    "VAR", "VARConfig", "VQVAE", "VQVAEConfig", "VARKVCache", "VARStrategy", "VARSampleConfig",
    "CoDeStrategy", "CoDeConfig", "VisionOutput", "generate", "sample_top_k_top_p",
    "OFFICIAL_VAR_FILES", "OFFICIAL_VAE_FILE",
]
