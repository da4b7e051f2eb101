"""Speculative decoding of causal LMs (draft k, verify in one target forward) and VocabTrim;
importing this package registers the ``speculative`` strategy."""

from .acceptance import accept_greedy, accept_sampled, warp_probs
from .causal_lm import CausalLM, greedy_decode
from .continuous import ContinuousOutput, generate_continuous
from .strategy import SpeculativeConfig, SpeculativeDecoding, SpeculativeState
from .vocabtrim import VocabTrim, calibrate, count_tokens

__all__ = [
    "SpeculativeDecoding",
    "SpeculativeConfig",
    "SpeculativeState",
    "CausalLM",
    "greedy_decode",
    "generate_continuous",
    "ContinuousOutput",
    "VocabTrim",
    "calibrate",
    "count_tokens",
    "accept_greedy",
    "accept_sampled",
    "warp_probs",
]
