"""The public API as a new user tries it, with bad and edge inputs (hypothesis, reproducible).

Property, for ``paradecode.sample``, ``paradecode.vision.generate``, speculative decoding,
the diffusers schedulers and the checkpoint loaders: every call either works or raises
``ValueError``/``TypeError`` whose message names the argument at fault. Each argument is
drawn as *ok* (valid alone: the call must work if all are), *edge* (zero, negative, huge,
unusual: the call may be refused) or *bad* (a wrong type, NaN, infinity, an unknown name, a
corrupted file: the call must be refused); a refusal must name an edge or bad argument.
Any other exception, a call that runs past 20 s, a bad input accepted, or a finished
sample that still holds mask ids fails. Each call runs in a forked child under a memory cap
(where fork exists), so a call that crashes the interpreter or asks for terabytes is one
failure, not the end of the run.

``PARADECODE_FUZZ_LOG=<file>`` records every failing call (input and traceback tail) in
``<file>`` instead of stopping at the first: the list of open cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import struct
import tempfile
import traceback
import typing
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch

from hypothesis import HealthCheck, Phase, given, settings  # a test dependency ([test] extra): never skipped
from hypothesis import strategies as st

import paradecode
from paradecode.config import type_hints
from paradecode.models import LLaDAModel
from paradecode.registry import get_strategy_class

from .conftest import MASK, make_tiny_model, tiny_config

TIMEOUT_S = 20
OK, EDGE, BAD = "ok", "edge", "bad"
# Shrinking is off: a failing call can cost a 20 s timeout per attempt; the log mode lists them all.
SETTINGS = dict(
    deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck), print_blob=False,
)
NAN, INF = float("nan"), float("inf")


# ---- the harness ---------------------------------------------------------------------------------


class CallTimeout(BaseException):
    """BaseException, so that no ``except Exception`` in the code under test swallows it."""


@contextlib.contextmanager
def time_limit(seconds: int):
    def fire(*_):
        raise CallTimeout

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cap_memory() -> None:
    """In the child running a call: a huge size that slips through fails as an allocation
    error instead of swapping a shared machine."""
    if not os.path.exists("/proc/self/status"):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + 8 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))


def show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, {value.flatten()[:6].tolist()})"
    if isinstance(value, np.ndarray):
        return f"np.array({value.tolist()!r:.60}, dtype={value.dtype})"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


ABSENT = type("Absent", (), {"__repr__": lambda self: "<not passed>"})()  # an ok choice: leave it out


@dataclasses.dataclass
class Arg:
    """An argument to draw: ``ok`` values (valid alone), ``edge`` and ``bad`` ones."""

    name: str
    ok: list
    edge: list = dataclasses.field(default_factory=list)
    bad: list = dataclasses.field(default_factory=list)
    spelled: tuple = ()  # other spellings a message may use for it


@dataclasses.dataclass
class Call:
    """One generated call: ``args`` maps each argument's name to ``(value, kind)``."""

    what: str
    args: dict[str, tuple[Any, str]] = dataclasses.field(default_factory=dict)
    spellings: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {n: v for n, (v, _) in self.args.items() if v is not ABSENT}

    def names(self, kind: str) -> list[str]:
        return [n for n, (_, k) in self.args.items() if k == kind]

    def named_in(self, message: str, names: list[str]) -> bool:
        for n in names:
            for s in (n, *self.spellings.get(n, ())):
                if re.search(rf"(?<![A-Za-z0-9_]){re.escape(s)}(?![A-Za-z0-9_])", message):
                    return True
        return False

    def __str__(self) -> str:
        inner = ", ".join(f"{n}={show(v)} [{k}]" for n, (v, k) in self.args.items() if v is not ABSENT)
        return f"{self.what}({inner})"


