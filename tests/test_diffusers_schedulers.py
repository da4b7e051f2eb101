"""paradecode strategies as diffusers schedulers inside a real ``diffusers.LLaDA2Pipeline``."""

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest
import torch
from torch import nn

pytest.importorskip("diffusers")
from diffusers import BlockRefinementScheduler, LLaDA2Pipeline  # noqa: E402

import paradecode  # noqa: E402
import paradecode.integrations.diffusers as pd  # noqa: E402
from paradecode.config import type_hints  # noqa: E402
from paradecode.models import LLaDAModel  # noqa: E402

from .conftest import MASK, tiny_config  # noqa: E402

EOS = 61
GEN, BL, STEPS = 16, 8, 8  # prompts of 5 tokens: the first block is part prompt, the last has a tail


class TinyLLaDA2(nn.Module):
    """A LLaDA2-style model: ``forward(input_ids, attention_mask, position_ids) -> .logits``.

    Like a trained model it never predicts the mask token or (here) end-of-text, so the
    pipeline's EOS early stop never triggers and every rule sees the same candidates.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = LLaDAModel(tiny_config()).eval()
        with torch.no_grad():  # peaked, varied confidences, as in tests/conftest.py
            for p in self.inner.parameters():
                if p.dim() == 2:
                    p.mul_(20.0)
        self.config = self.inner.config
        self.calls: list[dict] = []

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids})
        logits = self.inner(input_ids, positions=position_ids, attention_mask=attention_mask)
        logits[..., MASK] = -1e4
        logits[..., EOS] = -1e4
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def model() -> TinyLLaDA2:
    return TinyLLaDA2()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 50, (3, 5), generator=torch.Generator().manual_seed(3))


def run_pipe(model, scheduler, ids, **kw):
    pipe = LLaDA2Pipeline(model=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    opts = dict(gen_length=GEN, block_length=BL, num_inference_steps=STEPS, temperature=0.0,
                editing_threshold=None, mask_token_id=MASK, output_type="seq")
    opts.update(kw)
    model.calls.clear()
    out = pipe(input_ids=ids, **opts)
    return out.sequences, len(model.calls)


def sample_options(name: str, scheduler) -> dict:
    """paradecode.sample options that mean what ``scheduler`` does in the pipeline above."""
    opts = dict(scheduler.strategy_options, gen_length=GEN, block_length=BL, layout="llada2", mask_token_id=MASK)
    fields = {f.name for f in dataclasses.fields(paradecode.registry.get_strategy_class(name).Config)}
    if "steps" in fields:
        opts["steps"] = STEPS * (GEN // BL)  # the pipeline's steps are per block
    if "base_options" in fields:  # a composite (prophet): so are its base's
        opts["base_options"] = {**scheduler.strategy.config.base_options}
        if "steps" in opts["base_options"]:
            opts["base_options"]["steps"] = STEPS * (GEN // BL)
    return opts


# ---- every strategy is a scheduler --------------------------------------------------------------

def test_a_scheduler_for_every_diffusion_strategy():
    dllm = [n for n in paradecode.strategies() if paradecode.registry.get_strategy_class(n).family == "dllm"
            and paradecode.registry.get_strategy_class(n).engine_forward]  # not WINO: its forward has a shadow block
    assert pd.scheduler_names() == sorted(dllm)
    for name in pd.scheduler_names():
        cls = pd.scheduler_class(name)
        assert cls.strategy_name == name and getattr(pd, cls.__name__) is cls
    assert pd.LowConfScheduler is pd.scheduler_class("lowconf")
    with pytest.raises(ValueError, match="schedulers exist for"):
        pd.scheduler_class("var")


@pytest.mark.parametrize("name", pd.scheduler_names())
def test_scheduler_arguments_are_the_strategy_options(name):
    """Each explicit class declares exactly its strategy's config fields (minus what the pipeline decides)."""
    import inspect

    cls = pd.scheduler_class(name)
    config_fields = {f.name for f in dataclasses.fields(paradecode.registry.get_strategy_class(name).Config) if f.init}
    args = set(inspect.signature(cls.__init__).parameters) - {"self", "block_length", "num_inference_steps", "eos_token_id"}
    assert args == config_fields - set(pd.PIPELINE_FIELDS)
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}
    for f in dataclasses.fields(paradecode.registry.get_strategy_class(name).Config):
        if f.name in args and f.default is not dataclasses.MISSING:
            assert defaults[f.name] == f.default, f.name
    # the same annotations (a mutable default is None in a signature): the scheduler checks its
    # arguments against them, so they must say what the strategy accepts
    config_hints = type_hints(paradecode.registry.get_strategy_class(name).Config)
    init_hints = type_hints(cls.__init__)
    for a in args:
        assert init_hints[a] in (config_hints[a], Optional[config_hints[a]]), a


