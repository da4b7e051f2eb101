"""LoRA adapters (``paradecode/models/lora.py``) and dParallel's LoRA distillation
(``scripts/train_dparallel.py --lora-rank R``): the wrapped forward equals the merged one, B = 0
is the base model, save -> load reproduces the logits, wrong adapters raise what to do, only the
adapters train, and an adapter directory loads through the zoo and ``load_model_and_tokenizer``."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import paradecode
from paradecode import zoo
from paradecode.models import LLaDAModel, lora
from paradecode.models.loading import load_model_and_tokenizer

from .conftest import MASK, load_script, make_tiny_model, tiny_config

IDS = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))


def trained_lora(model: LLaDAModel, rank: int = 4, seed: int = 5, **kw) -> LLaDAModel:
    """``model`` with adapters whose A and B are random (as after training: B != 0)."""
    lora.add_lora(model, rank=rank, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_zero_b_is_the_base_model_and_freezes_it():
    model = make_tiny_model()
    base = model(IDS)
    wrapped = lora.add_lora(model, rank=4)
    assert len(wrapped) == 2 * 4  # q, k, v, up of 2 blocks
    assert torch.equal(model(IDS), base)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    block = model.model.transformer["blocks"][0]
    assert isinstance(block.q_proj, lora.LoRALinear) and isinstance(block.q_proj, torch.nn.Linear)
    assert not isinstance(block.attn_out, lora.LoRALinear)  # not a reference target on LLaDA


@pytest.mark.parametrize("targets", ["reference", "all", "q_proj,o_proj,down_proj"])
def test_wrapped_forward_equals_merged_forward(targets):
    model = trained_lora(make_tiny_model(), targets=targets)
    wrapped = model(IDS)
    assert not torch.allclose(wrapped, make_tiny_model()(IDS), atol=1e-3)  # the adapters do something
    lora.merge_lora(model)
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(make_tiny_model().state_dict())
    torch.testing.assert_close(model(IDS), wrapped, rtol=1e-4, atol=1e-4)


def test_targets_map_llama_names_and_reject_unknown_ones():
    assert lora.resolve_targets(None) == lora.REFERENCE_TARGETS == ("q_proj", "k_proj", "v_proj", "up_proj")
    assert lora.resolve_targets("o_proj,gate_proj,down_proj") == ("attn_out", "ff_proj", "ff_out")
    with pytest.raises(ValueError, match="match no linear module.*its linear modules are named"):
        lora.add_lora(make_tiny_model(), rank=2, targets="q_prj")
    for bad in (dict(rank=0), dict(rank=4, alpha=-1.0), dict(rank=4, dropout=1.0)):
        with pytest.raises(ValueError, match="LoRA"):
            lora.add_lora(make_tiny_model(), **bad)
    model = make_tiny_model()
    lora.add_lora(model, rank=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.add_lora(model, rank=2)


def test_alpha_defaults_to_rank_and_scales_the_update():
    model = make_tiny_model()
    lora.add_lora(model, rank=8)
    q = model.model.transformer["blocks"][0].q_proj
    assert q.scaling == 1.0 and model._lora["lora_alpha"] == 8.0
    lora.add_lora(other := make_tiny_model(), rank=8, alpha=16.0)
    assert other.model.transformer["blocks"][0].q_proj.scaling == 2.0


def test_save_then_load_reproduces_logits_and_uses_peft_names(tmp_path):
    model = trained_lora(make_tiny_model(), rank=3)
    want = model(IDS)
    lora.save_adapter(model, tmp_path, base="somewhere")
    config = json.loads((tmp_path / lora.ADAPTER_CONFIG).read_text())
    assert config["r"] == 3 and config["lora_alpha"] == 3.0 and config["base_model_name_or_path"] == "somewhere"
    keys = set(load_file(str(tmp_path / lora.ADAPTER_WEIGHTS)))
    assert "base_model.model.model.transformer.blocks.1.up_proj.lora_B.weight" in keys and len(keys) == 16
    fresh = make_tiny_model()
    assert lora.load_adapter(fresh, tmp_path) is fresh
    torch.testing.assert_close(fresh(IDS), want, rtol=1e-4, atol=1e-4)
    # a bf16 save: what ships is that close too
    lora.save_adapter(model, tmp_path / "bf16", dtype=torch.bfloat16)
    torch.testing.assert_close(lora.load_adapter(make_tiny_model(), tmp_path / "bf16")(IDS), want, rtol=0.02, atol=0.02)


def test_load_adapter_into_a_fused_model_keeps_the_fused_path_in_sync(tmp_path):
    lora.save_adapter(trained_lora(make_tiny_model()), tmp_path)
    plain = lora.load_adapter(make_tiny_model(), tmp_path)
    fused = make_tiny_model()
    for block in fused.model.transformer["blocks"]:
        block.fuse_projections()
    lora.load_adapter(fused, tmp_path)
    assert fused.model.transformer["blocks"][0].fused_groups() is not None
    torch.testing.assert_close(fused(IDS), plain(IDS), rtol=1e-5, atol=1e-5)


def test_add_lora_on_a_fused_model_does_not_skip_the_adapters():
    fused = make_tiny_model()
    for block in fused.model.transformer["blocks"]:
        block.fuse_projections()
    torch.testing.assert_close(trained_lora(fused)(IDS), trained_lora(make_tiny_model())(IDS), rtol=1e-5, atol=1e-5)


def test_wrong_adapters_are_clear_errors(tmp_path):
    good = tmp_path / "good"
    lora.save_adapter(trained_lora(make_tiny_model(), rank=4), good, base="tiny")
    before = make_tiny_model().state_dict()

    def untouched(model):
        return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    # a base with another number of layers: missing / unexpected keys; nothing merged
    deeper = LLaDAModel(tiny_config(n_layers=3))
    with pytest.raises(ValueError, match="trained on 'tiny'.*8 missing key.*base model it was trained on"):
        lora.load_adapter(deeper, good)
    # a base of another width: the shapes
    with pytest.raises(ValueError, match="projection, the model's is 32->32"):
        lora.load_adapter(LLaDAModel(tiny_config(d_model=32, n_heads=2, n_kv_heads=1)), good)
    # a renamed key
    state = load_file(str(good / lora.ADAPTER_WEIGHTS))
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / lora.ADAPTER_CONFIG).write_text((good / lora.ADAPTER_CONFIG).read_text())
    key = next(iter(state))
    save_file({(k.replace("lora_A", "lora_X") if k == key else k): v for k, v in state.items()},
              str(renamed / lora.ADAPTER_WEIGHTS))
    model = make_tiny_model()
    with pytest.raises(ValueError, match="1 missing key.*1 unexpected"):
        lora.load_adapter(model, renamed)
    assert untouched(model)
    # a config whose rank is not the files' (checked before any weight changes)
    (renamed / lora.ADAPTER_CONFIG).write_text(
        json.dumps({**json.loads((good / lora.ADAPTER_CONFIG).read_text()), "r": 8}))
    save_file(state, str(renamed / lora.ADAPTER_WEIGHTS))
    model = make_tiny_model()
    with pytest.raises(ValueError, match="rank 4, but adapter_config.json says r=8"):
        lora.load_adapter(model, renamed)
    assert untouched(model)
    (renamed / lora.ADAPTER_WEIGHTS).unlink()
    with pytest.raises(ValueError, match="no adapter_model.safetensors"):
        lora.load_adapter(make_tiny_model(), renamed)
    with pytest.raises(ValueError, match="no adapter_config.json"):
        lora.load_adapter(make_tiny_model(), tmp_path / "nothing")
    with pytest.raises(ValueError, match="plain base model"):
        lora.load_adapter(trained_lora(make_tiny_model()), good)


def test_a_train_step_changes_only_the_adapters():
    from paradecode.bench.dparallel_training import dparallel_loss

    model = make_tiny_model().train()
    lora.add_lora(model, rank=4)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW(lora.lora_parameters(model), lr=1e-2)
    tokens = torch.randint(0, 50, (3, 6 + 16), generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # the first step moves A only (B = 0 gives A no gradient), the second both
        loss, _ = dparallel_loss(model, tokens, None, 6, 8, MASK, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(bool(p.abs().sum() > 0) for n, p in model.named_parameters() if n.endswith("lora_B"))


def write_adapter_dir(directory: Path, base: str, model: LLaDAModel) -> LLaDAModel:
    """An adapter directory as train_dparallel writes it (adapter files + info.json with base)."""
    lora.save_adapter(model, directory, base=base)
    (directory / "info.json").write_text(json.dumps({"base": base, "tasks": ["add"], "gen_length": 32,
                                                     "block_length": 32}))
    return model


def test_adapter_dir_loads_through_zoo_name_and_path(tmp_path):
    base_model, _ = zoo.load("tasks-6m")
    want = trained_lora(base_model, rank=2)(IDS)
    by_name = write_adapter_dir(tmp_path / "by-name", "tasks-6m", base_model)
    model, tok = load_model_and_tokenizer(str(tmp_path / "by-name"))
    torch.testing.assert_close(model(IDS), want, rtol=1e-4, atol=1e-4)
    assert tok.mask_token_id == model.config.mask_token_id and model.generation_defaults["gen_length"] == 32
    assert model.config.name_or_path == str(tmp_path / "by-name")
    # the base as a directory, relative to the adapter's
    lora.merge_lora(by_name)
    zoo.load("tasks-6m")[0].save_pretrained(tmp_path / "base")
    zoo.load("tasks-6m")[1].save_pretrained(tmp_path / "base")
    write_adapter_dir(tmp_path / "by-path", "../base", trained_lora(zoo.load("tasks-6m")[0], rank=2))
    model2, _ = zoo.load_dir(tmp_path / "by-path")
    torch.testing.assert_close(model2(IDS), want, rtol=1e-4, atol=1e-4)
    gen = paradecode.sample(model2, [tok.encode("1+2=")], "dparallel", gen_length=32, block_length=32)
    assert not (gen.generated == tok.mask_token_id).any()
    (tmp_path / "by-path" / "info.json").write_text(json.dumps({"base": "no-such-base"}))
    with pytest.raises(ValueError, match="neither a shipped model.*set info.json's \"base\""):
        load_model_and_tokenizer(str(tmp_path / "by-path"))


def _script():
    return load_script("scripts/train_dparallel.py")


def test_script_rejects_lora_options_without_a_rank(tmp_path):
    with pytest.raises(SystemExit, match="need --lora-rank"):
        _script().main(["--out", str(tmp_path / "x"), "--smoke", "--lora-alpha", "8"])
    with pytest.raises(SystemExit, match="bad LoRA option.*rank"):
        _script().main(["--out", str(tmp_path / "x"), "--smoke", "--lora-rank", "0"])


@pytest.mark.slow
def test_smoke_lora_run_writes_an_adapter_that_loads_and_decodes(tmp_path):
    out = tmp_path / "student"
    _script().main(["--out", str(out), "--smoke", "--lora-rank", "4"])
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "info.json"]
    info = json.loads((out / "info.json").read_text())
    assert info["base"] == "tasks-6m" and info["adapter"]["r"] == 4 and info["train"]["lr"] == lora.REFERENCE_LR
    assert info["train"]["steps"] > 0 and info["adapter"]["bytes"] < 200_000
    model, tok = load_model_and_tokenizer(str(out))
    teacher, _ = zoo.load("tasks-6m")
    assert set(model.state_dict()) == set(teacher.state_dict())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, teacher.state_dict()[k])]
    assert changed and all(k.rpartition(".")[0].endswith(lora.REFERENCE_TARGETS) for k in changed)
    gen = paradecode.sample(model, [tok.encode("1+2=")], "dparallel", gen_length=32, block_length=32)
    assert gen.generated.shape == (1, 32) and not (gen.generated == tok.mask_token_id).any()
    for who in ("teacher", "student"):
        assert 1 <= info["eval"][who]["add"]["dparallel"]["mean_nfe"] <= 32
