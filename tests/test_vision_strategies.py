"""Next-scale generation through the step loop: VAR, CoDe, ScaleKV."""

import pytest
import torch

import paradecode
from paradecode.caches.scalekv import ScaleKV, ScaleKVConfig, layer_capacities
from paradecode.vision import calibrate_scalekv as calibrate
from paradecode.vision import generate

from ._vision_tiny import PATCH_NUMS, tiny_vae, tiny_var

OPTS = dict(cfg=2.0, top_k=20, top_p=0.9)
S = len(PATCH_NUMS)


@pytest.fixture(scope="module")
def models():
    vae = tiny_vae()
    return vae, tiny_var(vae, depth=4, seed=1), tiny_var(vae, depth=2, seed=2)


def _same(a, b, scales=None):
    n = scales if scales is not None else max(len(a.tokens), len(b.tokens))
    return len(a.tokens[:n]) == len(b.tokens[:n]) and all(torch.equal(x, y) for x, y in zip(a.tokens[:n], b.tokens[:n]))


def test_var_generation_shapes_and_trace(models):
    vae, big, _ = models
    out = generate(big, [0, 4, -1], seed=0, **OPTS)
    assert out.images.shape == (3, 3, 16, 16) and 0 <= float(out.images.min()) and float(out.images.max()) <= 1
    assert [tuple(t.shape) for t in out.tokens] == [(3, p * p) for p in PATCH_NUMS]
    tr = out.trace
    assert tr.steps == S and tr.nfe_by_role == {"model": S}
    assert tr.tokens_per_step == [float(p * p) for p in PATCH_NUMS]
    assert tr.extra("scale") == list(range(S))
    kv = tr.extra("kv_bytes")
    per_token = 2 * 2 * 3 * big.depth * big.C * 4  # k and v, CFG doubles the batch of 3, float32
    assert kv == [per_token * big.cum_tokens(si) for si in range(S)]
    assert all(s > 0 for s in tr.extra("kv_peak_bytes"))
    # Through paradecode.sample the result is [label, tokens of every scale].
    res = paradecode.sample(big, [2, 3], "var", vae=vae, seed=0, **OPTS)
    assert res.sequences.shape == (2, 1 + big.L) and res.sequences[:, 0].tolist() == [2, 3]


def test_seed_reproducible_and_cfg_zero_at_first_scale(models):
    _, big, _ = models
    a, b = generate(big, [1, 2], seed=5, **OPTS), generate(big, [1, 2], seed=5, **OPTS)
    assert _same(a, b)
    c = generate(big, [1, 2], seed=6, **OPTS)
    assert not _same(a, c)


def test_kv_cached_generation_equals_uncached(models):
    _, big, _ = models
    cached = generate(big, [0, 1, 3], seed=3, **OPTS)
    uncached = generate(big, [0, 1, 3], seed=3, use_cache=False, **OPTS)
    assert _same(cached, uncached)
    torch.testing.assert_close(cached.images, uncached.images)


def test_code_with_all_scales_drafted_equals_the_drafter_alone(models):
    _, big, small = models
    alone = generate(big, [0, 2, 4], seed=1, **OPTS)
    code = generate(big, [0, 2, 4], "code", refiner=small, draft_steps=S, seed=1, **OPTS)
    assert _same(alone, code) and code.trace.nfe_by_role == {"drafter": S}
    refiner_alone = generate(small, [0, 2, 4], seed=1, **OPTS)
    code0 = generate(big, [0, 2, 4], "code", refiner=small, draft_steps=0, seed=1, **OPTS)
    assert _same(refiner_alone, code0)


def test_code_hand_over(models):
    _, big, small = models
    alone = generate(big, [0, 2, 4], seed=1, **OPTS)
    code = generate(big, [0, 2, 4], "code", refiner=small, draft_steps=3, seed=1, **OPTS)
    assert code.trace.nfe_by_role == {"drafter": 3, "refiner": S - 3}
    assert code.trace.extra("role") == ["drafter"] * 3 + ["refiner"] * (S - 3)
    assert _same(alone, code, 3)  # drafted scales are the drafter's
    assert not torch.equal(alone.tokens[-1], code.tokens[-1])
    # The refiner's cache starts at the hand-over and covers every scale (its own re-encoding).
    kv = code.trace.extra("kv_bytes")
    per_token_small = 2 * 2 * 3 * small.depth * small.C * 4
    assert kv[3] == per_token_small * small.cum_tokens(3)


def test_scalekv_full_budget_equals_full_cache(models):
    _, big, _ = models
    full = generate(big, [0, 1, 3], seed=2, **OPTS)
    skv = generate(big, [0, 1, 3], seed=2, cache="scalekv", cache_options={"budget": 1.0}, **OPTS)
    assert _same(full, skv)
    assert skv.trace.extra("kv_bytes") == full.trace.extra("kv_bytes")