def draw_call(rnd: random.Random, what: str, specs: list[Arg]) -> Call:
    """Most calls get one faulty (edge or bad) argument, some none, some two: so each bad
    value is mostly tried on its own, not hidden behind another one's error."""
    faultable = [i for i, a in enumerate(specs) if a.edge or a.bad]
    n = min(rnd.choice([0, 1, 1, 1, 1, 2]), len(faultable))
    faults = set(rnd.sample(faultable, n))
    call = Call(what)
    for i, a in enumerate(specs):
        if i in faults:
            kind = rnd.choice([k for k, pool in ((EDGE, a.edge), (BAD, a.bad)) if pool])
            value = rnd.choice(list(a.edge if kind == EDGE else a.bad))
        else:
            kind, value = OK, rnd.choice(list(a.ok))
        call.args[a.name] = (value, kind)
        if a.spelled:
            call.spellings[a.name] = a.spelled
    return call


def _tail(e: BaseException) -> str:
    lines = traceback.format_exception(type(e), e, e.__traceback__)
    return "".join(lines[-4:]).strip()


def judge(call: Call, fn: Callable[[], Any], check: Optional[Callable[[Any], Optional[str]]]) -> Optional[str]:
    """Run ``fn``; what is wrong with the outcome by the property, or None."""
    bad, edge = call.names(BAD), call.names(EDGE)
    try:
        with time_limit(TIMEOUT_S):
            result = fn()
    except CallTimeout:
        return f"hang: no answer within {TIMEOUT_S} s"
    except (ValueError, TypeError) as e:
        if not bad and not edge:
            return f"a valid call was refused: {type(e).__name__}: {_tail(e)}"
        if not call.named_in(str(e), bad + edge):  # an edge value may rightly be refused first
            return f"{type(e).__name__} names none of {bad + edge}: {_tail(e)}"
        return None
    except Exception as e:  # noqa: BLE001 - the property is about exactly these
        return f"{type(e).__name__} instead of ValueError/TypeError: {_tail(e)}"
    if bad:
        return f"invalid {bad} accepted silently"
    return check(result) if check is not None else None


def judge_in_child(call: Call, fn: Callable[[], Any], check: Optional[Callable[[Any], Optional[str]]]) -> Optional[str]:
    """:func:`judge` in a forked child, so that a call that crashes the interpreter (torch
    raising SIGFPE on ``arange(2**63 - 1, -1, -1)``) or exhausts memory is one failure, not
    the end of the run; the child also gets a memory cap."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: judge, send the verdict, leave without running any cleanup
        try:
            os.close(r)
            # One intra-op thread: an OpenMP pool inherited through fork can deadlock, and on a busy
            # 2-core machine two threads per child make tiny calls crawl past the alarm.
            torch.set_num_threads(1)
            cap_memory()
            verdict = judge(call, fn, check)
        except BaseException as e:  # noqa: BLE001 - a fault of this harness, reported as one
            verdict = f"harness error: {_tail(e)}"
        try:
            with os.fdopen(w, "wb") as pipe:
                pipe.write(json.dumps({"verdict": verdict}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], TIMEOUT_S + 5)
        if not ready:  # stuck where the alarm cannot reach (inside one C call)
            os.kill(pid, signal.SIGKILL)
        raw = pipe.read() if ready else b""
    _, status = os.waitpid(pid, 0)
    if not ready:
        return f"hang: no answer within {TIMEOUT_S} s (killed: the alarm could not interrupt it)"
    if os.WIFSIGNALED(status):
        return f"crashed the interpreter with {signal.Signals(os.WTERMSIG(status)).name}"
    return json.loads(raw)["verdict"] if raw else "harness error: the child sent no verdict"


def run_case(call: Call, fn: Callable[[], Any], check: Optional[Callable[[Any], Optional[str]]] = None) -> None:
    """Judge one call; record or raise a failure."""
    problem = judge_in_child(call, fn, check) if hasattr(os, "fork") else judge(call, fn, check)
    if problem is None:
        return
    log = os.environ.get("PARADECODE_FUZZ_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"call": str(call), "problem": problem}) + "\n")
        return
    raise AssertionError(f"{call}\n  -> {problem}")


# Edge and bad values by annotation: what a user might plausibly type.
HUGE = [10**12, 2**62, 2**63 - 1]
EDGE_INT = [0, -1, 1, 3, -(10**12), *HUGE, np.int64(2)]
BAD_INT = ["3", 2.5, 2.0, True, [1], 2**63, 10**30, NAN]
EDGE_FLOAT = [0.0, -1.0, 1.0, 1e-30, 1e6, 1e308, -1e308, 2, np.float32(0.5)]
BAD_FLOAT = ["0.9", True, [0.5], NAN, INF, -INF, 10**400, b"1"]
BAD_BOOL = [1, 0, "True", 1.0, "no"]
BAD_STR = [3, b"x", ["x"], 0.5]
BAD_DICT = ["x", [1], 3]
BAD_SEED = ["1", 1.5, True, 2**64]


def by_annotation(name: str, annotation: Any, ok: list) -> Arg:
    """An :class:`Arg` for a config field: ``ok`` plus edge and bad pools by its annotation."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)]
    base = inner[0] if optional and len(inner) == 1 else annotation
    origin = typing.get_origin(base) or base
    ok = ok + ([None] if optional else [])
    none_bad = [] if optional else [None]
    if base is bool:
        return Arg(name, ok + [np.bool_(v) for v in ok if isinstance(v, bool)], [], BAD_BOOL + none_bad)
    if base is int:
        return Arg(name, ok, list(EDGE_INT), BAD_INT + none_bad)
    if base is float:
        return Arg(name, ok, list(EDGE_FLOAT), BAD_FLOAT + none_bad)
    if base is str:
        return Arg(name, ok, ["", "x" * 300], BAD_STR + none_bad)
    if origin is dict:
        return Arg(name, ok, [{"x": 1}], BAD_DICT + none_bad)
    if origin is typing.Union:  # e.g. Union[int, tuple]
        return Arg(name, ok, [(), (1,) * 3, 0, -1], ["3", NAN, INF, b"x"] + none_bad)
    return Arg(name, ok)


