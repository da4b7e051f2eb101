"""The lm-evaluation-harness model ``paradecode`` (``paradecode.integrations.lm_eval``).

Each number lm-eval gets is checked against paradecode's own computation on the shipped
``tasks-6m``: generations against ``paradecode.sample`` decoded and cut as the references cut
them, scores against ``mc_loglikelihood`` with the same seed. The last test runs lm-eval's
command line end to end, offline, on a task definition written here over ``tests/data``.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance  # lm-eval is in the `all` extra: CI installs it
from lm_eval.api.registry import get_model, model_registry

import paradecode
from paradecode import zoo
from paradecode.integrations import lm_eval as pd_lm_eval
from paradecode.integrations.lm_eval import ParadecodeLM, split_model_args
from paradecode.likelihood import greedy_suffix_matches, mc_loglikelihood

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "lm_eval_tiny.jsonl"
MASK = 2  # tasks-6m's <mask>
ARGS = dict(pretrained="tasks-6m", strategy="threshold", threshold=0.9, gen_length=32, block_length=32, device="cpu")


@pytest.fixture(scope="module")
def lm():
    return ParadecodeLM(**ARGS, batch_size=2, mc_num=4)


def docs():
    return [json.loads(line) for line in DATA.read_text().splitlines()]


def reference_cut(tok, ids, until):
    """LLaDA's / Fast-dLLM's post-processing: decode with special tokens, split at each stop in
    turn, then re-encode and decode without special tokens."""
    text = tok.decode(ids, skip_special_tokens=False)
    for stop in until:
        if stop in text:
            text = text.split(stop)[0]
    return tok.decode(tok(text)["input_ids"], skip_special_tokens=True)


def direct_generation(model, tok, prompt, until, **options):
    out = paradecode.sample(model, [tok.encode(prompt)], "threshold", threshold=0.9, gen_length=32, block_length=32,
                            seed=1234, **options)
    return reference_cut(tok, out.generated[0].tolist(), until)


def direct_score(model, tok, context, continuation, mc_num=4, batch_size=2, seed=1234):
    prefix, target = tok.encode(context), tok.encode(continuation)
    ll = mc_loglikelihood(model, prefix, target, mask_id=MASK, mc_num=mc_num, batch_size=batch_size,
                          generator=torch.Generator().manual_seed(seed))
    return ll, greedy_suffix_matches(model, prefix, target, mask_id=MASK)


# ---- how lm-eval finds the model ------------------------------------------------------------
def test_the_name_resolves_and_the_package_declares_it():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (CI's); the rest of the module runs on 3.10
    assert get_model("paradecode") is ParadecodeLM
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["entry-points"]["lm_eval.models"]["paradecode"] == "paradecode.integrations.lm_eval:ParadecodeLM"
    assert meta["scripts"]["paradecode-eval"] == "paradecode.integrations.lm_eval:main"
    assert any(req.startswith("lm-eval") for req in meta["optional-dependencies"]["eval"])
    assert set(meta["optional-dependencies"]["eval"]) <= set(meta["optional-dependencies"]["all"])


def test_registration_agrees_with_lm_evals_entry_point_discovery():
    """Where lm-eval discovered the entry point first, registering again keeps its placeholder
    (no 'already registered' error) and the placeholder loads this class."""
    from importlib.metadata import EntryPoint

    saved = model_registry._objs.pop("paradecode")
    try:
        point = EntryPoint(name="paradecode", value="paradecode.integrations.lm_eval:ParadecodeLM", group="lm_eval.models")
        model_registry.register("paradecode", target=point)
        pd_lm_eval.register()
        assert get_model("paradecode") is ParadecodeLM
    finally:
        model_registry._objs["paradecode"] = saved


# ---- model_args ------------------------------------------------------------------------------
def test_model_args_are_checked_before_the_model_loads(monkeypatch):
    missing = dict(ARGS, pretrained="no/such-model")
    with pytest.raises(ValueError, match=r"unknown model_args \['thresold'\].*'threshold'"):
        ParadecodeLM(**{**missing, "thresold": 0.9})
    with pytest.raises(TypeError, match="option threshold must be a float"):
        ParadecodeLM(**{**missing, "threshold": "high"})
    with pytest.raises(ValueError, match="unknown model_args \\['refresh_every'\\]"):
        ParadecodeLM(**missing, refresh_every=2)  # a cache option without its cache
    with pytest.raises(ValueError, match="^lm-eval model 'paradecode': unknown strategy 'fast'"):
        ParadecodeLM(**{**missing, "strategy": "fast"})
    with pytest.raises(ValueError, match="^lm-eval model 'paradecode': unknown cache policy 'duel'"):
        ParadecodeLM(**missing, cache="duel")
    with pytest.raises(ValueError, match="strategy 'speculative' decodes 'causal-lm'"):
        ParadecodeLM(**{**missing, "strategy": "speculative"})
    with pytest.raises(ValueError, match="give the guidance scale as cfg"):
        ParadecodeLM(**missing, cfg_scale=1.0)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        ParadecodeLM(**missing, batch_size=3)
    with pytest.raises(ValueError, match="auto is not supported"):
        ParadecodeLM(**missing, batch_size="auto")
    with pytest.raises(ValueError, match="dtype must be one of"):
        ParadecodeLM(**missing, dtype="fp8")
    with pytest.raises(ValueError, match="needs pretrained="):
        ParadecodeLM()
    with pytest.raises(ValueError, match="neither a checkpoint directory, a hub id"):
        ParadecodeLM(**dict(missing, pretrained="no-such-model"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id not in the cache: the loader's message, no network
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        ParadecodeLM(**missing)


def test_the_command_line_reports_a_bad_model_arg_in_one_line(monkeypatch, capsys):
    """``paradecode-eval`` runs lm-eval's CLI (stood in for here: it builds the model as
    simple_evaluate does); our errors end it with status 2, lm-eval's own keep their traceback."""
    import lm_eval.__main__

    def cli(build):
        monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", build)

    cli(lambda: get_model("paradecode").create_from_arg_string("pretrained=tasks-6m,thresold=0.9", {"device": "cpu"}))
    with pytest.raises(SystemExit) as stop:
        pd_lm_eval.main(["--model", "paradecode"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paradecode-eval: error: lm-eval model 'paradecode' got unknown model_args ['thresold']")
    assert len(err.splitlines()) == 1

    def other():
        raise ValueError("No tasks specified")

    cli(other)
    with pytest.raises(ValueError, match="No tasks specified"):
        pd_lm_eval.main([])


def test_the_command_line_takes_its_process_group_down(monkeypatch, tmp_path):
    """A data-parallel run (torchrun) ends with the group destroyed on every rank: one left up
    at interpreter exit can abort the rank in gloo's threads and fail the run after its work."""
    import lm_eval.__main__
    import torch.distributed as dist

    def evaluate():  # what the model does under torchrun: it joins a process group
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", evaluate)
    pd_lm_eval.main([])
    assert not dist.is_initialized()


def test_options_go_to_the_strategy_or_the_cache():
    strat, cache = split_model_args("threshold", "dkv-decode", {"threshold": 0.8, "cache_reloading_step": 2})
    assert strat == {"threshold": 0.8} and cache == {"cache_reloading_step": 2}
    with pytest.raises(ValueError, match="cache_reloading_step must be"):
        split_model_args("threshold", "dkv-decode", {"cache_reloading_step": 0})


# ---- generate_until --------------------------------------------------------------------------
def test_generate_until_is_sample_decoded_and_cut(lm):
    model, tok = zoo.load("tasks-6m")
    cases = [("12+345=", ["\n"]), ("words river:", [" ", ";"]), ("sort banana:", []), ("lists fruit bird:", ["a", ";"])]
    reqs = [Instance("generate_until", {}, (p, {"until": u, "do_sample": False}), i) for i, (p, u) in enumerate(cases)]
    got = lm.generate_until(reqs, disable_tqdm=True)
    want = [direct_generation(model, tok, p, u) for p, u in cases]
    assert got == want
    assert got[0] == "357" and got[1] == "dus" and " " not in got[1]  # cut at the earliest stop
    assert lm.stats["requests"] == 4 and lm.stats["nfe"] > 0 and lm.stats["answer_tokens"] == sum(map(len, got))


def test_the_cache_and_its_options_reach_the_sampler():
    lm = ParadecodeLM(**{**ARGS, "gen_length": 64}, cache="dkv-decode", cache_reloading_step=2)
    model, tok = zoo.load("tasks-6m")
    prompt = "lists fruit bird:"
    got = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": []}), 0)], disable_tqdm=True)
    out = paradecode.sample(model, [tok.encode(prompt)], "threshold", threshold=0.9, gen_length=64, block_length=32,
                            cache="dkv-decode", cache_options={"cache_reloading_step": 2})
    assert got == [reference_cut(tok, out.generated[0].tolist(), [])]
    assert lm.stats["nfe"] == out.trace.nfe


def test_a_prompt_too_long_for_the_context_keeps_its_last_tokens():
    lm = ParadecodeLM(**ARGS, max_length=32 + 7)  # room for 7 prompt tokens beside the 32-token canvas
    model, tok = zoo.load("tasks-6m")
    got = lm.generate_until([Instance("generate_until", {}, ("xyz 12+345=", {"until": []}), 0)], disable_tqdm=True)
    assert got == [direct_generation(model, tok, "12+345=", [])] == ["357"]
    short = ParadecodeLM(**ARGS, max_length=32)
    with pytest.raises(ValueError, match="needs 32 tokens but the model's context is 32"):
        short.generate_until([Instance("generate_until", {}, ("12+345=", {"until": []}), 0)], disable_tqdm=True)


def test_chat_template_is_applied(tmp_path):
    """A checkpoint directory whose tokenizer has a chat template (here one that drops a 'Q: ')."""
    src = zoo.model_dir("tasks-6m")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "info.json"):
        shutil.copy(src / name, tmp_path / name)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] | replace('Q: ', '') }}{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    lm = ParadecodeLM(**{**ARGS, "pretrained": str(tmp_path)}, dtype="float32")
    context = lm.apply_chat_template([{"role": "user", "content": "Q: 12+345="}])
    assert context == "12+345="
    assert lm.generate_until([Instance("generate_until", {}, (context, {"until": []}), 0)], disable_tqdm=True) == ["357"]
    plain = ParadecodeLM(**ARGS)
    with pytest.raises(ValueError, match="no chat template"):
        plain.apply_chat_template([{"role": "user", "content": "hi"}])


# ---- loglikelihood ---------------------------------------------------------------------------
def test_loglikelihood_is_the_seeded_monte_carlo_estimate(lm):
    model, tok = zoo.load("tasks-6m")
    pairs = [("12+345=", "357"), ("12+345=", "951"), ("sort banana:", "aaabnn"), ("sort banana:", "zyxwvq")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)], disable_tqdm=True)
    want = [direct_score(model, tok, c, x) for c, x in pairs]
    assert [g for _, g in got] == [g for _, g in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], rel=1e-5)
    assert got[0][0] > got[1][0] and got[2][0] > got[3][0]  # the right answer scores higher
    assert got[2][1] and not got[3][1]  # greedy decoding gives the sorted letters
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("12+345=357",), 0)])


