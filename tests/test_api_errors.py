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


# ---- sample()'s own arguments, token ids and lengths: named at the door -------------------------------

GEO = dict(gen_length=8, block_length=8)


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(timing="no"), TypeError, "argument timing must be a bool"),
        (dict(progress=2), TypeError, "argument progress must be a bool"),
        (dict(mask_token_id="60"), TypeError, "argument mask_token_id must be an int or None, got str '60'"),
        (dict(mask_token_id=60.5), TypeError, "argument mask_token_id must be an int or None"),
        (dict(mask_token_id=64), ValueError, r"mask_token_id must be in \[0, 63\] \(the model's vocabulary\), got 64"),
        (dict(mask_token_id=-1), ValueError, r"mask_token_id must be in \[0, 63\]"),
        (dict(cache="prefix", cache_options="x"), TypeError, "argument cache_options must be a dict"),
        (dict(cache=3), TypeError, "cache must be a policy name"),
    ],
)
def test_sample_arguments_are_checked(tiny_model, prompts, kw, err, match):
    with pytest.raises(err, match=match):
        paradecode.sample(tiny_model, prompts, "threshold", **GEO, **kw)


@pytest.mark.parametrize("ids", [[[64, 2]], [[5, 10**6]], torch.tensor([[1, 200]])])
def test_prompt_ids_beyond_the_vocabulary(tiny_model, ids):
    with pytest.raises(ValueError, match=r"prompt_ids must hold token ids in \[0, 63\] \(the model's vocabulary\)"):
        paradecode.sample(tiny_model, ids, "threshold", **GEO)


def test_a_mask_id_at_the_vocabulary_edge_works(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "threshold", **GEO, mask_token_id=63)
    assert not bool((out.generated == 63).any())


@pytest.mark.parametrize("gen_length", [256, 10**12, 2**62])
def test_gen_length_beyond_the_model_maximum(tiny_model, prompts, gen_length):
    # tiny_config: max_sequence_length=256; the prompts have 6 tokens
    with pytest.raises(ValueError, match=rf"gen_length={gen_length} .* at most 256 \(its config's max_sequence_length\); use gen_length <= 250"):
        paradecode.sample(tiny_model, prompts, "threshold", gen_length=gen_length, block_length=2)


def test_gen_length_beyond_max_length_without_a_model_maximum(prompts):
    from paradecode.inputs import MAX_LENGTH

    def bare(tokens, **kw):  # a callable: no config, no declared maximum
        return torch.zeros(tokens.shape[0], tokens.shape[1], 10)

    with pytest.raises(ValueError, match=r"gen_length=.*declares no maximum.*MAX_LENGTH"):
        paradecode.sample(bare, prompts, "threshold", gen_length=MAX_LENGTH, block_length=8, mask_token_id=9)


def test_a_strategy_instance_gets_the_combination_checks(tiny_model, prompts):
    from paradecode.samplers.threshold import ConfidenceThreshold, ThresholdConfig

    strategy = ConfidenceThreshold(ThresholdConfig(**GEO, threshold=0.5, factor=1.0))
    with pytest.raises(ValueError, match="threshold=0.5 has no effect with factor=1.0"):
        paradecode.sample(tiny_model, prompts, strategy)


# ---- model.generation_defaults (zoo.load sets them) ----------------------------------------------------


def test_generation_defaults_of_the_model_fill_unset_options(tiny_model, prompts):
    tiny_model.generation_defaults = {"gen_length": 16, "block_length": 8}
    out = paradecode.sample(tiny_model, prompts, "lowconf")  # steps (128) lowered to gen_length
    ref = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=16)
    assert out.generated.shape == (3, 16) and torch.equal(out.sequences, ref.sequences)
    assert out.state.steps == 16
    given = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=4)
    assert given.generated.shape == (3, 8) and given.state.steps == 4  # what the user gives wins
    threshold = paradecode.sample(tiny_model, prompts, "threshold")  # no steps field: lengths only
    assert threshold.generated.shape == (3, 16)


def test_bad_generation_defaults_are_named(tiny_model, prompts):
    tiny_model.generation_defaults = [16, 8]
    with pytest.raises(TypeError, match="model.generation_defaults must be a dict"):
        paradecode.sample(tiny_model, prompts, "lowconf")
    tiny_model.generation_defaults = {"gen_length": "16"}
    with pytest.raises(TypeError, match="option gen_length must be an int"):
        paradecode.sample(tiny_model, prompts, "lowconf")
