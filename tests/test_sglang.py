"""paradecode strategies as SGLang dLLM algorithms, driven by SGLang's own loops on a CPU.

SGLang's real ``DllmAlgorithm`` (its ``_run_sync`` and first-done-first-out ``_run_fdfo``
loops) and its ``LowConfidence`` run here (tests/_sglang_cpu.py says how they are imported
without SGLang's CUDA runtime). The model runner is a stand-in: a tiny LLaDA model that
returns the current blocks' ``full_logits`` given each request's committed prefix (what
SGLang's KV cache holds), the way ``paradecode.sample(..., layout="llada2")`` calls it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from types import SimpleNamespace
import pytest
import torch

import paradecode
from paradecode.models import LLaDAModel

from . import _sglang_cpu
from .conftest import MASK, make_tiny_model

EOS = 61
BL, P, GEN = 8, 6, 16  # prompts of 6: the first block is 6 prompt + 2 to decode; 3 blocks, 2 tail columns
END = P + GEN  # columns from END on are the tail: hidden from attention, their tokens dropped
STEPS = 4  # per block, for the fixed-schedule rules


@pytest.fixture(scope="module")
def sgl():
    """The real SGLang algorithm package and our adapter, registered into it."""
    try:
        algorithm = _sglang_cpu.load()
    except ImportError as e:  # fail, not skip: CI installs the wheel (.ci/run)
        pytest.fail(str(e), pytrace=False)
    import paradecode.integrations.sglang as adapter

    adapter.register()
    yield SimpleNamespace(algorithm=algorithm, adapter=adapter, base=algorithm.base)
    _sglang_cpu.unload()


class NoSpecials(LLaDAModel):
    """Like a trained model: never predicts the mask or end-of-text, so no rule stops early."""

    def forward(self, *args, **kwargs):
        logits = super().forward(*args, **kwargs)
        logits[..., MASK] = -1e4
        logits[..., EOS] = -1e4
        return logits


@pytest.fixture(scope="module")
def model() -> LLaDAModel:
    m = make_tiny_model()
    m.__class__ = NoSpecials
    return m


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 50, (3, P), generator=g).tolist()


@pytest.fixture(scope="module")
def filter_dir(tmp_path_factory) -> Path:
    """A Learn2PD filter for blocks of BL that accepts some positions (none is shipped for 8)."""
    from paradecode.samplers.learn2pd_filter import Learn2PDFilter

    torch.manual_seed(0)
    f = Learn2PDFilter(BL)
    with torch.no_grad():
        for p in f.parameters():
            p.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("learn2pd_filter")
    f.save_pretrained(path)
    return path


class TinyRunner:
    """SGLang's ``ModelRunner.forward`` for a batch of blocks: the blocks' logits given each
    request's prefix (prompt + emitted blocks), rows with the same prefix length in one forward.

    Columns from ``END`` on are hidden from attention, as ``layout="llada2"`` (and diffusers'
    pipeline) hide a generation's tail when ``P + gen_length`` ends inside a block; SGLang
    instead decodes the whole last block and cuts the output at ``max_new_tokens``."""

    def __init__(self, model: LLaDAModel) -> None:
        self.model, self.forwards, self.mixed = model, 0, 0

    @torch.no_grad()
    def forward(self, forward_batch, pp_proxy_tensors=None):
        self.forwards += 1
        B = forward_batch.batch_size
        blocks = forward_batch.input_ids.view(B, BL)
        out = torch.empty(B, BL, self.model.config.vocab_size)
        by_length: dict[int, list[int]] = {}
        for i, prefix in enumerate(forward_batch.prefix):
            by_length.setdefault(len(prefix), []).append(i)
        self.mixed += len(by_length) > 1  # requests at different blocks in one forward
        for n, rows in by_length.items():
            x = torch.cat([torch.tensor([forward_batch.prefix[i] for i in rows], dtype=torch.long).view(len(rows), n),
                           blocks[rows]], dim=1)
            L = x.shape[1]
            logits = self.model(x, positions=torch.arange(L).expand(len(rows), L),
                                attention_mask=(torch.arange(L) < END).long().expand(len(rows), L), logits_range=(n, L))
            out[rows] = logits[:, -BL:]
        return SimpleNamespace(logits_output=SimpleNamespace(full_logits=out.view(B * BL, -1)), can_run_graph=False)


def forward_batch(blocks: torch.Tensor, prompt_mask: torch.Tensor, prefix: list[list[int]]):
    """The fields of SGLang's ForwardBatch that a dLLM algorithm reads (+ the runner's prefix)."""
    return SimpleNamespace(batch_size=blocks.shape[0], input_ids=blocks.reshape(-1).clone(),
                           dllm_prompt_mask=prompt_mask, prefix=prefix)


def first_blocks(prompts: list[list[int]]) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Each request's prefix of whole prompt blocks, its first block (prompt tail + masks) and prompt mask."""
    prefix, blocks, pm = [], [], []
    for p in prompts:
        cut = len(p) // BL * BL
        tail = p[cut:]
        prefix.append(list(p[:cut]))
        blocks.append(tail + [MASK] * (BL - len(tail)))
        pm.append([True] * len(tail) + [False] * (BL - len(tail)))
    return prefix, torch.tensor(blocks), torch.tensor(pm)


