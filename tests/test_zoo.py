"""The shipped models: they load, their tokenizer matches, and the LLaDA baseline at full
steps actually solves held-out problems (a real check of the shipped weights)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import paradecode
from paradecode import zoo
from paradecode.bench.tasks import Example, get_task
from paradecode.models import LLaDAModel
from paradecode.models.checkpoint import INDEX, SINGLE

ROOT = Path(__file__).resolve().parents[1]


def test_available_lists_models_with_complete_directories():
    names = zoo.available()
    assert names, "no model shipped under paradecode/zoo/"
    for name in names:
        d = zoo.model_dir(name)
        info = zoo.info(name)
        if "base" in info:  # a LoRA adapter (scripts/train_dparallel.py --lora-rank): merged into its base on load
            for f in ("adapter_config.json", "adapter_model.safetensors"):
                assert (d / f).exists(), f"{name} lacks {f}"
            assert zoo.adapter_base(d).is_dir() and not (d / "config.json").exists()
            assert (d / "adapter_model.safetensors").stat().st_size < 16 * 2**20
        else:
            for f in ("config.json", "tokenizer.json", "info.json"):
                assert (d / f).exists(), f"{name} lacks {f}"
            if (d / INDEX).exists():  # sharded (scripts/train_cot.py): every shard the index names
                weights = sorted(set(json.loads((d / INDEX).read_text())["weight_map"].values()))
            else:
                weights = [SINGLE]
            for f in weights:
                assert (d / f).exists(), f"{name} lacks {f}"
                # each file small enough for git and for one file back from the GPU machine
                assert (d / f).stat().st_size < 15_000_000, f"{name}/{f} is over 15 MB: save it in shards"
        assert info["tasks"] and info["gen_length"] % info["block_length"] == 0
        for t in info["tasks"]:
            get_task(t)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="shipped models"):
        zoo.load("no-such-model")


@pytest.fixture(scope="module")
def best():
    name = zoo.available()[0]
    model, tok = zoo.load(name)
    return name, model, tok


def test_load_gives_float32_eval_model_and_matching_tokenizer(best):
    name, model, tok = best
    assert isinstance(model, LLaDAModel) and not model.training
    assert model.dtype == torch.float32
    assert model.config.mask_token_id == tok.mask_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    assert None not in (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id)
    assert tok.decode(tok.encode("words bird:")) == "words bird:"


def test_sample_with_no_options_decodes_the_models_canvas(best):
    """``paradecode.sample(model, ids)`` on a shipped model: gen_length / block_length from
    ``model.generation_defaults`` and steps lowered to gen_length, as ``paradecode sample`` does;
    LLaDA's defaults (128 / 128 / 128 steps) would leave an empty answer."""
    name, model, tok = best
    out = paradecode.sample(model, [tok.encode("words river:")])
    assert out.generated.shape[1] == model.generation_defaults["gen_length"] == zoo.info(name)["gen_length"]
    assert out.trace.nfe == model.generation_defaults["gen_length"]  # lowconf: one token per step
    text = tok.decode(out.generated[0].tolist(), skip_special_tokens=True)
    assert get_task("words").verify(Example("words river:", "", {"category": "river"}), text), text


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["words", "avoid", "add", "sort"])
def test_baseline_at_full_steps_solves_held_out_prompts(best, task_name):
    name, model, tok = best
    info = zoo.info(name)
    if task_name not in info["tasks"]:
        pytest.skip(f"{name} was not trained on {task_name}")
    task = get_task(task_name)
    gen = info["task_gen_length"][task_name]
    examples = task.examples(8, seed=4242)  # a seed the training stream never used
    out = paradecode.sample(model, [tok.encode(e.prompt) for e in examples], "lowconf",
                            gen_length=gen, block_length=info["task_block_length"][task_name], steps=gen)
    texts = tok.batch_decode(out.generated.tolist(), skip_special_tokens=True)
    correct = sum(task.verify(e, t) for e, t in zip(examples, texts))
    assert correct >= 7, list(zip([e.prompt for e in examples], texts))
    # the answer is followed by <eos> padding up to gen_length, as the model was trained
    assert (out.generated[:, -1] == tok.eos_token_id).float().mean() >= 7 / 8


@pytest.mark.slow
def test_text_demo_runs():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, str(ROOT / "demos" / "text_demo.py"), "--n", "8"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "lowconf" in res.stdout and "threshold" in res.stdout and "accuracy" in res.stdout


def test_each_shipped_dllm_finds_its_own_learn2pd_filter_and_the_fallback_is_the_default_models():
    from paradecode.samplers.learn2pd_filter import find_filter, shipped_filter

    for name in ("tasks-6m", "cot-8m", "cot-free-8m"):
        model, _ = zoo.load(name)
        found = find_filter(model)
        assert found is not None and found.parent.name == name
        assert json.loads((found / "config.json").read_text())["block_length"] == 32
    assert shipped_filter(32).parent.name == zoo.available()[0]


def test_shipped_adapter_changes_its_base_only_at_its_target_modules():
    """cot-8m-dparallel (a LoRA adapter) loads as cot-8m with the low-rank deltas merged into the
    q/k/v/up projections it names; every other weight is the base's."""
    adapters = [n for n in zoo.available() if "base" in zoo.info(n)]
    assert adapters, "no adapter shipped"
    for name in adapters:
        merged, _ = zoo.load(name)
        base, _ = zoo.load(zoo.info(name)["base"])
        targets = set(json.loads((zoo.model_dir(name) / "adapter_config.json").read_text())["target_modules"])
        base_params = dict(base.named_parameters())
        changed = {n for n, p in merged.named_parameters() if not torch.equal(p, base_params[n])}
        assert changed, f"{name}: the adapter changed nothing"
        assert all(n.split(".")[-2] in targets for n in changed), sorted(changed)[:5]


def test_info_reads_a_shipped_name_or_a_model_directory(tmp_path):
    """zoo.info takes a directory too (what the scripts and the bench runner pass): the same
    dict as by name for a shipped model's directory, {} for a directory without info.json."""
    name = zoo.available()[0]
    assert zoo.info(zoo.model_dir(name)) == zoo.info(name)
    assert zoo.info(tmp_path) == {}
    (tmp_path / "info.json").write_text(json.dumps({"gen_length": 64, "block_length": 32}))
    assert zoo.info(tmp_path)["gen_length"] == 64 and zoo.generation_defaults(tmp_path) == {"gen_length": 64, "block_length": 32}
