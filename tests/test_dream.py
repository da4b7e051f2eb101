"""DreamModel: Dream's logits (a bidirectional Qwen2 read one column to the right), its
checkpoints, and every strategy with every canvas cache on it.

The independent check is transformers' own ``Qwen2ForCausalLM`` with the same weights (Dream
is Qwen2 without the causal mask) and Dream's shift ``cat([l[:, :1], l[:, :-1]], 1)``. The
comparison with Dream's own modeling code and with Fast-dLLM's ``dream/`` generate, run
outside the repository, is in docs/dev-notes/issue-16-dream.md.
"""

import json

import pytest
import torch

import paradecode
from paradecode.api import _model_generation_defaults
from paradecode.interfaces import CanvasRequest, Request
from paradecode.models import DreamConfig, DreamModel
from paradecode.models.hf import dream_attention
from paradecode.registry import get_cache_class, get_strategy_class

from .test_contract import RUNS

MASK = 60
CANVAS_CACHES = sorted(c for c in paradecode.cache_policies() if "dllm" in get_cache_class(c).families)
# Policies that feed only some columns on a partial step (dllm-cache feeds the whole canvas every
# forward and reuses per-layer features instead: tests/test_dream_adaptive_caches.py).
PARTIAL_CACHES = [c for c in CANVAS_CACHES if c != "dllm-cache"]
DLLM_STRATEGIES = sorted(s for s, (key, _) in RUNS.items() if key == "dllm")


def tiny_dream(scale: float = 20.0, **over) -> DreamModel:
    kw = dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0, mask_token_id=MASK,
              eos_token_id=61, pad_token_id=62, bos_token_id=61)
    kw.update(over)
    torch.manual_seed(0)
    model = DreamModel(DreamConfig(**kw)).eval()
    with torch.no_grad():  # larger than the 0.02 init: peaked, varied confidences; nonzero biases
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(scale)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def dream() -> DreamModel:
    return tiny_dream()


def qwen2_twin(model: DreamModel, causal: bool = False):
    """transformers' Qwen2 with ``model``'s weights (the same names), made bidirectional."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    c = model.config
    cfg = Qwen2Config(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                      num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                      num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
                      rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps, attn_implementation="sdpa")
    twin = Qwen2ForCausalLM(cfg).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    if not causal:
        for m in twin.modules():
            if hasattr(m, "is_causal"):
                m.is_causal = False
    return twin


def shift(logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def test_logits_are_bidirectional_qwen2_shifted_by_one():
    model = tiny_dream(scale=10.0)
    x = torch.randint(0, 60, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        ref = shift(qwen2_twin(model)(input_ids=x).logits)
        causal = shift(qwen2_twin(model, causal=True)(input_ids=x).logits)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert (ours - causal).abs().max() > 1e-2  # the check can fail: a causal mask changes the logits
    assert (ours[:, 1:] - ref[:, :-1]).abs().max() > 1e-2  # and so does a missing shift


def test_left_padding_gives_dreams_4d_mask_logits_on_real_tokens():
    """Dream's padded batch: a (B, 1, L, L) real-pair mask and positions counting real tokens
    (``dream_attention``); our key-padding mask gives the same logits wherever the predecessor
    column is a real token (padding rows are never read)."""
    model = tiny_dream(scale=10.0)
    x = torch.randint(0, 60, (3, 15), generator=torch.Generator().manual_seed(2))
    am = torch.ones(3, 15, dtype=torch.long)
    am[1, :4] = 0
    am[2, :9] = 0
    with torch.no_grad():
        ours = model(x, attention_mask=am)
        ref = shift(qwen2_twin(model)(input_ids=x, **dream_attention(am)).logits)
        unpadded = model(x[2:, 9:])
    readable = torch.zeros_like(am, dtype=torch.bool)
    readable[:, 1:] = am[:, :-1].bool()
    torch.testing.assert_close(ours[readable], ref[readable], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[2:, 10:], unpadded[:, 1:], rtol=1e-5, atol=1e-5)


def test_logits_range_and_logits_from_pick_the_shifted_columns(dream):
    x = torch.randint(0, 60, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = dream(x)
        torch.testing.assert_close(dream(x, logits_range=(5, 9)), full[:, 5:9])
        torch.testing.assert_close(dream(x, logits_range=(0, 4)), full[:, :4])
        src = torch.tensor([[3, 0, 10], [6, 6, 1]])  # column i's logits come from output i - 1
        torch.testing.assert_close(dream(x, logits_from=src), full.gather(1, (src + 1)[..., None].expand(-1, -1, 64)))


def _canvas_request(tokens, am, s, B, step_in_block, committed):
    R, L = tokens.shape
    positions = (am.cumsum(-1) - 1).clamp_min(0)
    canvas = CanvasRequest(
        tokens=tokens, attention_mask=am, rows=torch.arange(R), reps=1, batch_size=R,
        window_start=torch.full((R,), s), window_size=B, block_start=torch.full((R,), s), block_length=B,
        step_in_block=torch.full((R,), step_in_block), step=5, mask_id=MASK,
        positions_fn=lambda: positions, committed_fn=lambda: committed,
    )
    return Request(tokens, kwargs={"attention_mask": am, "positions": positions, "logits_range": (s, s + B)},
                   canvas=canvas)


@pytest.mark.parametrize("cache", PARTIAL_CACHES)
def test_a_cached_step_on_the_canvas_the_cache_holds_gives_the_full_logits(dream, cache):
    """After a full forward fills the cache, a partial forward on the same canvas must give the
    window's logits exactly: the block's first column needs column s - 1's output, which the
    cache feeds as a query (a shift inside the fed block alone would give it its own)."""
    R, P, B, G = 2, 6, 8, 24
    g = torch.Generator().manual_seed(4)
    tokens = torch.cat([torch.randint(0, 50, (R, P), generator=g), torch.full((R, G), MASK)], dim=1)
    s = P + B  # second block: the first is decoded, the rest still masked but for two columns
    tokens[:, P:s] = torch.randint(0, 50, (R, B), generator=g)
    tokens[:, s + 3] = 7
    am = torch.ones_like(tokens)
    am[1, :2] = 0  # a left-padded row
    committed = torch.full(tokens.shape, -1)
    committed[:, P:s] = 1
    committed[:, s + 3] = 4  # committed in the previous step (dKV recomputes it)
    policy = get_cache_class(cache)(get_cache_class(cache).Config())
    with torch.no_grad():
        full = policy.forward(dream, _canvas_request(tokens, am, s, B, 0, committed))
        ref = dream(tokens, attention_mask=am, logits_range=(s, s + B))
        partial = policy.forward(dream, _canvas_request(tokens, am, s, B, 3, committed))
    assert not policy._full and policy.stats()["reuse_rate"] > 0.3  # a real partial step
    torch.testing.assert_close(full, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(partial, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache", CANVAS_CACHES)
@pytest.mark.parametrize("strategy", [s for s in DLLM_STRATEGIES if get_strategy_class(s).cacheable])  # wino refuses caches
def test_every_strategy_runs_on_dream_with_every_canvas_cache(dream, strategy, cache):
    _, opts = RUNS[strategy]
    prompts = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    ref = paradecode.sample(dream, prompts, strategy, seed=4, **opts)
    exact = paradecode.sample(dream, prompts, strategy, seed=4, cache=cache,
                              cache_options=dict(get_cache_class(cache).exact_options), **opts)
    assert torch.equal(ref.sequences, exact.sequences)
    assert torch.equal(ref.trace.row_nfe, exact.trace.row_nfe)
    out = paradecode.sample(dream, prompts, strategy, seed=4, cache=cache, **opts)  # the policy's defaults
    assert out.sequences.shape == ref.sequences.shape
    assert torch.equal(out.sequences[:, :5], prompts) and not (out.generated == MASK).any()
    reuse = out.trace.extra("reuse_rate")
    assert len(reuse) == out.trace.steps and all(0.0 <= r < 1.0 for r in reuse)


@pytest.mark.parametrize("cache", CANVAS_CACHES)
def test_exact_caches_on_dream_with_cfg_and_ragged_prompts(dream, cache):
    """Classifier-free guidance (two feeds per row) and left-padded prompts of unequal length."""
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    opts = dict(gen_length=16, block_length=8, steps=16, seed=1, cfg_scale=1.0)
    ref = paradecode.sample(dream, prompts, "lowconf", **opts)
    out = paradecode.sample(dream, prompts, "lowconf", cache=cache,
                            cache_options=dict(get_cache_class(cache).exact_options), **opts)
    assert torch.equal(ref.sequences, out.sequences)


def test_dream_generation_defaults_and_ids(dream):
    assert _model_generation_defaults(dream) == {"gen_length": 256, "block_length": 32}
    assert dream.mask_token_id == MASK and dream.supports_cache and dream.logits_shift == 1
    assert DreamConfig().mask_token_id == 151666 and DreamConfig().pad_token_id == 151643


def _save_dream_layout(model: DreamModel, path) -> None:
    """A checkpoint as Dream-v0 ships it: sharded safetensors with an index, Dream's config.json."""
    model.save_pretrained(path, max_shard_bytes=60_000)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="Dream", architectures=["DreamModel"],
               auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"})
    (path / "config.json").write_text(json.dumps(cfg))


