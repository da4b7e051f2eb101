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
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

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


@pytest.fixture
def prompts() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 50, (3, 6), generator=g)


class NoHostReads(TorchDispatchMode):
    """Refuses, inside the CPU stand-ins for graphs, the ops a CUDA graph cannot record: those
    whose output shape or value the host must read (nonzero, unique, boolean indexing, .item(),
    multinomial's checks, repeats given as a tensor) and ``isin``, which sorts with ``unique``
    once its id set is larger than about 10 n^0.145 (on a GPU that broke the recording of a step
    with 40 EOS ids)."""

    REFUSED = {"nonzero", "_unique", "_unique2", "unique_dim", "unique_consecutive", "masked_select", "isin",
               "_local_scalar_dense", "item", "equal", "is_nonzero", "multinomial"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name, kwargs = func.overloadpacket.__name__, kwargs or {}
        indices = args[1] if name in ("index", "index_put", "index_put_") else ()
        bool_index = any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices)
        sized_by_data = name == "repeat_interleave" and func._overloadname != "self_int" and kwargs.get("output_size") is None
        if name in self.REFUSED or bool_index or sized_by_data:
            raise AssertionError(f"{func} reads the device from the host: a CUDA graph cannot record it")
        return func(*args, **kwargs)
