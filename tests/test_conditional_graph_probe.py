"""benchmarks/conditional_graph_probe.py: what can be checked without a GPU."""

import pytest
import torch


def test_conditional_graph_probe_says_it_needs_a_gpu(monkeypatch):
    """benchmarks/conditional_graph_probe.py measures a CUDA feature: without a GPU it stops with
    a clear message, not a traceback from inside CUDA."""
    from .conftest import load_script

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a GPU"):
        load_script("benchmarks/conditional_graph_probe.py").main([])