def test_from_pretrained_round_trips_a_sharded_dream_checkpoint(dream, tmp_path):
    _save_dream_layout(dream, tmp_path)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert "model.layers.1.self_attn.q_proj.bias" in index["weight_map"] and "lm_head.weight" in index["weight_map"]
    loaded = DreamModel.from_pretrained(tmp_path)
    x = torch.randint(0, 60, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), dream(x))
    assert loaded.config.num_key_value_heads == 2 and loaded.mask_token_id == MASK
    assert DreamModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).dtype == torch.bfloat16


def test_from_pretrained_refuses_wrong_keys_and_configs(dream, tmp_path):
    from safetensors.torch import load_file, save_file

    _save_dream_layout(dream, tmp_path)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    state = load_file(str(shard))
    name = next(iter(state))
    state["model.transformer.wte.weight"] = state.pop(name)  # a LLaDA name where Dream's was
    save_file(state, str(shard))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.transformer.wte.weight"] = index["weight_map"].pop(name)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="missing keys.*unexpected keys") as err:
        DreamModel.from_pretrained(tmp_path)
    assert name in str(err.value) and "model.transformer.wte.weight" in str(err.value)

    cfg_dir = tmp_path / "cfg"
    _save_dream_layout(dream, cfg_dir)
    cfg = json.loads((cfg_dir / "config.json").read_text())
    (cfg_dir / "config.json").write_text(json.dumps(dict(cfg, num_key_value_heads=4)))
    with pytest.raises(ValueError, match="wrongly shaped"):
        DreamModel.from_pretrained(cfg_dir)
    (cfg_dir / "config.json").write_text(json.dumps(dict(cfg, hidden_act="gelu")))
    with pytest.raises(ValueError, match="silu"):
        DreamModel.from_pretrained(cfg_dir)
    (cfg_dir / "config.json").write_text(json.dumps(dict(cfg, num_attention_heads="4")))
    with pytest.raises(ValueError, match="num_attention_heads"):
        DreamModel.from_pretrained(cfg_dir)
    with pytest.raises(ValueError, match="does not exist"):
        DreamModel.from_pretrained(tmp_path / "nowhere")
