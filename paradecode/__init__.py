"""paradecode: many tokens per model call, one step loop for every model family.

>>> import paradecode
>>> out = paradecode.sample(model, prompt_ids, strategy="threshold", gen_length=64, block_length=32)
>>> out.sequences, out.trace.nfe
"""

from .api import SampleOutput, sample
from .interfaces import CanvasRequest, Request, Strategy
from .loop import ModelCaller, StepLimitError, Trace, run_loop
from .registry import cache_policies, register, register_cache, strategies

__version__ = "0.1.0"

__all__ = [
    "sample",
    "strategies",
    "cache_policies",
    "register",
    "register_cache",
    "SampleOutput",
    "Strategy",
    "Request",
    "CanvasRequest",
    "ModelCaller",
    "StepLimitError",
    "Trace",
    "run_loop",
    "__version__",
]
