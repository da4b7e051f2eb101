"""The Monte Carlo log-likelihood of LLaDA's evaluation (``paradecode.likelihood``), against the
exact bound it estimates and against paradecode's own one-token-per-step decoding."""

import itertools
import math

import pytest
import torch

import paradecode
from paradecode.likelihood import (
    bernoulli_draws,
    dream_mc_loglikelihood,
    greedy_suffix_matches,
    masked_draws,
    mc_loglikelihood,
)

from .conftest import MASK

PREFIX = [5, 9, 14, 3]
TARGET = [21, 7, 33]


@torch.no_grad()
def guided_logprobs(model, tokens, prefix_len, cfg):
    """log-softmax over the target columns of one sequence, with LLaDA's unsupervised CFG."""
    cond = model(tokens[None]).float()[0, prefix_len:]
    if cfg == 0:
        return cond.log_softmax(-1)
    un = tokens.clone()
    un[:prefix_len] = MASK
    uncond = model(un[None]).float()[0, prefix_len:]
    return (uncond + (cfg + 1) * (cond - uncond)).log_softmax(-1)


def exact_bound(model, prefix, target, cfg=0.0, weighted=True):
    """-sum_c (1/c) E_{|S| = c} [sum_{i in S} -log p(x_i | x with S masked)]: the expectation of
    the estimator: each row's mask count is uniform on 1..T (a uniform offset, cyclic strides).
    ``weighted=False``: the same without LLaDA's 1 / p_mask weight (1/T instead of 1/c)."""
    T = len(target)
    seq = torch.tensor(prefix + target)
    total = 0.0
    for c in range(1, T + 1):
        subsets = list(itertools.combinations(range(T), c))
        mean = 0.0
        for S in subsets:
            noisy = seq.clone()
            for i in S:
                noisy[len(prefix) + i] = MASK
            lp = guided_logprobs(model, noisy, len(prefix), cfg)
            mean += -sum(float(lp[i, target[i]]) for i in S) / len(subsets)
        total += mean / (c if weighted else T)
    return -total


@pytest.mark.parametrize("cfg", [0.0, 0.5])
def test_estimate_converges_to_the_exact_bound(tiny_model, cfg):
    exact = exact_bound(tiny_model, PREFIX, TARGET, cfg)
    est = mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, mc_num=450, batch_size=45, cfg=cfg,
                           generator=torch.Generator().manual_seed(0))
    assert est == pytest.approx(exact, rel=0.03)
    # the tolerance tells the weighting apart: without 1 / p_mask the bound is far from it
    assert exact_bound(tiny_model, PREFIX, TARGET, cfg, weighted=False) != pytest.approx(exact, rel=0.2)


def test_the_estimate_is_reproducible_and_depends_on_the_draws(tiny_model):
    run = lambda seed, **kw: mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, mc_num=8, batch_size=2,  # noqa: E731
                                              generator=torch.Generator().manual_seed(seed), **kw)
    assert run(3) == run(3)
    assert run(3) != run(4)
    assert mc_loglikelihood(tiny_model, PREFIX, [], mask_id=MASK) == 0.0


def test_masked_draws_spread_the_mask_counts_like_llada():
    g = torch.Generator().manual_seed(0)
    for batch, T in [(4, 4), (3, 7), (8, 5), (1, 1)]:
        is_mask, count = masked_draws(batch, T, g)
        assert is_mask.shape == (batch, T) and is_mask.dtype == torch.bool
        assert (is_mask.sum(-1) == count).all() and count.min() >= 1 and count.max() <= T
        if batch == T:  # a stride of one: every count once per forward
            assert sorted(count.tolist()) == list(range(1, T + 1))
    # which positions are masked varies (a permutation per row), not always the first ones
    rows = torch.cat([masked_draws(4, 6, g)[0] for _ in range(20)])
    assert rows[:, -1].any() and not rows[:, 0].all()


def test_greedy_check_agrees_with_one_token_per_step_decoding(tiny_model):
    """lowconf with steps = gen_length commits the most confident masked token each step: the
    decoding ``is_greedy`` asks about."""
    for prefix in ([5, 9, 14, 3], [40, 2, 2, 17, 8, 1]):
        out = paradecode.sample(tiny_model, [prefix], "lowconf", gen_length=4, block_length=4, steps=4)
        greedy = out.generated[0].tolist()
        assert greedy_suffix_matches(tiny_model, prefix, greedy, mask_id=MASK)
        wrong = list(greedy)
        wrong[1] = (wrong[1] + 1) % 50
        assert not greedy_suffix_matches(tiny_model, prefix, wrong, mask_id=MASK)


