"""SGLang's real dLLM algorithm modules, loaded on a CPU machine without SGLang's runtime.

``sglang.srt.dllm.algorithm`` (the ``DllmAlgorithm`` base with its ``_run_sync`` / ``_run_fdfo``
loops, ``LowConfidence``, ``JointThreshold``, the name -> class map) is plain Python and torch.
Its imports, though, reach SGLang's whole runtime (``sglang/__init__``, ``srt.configs`` ->
torchvision's CUDA ops, triton, FastAPI ...), which cannot be installed next to a CPU torch.
The algorithm files use those runtime names only as annotations (``ForwardBatch``,
``ModelRunner``, ``ServerArgs``, ``LogitsProcessorOutput``) or at launch (``ModelConfig``,
``resolving_view``) and call ``is_npu()`` once. So this module gives those few names
stand-ins, then imports the algorithm package's own files from the installed wheel: the loops
and rules that run are SGLang's code, byte for byte.

Install what it needs with ``pip install --no-deps sglang==SGLANG_VERSION`` (what ``.ci/run``
does; the wheel alone, no CUDA torch).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

SGLANG_VERSION = "0.5.23"
INSTALL = f'pip install --no-deps "sglang=={SGLANG_VERSION}"'

# module -> names it must provide; the classes are bare stand-ins (annotations only)
_STAND_INS = {
    "sglang.srt.layers.logits_processor": ("LogitsProcessorOutput",),
    "sglang.srt.model_executor.forward_batch_info": ("ForwardBatch",),
    "sglang.srt.model_executor.model_runner": ("ModelRunner",),
    "sglang.srt.server_args": ("ServerArgs",),
    "sglang.srt.configs.model_config": ("ModelConfig",),
}


def _shell(name: str, path: Path | None = None) -> types.ModuleType:
    module = types.ModuleType(name)
    if path is not None:
        module.__path__ = [str(path)]  # a package whose submodules are the real files
    return module


def load() -> types.ModuleType:
    """Import and return the real ``sglang.srt.dllm.algorithm`` package (idempotent).

    Raises ImportError with the install command when the SGLang wheel is not installed.
    """
    if "sglang.srt.dllm.algorithm.base" in sys.modules:
        return sys.modules["sglang.srt.dllm.algorithm"]
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"SGLang is not installed; the SGLang integration test needs its wheel: {INSTALL}")
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "srt" / "dllm" / "algorithm" / "base.py").is_file():
        raise ImportError(f"{root} has no srt/dllm/algorithm/base.py; install the tested SGLang: {INSTALL}")
    modules = {
        "sglang": _shell("sglang", root),
        "sglang.srt": _shell("sglang.srt", root / "srt"),
        "sglang.srt.dllm": _shell("sglang.srt.dllm", root / "srt" / "dllm"),
        "sglang.srt.layers": _shell("sglang.srt.layers"),
        "sglang.srt.model_executor": _shell("sglang.srt.model_executor"),
        "sglang.srt.configs": _shell("sglang.srt.configs"),
        "sglang.srt.arg_groups": _shell("sglang.srt.arg_groups"),
        "sglang.srt.arg_groups.overrides": _shell("sglang.srt.arg_groups.overrides"),
        "sglang.srt.utils": _shell("sglang.srt.utils"),
    }
    for name, classes in _STAND_INS.items():
        module = modules.setdefault(name, _shell(name))
        for cls in classes:
            setattr(module, cls, type(cls, (), {"__module__": name}))
    modules["sglang.srt.arg_groups.overrides"].resolving_view = lambda server_args: server_args
    modules["sglang.srt.utils"].is_npu = lambda: False
    sys.modules.update(modules)
    return importlib.import_module("sglang.srt.dllm.algorithm")


def unload() -> None:
    """Drop every ``sglang`` module and the adapter (which binds to them) from ``sys.modules``."""
    for name in [n for n in sys.modules if n == "sglang" or n.startswith("sglang.")]:
        del sys.modules[name]
    sys.modules.pop("paradecode.integrations.sglang", None)