def field_args(config_cls: type, ok_values: dict[str, list], present: tuple = (), edge: Optional[dict] = None) -> list[Arg]:
    """Args for every field of a config dataclass; a field not in ``present`` is left out
    (its default) in most ok draws; ``edge`` adds field-specific edge values."""
    hints = type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        arg = by_annotation(f.name, hints.get(f.name, Any), list(ok_values.get(f.name) or [default]))
        arg.edge += (edge or {}).get(f.name, [])
        if f.name not in present:
            arg.ok = [ABSENT] * 3 + arg.ok
        out.append(arg)
    return out


def count_calls(n_expected: int):
    """Run the decorated property as a hypothesis test of ``n_expected`` calls, and check
    that it made them (the 1,000-call budget is the sum over the tests)."""

    def deco(prop):
        def outer(*a, **kw):
            made = []

            @settings(max_examples=n_expected, **SETTINGS)
            @given(data=st.data())
            def inner(data):
                made.append(1)
                prop(data, *a, **kw)

            inner()
            assert len(made) >= n_expected, f"only {len(made)} calls of {n_expected}"

        return outer

    return deco


# ---- paradecode.sample -----------------------------------------------------------------------------

DIFFUSION = sorted(set(paradecode.strategies()) - {"speculative", "var", "code"})
_G = torch.Generator().manual_seed(1)
OK_PROMPTS = [
    torch.randint(0, 50, (3, 6), generator=_G), [[5, 6, 7], [8, 9]], np.array([[1, 2, 3], [4, 5, 6]]),
    [np.int64(4), np.int32(5), 6], ((1, 2), (3, 4, 5)), torch.tensor([7, 8, 9]), [np.array([1, 2]), np.array([3])],
]
BAD_PROMPTS = [
    "hello", [[1.5, 2.0]], [], [[]], torch.zeros(2, 3), torch.zeros(1, 2, 3, dtype=torch.long), [[-1, 2]],
    [[64, 2]], [[10**6]], np.array([[True, False]]), [1, [2]], None, 3, [["a", "b"]], torch.tensor([[1, 200]]),
]
PADDED = torch.tensor([[62, 62, 3, 4, 5], [6, 7, 8, 9, 10]])
OK_MASKS = [torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]), np.array([[0, 0, 1, 1, 1], [1] * 5]), [[0, 0, 1, 1, 1], [1] * 5]]
BAD_MASKS = [
    torch.tensor([[1, 1, 1, 0, 0], [1] * 5]), torch.ones(2, 4, dtype=torch.long), torch.ones(2, 5),
    torch.tensor([[0, 2, 1, 1, 1], [1] * 5]), "mask", torch.tensor([[0, 1, 0, 1, 1], [1] * 5]),
]
# Values known valid alone for the tiny model (gen_length 8 or 16, block_length 8).
OK_VALUES: dict[str, list] = {
    "temperature": [0.0, 0.5, 1.0, 1, np.float32(0.5)], "remasking": ["low_confidence", "random"],
    "cfg_scale": [0.0], "logits_eos_inf": [False, True], "confidence_eos_eot_inf": [False, True],
    "layout": ["llada"], "threshold": [0.5, 0.9, np.float64(0.7)],
    "relaxed_threshold": [0.3], "radius": [1, 4, np.int64(2)], "accept_threshold": [0.96, 0.5],
    "eot": [True, False], "eot_truncate": [False], "base": ["lowconf", "threshold"],
}
OK_BY_STRATEGY: dict[str, dict[str, list]] = {"localleap": {"threshold": [0.8, 0.9]}}  # relaxed_threshold is 0.75
EDGE_VALUES: dict[str, list] = {
    "layout": ["llada2"], "cfg_scale": [1.5], "remasking": ["lowest"], "base": ["nope", "var"],
    "base_options": [{"steps": 3}, {"threshold": "x"}], "gen_length": [12, -8], "block_length": [16, -8],
    "eot_token_id": [61],  # read only with confidence_eos_eot_inf=True: a combination that may be refused
    "factor": [1.0],  # replaces threshold: refused beside a threshold of its own
    "eot_truncate": [True],  # read only with eot=True
}


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model()


