"""The diffusion LMs' SDPA back-end choice (``set_attention_backends``): cuDNN is left out by
default because it builds a plan per new shape (benchmarks/attention_backends.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

import paradecode
from paradecode.models import (LLaDAConfig, LLaDAModel, attention_backends, graph_attention_backends,
                               set_attention_backends, set_graph_attention_backends)
from paradecode.models import attention


@pytest.fixture(autouse=True)
def restore_backends():
    saved, saved_graph = attention_backends(), graph_attention_backends()
    yield
    set_attention_backends(saved)
    set_graph_attention_backends(saved_graph)


@pytest.fixture
def spy(monkeypatch):
    """Apply the choice on CPU too, and note the back ends of each context entered."""
    calls = []
    real = attention._kernel

    def recording(backends):
        calls.append(list(backends))
        return real(backends)

    monkeypatch.setattr(attention, "_CHOOSING_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(attention, "_kernel", recording)
    return calls


DEFAULT = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def test_default_leaves_cudnn_out():
    assert attention_backends() == ["flash", "efficient", "math"]


def test_order_is_a_priority_where_torch_takes_one():
    import inspect

    from torch.nn.attention import sdpa_kernel

    if "set_priority" in inspect.signature(sdpa_kernel).parameters:
        assert attention._kernel.keywords == {"set_priority": True}


def test_bad_names_get_a_clear_error():
    with pytest.raises(ValueError, match="non-empty list from"):
        set_attention_backends(["cuda"])
    with pytest.raises(ValueError, match="non-empty list from"):
        set_attention_backends([])
    assert attention_backends() == ["flash", "efficient", "math"]  # unchanged by the refused calls


def test_choice_applies_in_priority_order_and_none_leaves_it_to_torch(spy):
    q = torch.randn(2, 3, 5, 8)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[0, ..., 0] = False
    want = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    assert torch.allclose(attention.sdpa(q, q, q, mask), want, atol=1e-6)
    assert spy == [DEFAULT]
    set_attention_backends(["math"])
    assert torch.allclose(attention.sdpa(q, q, q, mask), want, atol=1e-6)
    assert spy[-1] == [SDPBackend.MATH]
    set_attention_backends(None)
    attention.sdpa(q, q, q, mask)
    assert len(spy) == 2 and attention_backends() is None


def test_cpu_tokens_do_not_depend_on_the_choice(spy):
    """Every layer's attention goes through the choice, and a generation's tokens are those
    PyTorch's own choice gives (on CPU, where both run the same kernels' arithmetic)."""
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=40,
                      embedding_size=40, mask_token_id=39, eos_token_id=38, pad_token_id=37, max_sequence_length=64)
    model = LLaDAModel(cfg).eval()
    prompt = torch.randint(0, 30, (2, 6))
    kw = dict(gen_length=8, block_length=4, steps=8)
    chosen = paradecode.sample(model, prompt, "lowconf", cache="dual", **kw).sequences
    assert len(spy) >= 2 * cfg.n_layers
    set_attention_backends(None)
    assert torch.equal(paradecode.sample(model, prompt, "lowconf", cache="dual", **kw).sequences, chosen)


def test_hugging_face_models_run_under_the_choice(spy):
    """HFDiffusionAdapter wraps the model's whole forward (transformers calls SDPA itself)."""
    from paradecode.models import HFDiffusionAdapter

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)

        def forward(self, input_ids):
            h = self.emb(input_ids)[:, None]
            return F.scaled_dot_product_attention(h, h, h)[:, 0] @ self.emb.weight.T

    adapter = HFDiffusionAdapter(Tiny(), mask_token_id=9)
    logits = adapter(torch.randint(0, 9, (2, 5)))
    assert logits.shape == (2, 5, 10)
    assert spy == [DEFAULT]


def test_graph_choice_applies_only_while_a_graph_is_captured(spy):
    """set_graph_attention_backends: forwards inside graph_capture() (CUDAGraphModel's capture
    and its warm-up) use it, eager forwards keep the eager choice; None (the default) means the
    eager choice there too; bad names are refused as for the eager choice."""
    q = torch.randn(1, 2, 4, 8)
    assert graph_attention_backends() is None
    with attention.graph_capture():
        attention.sdpa(q, q, q, None)
    set_graph_attention_backends(["cudnn", "flash", "efficient", "math"])
    attention.sdpa(q, q, q, None)
    with attention.graph_capture():
        attention.sdpa(q, q, q, None)
    attention.sdpa(q, q, q, None)
    assert spy == [DEFAULT, DEFAULT, [SDPBackend.CUDNN_ATTENTION] + DEFAULT, DEFAULT]
    assert graph_attention_backends() == ["cudnn", "flash", "efficient", "math"]
    with pytest.raises(ValueError, match="or None for the eager choice"):
        set_graph_attention_backends(["cudnn", "fast"])
    set_graph_attention_backends(None)
    assert graph_attention_backends() is None


def test_graph_model_captures_inside_the_graph_choice(monkeypatch):
    """CUDAGraphModel records each graph under graph_capture() (checked with the recorder the
    graph tests stand in for CUDA)."""
    from paradecode.models import graphs

    seen = []

    def recorder(fn, pool=None):
        seen.append(attention._capturing)
        return None, fn()

    monkeypatch.setattr(graphs, "capture_graph", recorder)
    monkeypatch.setattr(graphs.torch.cuda, "graph_pool_handle", lambda: None)
    model = graphs.CUDAGraphModel.__new__(graphs.CUDAGraphModel)
    model._pools = {}
    out = model._record(lambda x: x + 1, (torch.zeros(2),), "full")
    assert seen == [True] and not attention._capturing and torch.equal(out[1], torch.ones(2))


@pytest.mark.slow
def test_benchmark_script_smoke(tmp_path):
    """benchmarks/attention_backends.py runs each setting in its own process and writes both files (~20 s)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "attention_backends.py"), "--smoke",
                           "--backends", "default,math", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(next(tmp_path.glob("attention_backends_*_cpu-smoke.json")).read_text())
    assert [r["backends"] for r in res["results"]] == [["flash", "efficient", "math"], ["math"]]
    for r in res["results"]:
        assert [(x["strategy"], x["cache"]) for x in r["rows"]] == [("threshold", "none"), ("threshold", "dual"),
                                                                     ("lowconf", "dual")]
        assert all(x["same_tokens_on_repeat"] for x in r["rows"])
    assert next(tmp_path.glob("attention_backends_*_cpu-smoke.txt")).read_text().count("threshold") == 4