def test_bad_arguments_are_named(tiny_model):
    with pytest.raises(ValueError, match="multiple of batch_size"):
        mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, mc_num=10, batch_size=4)
    with pytest.raises(ValueError, match="cfg must be >= 0"):
        mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, cfg=-1.0)
    with pytest.raises(TypeError, match="mc_num must be an int"):
        mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, mc_num="8")
    with pytest.raises(ValueError, match="1-D"):
        mc_loglikelihood(tiny_model, [[1, 2]], TARGET, mask_id=MASK)
    assert math.isfinite(mc_loglikelihood(tiny_model, torch.tensor(PREFIX), torch.tensor(TARGET), mask_id=MASK,
                                          mc_num=2, batch_size=2))


# ---- Dream's estimate ---------------------------------------------------------------------------
def gauss_legendre(a, b, n=24):
    """Nodes and weights that integrate polynomials of degree < 2n on [a, b] exactly."""
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return (b - a) / 2 * x + (a + b) / 2, (b - a) / 2 * w


def exact_dream_bound(model, prefix, target, eos, eps=1e-3, weighted=True):
    """The expectation of Dream's estimate: ``prefix + target + [eos]``, every target token masked
    with probability p = (1 - eps) t + eps, t uniform on [0, 1) (each row's marginal), the
    masked tokens' cross-entropy divided by p:
    -E_t[sum_S p^|S| (1 - p)^(n - |S|) sum_{i in S} CE_i(S) / p]. ``weighted=False``: without / p."""
    seq = torch.tensor(prefix + target + [eos])
    n, P = len(target), len(prefix)
    nodes, weights = gauss_legendre(0.0, 1.0)
    total = 0.0
    for k in range(1, n + 1):
        level = sum(w * (((1 - eps) * t + eps) ** (k - (1 if weighted else 0)) * (1 - ((1 - eps) * t + eps)) ** (n - k))
                    for t, w in zip(nodes, weights))
        for S in itertools.combinations(range(n), k):
            noisy = seq.clone()
            noisy[[P + i for i in S]] = MASK
            with torch.no_grad():
                lp = tiny_logprobs(model, noisy, P)
            total += float(level) * -sum(float(lp[i, target[i]]) for i in S)
    return -total


def tiny_logprobs(model, tokens, prefix_len):
    return model(tokens[None]).float()[0, prefix_len:].log_softmax(-1)


def test_dreams_estimate_converges_to_its_exact_bound(tiny_model):
    eos = 49
    exact = exact_dream_bound(tiny_model, PREFIX, TARGET, eos)
    # Dividing by p makes a single estimate spread wide (about 5% here at mc_num=480: a token masked
    # at p near eps weighs up to 1 / eps), so the mean of 12 seeded estimates is compared.
    est = [dream_mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, eos_id=eos, mc_num=480, batch_size=48,
                                  generator=torch.Generator().manual_seed(seed)) for seed in range(12)]
    assert sum(est) / len(est) == pytest.approx(exact, rel=0.03)
    assert exact_dream_bound(tiny_model, PREFIX, TARGET, eos, weighted=False) != pytest.approx(exact, rel=0.2)
    # the appended EOS is seen: another end token gives another bound
    assert exact_dream_bound(tiny_model, PREFIX, TARGET, 11) != pytest.approx(exact, rel=1e-3)


def test_bernoulli_draws_are_dreams():
    g = torch.Generator().manual_seed(0)
    is_mask, p = bernoulli_draws(4, 9, 1e-3, g)
    assert is_mask.shape == (4, 9) and not is_mask[:, 0].any() and not is_mask[:, -1].any()
    t = (p - 1e-3) / (1 - 1e-3)
    steps = torch.sort(t).values.diff()
    assert torch.allclose(steps, torch.full_like(steps, 0.25), atol=1e-5)  # one offset, 1/batch strides
    rows = torch.cat([bernoulli_draws(1, 200, 0.0, g)[0] for _ in range(200)])
    assert 0.3 < rows[:, 1:-1].float().mean() < 0.7  # masked with probability p, p uniform: half on average
    assert (rows[:, 1:-1].sum(-1) == 0).any()  # a row may mask nothing (Bernoulli, not LLaDA's counts)


def test_dreams_estimate_checks_its_arguments(tiny_model):
    with pytest.raises(ValueError, match="multiple of batch_size"):
        dream_mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, eos_id=1, mc_num=10, batch_size=4)
    with pytest.raises(ValueError, match=r"sampling_eps must be in \[0, 1\)"):
        dream_mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, eos_id=1, sampling_eps=1.0)
    with pytest.raises(TypeError, match="eos_id must be an int"):
        dream_mc_loglikelihood(tiny_model, PREFIX, TARGET, mask_id=MASK, eos_id=None)
    assert dream_mc_loglikelihood(tiny_model, PREFIX, [], mask_id=MASK, eos_id=1) == 0.0