def serve_sync(algo, runner: TinyRunner, prompts, gen: int) -> list[list[int]]:
    """SGLang's synchronous scheduling: every request's block in one ``run`` until all are done."""
    prefix, blocks, pm = first_blocks(prompts)
    out = [[] for _ in prompts]
    while len(out[0]) < gen:
        fb = forward_batch(blocks, pm, prefix)
        _, next_ids, *_ = algo.run(runner, fb)
        done = fb.input_ids.view(len(prompts), BL)
        for i, ids in enumerate(next_ids):
            out[i] += ids.tolist()
            prefix[i] = prefix[i] + done[i].tolist()
        blocks, pm = torch.full_like(blocks, MASK), torch.zeros_like(pm)
    return [o[:gen] for o in out]


def serve_fdfo(algo, runner: TinyRunner, prompts, gen: int) -> list[list[int]]:
    """SGLang's first-done-first-out scheduling: one step per round; a request whose block is
    done emits it and enters the next round with a fresh block (a mixed batch of blocks)."""
    prefix, blocks, pm = first_blocks(prompts)
    out = [[] for _ in prompts]
    states: list = [None] * len(prompts)
    live = list(range(len(prompts)))
    while live:
        fb = forward_batch(blocks[live], pm[live], [prefix[i] for i in live])
        _, next_ids, accepted, states_out, _ = algo.run(runner, fb, [states[i] for i in live])
        now = fb.input_ids.view(len(live), BL)
        for j, i in enumerate(live):
            states[i] = states_out[j]
            blocks[i] = now[j]
            if accepted[j]:
                out[i] += [t for t, is_prompt in zip(next_ids[j], pm[i].tolist()) if not is_prompt]
                prefix[i] = prefix[i] + next_ids[j]
                blocks[i], pm[i] = MASK, False
        live = [i for i in live if len(out[i]) < gen]
    return [o[:gen] for o in out]


def dllm_config(sgl, algorithm: str, options: dict, fdfo: bool = False):
    from sglang.srt.dllm.config import DllmConfig

    return DllmConfig(algorithm=algorithm, algorithm_config=dict(options), block_size=BL, mask_id=MASK,
                      max_running_requests=8, first_done_first_out_mode=fdfo)


def sample_options(name: str, options: dict) -> dict:
    """paradecode.sample options meaning what ``options`` mean per block under SGLang."""
    opts = {k: v for k, v in options.items() if k not in ("strategy", "eos_token_id")}
    fields = {f.name for f in dataclasses.fields(paradecode.registry.get_strategy_class(name).Config)}
    blocks = GEN // BL  # paradecode's steps are over gen_length's blocks (the llada2 canvas may have one more)
    if "steps" in fields:
        opts["steps"] = options.get("steps", STEPS) * blocks
    if "base_options" in fields and base_has_steps(options):
        opts["base_options"] = {**options["base_options"], "steps": STEPS * blocks}
    return opts


def base_has_steps(options: dict) -> bool:
    base = paradecode.registry.get_strategy_class(options["base"])
    return "steps" in {f.name for f in dataclasses.fields(base.Config)}


# Prophet's stage (early / mid / late) is its progress through max_steps: over the generation in
# paradecode.sample, over the block under SGLang (its state lives as long as the block). Equal
# stage thresholds make the stage irrelevant (test_prophet_stage_is_per_block shows the rest);
# these exits fire here (they change 3 and 19 tokens against the base rule alone).
def prophet_exits(gap: float) -> dict:
    return dict(early_threshold=gap, mid_threshold=gap, late_threshold=gap, max_steps=24)