def no_mask_left(mask_id: Optional[int] = None) -> Callable[[Any], Optional[str]]:
    """The check of a finished sample: no mask id (the model's, or the one passed) is left."""
    mask_id = MASK if mask_id is None else int(mask_id)

    def check(out) -> Optional[str]:
        if bool((out.generated == mask_id).any()):
            return f"finished, but mask ids ({mask_id}) are left in the output: {out.generated.tolist()}"
        return None

    return check


def prompt_args(rnd: random.Random, ok=OK_PROMPTS, bad=BAD_PROMPTS, padded=PADDED) -> list[Arg]:
    if rnd.randrange(6) == 0:
        return [Arg("prompt_ids", [padded], spelled=("prompt",)), Arg("attention_mask", OK_MASKS, bad=BAD_MASKS)]
    return [Arg("prompt_ids", ok, bad=bad, spelled=("prompt",))]


@count_calls(400)
def _sample_property(data, tiny):
    rnd = data.draw(st.randoms(use_true_random=True))  # a seeded Random: uniform choices
    name = rnd.choice(list(DIFFUSION))
    cls = get_strategy_class(name)
    gen = rnd.choice([8, 16])
    steps_hint = str(type_hints(cls.Config).get("steps", "Optional"))
    present = ("gen_length", "block_length") + (() if "Optional" in steps_hint else ("steps",))  # default 128 > gen
    ok = {**OK_VALUES, **OK_BY_STRATEGY.get(name, {}), "gen_length": [gen], "block_length": [8], "steps": [gen]}
    specs = field_args(cls.Config, ok, present, EDGE_VALUES) + prompt_args(rnd) + [
        Arg(rnd.choice(["stepz", "treshold", "temprature"]), [ABSENT], bad=[1]),
        Arg("seed", [ABSENT, None, 0, 7, np.int64(3)], [-1, 2**64 - 1], BAD_SEED),
        Arg("mask_token_id", [ABSENT, None, MASK], [0, 63], ["60", 60.5, -1, 64, 10**6]),
        Arg("cache", [ABSENT, None], sorted(paradecode.cache_policies()), ["nope", 3]),
        Arg("timing", [ABSENT, True, False], bad=["no", 2]),
    ]
    call = draw_call(rnd, f"sample(strategy={name!r})", specs)
    kwargs = call.kwargs
    prompt = kwargs.pop("prompt_ids")
    if kwargs.get("cache") is not None and rnd.random() < 0.5:
        extra = draw_call(rnd, "", [Arg("cache_options", [{}], [{"cache_reloading_step": 2}, {"window_size": 0}],
                                         [{"bogus": 1}, "x", {"cache_reloading_step": "2"}])])
        call.args.update(extra.args)
        kwargs.update(extra.kwargs)
    run_case(call, lambda: paradecode.sample(tiny, prompt, name, **kwargs), no_mask_left(kwargs.get("mask_token_id")))


