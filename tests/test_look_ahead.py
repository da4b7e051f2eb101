"""A step that reads the device plans the next step's forward while it waits (``look_ahead``):
the tokens, forward counts and per-step figures must be those of steps planned one by one."""

import pytest
import torch

import paradecode
from paradecode.caches.canvas import CanvasKVCache
from paradecode.registry import get_strategy_class, strategies
from paradecode.samplers import base

from .conftest import make_tiny_model

RULES = [n for n in strategies() if get_strategy_class(n).family == "dllm"]
CACHES = [None, "dual", "prefix", "dkv-decode", "dkv-greedy", "elastic"]


@pytest.fixture(autouse=True)
def _restore_default():
    yield
    base.look_ahead(None)


def _ragged() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50, (n,), generator=g).tolist() for n in (6, 3, 9)]


def _run(model, prompts, enable: bool, monkeypatch, **kw):
    """(sequences, forwards, per-step figures, steps that ran a plan made ahead)."""
    used = []
    step = base.BlockDiffusionStrategy.step

    def counted(self, state, call):
        used.append(state.ahead is not None and state.ahead.key == base._ahead_key(state))
        return step(self, state, call)

    monkeypatch.setattr(base.BlockDiffusionStrategy, "step", counted)
    base.look_ahead(enable)
    out = paradecode.sample(model, prompts, **kw)
    monkeypatch.setattr(base.BlockDiffusionStrategy, "step", step)
    extras = [{k: v.tolist() if torch.is_tensor(v) else v for k, v in r.extras.items()} for r in out.trace.records]
    return out.sequences, out.trace.nfe, extras, sum(used)


def _same(a, b) -> None:
    assert torch.equal(a[0], b[0])
    assert a[1] == b[1]
    assert repr(a[2]) == repr(b[2])  # NaN figures (a row's Prophet gap at its end) compare by text


PAIRS = [(r, c) for r in RULES for c in CACHES if c is None or get_strategy_class(r).cacheable]  # WINO: no cache


@pytest.mark.parametrize("rule, cache", PAIRS)
def test_planning_ahead_gives_the_tokens_forwards_and_figures_of_steps_planned_one_by_one(rule, cache, monkeypatch):
    model, prompts = make_tiny_model(), _ragged()
    kw = dict(strategy=rule, gen_length=24, block_length=8, cache=cache, seed=3)
    off = _run(model, prompts, False, monkeypatch, **kw)
    on = _run(model, prompts, True, monkeypatch, **kw)
    _same(off, on)
    assert off[3] == 0
    if not get_strategy_class(rule).fixed_schedule or rule == "prophet":  # prophet reads its exit flags every step
        assert on[3] > 0, "no step ran a plan made ahead: the test would pass vacuously"


@pytest.mark.parametrize("extra", [dict(layout="llada2"), dict(cfg_scale=1.0), dict(temperature=0.7)])
def test_planning_ahead_under_the_llada2_layout_cfg_and_sampling(extra, monkeypatch):
    model, prompts = make_tiny_model(), _ragged()
    kw = dict(strategy="threshold", gen_length=24, block_length=8, cache=None, seed=3, **extra)
    if extra.get("layout") != "llada2":
        kw["cache"] = "dual"
    off = _run(model, prompts, False, monkeypatch, **kw)
    on = _run(model, prompts, True, monkeypatch, **kw)
    _same(off, on)
    assert on[3] > 0


def _exits(gap: float) -> dict:
    return dict(early_threshold=gap, mid_threshold=gap, late_threshold=gap, max_steps=24)


@pytest.mark.parametrize("cache", [None, "dual"])
@pytest.mark.parametrize("opts", [
    dict(base="lowconf", **_exits(2.0)),  # rows exit at different steps, the others go on
    dict(base="threshold", base_options=dict(threshold=0.8), **_exits(2.0)),  # a base that reads its own flags
    dict(base="lowconf", constraints={3: 7, 10: 9}, **_exits(2.0)),  # pinned tokens, written after every step
])
def test_prophet_exits_decided_on_the_device_and_planned_ahead_give_the_same_tokens(opts, cache, monkeypatch):
    """Prophet's exit is decided on the device and read with the step's flags, its fill made and
    written after the read once a row stops: steps planned during the read give the tokens,
    forwards and per-step gaps of steps planned one by one, with exits that fire after some
    steps were planned ahead."""
    model, prompts = make_tiny_model(), _ragged()
    kw = dict(strategy="prophet", gen_length=24, block_length=8, cache=cache, seed=3, **opts)
    off = _run(model, prompts, False, monkeypatch, **kw)
    on = _run(model, prompts, True, monkeypatch, **kw)
    _same(off, on)
    exits = [i for i, e in enumerate(on[2]) if e["prophet_exit"]]
    assert exits and exits[-1] > 0, exits  # an exit fired, and not only at the first step
    assert on[3] > 0
    if "constraints" in opts:
        out = paradecode.sample(model, prompts, **kw)
        assert out.generated[:, 3].eq(7).all() and out.generated[:, 10].eq(9).all()


@pytest.mark.parametrize("cache", [None, "dual"])
def test_an_end_of_text_cut_that_stays_put_does_not_stop_steps_being_planned_ahead(cache, monkeypatch):
    """Learn2PD's cut is read every step; once written, a cut that has not moved is not written
    again (nor marked as an edit), so the steps after it still run plans made during their read,
    with the tokens of steps planned one by one."""
    from .test_learn2pd import _EndsAt

    model = _EndsAt(make_tiny_model(), end=20)  # every column from 20 on predicts end-of-text
    kw = dict(strategy="learn2pd", gen_length=24, block_length=8, cache=cache, seed=3, steps=24, eot=True)
    off = _run(model, _ragged(), False, monkeypatch, **kw)
    on = _run(model, _ragged(), True, monkeypatch, **kw)
    _same(off, on)
    assert on[3] >= len(on[2]) // 2, (on[3], len(on[2]))  # the cut comes at the first step


