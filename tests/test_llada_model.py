"""LLaDAModel: LLaDA's parameter names, checkpoint round trips, clear loading errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from paradecode.models import LLaDAConfig, LLaDAModel

from .conftest import tiny_config


def test_parameter_names_follow_llada():
    names = set(LLaDAModel(tiny_config()).state_dict())
    for expected in [
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
        "model.transformer.blocks.0.q_proj.weight",
        "model.transformer.blocks.0.k_proj.weight",
        "model.transformer.blocks.0.v_proj.weight",
        "model.transformer.blocks.0.attn_out.weight",
        "model.transformer.blocks.0.ff_proj.weight",
        "model.transformer.blocks.0.up_proj.weight",
        "model.transformer.blocks.0.ff_out.weight",
        "model.transformer.blocks.0.attn_norm.weight",
        "model.transformer.blocks.0.ff_norm.weight",
    ]:
        assert expected in names


def test_default_config_is_llada_8b():
    c = LLaDAConfig()
    assert (c.d_model, c.n_layers, c.n_heads, c.mlp_hidden_size, c.vocab_size) == (4096, 32, 32, 12288, 126464)
    assert c.mask_token_id == 126336 and c.rope_theta == 500000.0


def test_save_load_identical_logits(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    loaded = LLaDAModel.from_pretrained(tmp_path)
    x = torch.randint(0, 60, (2, 12))
    assert torch.equal(tiny_model(x), loaded(x))


def test_sharded_checkpoint_loads(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path, max_shard_bytes=40_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    loaded = LLaDAModel.from_pretrained(tmp_path)
    x = torch.randint(0, 60, (1, 9))
    assert torch.equal(tiny_model(x), loaded(x))


def test_loads_llada_style_config_json(tmp_path, tiny_model):
    # A config.json as LLaDA publishes it (extra fields, auto_map) must load.
    cfg = tiny_model.config.to_dict()
    cfg.update({"auto_map": {"AutoModel": "modeling_llada.LLaDAModelLM"}, "init_device": "meta",
                "residual_dropout": 0.0, "block_group_size": 1})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(tiny_model.state_dict(), str(tmp_path / "model.safetensors"))
    x = torch.randint(0, 60, (1, 5))
    assert torch.equal(LLaDAModel.from_pretrained(tmp_path)(x), tiny_model(x))


def test_missing_and_misnamed_keys_are_named(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["model.transformer.blocks.1.q_projection.weight"] = state.pop("model.transformer.blocks.1.q_proj.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        LLaDAModel.from_pretrained(tmp_path)
    assert "model.transformer.blocks.1.q_proj.weight" in str(err.value)
    assert "q_projection" in str(err.value)


def test_wrong_shape_is_named(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["model.transformer.ln_f.weight"] = torch.ones(3)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="ln_f"):
        LLaDAModel.from_pretrained(tmp_path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        LLaDAModel.from_pretrained(tmp_path)


def test_attention_is_bidirectional(tiny_model):
    x = torch.randint(0, 60, (1, 10))
    y = x.clone()
    y[0, 9] = (y[0, 9] + 1) % 60
    # changing the last token changes the first position's logits (no causal mask)
    assert not torch.allclose(tiny_model(x)[0, 0], tiny_model(y)[0, 0])


def test_left_padding_matches_unpadded(tiny_model):
    x = torch.randint(0, 60, (1, 7))
    padded = torch.cat([torch.full((1, 3), 62), x], dim=1)
    am = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], dim=1)
    torch.testing.assert_close(tiny_model(padded, attention_mask=am)[:, 3:], tiny_model(x), rtol=1e-5, atol=1e-5)


def test_logits_range_and_positions(tiny_model):
    x = torch.randint(0, 60, (2, 9))
    full = tiny_model(x)
    torch.testing.assert_close(tiny_model(x, logits_range=(3, 6)), full[:, 3:6])
    shifted = tiny_model(x, positions=torch.arange(9).expand(2, 9) + 5)
    assert not torch.allclose(shifted, full)  # RoPE uses the given positions
    with pytest.raises(ValueError, match="positions"):
        tiny_model(x, positions=torch.arange(4)[None])


def test_unsupported_variant_is_explained():
    with pytest.raises(ValueError, match="llama block"):
        LLaDAModel(tiny_config(block_type="sequential"))


def test_hf_adapter_wraps_logits_models(prompts):
    import paradecode
    from paradecode.models import HFDiffusionAdapter

    class Out:
        def __init__(self, logits):
            self.logits = logits

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(64, 64)

        def forward(self, input_ids):
            return Out(self.emb(input_ids))

    toy = Toy()
    with pytest.raises(ValueError, match="mask_token_id"):
        paradecode.sample(toy, prompts, "lowconf", gen_length=8, block_length=8, steps=8)
    out = paradecode.sample(toy, prompts, "lowconf", gen_length=8, block_length=8, steps=8, mask_token_id=60)
    assert out.generated.shape == (3, 8)
    with pytest.raises(ValueError, match="cache"):
        paradecode.sample(HFDiffusionAdapter(toy, mask_token_id=60), prompts, "lowconf", gen_length=8,
                          block_length=8, steps=8, cache="anything")
