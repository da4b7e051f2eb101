"""Gumbel-max noise: LLaDA's samples where LLaDA's form is finite, never a NaN or a -inf token."""

import pytest
import torch

import paradecode
from paradecode.samplers.common import add_gumbel_noise

from .conftest import MASK

VOCAB = 16


def llada_form(logits: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    """LLaDA's ``add_gumbel_noise`` as published (exp(logits) / (-log u) ** T), same draws."""
    g = torch.Generator().manual_seed(seed)
    logits = logits.to(torch.float64)
    u = torch.rand(logits.shape, dtype=torch.float64, generator=g)
    return logits.exp() / (-torch.log(u)) ** temperature


def logits_with_excluded(seed: int, scale: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(10_000 + seed)
    logits = torch.randn(3, 8, VOCAB, generator=g) * scale
    logits[..., 5] = float("-inf")  # the mask token, as forbid_token leaves it
    return logits


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_argmax_is_llada_for_many_seeds(temperature):
    for seed in range(200):
        logits = logits_with_excluded(seed)
        ref = llada_form(logits, temperature, seed)
        assert torch.isfinite(ref).all()  # the regime where both forms must agree
        ours = add_gumbel_noise(logits, temperature, torch.Generator().manual_seed(seed))
        assert torch.equal(ours.argmax(-1), ref.argmax(-1)), seed


def test_same_generator_consumption_as_llada():
    """One float64 uniform per element: the draws after the noise are LLaDA's too."""
    logits = logits_with_excluded(0)
    ours, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    add_gumbel_noise(logits, 1.0, ours)
    torch.rand(logits.shape, dtype=torch.float64, generator=ref)
    assert torch.equal(torch.rand(4, generator=ours), torch.rand(4, generator=ref))


@pytest.mark.parametrize("temperature", [1000.0, 1e6, 1e306, 1e308, float("inf")])
def test_high_temperature_never_picks_an_excluded_token(temperature):
    nan_in_llada = 0
    for seed in range(50):
        logits = logits_with_excluded(seed)
        scores = add_gumbel_noise(logits, temperature, torch.Generator().manual_seed(seed))
        assert not scores.isnan().any(), seed
        assert (scores[..., 5] == float("-inf")).all()
        assert (scores.argmax(-1) != 5).all(), seed
        nan_in_llada += int(llada_form(logits, temperature, seed).isnan().any())
    assert nan_in_llada > 0  # the published form fails here: the case is a real one


def test_infinite_temperature_is_uniform_over_allowed_tokens():
    logits = torch.zeros(4000, VOCAB)
    logits[:, 0] = 50.0  # would win every draw at any moderate temperature
    logits[:, 5] = float("-inf")
    picks = add_gumbel_noise(logits, float("inf"), torch.Generator().manual_seed(0)).argmax(-1)
    counts = torch.bincount(picks, minlength=VOCAB)
    assert counts[5] == 0
    expected = 4000 / (VOCAB - 1)
    allowed = torch.cat([counts[:5], counts[6:]]).double()
    assert ((allowed - expected).abs() < 5 * expected**0.5).all(), counts.tolist()


def test_temperature_zero_returns_the_input():
    logits = logits_with_excluded(0).to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert add_gumbel_noise(logits, 0, g) is logits
    assert add_gumbel_noise(logits, 0.0, g) is logits
    assert torch.equal(g.get_state(), state)  # greedy draws nothing


def test_sampling_at_temperature_1000_commits_no_mask(tiny_model, prompts):
    out = paradecode.sample(
        tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=8, temperature=1000.0, seed=0
    )
    assert not (out.generated == MASK).any()