@pytest.mark.parametrize("name", pd.scheduler_names())
def test_each_scheduler_runs_end_to_end_in_llada2_pipeline(model, ids, name):
    scheduler = pd.scheduler(name, block_length=BL)
    seqs, calls = run_pipe(model, scheduler, ids)
    assert seqs.shape == (3, GEN)
    assert not (seqs == MASK).any()
    # 3 blocks (the prompt fills part of the first); a revising rule's post-edit steps on top
    assert calls <= (STEPS + scheduler.strategy.post_block_steps) * 3 + BL


PROPHET_EXITS = dict(early_threshold=2.0, mid_threshold=1.5, late_threshold=1.0, max_steps=24)


@pytest.mark.parametrize(
    "name, options",
    [(n, {}) for n in pd.scheduler_names()]
    + [("lowconf", {"num_inference_steps": 4}), ("threshold", {"threshold": 0.6}),
       ("threshold", {"threshold": 0.3}), ("threshold", {"factor": 1.0}), ("credit", {"threshold": 0.6}),
       ("localleap", {"threshold": 0.7, "relaxed_threshold": 0.4}), ("prophet", PROPHET_EXITS)],
)
def test_pipeline_with_our_scheduler_equals_sample(model, ids, name, options):
    """The same strategy gives the same tokens, and the same number of forwards, both ways."""
    options = dict(options)
    steps = options.pop("num_inference_steps", STEPS)
    scheduler = pd.scheduler(name, block_length=BL, **options)
    seqs, calls = run_pipe(model, scheduler, ids, num_inference_steps=steps)
    opts = sample_options(name, scheduler)
    if "steps" in opts:
        opts["steps"] = steps * (GEN // BL)
    out = paradecode.sample(model, ids, name, **opts)
    assert torch.equal(seqs, out.generated)
    assert calls == out.trace.nfe
    if options is PROPHET_EXITS or options == PROPHET_EXITS:
        assert sum(out.trace.extra("prophet_exit")) > 0  # the exit rule did fire


def test_batched_llada2_layout_equals_row_by_row(model, ids):
    batch = paradecode.sample(model, ids, "threshold", threshold=0.5, gen_length=GEN, block_length=BL, layout="llada2")
    for i in range(ids.shape[0]):
        one = paradecode.sample(model, ids[i : i + 1], "threshold", threshold=0.5, gen_length=GEN, block_length=BL,
                                layout="llada2")
        assert torch.equal(batch.sequences[i], one.sequences[0])


def test_llada2_layout_feeds_the_window_with_positions_and_a_tail_mask(model, ids):
    model.calls.clear()
    out = paradecode.sample(model, ids[:1], "threshold", threshold=0.9, gen_length=GEN, block_length=BL, layout="llada2")
    widths = [c["input_ids"].shape[1] for c in model.calls]
    assert widths[0] == BL and widths[-1] == 3 * BL and widths == sorted(widths)  # no suffix is ever visible
    last = model.calls[-1]
    assert torch.equal(last["position_ids"][0], torch.arange(3 * BL))
    assert last["attention_mask"][0].tolist() == [1] * (5 + GEN) + [0] * (3 * BL - 5 - GEN)  # the tail is hidden
    assert out.sequences.shape == (1, 5 + GEN) and not (out.generated == MASK).any()


def test_llada2_layout_rejects_cache_policies(ids):
    tiny = LLaDAModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="layout='llada'"):
        paradecode.sample(tiny, ids, "threshold", gen_length=GEN, block_length=BL, layout="llada2", cache="prefix")
    with pytest.raises(ValueError, match="layout must be one of"):
        paradecode.sample(tiny, ids, "threshold", gen_length=GEN, block_length=BL, layout="dream")


