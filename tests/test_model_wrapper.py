"""ModelWrapper: a wrapper of a model's forward answers the model protocol as the model does."""

import torch

import paradecode
from paradecode.models import ModelWrapper

from .conftest import make_tiny_model
from .test_dream import tiny_dream


class Counting(ModelWrapper):
    def __init__(self, model):
        super().__init__(model)
        self.calls = 0

    def forward(self, input_ids, **kw):
        self.calls += 1
        return self.model(input_ids, **kw)


def test_protocol_attributes_are_the_wrapped_models():
    llada, dream = make_tiny_model(), tiny_dream()
    for model in (llada, dream):
        w = Counting(model)
        assert w.config is model.config and w.device == model.device and w.mask_token_id == model.mask_token_id
        assert w.logits_shift == getattr(model, "logits_shift", 0)
        assert w.supports_layer_hooks == bool(getattr(model, "supports_layer_hooks", False))
        assert w.supports_cache
    assert Counting(dream).logits_shift == 1  # a cache would plan Dream's shifted feed through the wrapper


def test_a_wrapped_model_decodes_as_the_model_with_a_layer_adaptive_cache(tiny_model, prompts):
    """Elastic-Cache decides per layer through the model's hooks: through a wrapper it runs (it
    would refuse a model without them) and gives the model's own tokens and forwards."""
    opts = dict(gen_length=16, block_length=8, threshold=0.9, cache="elastic")
    ref = paradecode.sample(tiny_model, prompts, "threshold", **opts)
    wrapped = Counting(tiny_model)
    out = paradecode.sample(wrapped, prompts, "threshold", **opts)
    assert torch.equal(out.sequences, ref.sequences) and out.trace.nfe == ref.trace.nfe == wrapped.calls
