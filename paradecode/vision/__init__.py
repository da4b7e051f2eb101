"""Visual autoregressive generation: VAR (next-scale prediction), its multi-scale VQ-VAE,
CoDe (drafter/refiner collaboration) and the ScaleKV cache policy.

The registry finds the ``var`` and ``code`` strategies and the ``scalekv`` cache policy by name.
"""

from ..caches.var_kv import VARKVCache
from .code import CoDeConfig, CoDeStrategy
from .api import VisionOutput, generate
from .generate import VARSampleConfig, VARStrategy, calibrate_scalekv, sample_top_k_top_p
from .var import OFFICIAL_VAR_FILES, VAR, VARConfig
from .vqvae import OFFICIAL_VAE_FILE, VQVAE, VQVAEConfig

__all__ = [
    "VAR", "VARConfig", "VQVAE", "VQVAEConfig", "VARKVCache", "VARStrategy", "VARSampleConfig",
    "CoDeStrategy", "CoDeConfig", "VisionOutput", "generate", "sample_top_k_top_p", "calibrate_scalekv",
    "OFFICIAL_VAR_FILES", "OFFICIAL_VAE_FILE",
]