CASES = [
    ("lowconf", {"steps": STEPS}),
    ("threshold", {"threshold": 0.7}),
    ("threshold", {"factor": 1.0}),
    ("credit", {}),
    ("localleap", {}),
    ("eb", {"gamma": 0.5}),
    ("prophet", {"base": "threshold", "base_options": {"threshold": 0.8}, **prophet_exits(1.5)}),
    ("prophet", {"base": "lowconf", "base_options": {}, **prophet_exits(1.0)}),
    ("learn2pd", {"steps": STEPS, "eos_token_id": EOS, "filter": "FILTER"}),
    ("editing", {"threshold": 0.7, "editing_threshold": 0.5}),  # post-edit steps hold full blocks open
    ("dparallel", {"threshold": 0.5}),
]


def yaml_options(name: str, options: dict) -> dict:
    opts = {"strategy": name, **options}
    if name == "prophet" and base_has_steps(options):
        opts["base_options"] = {**options["base_options"], "steps": STEPS}
    return opts


def test_every_block_strategy_is_covered():
    from paradecode.integrations.one_block import block_strategy_names

    shipped = {n for n in block_strategy_names()  # not those other tests register (README's example)
               if paradecode.registry.get_strategy_class(n).__module__.startswith("paradecode.")}
    assert {n for n, _ in CASES} == shipped


@pytest.mark.parametrize("fdfo", [False, True], ids=["sync", "fdfo"])
@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_sglang_loop_commits_what_sample_commits(sgl, model, prompts, name, options, fdfo, filter_dir):
    if options.get("filter") == "FILTER":  # Learn2PD's filter, from the YAML's directory and sample's filter=
        options = {**options, "filter": str(filter_dir)}
    algo = sgl.algorithm.get_algorithm(dllm_config(sgl, "Paradecode", yaml_options(name, options), fdfo))
    assert isinstance(algo, sgl.base.DllmAlgorithm)
    runner = TinyRunner(model)
    got = (serve_fdfo if fdfo else serve_sync)(algo, runner, prompts, GEN)
    out = paradecode.sample(model, torch.tensor(prompts), name, gen_length=GEN, block_length=BL, layout="llada2",
                            seed=0, **sample_options(name, options))
    assert got == out.generated.tolist()
    if not fdfo:  # SGLang's sync loop: the rows' forwards of a block, plus one that writes the finished block's KV
        assert runner.forwards == out.trace.nfe + -(-END // BL)


def test_prophet_stage_is_per_block(sgl, model, prompts):
    """Stage thresholds that differ: the stage SGLang's Prophet is in restarts at each block, so
    it commits other tokens than paradecode.sample (which measures progress over the generation)."""
    options = {"base": "threshold", "base_options": {"threshold": 0.8}, "early_threshold": 2.0,
               "mid_threshold": 1.5, "late_threshold": 1.0, "max_steps": 24}
    algo = sgl.algorithm.get_algorithm(dllm_config(sgl, "Paradecode", {"strategy": "prophet", **options}))
    got = serve_sync(algo, TinyRunner(model), prompts, GEN)
    out = paradecode.sample(model, torch.tensor(prompts), "prophet", gen_length=GEN, block_length=BL, layout="llada2",
                            **options)
    assert got != out.generated.tolist()


def test_sglang_low_confidence_equals_threshold_off_ties(sgl, model, prompts):
    """SGLang's LowConfidence is Fast-dLLM's threshold rule with ``>`` where ours has ``>=``:
    away from exact ties they commit the same tokens in the same forwards."""
    for fdfo in (False, True):
        serve = serve_fdfo if fdfo else serve_sync
        theirs_runner, ours_runner = TinyRunner(model), TinyRunner(model)
        theirs = serve(sgl.algorithm.get_algorithm(dllm_config(sgl, "LowConfidence", {"threshold": 0.7}, fdfo)),
                       theirs_runner, prompts, GEN)
        ours = serve(sgl.algorithm.get_algorithm(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "threshold": 0.7}, fdfo)),
                     ours_runner, prompts, GEN)
        assert theirs == ours
        assert theirs_runner.forwards == ours_runner.forwards
        assert (ours_runner.mixed > 0) == fdfo  # FDFO's batches mix blocks; sync waits at block ends


def test_tie_at_the_threshold_is_where_they_differ(sgl):
    """Three masked positions with confidence exactly 0.5 (two tied top logits) and threshold
    0.5: ours (``>=``) commits all three, SGLang's ``>`` commits none and falls back to one."""
    V = 16
    logits = torch.full((1, BL, V), -1e4)
    logits[0, :, 3] = 5.0
    logits[0, :3, 4] = 5.0  # positions 0-2: p(3) = p(4) = 0.5 exactly
    blocks = torch.full((1, BL), 7)
    blocks[0, :3] = MASK
    committed = {}
    for algorithm, options in [("LowConfidence", {"threshold": 0.5}), ("Paradecode", {"strategy": "threshold", "threshold": 0.5})]:
        algo = sgl.algorithm.get_algorithm(dllm_config(sgl, algorithm, options))
        fb = forward_batch(blocks, torch.zeros(1, BL, dtype=torch.bool), [[]])
        states = algo.init_step_state(fb)
        assert algo.step(fb, logits.view(BL, V).clone(), states) == [False]
        committed[algorithm] = int((fb.input_ids[:3] != MASK).sum())
        assert (fb.input_ids[3:] == 7).all()  # decoded positions untouched
    assert committed == {"LowConfidence": 1, "Paradecode": 3}