@pytest.mark.slow  # 150-400 generated calls
def test_sample(tiny):
    _sample_property(tiny)


# ---- paradecode.vision.generate -------------------------------------------------------------------


@pytest.fixture(scope="module")
def var_model():
    from ._vision_tiny import tiny_vae, tiny_var

    return tiny_var(tiny_vae(), depth=2)


def finite_images(out) -> Optional[str]:
    if out.images is not None and not bool(torch.isfinite(out.images).all()):
        return "finished, but the images hold NaN or infinity"
    return None


@count_calls(150)
def _vision_property(data, var_model):
    from paradecode.vision import generate
    from paradecode.vision.generate import VARSampleConfig

    rnd = data.draw(st.randoms(use_true_random=True))  # a seeded Random: uniform choices
    ok = {"cfg": [1.5, 2.0, 0.0], "top_k": [0, 20], "top_p": [0.0, 0.9], "temperature": [1.0, 0.5],
          "use_cache": [True, False], "more_smooth": [False, True]}
    edge = {"top_k": [-1, 10**12, (5,) * 3, (5,) * 6], "temperature": [0.0, 1e6, (1.0,) * 6], "top_p": [1.0, -0.5]}
    specs = [
        Arg("class_labels", [[0, 1], [0, 4, -1], torch.tensor([1, 2]), np.array([3]), [np.int64(2)], 2],
            [[4] * 9], ["cat", [1.5], [5], [-2], [[[1]]], [], None, torch.zeros(2), [True], np.array([0.5])],
            spelled=("class labels", "labels")),
        Arg("strategy", [ABSENT, "var"], bad=["nope", 3]),
        *field_args(VARSampleConfig, ok, edge=edge),
        Arg("seed", [ABSENT, None, 0, 5], [-1], BAD_SEED),
        Arg("decode", [ABSENT, True, False], bad=["yes", 1]),
        Arg("cache", [ABSENT, None], ["scalekv", "prefix"], ["nope", 3]),
        Arg("vae", [ABSENT], bad=["vae", 3]),
        Arg(rnd.choice(["top_n", "cfg_scale"]), [ABSENT], bad=[1]),
    ]
    call = draw_call(rnd, "vision.generate", specs)
    kwargs = call.kwargs
    labels = kwargs.pop("class_labels")
    if kwargs.get("cache") == "scalekv" and rnd.random() < 0.5:
        extra = draw_call(rnd, "", [Arg("cache_options", [{}, {"budget": 0.5}], [{"budget": 0.0}, {"budget": 2.0}],
                                         [{"budget": "x"}, {"budget": NAN}, {"bogus": 1}])])
        call.args.update(extra.args)
        kwargs.update(extra.kwargs)
    run_case(call, lambda: generate(var_model, labels, **kwargs), finite_images)


@pytest.mark.slow  # 150-400 generated calls
def test_vision_generate(var_model):
    _vision_property(var_model)


# ---- speculative decoding ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_pair():
    transformers = pytest.importorskip("transformers")

    def llama(seed):
        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(
            vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=None, eos_token_id=None,
        )
        return transformers.LlamaForCausalLM(cfg).eval()

    return llama(0), llama(1)