# ---- lm-eval's command line, end to end ------------------------------------------------------
TASKS = {
    "gen.yaml": """task: pd_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: [";", "\\n"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""",
    "mc.yaml": """task: pd_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
}


LAUNCHERS = {
    "one-process": [sys.executable, "-m"],
    # data parallel as LLaDA's evaluation runs it: each rank takes its share of the requests
    "two-processes": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_lm_eval_command_line_runs_offline_end_to_end(tmp_path, launcher):
    for name, text in TASKS.items():
        (tmp_path / name).write_text(text.format(data=DATA))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    model_args = "pretrained=tasks-6m,strategy=threshold,threshold=0.9,gen_length=32,block_length=32,mc_num=4"
    cmd = [*LAUNCHERS[launcher], "paradecode.integrations.lm_eval", "--model", "paradecode", "--model_args", model_args,
           "--tasks", "pd_tiny_gen", "pd_tiny_mc", "--include_path", str(tmp_path), "--device", "cpu",
           "--batch_size", "2", "--output_path", str(tmp_path / "out"), "--log_samples"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    out = tmp_path / "out" / "tasks-6m"
    results = json.loads(next(out.glob("results_*.json")).read_text())["results"]
    samples = {task: [json.loads(line) for line in next(out.glob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
               for task in ("pd_tiny_gen", "pd_tiny_mc")}
    model, tok = zoo.load("tasks-6m")

    gen = sorted(samples["pd_tiny_gen"], key=lambda s: s["doc_id"])
    want = [direct_generation(model, tok, d["prompt"], [";", "\n"]) for d in docs()]
    assert [s["resps"][0][0] for s in gen] == want
    assert results["pd_tiny_gen"]["exact_match,none"] == pytest.approx(
        sum(w == d["answer"] for w, d in zip(want, docs())) / len(want))

    mc = sorted(samples["pd_tiny_mc"], key=lambda s: s["doc_id"])
    correct = 0
    for s, d in zip(mc, docs()):
        scores = [direct_score(model, tok, d["prompt"], choice) for choice in d["choices"]]
        logged = [r[0] for r in s["resps"]]  # per choice: [loglikelihood, is_greedy], as strings
        assert [float(ll) for ll, _ in logged] == pytest.approx([ll for ll, _ in scores], rel=1e-5)
        assert [str(g) for _, g in logged] == [str(g) for _, g in scores]
        best = max(range(len(scores)), key=lambda i: scores[i][0])
        correct += best == d["label"]
    assert correct == len(mc)  # the obviously right choice always wins
    assert results["pd_tiny_mc"]["acc,none"] == pytest.approx(1.0)