def test_yaml_options_are_checked_like_sample(sgl):
    get = sgl.algorithm.get_algorithm
    with pytest.raises(ValueError, match="must name the strategy"):
        get(dllm_config(sgl, "Paradecode", {"threshold": 0.9}))
    with pytest.raises(ValueError, match=r"strategy must be one of \[.*'threshold'.*\].*got 'var'"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "var"}))
    with pytest.raises(ValueError, match=r"'wino' runs its own forward.*SGLang's block forward does not give"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "wino"}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['treshold'\]; valid options"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "treshold": 0.9}))
    with pytest.raises(TypeError, match="option threshold must be a float, got str"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "threshold": "0.9"}))
    with pytest.raises(ValueError, match="logits_eos_inf reads the end-of-text id: give eos_token_id in the --dllm"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "logits_eos_inf": True}))
    with pytest.raises(ValueError, match=r"option\(s\) \['cfg_scale', 'temperature'\] cannot be set here: .*greedy"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "temperature": 0.7, "cfg_scale": 1.0}))
    with pytest.raises(ValueError, match="eos_token_id must be a token id"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "eos_token_id": -1}))
    with pytest.raises(TypeError, match="option eos_token_id must be an int or None, got str"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "eos_token_id": "2"}))
    with pytest.raises(ValueError, match="option filter is Learn2PD's"):
        get(dllm_config(sgl, "Paradecode", {"strategy": "threshold", "filter": "/nowhere"}))
    # SGLang's own key is the block length; steps are per block
    algo = get(dllm_config(sgl, "Paradecode", {"strategy": "lowconf", "block_size": BL, "steps": 2}))
    assert algo.strategy.config.block_length == BL and algo.strategy.config.steps == 2
    assert algo.strategy.config.gen_length == BL and algo.strategy.config.layout == "llada2"


def test_learn2pd_filter_of_another_block_length_is_refused(sgl, tmp_path):
    from paradecode.samplers.learn2pd_filter import Learn2PDFilter

    Learn2PDFilter(BL * 2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"trained for blocks of {BL * 2}, but SGLang's block_size is {BL}"):
        sgl.algorithm.get_algorithm(dllm_config(sgl, "Paradecode", {"strategy": "learn2pd", "eos_token_id": EOS,
                                                                    "filter": str(tmp_path)}))


def test_entry_point_registers_the_algorithm(sgl):
    """SGLang's plugin loader calls each ``sglang.srt.plugins`` entry point in every process
    (``sglang.srt.plugins.load_plugins``); pyproject declares ours."""
    from importlib.metadata import EntryPoint

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["sglang.srt.plugins"]
    assert declared == {"paradecode": "paradecode.integrations.sglang:register"}
    del sgl.algorithm.algo_name_to_cls["Paradecode"]
    with pytest.raises(RuntimeError, match="Unknown diffusion LLM algorithm: Paradecode"):
        sgl.algorithm.get_algorithm_cls("Paradecode")
    EntryPoint("paradecode", declared["paradecode"], "sglang.srt.plugins").load()()
    assert sgl.algorithm.get_algorithm_cls("Paradecode") is sgl.adapter.Paradecode


def test_prompt_mask_token_inside_block_is_refused(sgl):
    algo = sgl.algorithm.get_algorithm(dllm_config(sgl, "Paradecode", {"strategy": "threshold"}))
    blocks = torch.full((1, BL), MASK)
    pm = torch.zeros(1, BL, dtype=torch.bool)
    pm[0, 0] = True  # a prompt token that is the mask token
    fb = forward_batch(blocks, pm, [[]])
    with pytest.raises(ValueError, match="prompt holds the mask token"):
        algo.step(fb, torch.zeros(BL, 64), algo.init_step_state(fb))



def test_ci_installs_the_tested_sglang():
    """.ci/run installs the wheel whose loops these tests were written against (one version)."""
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert f'pip install -q --no-deps "sglang=={_sglang_cpu.SGLANG_VERSION}"' in ci