@count_calls(150)
def _speculative_property(data, llama_pair):
    from paradecode.speculative import SpeculativeConfig

    target, draft = llama_pair
    rnd = data.draw(st.randoms(use_true_random=True))  # a seeded Random: uniform choices
    ok = {"num_draft_tokens": [1, 3], "max_new_tokens": [4, 8], "do_sample": [False, True],
          "draft_length_schedule": ["constant", "heuristic"], "stop_at_eos": [True, False], "record_draft_time": [False, True]}
    edge = {"top_k": [5], "top_p": [0.9, 0.0], "draft_confidence_threshold": [0.5], "temperature": [0.3],
            "draft_length_schedule": ["fast"]}
    specs = [
        *field_args(SpeculativeConfig, ok, present=("max_new_tokens",), edge=edge),
        *prompt_args(rnd, ok=[[[1, 2, 3]], torch.tensor([[5, 9, 2, 31, 7]]), [[3, 4, 5], [6]], np.array([1, 2])],
                     bad=BAD_PROMPTS + [[[45]]], padded=torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10]])),
        Arg("draft_model", [draft], [target], [None, "draft", 3, lambda x: x], spelled=("draft model",)),
        Arg("vocabtrim", [ABSENT, None], [list(range(0, 40, 2)), torch.arange(40)], [[1, 2, 99], "x", [1.5], [-1]]),
        Arg("seed", [ABSENT, None, 7], [-1], BAD_SEED),
        Arg(rnd.choice(["gen_length", "k", "num_beams"]), [ABSENT], bad=[4]),
    ]
    call = draw_call(rnd, "sample(strategy='speculative')", specs)
    kwargs = call.kwargs
    prompt = kwargs.pop("prompt_ids")
    run_case(call, lambda: paradecode.sample(target, prompt, "speculative", **kwargs))


@pytest.mark.slow  # 150-400 generated calls
def test_speculative(llama_pair):
    _speculative_property(llama_pair)


# ---- diffusers schedulers ------------------------------------------------------------------------------


@count_calls(150)
def _scheduler_property(data):
    import paradecode.diffusers as pd

    rnd = data.draw(st.randoms(use_true_random=True))  # a seeded Random: uniform choices
    name = rnd.choice(sorted(pd.scheduler_names()))
    cls = get_strategy_class(name)
    params = inspect.signature(pd.scheduler_class(name).__init__).parameters
    own = {"block_length": int, "num_inference_steps": Optional[int], "eos_token_id": Optional[int]}
    ok = {**OK_VALUES, **OK_BY_STRATEGY.get(name, {}), "block_length": [8], "num_inference_steps": [8, 4],
          "eos_token_id": [61], "logits_eos_inf": [False], "confidence_eos_eot_inf": [False]}
    edge = {**EDGE_VALUES, "logits_eos_inf": [True], "confidence_eos_eot_inf": [True], "block_length": [3, 0, -8, 10**12]}
    fields = {a.name: a for a in field_args(cls.Config, ok, present=("block_length",), edge=edge)}
    specs = []
    for pname in params:
        if pname == "self" or params[pname].kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if pname in fields:
            specs.append(fields[pname])
        elif pname in own:
            arg = by_annotation(pname, own[pname], list(ok[pname]))
            arg.edge += edge.get(pname, [])
            if pname != "block_length":
                arg.ok = [ABSENT] * 3 + arg.ok
            specs.append(arg)
    specs += [
        Arg(rnd.choice(["treshold", "steps", "gen_length"]), [ABSENT], bad=[1]),
        Arg("set_timesteps", [ABSENT, 8, 4], [0, -1, 10**12], ["8", NAN, 2.5], spelled=("num_inference_steps",)),
        Arg("step_temperature", [0.0, 1.0], [1e6], [NAN, "x"], spelled=("temperature",)),
    ]
    call = draw_call(rnd, f"diffusers.scheduler({name!r})", specs)
    kwargs = call.kwargs
    timesteps = kwargs.pop("set_timesteps", None)
    temperature = kwargs.pop("step_temperature")

    def run():
        s = pd.scheduler(name, **kwargs)
        if timesteps is not None:
            s.set_timesteps(timesteps)
        bl = s.config.block_length
        if call.args["block_length"][1] != OK:
            return s  # its block is not one to feed
        sample = torch.full((2, bl), MASK, dtype=torch.long)
        logits = torch.randn(2, bl, 64, generator=torch.Generator().manual_seed(0))
        for t in range(s.num_inference_steps):
            sample = s.step(logits, t, sample, mask_token_id=MASK, temperature=temperature).prev_sample
            if not bool((sample == MASK).any()):
                break
        return s

    run_case(call, run)


