"""No decoding loop can hang: a rule that commits nothing raises at once (loop and scheduler
alike, from the one block step), and any strategy stops at its own step bound."""

import pytest
import torch

import paradecode
from paradecode.interfaces import Request, Strategy
from paradecode.loop import StepLimitError
from paradecode.samplers import BlockDiffusionStrategy, DiffusionConfig, NoProgressError


class Stuck(BlockDiffusionStrategy):
    name = "stuck-test"
    description = "commits nothing"
    Config = DiffusionConfig

    def select(self, view, state):
        return torch.zeros_like(view.mask)


def test_a_rule_that_commits_nothing_raises_in_sample(tiny_model, prompts):
    rule = Stuck(DiffusionConfig(gen_length=16, block_length=8))
    with pytest.raises(NoProgressError, match="stuck-test.*committed no token"):
        paradecode.sample(tiny_model, prompts, rule)


def test_a_rule_that_commits_nothing_raises_in_the_block_decoder():
    from paradecode.samplers.block_decoder import BlockDecoder

    dec = BlockDecoder(Stuck(DiffusionConfig(gen_length=4, block_length=4)), mask_id=3)
    dec.reset(1, torch.device("cpu"))
    with pytest.raises(NoProgressError):
        dec.step(torch.full((1, 4), 3), torch.randn(1, 4, 8))


class Forever(Strategy):
    """A strategy whose `done` never comes: the loop's bound stops it."""

    name = "forever-test"
    description = "never done"
    family = "dllm"
    Config = DiffusionConfig

    def setup(self, model, **_):
        return {"model": model}, {"pad_id": 0}

    def start(self, prompt_ids, **_):
        return prompt_ids

    def step(self, state, call):
        call("model", Request(state))
        return torch.ones(state.shape[0], dtype=torch.long)

    def done(self, state):
        return False

    def max_steps(self, state):
        return 5

    def result(self, state):
        return state


def test_a_strategy_past_its_step_bound_raises(tiny_model, prompts):
    with pytest.raises(StepLimitError, match="did not finish within 5 steps"):
        paradecode.sample(tiny_model, prompts, Forever(DiffusionConfig()))


def test_block_decoder_steps_in_place_until_done_like_sample(tiny_model):
    """The SGLang-shaped caller (tokens updated in place, `done` returned) gives sample()'s
    tokens on a one-block generation in the llada2 layout."""
    from paradecode.samplers.block_decoder import BlockDecoder
    from paradecode.registry import get_strategy_class

    cls = get_strategy_class("threshold")
    rule = cls(cls.Config(gen_length=8, block_length=8, threshold=0.6, layout="llada2"))
    ids = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(2))  # fills block 0: generation = block 1
    ref = paradecode.sample(tiny_model, ids, "threshold", gen_length=8, block_length=8, threshold=0.6, layout="llada2")
    dec = BlockDecoder(rule, mask_id=tiny_model.config.mask_token_id)
    dec.reset(ids.shape[0], ids.device)
    canvas = torch.cat([ids, torch.full((ids.shape[0], 8), tiny_model.config.mask_token_id)], dim=1)
    block = canvas[:, -8:].clone()
    steps = 0
    while True:
        canvas[:, -8:] = block
        logits = tiny_model(canvas, positions=torch.arange(canvas.shape[1]).expand_as(canvas))[:, -8:]
        done = dec.step_inplace(block, logits)
        steps += 1
        if bool(done.all()):
            break
    assert torch.equal(block, ref.generated) and steps == ref.trace.steps
