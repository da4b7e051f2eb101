"""Speed options of the LLaDA model and its wrappers compute exactly what the plain model does."""

import pytest
import torch

import paradecode
from paradecode.models import LLaDAModel
from paradecode.models import llada as llada_module
from paradecode.models.graphs import CUDAGraphModel

from .conftest import tiny_config


def _model(**over) -> LLaDAModel:
    torch.manual_seed(0)
    return LLaDAModel(tiny_config(**over)).eval()


@pytest.mark.parametrize("bias", [False, True])
def test_fused_projections_equal_separate_ones(bias):
    model = _model(include_qkv_bias=bias)
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        ref = model(ids)
        keys = {k: v.clone() for k, v in model.state_dict().items()}
        model.fuse_projections()
        out = model(ids)
    assert model.model.transformer["blocks"][0].fused_groups() is not None  # the fused path ran
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    fused_state = model.state_dict()
    assert set(fused_state) == set(keys)  # same names, same values: checkpoints unaffected
    assert all(torch.equal(fused_state[k], keys[k]) for k in keys)


def test_fused_model_saves_loads_and_survives_a_move(tmp_path):
    model = _model().fuse_projections()
    ids = torch.randint(0, 50, (1, 10))
    with torch.no_grad():
        ref = model(ids)
        model.save_pretrained(tmp_path)  # views of one tensor: must still save
        again = LLaDAModel.from_pretrained(tmp_path)
        torch.testing.assert_close(again(ids), ref, rtol=1e-5, atol=1e-5)
        moved = model.to(torch.float64)  # parameters no longer view the joined tensor
        out = moved(ids.clone())
    assert moved.model.transformer["blocks"][0].fused_groups() is None  # fell back, did not use stale weights
    torch.testing.assert_close(out.float(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compile_elementwise_swaps_kernels_and_keeps_results():
    model = _model()
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        ref = model(ids)
        try:
            llada_module.compile_elementwise(True, backend="eager")
            assert llada_module._KERNELS["rms_norm"] is not llada_module.rms_norm
            out = model(ids)
        finally:
            llada_module.compile_elementwise(False)
    assert llada_module._KERNELS["rms_norm"] is llada_module.rms_norm
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_hidden_states_plus_head_is_forward():
    model = _model()
    ids = torch.randint(0, 50, (2, 8))
    pos = torch.arange(8).expand(2, 8)
    with torch.no_grad():
        full = model(ids, logits_range=(2, 6))
        split = model.lm_head(model.hidden_states(ids, pos)[:, 2:6])
    torch.testing.assert_close(split, full, rtol=0, atol=0)


def test_graph_wrapper_runs_eagerly_off_gpu_and_rejects_other_models():
    model = _model()
    prompt = torch.randint(0, 50, (2, 5))
    ref = paradecode.sample(model, prompt, "lowconf", gen_length=8, block_length=4, steps=8, cache="dual")
    out = paradecode.sample(CUDAGraphModel(model), prompt, "lowconf", gen_length=8, block_length=4, steps=8,
                            cache="dual")
    assert torch.equal(ref.sequences, out.sequences)
    with pytest.raises(ValueError, match="hidden_states"):
        CUDAGraphModel(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("n_kv", [4, 2])  # LLaDA's shape (every head its own k/v), and grouped-query heads
def test_fused_layers_rotate_q_and_k_in_one_rope_call(monkeypatch, n_kv):
    """With fused projections each layer applies RoPE once, over q and k side by side in the
    joined output (one kernel where two ran), and the logits are exactly the unfused ones."""
    model = _model(n_kv_heads=n_kv, n_layers=3)
    ids = torch.randint(0, 60, (2, 9))
    calls = []
    rope = llada_module._KERNELS["rope"]
    monkeypatch.setitem(llada_module._KERNELS, "rope", lambda t, c, s: (calls.append(t.shape[1]), rope(t, c, s))[1])
    with torch.no_grad():
        ref = model(ids)
        assert calls == [4, n_kv] * 3  # unfused: q, then k, per layer
        calls.clear()
        model.fuse_projections()
        out = model(ids)
    assert calls == [4 + n_kv] * 3
    assert torch.equal(out, ref)