@pytest.mark.slow  # 150-400 generated calls
def test_schedulers():
    pytest.importorskip("diffusers")
    _scheduler_property()


# ---- checkpoint loaders on mutated files ------------------------------------------------------------------

JSON_VALUES = ["64", 64.5, -1, 0, 2**40, None, True, [], {}, NAN, INF, "x" * 5, 1]


def _loaders():
    from paradecode.samplers.learn2pd_filter import Learn2PDFilter
    from paradecode.vision import VQVAE

    return {"llada": LLaDAModel.from_pretrained, "llada-sharded": LLaDAModel.from_pretrained,
            "vqvae": VQVAE.from_pretrained, "learn2pd-filter": Learn2PDFilter.from_pretrained}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from paradecode.samplers.learn2pd_filter import Learn2PDFilter

    from ._vision_tiny import tiny_vae

    root = tmp_path_factory.mktemp("fuzz-ckpt")
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config(n_layers=1)).eval()
    model.save_pretrained(root / "llada")
    model.save_pretrained(root / "llada-sharded", max_shard_bytes=20_000)
    tiny_vae().save_pretrained(root / "vqvae")
    Learn2PDFilter(8, hidden_sizes=(4,)).save_pretrained(root / "learn2pd-filter")
    return root


def mutations(base: Path) -> tuple[list, list]:
    """(edge, bad) mutations of a checkpoint directory, each a tuple naming what to change."""
    config = json.loads((base / "config.json").read_text())
    weights = sorted(p.name for p in base.glob("*.safetensors"))
    edge = [("config_set", k, v) for k in sorted(config) for v in JSON_VALUES]
    edge += [("config_drop", k) for k in sorted(config)] + [("config_add", "zz_extra", 1)]
    bad = [("config_cut", f) for f in (0.0, 0.3, 0.9, 0.99)] + [("config_delete",)]
    bad += [("config_replace", t) for t in ("[]", "3", '"text"', "null", "", "{", "\x00\xff", "NaN")]
    for w in weights:
        edge += [("header_flip", w, f, x) for f in (0.1, 0.5, 0.9) for x in (1, 0x80)]
        bad += [("weights_cut", w, f) for f in (0.0, 0.001, 0.5, 0.99, 0.9999)]
        bad += [("data_flip", w, f, x) for f in (0.0, 0.3, 0.7, 0.999) for x in (1, 0x80, 0xFF)]
        bad += [("weights_garbage", w, n) for n in (0, 7, 100)] + [("weights_delete", w)]
        bad += [(op, w, i) for op in ("tensor_drop", "tensor_rename", "tensor_grow", "tensor_int") for i in (0, 1, -1)]
    if (base / "model.safetensors.index.json").exists():
        bad += [("index_no_weight_map",), ("index_shard_name", "gone.safetensors"), ("index_shard_name", "../x"),
                ("index_cut", 0.5), ("index_replace", "[]")]
    return edge, bad


