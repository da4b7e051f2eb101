import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import pytest
import torch

# Triton kernels (paradecode.models.decode_attention) run on a CPU only under Triton's interpreter,
# which it reads when the kernels are defined: set it before paradecode is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from paradecode.models import LLaDAConfig, LLaDAModel  # noqa: E402

MASK = 60
ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str, name: Optional[str] = None) -> ModuleType:
    """A repository script (``benchmarks/x.py``, ``scripts/x.py``) as a module, so that its
    functions can be tested. Its folder goes on ``sys.path`` first: scripts import their siblings."""
    path = ROOT / relpath
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # as an import does: a dataclass in the script looks its module up there
    spec.loader.exec_module(mod)
    return mod


def tiny_config(**over) -> LLaDAConfig:
    kw = dict(
        d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96, vocab_size=64,
        embedding_size=64, max_sequence_length=256, rope_theta=10000.0,
        mask_token_id=MASK, eos_token_id=61, pad_token_id=62,
    )
    kw.update(over)
    return LLaDAConfig(**kw)


@pytest.fixture
def tiny_model() -> LLaDAModel:
    return make_tiny_model()


def make_tiny_model() -> LLaDAModel:
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config()).eval()
    # Larger weights than the 0.02 init give peaked, varied confidences (closer to a trained model).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(20.0)
    return model


RAGGED = [[1, 2, 3, 4, 5, 6], [7, 8, 9], [3, 1, 4, 1, 5, 9, 2, 6, 5]]


def sample_with_kernels_forced(monkeypatch, module: ModuleType, name: str, **kw):
    """``(eager, forced, calls)``: ``paradecode.sample`` of the tiny model on three ragged prompts
    as a CPU runs it, and again with the samplers' Triton kernels forced (the interpreter runs
    them, as a GPU would; the selection kernels too), counting the calls of ``module.name`` (the
    kernel's entry point)."""
    import paradecode
    from paradecode.samplers import common

    model = make_tiny_model()
    eager = paradecode.sample(model, RAGGED, **kw)
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(common, "sampler_kernels_run", lambda t: True)
    monkeypatch.setattr(common, "_selection_kernels", True)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or real(*a))
    return eager, paradecode.sample(model, RAGGED, **kw), calls


@pytest.fixture
def prompts() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 50, (3, 6), generator=g)
