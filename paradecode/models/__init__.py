"""Model adapters: our LLaDA- and Dream-compatible models and a wrapper for Hugging Face models."""

from .hf import HFDiffusionAdapter, resolve_mask_token_id
from .dream import DreamConfig, DreamModel
from .attention import (attention_backends, graph_attention_backends, set_attention_backends,
                        set_graph_attention_backends)
from .llada import LLaDAConfig, LLaDAModel
from .wrapper import ModelWrapper

__all__ = ["LLaDAConfig", "LLaDAModel", "DreamConfig", "DreamModel", "HFDiffusionAdapter", "resolve_mask_token_id",
           "attention_backends", "set_attention_backends", "graph_attention_backends", "set_graph_attention_backends",
           "ModelWrapper"]
