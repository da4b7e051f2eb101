"""CUDAGraphModel's split launch: a forward captured as a chain of graphs cut before chosen
layers (paradecode.models.graphs.GraphChain). CUDA's capture calls are stood in by a recorder
here (no GPU): the cuts land before the chosen layers, every graph that begins ends, the hooks
go away after the capture, and the chain replays its graphs in order."""

import contextlib

import pytest
import torch

from paradecode.models import LLaDAModel
from paradecode.models import graphs as graphs_module
from paradecode.models.graphs import CUDAGraphModel, GraphChain, launch_splits

from .conftest import tiny_config


class FakeGraph:
    log: list = []

    def __init__(self):
        self.n = sum(1 for e in FakeGraph.log if e[0] == "begin")

    def capture_begin(self, pool=None):
        FakeGraph.log.append(("begin", self.n, pool))

    def capture_end(self):
        FakeGraph.log.append(("end", self.n))

    def replay(self):
        FakeGraph.log.append(("replay", self.n))


@pytest.fixture
def fake_cuda(monkeypatch):
    FakeGraph.log = []
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    return FakeGraph.log


def test_launch_splits_cut_before_layers_one_and_four():
    layers = [torch.nn.Identity() for _ in range(32)]
    assert launch_splits(layers) == [layers[1], layers[4]]
    assert launch_splits(layers[:3]) == [layers[1]]
    assert launch_splits(layers[:1]) == []


def test_a_chain_cuts_the_capture_before_each_chosen_layer_and_replays_in_order(fake_cuda):
    model = LLaDAModel(tiny_config(n_layers=6)).eval()
    layers = model.decoder_layers()
    ids = torch.randint(0, 50, (2, 5))
    pos = torch.arange(5).expand(2, 5)
    with torch.no_grad():
        want = model.hidden_states(ids, pos)
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: fake_cuda.append(("layer", i)))
    with torch.no_grad():
        chain, out = graphs_module._capture_chain(lambda: model.hidden_states(ids, pos), "pool", launch_splits(layers))
    assert isinstance(chain, GraphChain) and len(chain.graphs) == 3
    assert fake_cuda == [("begin", 0, "pool"), ("layer", 0),
                         ("end", 0), ("begin", 1, "pool"), ("layer", 1), ("layer", 2), ("layer", 3),
                         ("end", 1), ("begin", 2, "pool"), ("layer", 4), ("layer", 5), ("end", 2)]
    assert torch.equal(out, want)
    assert all(len(layer._forward_pre_hooks) == 1 for layer in layers)  # only the test's own hook is left
    del fake_cuda[:]
    chain.replay()
    assert fake_cuda == [("replay", 0), ("replay", 1), ("replay", 2)]


def test_a_capture_that_fails_still_ends_its_graph_and_drops_its_hooks(fake_cuda):
    model = LLaDAModel(tiny_config(n_layers=3)).eval()

    def boom():
        model.hidden_states(torch.zeros(1, 2, dtype=torch.long), torch.arange(2)[None])
        raise RuntimeError("capture failed")

    with pytest.raises(RuntimeError, match="capture failed"):
        graphs_module._capture_chain(boom, "pool", launch_splits(model.decoder_layers()))
    assert fake_cuda[-1] == ("end", 1)
    assert all(not layer._forward_pre_hooks for layer in model.decoder_layers())


def test_the_wrapper_splits_only_models_that_name_their_layers_and_only_when_asked():
    model = LLaDAModel(tiny_config(n_layers=6)).eval()
    layers = model.decoder_layers()
    assert CUDAGraphModel(model)._splits == [layers[1], layers[4]]
    assert CUDAGraphModel(model, split_launch=False)._splits == []