def test_a_plan_is_thrown_away_when_a_block_ends(monkeypatch):
    """One row per block end at least: the plans made before those steps' reads assumed the
    block went on, so some steps that read must plan again (else the test above is vacuous for
    block ends)."""
    model = make_tiny_model()
    kw = dict(strategy="threshold", gen_length=32, block_length=8, cache="dual", seed=3)
    on = _run(model, [[1, 2, 3, 4]], True, monkeypatch, **kw)
    reading_steps = len(on[2]) - 1  # every step reads; the first has no plan before it
    assert 0 < on[3] < reading_steps


class _CountingPolicy(CanvasKVCache):
    """A policy whose plan keeps a count (it refreshes every third plan): planning a forward that
    never runs would shift its refreshes. It does not say ``plans_ahead``."""

    name = "counting"

    def __init__(self):
        super().__init__(None)
        self.plans = 0

    def full_rows(self, canvas):
        self.plans += 1
        return torch.full((len(canvas.rows),), self.plans % 3 == 1)

    def recompute(self, canvas):
        cols = canvas.block_columns()
        c = torch.arange(canvas.length)[None, :]
        return (c >= cols[:, :1]) & (c <= cols[:, -1:])


def test_a_policy_that_does_not_plan_ahead_is_planned_at_its_forward(monkeypatch):
    model, prompts = make_tiny_model(), _ragged()
    runs = []
    for enable in (False, True):
        policy = _CountingPolicy()
        runs.append((_run(model, prompts, enable, monkeypatch, strategy="threshold", gen_length=24, block_length=8,
                          cache=policy, seed=3), policy.plans))
    _same(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]  # as many plans as forwards: none made in vain


def test_a_steps_cache_figures_are_those_of_its_own_forward(monkeypatch):
    """The dual cache's reuse rate per step: 0 at each block's refresh, > 0 at its partial steps,
    with plans made ahead as without (the plan of the step after a refresh is made before the
    refresh step's figures are read)."""
    model = make_tiny_model()
    kw = dict(strategy="threshold", gen_length=24, block_length=8, cache="dual", seed=3)
    on = _run(model, [[5, 6, 7]], True, monkeypatch, **kw)
    rates = [e["reuse_rate"] for e in on[2]]
    assert rates[0] == 0.0 and any(r > 0 for r in rates)


@pytest.mark.parametrize("cache", [None, "dual", "prefix", "dkv-decode"])
def test_graph_inputs_copied_before_the_read_replay_the_tokens_of_eager_steps(cache, monkeypatch):
    """Through the CPU stand-in for CUDA graphs: a planned step queues its graph's input copies
    before the read (``CUDAGraphModel.stage_forward``) and replays after it; a plan thrown away
    leaves copies that the next forward of the same graph overwrites. Tokens, forwards and
    figures equal eager steps planned one by one, and replays did run."""
    from paradecode.models.graph_standins import ReplayedGraphs

    model, prompts = make_tiny_model(), _ragged()
    kw = dict(strategy="threshold", gen_length=24, block_length=8, cache=cache, seed=3)
    eager = _run(model, prompts, False, monkeypatch, **kw)
    graphed = ReplayedGraphs(model, capture_after=0)
    planned = _run(graphed, prompts, True, monkeypatch, **kw)
    _same(eager, planned)
    assert planned[3] > 0 and graphed.replays > 0


def test_a_plan_that_fails_is_dropped_and_the_step_plans_itself(monkeypatch):
    model, prompts = make_tiny_model(), _ragged()
    kw = dict(strategy="threshold", gen_length=24, block_length=8, cache="dual", seed=3)
    off = _run(model, prompts, False, monkeypatch, **kw)

    def refuse(*args, **kwargs):
        raise RuntimeError("no plan")

    monkeypatch.setattr(base, "_Planned", refuse)
    on = _run(model, prompts, True, monkeypatch, **kw)
    _same(off, on)
    assert on[3] == 0


def test_the_last_plan_is_not_left_in_the_state():
    base.look_ahead(True)
    out = paradecode.sample(make_tiny_model(), _ragged(), "threshold", gen_length=16, block_length=8, cache="dual")
    assert out.state is None or getattr(out.state, "ahead", None) is None


def test_look_ahead_is_on_for_cuda_canvases_only_by_default():
    base.look_ahead(None)
    assert not base._plans_ahead(torch.zeros(1))
    base.look_ahead(True)
    assert base._plans_ahead(torch.zeros(1))
    base.look_ahead(False)
    assert not base._plans_ahead(torch.zeros(1))


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["dual", "prefix", "dkv-decode"])
def test_planning_ahead_on_the_shipped_model(cache, monkeypatch):
    """tasks-6m (trained: several commits per step, blocks that end at varied steps), ragged
    prompts, three blocks, the caches that plan ahead: every rule that reads each step gives the same tokens with plans made ahead."""
    from paradecode import zoo
    from paradecode.bench.tasks import get_task

    model, tok = zoo.load("tasks-6m")
    prompts = [tok.encode(ex.prompt) for ex in get_task("lists").examples(2, seed=7)]
    used = 0
    for rule in RULES:
        cls = get_strategy_class(rule)
        if cls.fixed_schedule or (cache is not None and not cls.cacheable):
            continue
        kw = dict(strategy=rule, gen_length=96, block_length=32, cache=cache, seed=3)
        off = _run(model, prompts, False, monkeypatch, **kw)
        on = _run(model, prompts, True, monkeypatch, **kw)
        _same(off, on)
        used += on[3]
    assert used > 0