# ---- where paradecode and diffusers' own scheduler coincide --------------------------------------

@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_threshold_equals_block_refinement_scheduler(model, ids, threshold):
    """Fast-dLLM's rule == BlockRefinementScheduler with one scheduled token per step
    (num_inference_steps == block_length), editing off, greedy."""
    brs, brs_calls = run_pipe(model, BlockRefinementScheduler(block_length=BL), ids, num_inference_steps=BL,
                              threshold=threshold)
    ours, ours_calls = run_pipe(model, pd.ThresholdScheduler(block_length=BL, threshold=threshold), ids,
                                num_inference_steps=BL)
    out = paradecode.sample(model, ids, "threshold", threshold=threshold, gen_length=GEN, block_length=BL,
                            layout="llada2")
    assert torch.equal(brs, ours) and torch.equal(brs, out.generated)
    # diffusers re-runs the model once more per block after the last mask is filled
    assert brs_calls >= ours_calls == out.trace.nfe


def test_lowconf_equals_block_refinement_scheduler_above_one(model, ids):
    """LLaDA's fixed schedule == BlockRefinementScheduler with a threshold above 1 (top-k only)."""
    brs, _ = run_pipe(model, BlockRefinementScheduler(block_length=BL), ids, num_inference_steps=4, threshold=1.01)
    ours, _ = run_pipe(model, pd.LowConfScheduler(block_length=BL), ids, num_inference_steps=4)
    out = paradecode.sample(model, ids, "lowconf", steps=4 * (GEN // BL), gen_length=GEN, block_length=BL,
                            layout="llada2")
    assert torch.equal(brs, ours) and torch.equal(brs, out.generated)


def test_differences_from_block_refinement_scheduler_on_one_step():
    """Threshold semantics: Fast-dLLM commits confidence >= threshold, diffusers > threshold;
    and diffusers may pick the mask token itself, paradecode never does."""
    logits = torch.zeros(1, 2, 4)  # two positions, four equally likely tokens: p = 0.25 exactly
    block = torch.full((1, 2), 3)
    brs = BlockRefinementScheduler(block_length=2)
    brs.set_timesteps(2, block_length=2)
    ours = pd.ThresholdScheduler(block_length=2, threshold=0.25)
    ours.set_timesteps(2, block_length=2)
    b = brs.step(logits, 0, block, mask_token_id=3, threshold=0.25)
    o = ours.step(logits, 0, block, mask_token_id=3)
    assert b.transfer_index.sum() == 1 and o.transfer_index.sum() == 2
    peaked = torch.tensor([[[0.0, 1.0, 0.0, 5.0], [0.0, 1.0, 0.0, 5.0]]])  # the mask token (3) is the argmax
    assert (brs.step(peaked, 0, block, mask_token_id=3, threshold=0.25).sampled_tokens == 3).all()
    ours.set_timesteps(2, block_length=2)
    o = ours.step(peaked, 0, block, mask_token_id=3)
    assert (o.sampled_tokens == 1).all() and not (o.prev_sample[o.transfer_index] == 3).any()


# ---- config, state, errors ------------------------------------------------------------------------

NON_DEFAULTS = {
    "threshold": {"factor": 2.0, "logits_eos_inf": True, "eos_token_id": EOS},  # a threshold beside factor is refused
    "lowconf": {"remasking": "random"},
}


@pytest.mark.parametrize("name", pd.scheduler_names())
def test_config_round_trip(tmp_path, name):
    s = pd.scheduler(name, block_length=16, num_inference_steps=8, **NON_DEFAULTS.get(name, {}))
    s.save_pretrained(tmp_path)
    t = type(s).from_pretrained(tmp_path)
    u = type(s).from_config(s.config)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert type(t) is type(s) and public(t.config) == public(s.config) == public(u.config)
    assert t.strategy.config == s.strategy.config
    for k, v in NON_DEFAULTS.get(name, {}).items():
        assert t.config[k] == v


def test_set_timesteps_resets_per_sequence_state(model, ids):
    s = pd.scheduler("credit", block_length=BL, threshold=0.6)  # credit history is per-sequence state
    first, _ = run_pipe(model, s, ids)
    assert s.state is not None and s.state.steps > 0 and s.state.credit is not None
    s.set_timesteps(STEPS, block_length=BL)
    assert s.state is None
    again, _ = run_pipe(model, s, ids)
    assert torch.equal(first, again)


def test_pipeline_block_length_and_steps_reach_the_strategy(model, ids):
    s = pd.LowConfScheduler(block_length=32, num_inference_steps=32)
    run_pipe(model, s, ids, block_length=BL, num_inference_steps=2)
    assert s.strategy.config.block_length == BL and s.strategy.steps_per_block == 2


def test_bad_scheduler_input_is_a_clear_error():
    with pytest.raises(ValueError, match="no scheduler for strategy 'nope'"):
        pd.scheduler("nope")
    with pytest.raises(ValueError, match="schedulers exist for"):
        pd.scheduler("var")
    with pytest.raises(ValueError, match="unknown option.*threshold"):
        pd.scheduler("threshold", treshold=0.5)
    with pytest.raises(ValueError, match="remasking"):
        pd.scheduler("lowconf", remasking="lowest")
    with pytest.raises(ValueError, match="exceeds block_length"):
        pd.scheduler("lowconf", block_length=8, num_inference_steps=16)
    with pytest.raises(ValueError, match="give eos_token_id"):
        pd.scheduler("threshold", logits_eos_inf=True)
    s = pd.ThresholdScheduler(block_length=2)
    logits, block = torch.zeros(1, 2, 4), torch.full((1, 2), 3)
    with pytest.raises(ValueError, match="top_p / top_k"):
        s.step(logits, 0, block, mask_token_id=3, top_k=5)
    with pytest.raises(ValueError, match="mask_token_id"):
        s.step(logits, 0, block)


@pytest.mark.parametrize(
    "name, config, err, match",
    [
        ("lowconf", dict(num_inference_steps=2**63 - 1), ValueError, r"num_inference_steps must be in \[1, 1048576\]"),
        ("lowconf", dict(num_inference_steps=2.5), TypeError, "option num_inference_steps must be an int or None"),
        ("lowconf", dict(num_inference_steps=float("nan")), TypeError, "option num_inference_steps must be"),
        ("credit", dict(block_length=-(10**12)), ValueError, r"option block_length must be in \[1, 1048576\]"),
        ("credit", dict(block_length=[1]), TypeError, "option block_length must be an int"),
        ("threshold", dict(eos_token_id="3"), TypeError, "option eos_token_id must be an int or None"),
        ("threshold", dict(eos_token_id=10**30), ValueError, "option eos_token_id must fit"),
        ("threshold", dict(eos_token_id=-1), ValueError, "option eos_token_id must be a token id >= 0"),
        ("threshold", dict(logits_eos_inf=True), ValueError, "logits_eos_inf reads the end-of-text id"),
        ("lowconf", dict(confidence_eos_eot_inf=True), ValueError, "confidence_eos_eot_inf reads the end-of-text id"),
        ("prophet", dict(base="nope"), ValueError, r"option base must be one of \['lowconf'"),
        ("prophet", dict(base_options=3), TypeError, "option base_options must be a dict"),
        ("prophet", dict(base_options={"x": 1}), ValueError, r"base_options \(base 'lowconf'\) got unknown option"),
    ],
)
def test_scheduler_config_is_checked_before_any_tensor(name, config, err, match):
    with pytest.raises(err, match=match):
        pd.scheduler(name, **({"block_length": 8} | config))


@pytest.mark.parametrize(
    "steps, err, match",
    [("8", TypeError, "must be an int"), (2.5, TypeError, "must be an int"), (float("nan"), TypeError, "must be an int"),
     (0, ValueError, "must be in"), (10**12, ValueError, "must be in"), (2**63, ValueError, "must fit")],
)
def test_set_timesteps_checks_its_arguments(steps, err, match):
    s = pd.scheduler("threshold", block_length=8)
    with pytest.raises(err, match=rf"ThresholdScheduler.set_timesteps\(\): argument num_inference_steps {match}"):
        s.set_timesteps(steps)
    with pytest.raises(ValueError, match="argument block_length must be in"):
        s.set_timesteps(4, block_length=-8)


@pytest.mark.parametrize(
    "kw, err, match",
    [(dict(temperature=float("nan")), ValueError, "argument temperature must be a finite float"),
     (dict(temperature="x"), TypeError, "argument temperature must be a float"),
     (dict(temperature=-1.0), ValueError, "argument temperature must be >= 0"),
     (dict(mask_token_id=-3), ValueError, "argument mask_token_id must be a token id >= 0"),
     (dict(mask_token_id="3"), TypeError, "argument mask_token_id must be an int"),
     (dict(sampling_method="best"), ValueError, "argument sampling_method must be one of")],
)
def test_step_checks_its_arguments(kw, err, match):
    s = pd.ThresholdScheduler(block_length=2)
    logits, block = torch.zeros(1, 2, 4), torch.full((1, 2), 3)
    with pytest.raises(err, match=match):
        s.step(logits, 0, block, **({"mask_token_id": 3} | kw))


def test_checked_config_values_are_plain_python():
    import numpy as np

    s = pd.scheduler("lowconf", block_length=np.int64(8), num_inference_steps=np.int64(4))
    assert type(s.config.block_length) is int and type(s.config.num_inference_steps) is int
    assert s.num_inference_steps == 4 and s.strategy.config.block_length == 8


# ---- the README's "Use with diffusers" snippet ----------------------------------------------------

def readme_snippet() -> str:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## Use with diffusers", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's 'Use with diffusers' section has no python block"
    return blocks[0]


def test_readme_diffusers_snippet_runs(model):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(60)} | {"[MASK]": MASK, "[EOS]": EOS, "[PAD]": 62, "[UNK]": 63}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, mask_token="[MASK]", eos_token="[EOS]",
                                        pad_token="[PAD]", unk_token="[UNK]")
    prompt_ids = tokenizer("w3 w14 w15 w9 w26", return_tensors="pt").input_ids
    namespace = {"model": model, "tokenizer": tokenizer, "prompt_ids": prompt_ids}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)
    assert namespace["out"].sequences.shape == (1, 64)
    assert isinstance(namespace["out"].texts[0], str)


