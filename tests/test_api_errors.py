"""Bad input gets a clear ValueError that says what to do."""

import pytest
import torch

import paradecode


def test_unknown_strategy_lists_valid_ones(tiny_model, prompts):
    with pytest.raises(ValueError, match="lowconf"):
        paradecode.sample(tiny_model, prompts, "nope")


def test_unknown_option_lists_valid_ones(tiny_model, prompts):
    with pytest.raises(ValueError, match="valid options.*block_length"):
        paradecode.sample(tiny_model, prompts, "lowconf", stepz=3)


@pytest.mark.parametrize(
    "opts, msg",
    [
        (dict(gen_length=20, block_length=8), "multiple of block_length"),
        (dict(gen_length=16, block_length=8, steps=3), "multiple of the number of blocks"),
        (dict(gen_length=16, block_length=8, temperature=-1.0), "temperature"),
        (dict(gen_length=16, block_length=8, remasking="lowest"), "remasking"),
    ],
)
def test_invalid_values(tiny_model, prompts, opts, msg):
    with pytest.raises(ValueError, match=msg):
        paradecode.sample(tiny_model, prompts, "lowconf", **opts)


def test_missing_mask_id_is_explained(prompts):
    def bare(tokens, **kw):
        return torch.zeros(tokens.shape[0], tokens.shape[1], 10)

    with pytest.raises(ValueError, match="mask_token_id"):
        paradecode.sample(bare, prompts, "lowconf", gen_length=8, block_length=8, steps=8)
    out = paradecode.sample(bare, prompts, "lowconf", gen_length=8, block_length=8, steps=8, mask_token_id=9)
    assert out.generated.shape == (3, 8)


def test_prompt_on_other_device(tiny_model, prompts):
    tiny_model.to("meta")
    with pytest.raises(ValueError, match="move them"):
        paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8)


def test_bad_prompt_shapes(tiny_model):
    with pytest.raises(ValueError, match="batch, length"):
        paradecode.sample(tiny_model, torch.zeros(1, 2, 3, dtype=torch.long), "lowconf")
    with pytest.raises(ValueError, match="integer"):
        paradecode.sample(tiny_model, torch.zeros(1, 3), "lowconf")


def test_unknown_cache_and_cache_on_plain_callable(tiny_model, prompts):
    with pytest.raises(ValueError, match="cache policy"):
        paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8, cache="nope")


def test_registry_lists_strategies_and_caches():
    names = paradecode.strategies()
    assert {"lowconf", "threshold"} <= set(names)
    assert all(isinstance(d, str) and d for d in names.values())
    assert isinstance(paradecode.cache_policies(), dict)