def test_scalekv_budget_bounds_the_cache(models):
    vae, big, _ = models
    cfg = ScaleKVConfig(budget=0.2, window_size=4, num_drafters=1)
    plan = calibrate(big, vae, [0, 1, 2], cfg, **OPTS)
    assert plan.asi.shape == (S, big.depth)
    for si in range(1, S):
        assert plan.drafters[si] == [int(plan.asi[si].argmin())]  # the most dispersed layer drafts
    caps = layer_capacities(plan, cfg)
    avg = round(0.2 * big.L)
    for si in range(S):
        assert sum(caps[si]) <= big.depth * max(avg, big.cum_tokens(si))
        if big.cum_tokens(si) > avg:
            d = plan.drafters[si][0]
            assert caps[si][d] == max(caps[si]) and min(caps[si]) >= cfg.window_size
    policy = ScaleKV(cfg, plan)
    out = generate(big, [0, 1, 3], seed=2, cache=policy, **OPTS)
    full = generate(big, [0, 1, 3], seed=2, **OPTS)
    per_token = 2 * 2 * 3 * big.C * 4
    retained = out.trace.extra("kv_bytes")
    assert retained[-1] == per_token * sum(caps[-1])
    assert retained[-1] < 0.3 * full.trace.extra("kv_bytes")[-1]
    assert max(out.trace.extra("kv_peak_bytes")) < max(full.trace.extra("kv_peak_bytes"))
    assert _same(out, full, 4)  # nothing is dropped before the cache outgrows the budget
    # The policy object is reusable: a second generation resets it.
    again = generate(big, [0, 1, 3], seed=2, cache=policy, **OPTS)
    assert _same(out, again)


def test_scalekv_window_is_a_grid_of_patch_centres():
    policy = ScaleKV(ScaleKVConfig(window_size=4))
    policy.patch_nums, policy._si = (1, 2, 4), 2
    assert policy._window(21, torch.device("cpu")).tolist() == [5 + 0, 5 + 2, 5 + 8, 5 + 10]
    policy._si = 1  # 2x2 map: the grid fits exactly
    assert policy._window(5, torch.device("cpu")).tolist() == [1, 2, 3, 4]
    policy._si = 0  # smaller than the grid: the most recent tokens
    assert policy._window(1, torch.device("cpu")).tolist() == [0]


def test_bad_inputs_raise_clear_errors(models):
    vae, big, small = models
    with pytest.raises(ValueError, match=r"class_labels must be in \[0, 4\]"):
        generate(big, [0, 7])
    with pytest.raises(ValueError, match="refiner"):
        generate(big, [0], "code")
    with pytest.raises(ValueError, match="draft_steps"):
        generate(big, [0], "code", refiner=small, draft_steps=S + 1)
    with pytest.raises(ValueError, match="top_k has 2 values"):
        generate(big, [0], top_k=(1, 2))
    with pytest.raises(ValueError, match="valid options"):
        generate(big, [0], cfgg=1.0)
    with pytest.raises(ValueError, match="budget"):
        generate(big, [0], cache="scalekv", cache_options={"budget": 0.0})
    with pytest.raises(ValueError, match="use_cache"):
        generate(big, [0], cache="scalekv", use_cache=False)
    with pytest.raises(ValueError, match="VQ-VAE"):
        paradecode.sample(tiny_var(vae).__class__(big.config), [0], "var")


@pytest.mark.parametrize(
    "labels, kw, err, match",
    [
        ([0], dict(decode="yes"), TypeError, r"vision.generate\(\): argument decode must be a bool"),
        ([0], dict(decode=1), TypeError, "argument decode must be a bool"),
        ([0], dict(vae="vae"), TypeError, "vae must be a paradecode.vision.VQVAE"),
        ([0], dict(vae=3), TypeError, "vae must be a paradecode.vision.VQVAE"),
        ([True], {}, TypeError, "class_labels must be int class ids, got bools"),
        (torch.tensor([True, False]), {}, TypeError, "class_labels must be int class ids"),
        ([0], dict(timing="no"), TypeError, "argument timing must be a bool"),
    ],
)
def test_generate_arguments_are_checked(models, labels, kw, err, match):
    vae, big, _ = models
    with pytest.raises(err, match=match):
        generate(big, labels, **kw)


def test_code_checks_its_vae_too(models):
    vae, big, small = models
    with pytest.raises(TypeError, match="vae must be a paradecode.vision.VQVAE"):
        generate(big, [0], "code", refiner=small, draft_steps=2, vae="vae")


def test_more_smooth_mixes_codes_softly(models):
    _, big, _ = models
    hard = generate(big, [0, 1], seed=4, **OPTS)
    soft = generate(big, [0, 1], seed=4, more_smooth=True, **OPTS)
    assert torch.equal(hard.tokens[0], soft.tokens[0])  # same draw at the first scale
    assert not torch.allclose(hard.f_hat, soft.f_hat) and torch.isfinite(soft.f_hat).all()