def test_paradecode_diffusers_does_not_shadow_diffusers():
    """``import diffusers`` gets the installed package, not one of our modules named diffusers.

    Compared by location, not by folder names: a checkout may itself be called ``paradecode``
    and hold the venv, so "paradecode" in diffusers' path proves nothing.
    """
    import importlib.metadata
    import importlib.util

    import diffusers

    spec = importlib.util.find_spec("diffusers")
    assert spec is not None and spec.submodule_search_locations is not None  # a package, not a module file
    origin = Path(spec.origin).resolve()
    assert origin == Path(diffusers.__file__).resolve()
    installed = importlib.metadata.distribution("diffusers").locate_file("diffusers/__init__.py")
    assert origin == Path(installed).resolve()
    ours = Path(paradecode.__file__).resolve().parent
    assert not origin.is_relative_to(ours), origin
    assert diffusers is not pd and hasattr(diffusers, "LLaDA2Pipeline")
    assert isinstance(pd.ThresholdScheduler(), diffusers.SchedulerMixin)


def test_prophet_scheduler_constraints_survive_save_and_load(tmp_path):
    s = pd.ProphetScheduler(block_length=8, constraints={2: 5, 3: 6})
    s.save_pretrained(tmp_path)
    loaded = pd.ProphetScheduler.from_pretrained(tmp_path)
    assert loaded.config.constraints == {2: 5, 3: 6}
    assert loaded.strategy.config.constraints == {2: 5, 3: 6}
