"""Model adapters: our LLaDA-compatible model and a wrapper for Hugging Face models."""

from .hf import HFDiffusionAdapter, resolve_mask_token_id
from .llada import LLaDAConfig, LLaDAModel

__all__ = ["LLaDAConfig", "LLaDAModel", "HFDiffusionAdapter", "resolve_mask_token_id"]