def mutate(d: Path, m: tuple) -> None:
    op, *a = m
    if op.startswith("config"):
        f = d / "config.json"
        if op == "config_set" or op == "config_add":
            c = json.loads(f.read_text())
            c[a[0]] = a[1]
            f.write_text(json.dumps(c))
        elif op == "config_drop":
            c = json.loads(f.read_text())
            del c[a[0]]
            f.write_text(json.dumps(c))
        elif op == "config_cut":
            t = f.read_text().rstrip()
            f.write_text(t[: min(int(len(t) * a[0]), len(t) - 1)])
        elif op == "config_replace":
            f.write_text(a[0])
        elif op == "config_delete":
            f.unlink()
        return
    if op.startswith("index"):
        f = d / "model.safetensors.index.json"
        if op == "index_no_weight_map":
            f.write_text(json.dumps({"metadata": {}}))
        elif op == "index_shard_name":
            idx = json.loads(f.read_text())
            idx["weight_map"][sorted(idx["weight_map"])[0]] = a[0]
            f.write_text(json.dumps(idx))
        elif op == "index_cut":
            f.write_text(f.read_text()[: int(len(f.read_text()) * a[0])])
        else:
            f.write_text(a[0])
        return
    f = d / a[0]
    raw = bytearray(f.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    if op == "header_flip":
        raw[8 + int(n * a[1])] ^= a[2]
        f.write_bytes(bytes(raw))
    elif op == "data_flip":
        raw[8 + n + int((len(raw) - 8 - n) * a[1])] ^= a[2]
        f.write_bytes(bytes(raw))
    elif op == "weights_cut":
        f.write_bytes(bytes(raw[: int(len(raw) * a[1])]))
    elif op == "weights_garbage":
        f.write_bytes(bytes(range(a[1] % 256))[: a[1]] or b"")
    elif op == "weights_delete":
        f.unlink()
    else:
        from safetensors.torch import load_file, save_file

        state = load_file(str(f))
        key = sorted(state)[a[1] % len(state)]
        if op == "tensor_drop":
            del state[key]
        elif op == "tensor_rename":
            state[key + "_renamed"] = state.pop(key)
        elif op == "tensor_grow":
            state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:], dtype=state[key].dtype)
        else:
            state[key] = torch.ones(state[key].shape, dtype=torch.long)
        save_file(state, str(f))  # no checksum: the key/shape checks must catch it


@count_calls(200)
def _loader_property(data, checkpoints):
    rnd = data.draw(st.randoms(use_true_random=True))  # a seeded Random: uniform choices
    kind = rnd.choice(sorted(_loaders()))
    base = checkpoints / kind
    work = Path(tempfile.mkdtemp(dir=checkpoints))
    target = work / kind
    try:
        shutil.copytree(base, target)
        edge, bad = mutations(base)
        call = draw_call(rnd, f"{kind} loader", [
            Arg("directory", [target], bad=[3, None, b"x", work / "absent", target / "config.json"],
                spelled=("directory", "path", str(target), str(work / "absent"))),
            Arg("mutation", [("none",)], edge, bad, spelled=(str(target),)),
        ])
        if call.args["mutation"][0] != ("none",):
            mutate(target, call.args["mutation"][0])
        run_case(call, lambda: _loaders()[kind](call.args["directory"][0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow  # 150-400 generated calls
def test_checkpoint_loaders(checkpoints):
    _loader_property(checkpoints)


# ---- the cases the issue names, always tried ---------------------------------------------------------

ISSUE_CASES = [
    ("threshold", dict(threshold=("0.9", BAD))),
    ("localleap", dict(radius=(2.5, BAD))),
    ("localleap", dict(radius=(10**12, EDGE))),  # hung sample() once
    ("lowconf", dict(steps=(8, OK), temperature=(1000.0, EDGE))),  # Gumbel 0/0 left mask ids
    ("threshold", dict(temperature=(INF, BAD))),
    ("lowconf", dict(steps=(8, OK), remasking=("random", OK), temperature=(NAN, BAD))),
]


@pytest.mark.parametrize("name, options", ISSUE_CASES, ids=[f"{n}-{list(o)[-1]}" for n, o in ISSUE_CASES])
def test_issue_cases(tiny, name, options):
    call = Call(f"sample(strategy={name!r})", {"gen_length": (8, OK), "block_length": (8, OK), **options})
    prompt = torch.tensor([[5, 6, 7]])
    run_case(call, lambda: paradecode.sample(tiny, prompt, name, **call.kwargs), no_mask_left())
