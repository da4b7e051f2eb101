"""Prophet, CreditDecoding and LocalLeap: the reference rules re-derived on the same logits,
their degenerate settings equal to the baselines, and one common check of every dLLM strategy."""

import contextlib

import pytest
import torch

import paradecode
from paradecode.caches.canvas import CanvasKVCache
from paradecode.models import ModelWrapper
from paradecode.registry import get_cache_class, get_strategy_class
from paradecode.samplers.base import BlockDiffusionStrategy, BlockView
from paradecode.samplers.localleap import anchor_neighbourhood

from .conftest import MASK

GEO = dict(gen_length=16, block_length=8)


def forward(model, x):
    with torch.inference_mode():
        return model(x)


def argmax_no_mask(logits):
    logits = logits.clone()
    logits[..., MASK] = float("-inf")
    return logits.argmax(-1)


# ---------------------------------------------------------------------------------------------
# Prophet
# ---------------------------------------------------------------------------------------------


def reference_prophet(model, prompt, steps, gen_length, block_length, thresholds, answer_start, answer_length=5):
    """The reference's early-exit loop for one row, written out step by step: LLaDA's fixed
    schedule; before each transfer, the top-2 logit gap averaged over the window decides."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), MASK, dtype=torch.long)
    x[:, :P] = prompt
    num_blocks = gen_length // block_length
    spb = steps // num_blocks
    step = 0
    for b in range(num_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        n = block_length
        schedule = [n // spb + (1 if i < n % spb else 0) for i in range(spb)]
        for i in range(spb):
            step += 1
            logits = forward(model, x)[0]
            x0 = argmax_no_mask(logits)
            p = torch.softmax(logits.double(), -1).gather(-1, x0[:, None])[:, 0]
            gaps = []
            for pos in range(answer_start, min(P + gen_length, answer_start + answer_length)):
                top = torch.topk(logits[pos], 2).values
                gaps.append(float(top[0] - top[1]))
            progress = step / steps
            thr = thresholds[0] if progress < 0.33 else thresholds[1] if progress < 0.67 else thresholds[2]
            if sum(gaps) / len(gaps) >= thr:
                masked = x[0] == MASK
                x[0, masked] = x0[masked]
                return x, step
            conf = torch.full_like(p, float("-inf"))
            block_masked = x[0, lo:hi] == MASK
            conf[lo:hi] = torch.where(block_masked, p[lo:hi], conf[lo:hi])
            idx = torch.topk(conf, schedule[i]).indices
            x[0, idx] = x0[idx]
    return x, step


def prophet_thresholds(early, mid, late):
    return dict(early_threshold=early, mid_threshold=mid, late_threshold=late)


def test_prophet_matches_reference_rule_row_by_row_and_batched(tiny_model, prompts):
    thresholds = (2.0, 1.5, 1.0)
    start = 3  # generation offset of the answer window
    kw = dict(GEO, base_options=dict(steps=16), answer_start=start, **prophet_thresholds(*thresholds))
    batch = paradecode.sample(tiny_model, prompts, "prophet", **kw)
    exits = []
    for i in range(prompts.shape[0]):
        ref_x, ref_steps = reference_prophet(tiny_model, prompts[i : i + 1], 16, 16, 8, thresholds, 6 + start)
        assert batch.sequences[i].tolist() == ref_x[0].tolist(), i
        assert int(batch.trace.row_nfe[i]) == ref_steps
        exits.append(ref_steps)
    # the fixture's rows exit at different steps (one of them not at all): per-row state is exercised
    assert len(set(exits)) > 1 and min(exits) < 16
    assert not (batch.generated == MASK).any()
    assert batch.trace.tokens_committed.tolist() == [16, 16, 16]


def test_prophet_that_never_exits_equals_its_base(tiny_model, prompts):
    never = prophet_thresholds(1e30, 1e30, 1e30)  # options are finite: a gap never reaches 1e30
    for base, opts in [("lowconf", dict(steps=8)), ("threshold", dict(threshold=0.6)), ("localleap", {})]:
        ref = paradecode.sample(tiny_model, prompts, base, **GEO, **opts)
        got = paradecode.sample(tiny_model, prompts, "prophet", base=base, base_options=opts, **GEO, **never)
        assert torch.equal(ref.sequences, got.sequences), base
        assert torch.equal(ref.trace.row_nfe, got.trace.row_nfe), base
    # with sampling too: no exit draws no noise, so the seed stream is the base's
    kw = dict(GEO, temperature=1.0, seed=3)
    ref = paradecode.sample(tiny_model, prompts, "lowconf", steps=8, **kw)
    got = paradecode.sample(tiny_model, prompts, "prophet", base_options=dict(steps=8), **never, **kw)
    assert torch.equal(ref.sequences, got.sequences)


def test_prophet_exit_at_first_step_commits_whole_generation_with_argmax(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "prophet", base_options=dict(steps=16), **GEO,
                            **prophet_thresholds(0.0, 0.0, 0.0))
    x = torch.full((3, 6 + 16), MASK, dtype=torch.long)
    x[:, :6] = prompts
    expected = argmax_no_mask(forward(tiny_model, x))[:, 6:]
    assert torch.equal(out.generated, expected)
    assert out.trace.nfe == 1 and out.trace.records[0].committed.tolist() == [16, 16, 16]
    assert out.state.commit_step.eq(0).all()
    assert out.trace.extra("prophet_exit") == [3]


def test_prophet_default_window_is_first_masked_positions(tiny_model, prompts):
    strat_cls = get_strategy_class("prophet")
    strat = strat_cls(strat_cls.Config(**GEO, base_options=dict(steps=16), answer_length=2))
    out = paradecode.sample(tiny_model, prompts, "lowconf", steps=16, **GEO)
    # a canvas where row 0 has its first 3 generation positions committed
    state = out.state
    done = out.sequences.clone()
    state.x[:, 6:] = MASK
    state.x[0, 6:9] = done[0, 6:9]
    logits = forward(tiny_model, state.x)
    top = torch.topk(logits[:, 6:], 2, dim=-1).values
    gap = top[..., 0] - top[..., 1]
    view = BlockView(torch.arange(3), None, state.x[:, 6:14], None, torch.zeros(3), torch.full((3,), 6),
                     full_logits=logits, canvas=state.x, gen_start=6)
    got = strat.answer_gap(view, MASK)
    assert torch.allclose(got[0], gap[0, 3:5].mean()) and torch.allclose(got[1], gap[1, 0:2].mean())


@pytest.mark.parametrize("answer_length", [1, 3, 5])
def test_prophet_window_gap_equals_the_whole_generation_gap_exactly(answer_length):
    """The gap is searched over the window's positions only; the value must be the one a
    top-2 over the whole generation gives, bit for bit (rows with 0, fewer than, and more
    than answer_length masks; bf16 logits, as a real model returns)."""
    strat_cls = get_strategy_class("prophet")
    strat = strat_cls(strat_cls.Config(**GEO, base_options=dict(steps=16), answer_length=answer_length))
    g = torch.Generator().manual_seed(answer_length)
    n, P, G, V = 5, 6, 16, 40
    logits = torch.randn(n, P + G, V, generator=g).to(torch.bfloat16)
    canvas = torch.randint(0, 30, (n, P + G), generator=g)
    masked = torch.rand(n, G, generator=g) < torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])[:, None]
    canvas[:, P:][masked] = MASK
    top = torch.topk(logits[:, P:].float(), 2, dim=-1).values
    whole = top[..., 0] - top[..., 1]
    m = canvas[:, P:] == MASK
    window = m & (m.long().cumsum(-1) <= answer_length)
    count = window.sum(-1)
    expected = torch.where(count > 0, (whole * window).sum(-1) / count.clamp(min=1), torch.tensor(float("-inf")))
    view = BlockView(torch.arange(n), None, canvas[:, P:P + 8], None, torch.zeros(n), torch.full((n,), P),
                     full_logits=logits, canvas=canvas, gen_start=P)
    got = strat.answer_gap(view, MASK)
    assert count[0] == 0 and count[-1] == answer_length  # the edge rows are there
    assert torch.equal(got, expected)
    fixed = strat_cls(strat_cls.Config(**GEO, base_options=dict(steps=16), answer_length=answer_length, answer_start=G - 2))
    assert torch.equal(fixed.answer_gap(view, MASK), whole[:, G - 2 : G - 2 + answer_length].mean(-1))  # cut at the end


def test_prophet_over_a_threshold_base_measures_progress_against_gen_length(tiny_model, prompts):
    strat_cls = get_strategy_class("prophet")
    assert strat_cls(strat_cls.Config(**GEO, base="threshold")).step_budget == 16
    assert strat_cls(strat_cls.Config(**GEO, base_options=dict(steps=8))).step_budget == 8
    full = strat_cls(strat_cls.Config(**GEO))  # lowconf base at full steps by default
    assert full.step_budget == 16 and full.base.config.steps == 16
    assert strat_cls(strat_cls.Config(**GEO, base="threshold", max_steps=4)).step_budget == 4


@pytest.mark.parametrize(
    "opts, needle",
    [
        (dict(base="prophet"), "base must be one of"),
        (dict(base="nope"), "base must be one of"),
        (dict(base_options=dict(stepz=4)), "unknown option"),
        (dict(base_options=dict(gen_length=8)), "give"),
        (dict(answer_start=16), "answer_start"),
        (dict(answer_length=0), "answer_length"),
    ],
)
def test_prophet_bad_options_raise(tiny_model, prompts, opts, needle):
    with pytest.raises(ValueError, match=needle):
        paradecode.sample(tiny_model, prompts, "prophet", **GEO, **{"base_options": dict(steps=16), **opts})


# ---------------------------------------------------------------------------------------------
# CreditDecoding
# ---------------------------------------------------------------------------------------------


def reference_credit(model, prompt, gen_length, block_length, threshold, alpha, gamma, beta):
    """dInfer's credit decoder for one row: a fresh (block, vocab) credit per block; each step
    it decays, the masked positions' top-1 gains p ** gamma, and the threshold rule runs on
    logits + alpha * log(1 + credit)."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), MASK, dtype=torch.long)
    x[:, :P] = prompt
    nfe = 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        credit = None
        while (x[0, lo:hi] == MASK).any():
            nfe += 1
            logits = forward(model, x)[0, lo:hi]
            masked = x[0, lo:hi] == MASK
            if credit is None:
                credit = torch.zeros(logits.shape)
            else:
                credit = credit * beta
            probs = torch.softmax(logits.float(), -1)
            for j in range(block_length):
                if masked[j]:
                    t = int(probs[j].argmax())
                    credit[j, t] += float(probs[j, t]) ** gamma
            fused = logits + alpha * torch.log(credit + 1)
            x0 = argmax_no_mask(fused)
            conf = torch.softmax(fused.double(), -1).gather(-1, x0[:, None])[:, 0]
            conf = torch.where(masked, conf, torch.tensor(float("-inf"), dtype=conf.dtype))
            take = (conf >= threshold) & masked
            take[int(conf.argmax())] = True
            x[0, lo:hi] = torch.where(take, x0, x[0, lo:hi])
    return x, nfe


def test_credit_matches_reference_rule(tiny_model, prompts):
    opts = dict(threshold=0.8, credit_alpha=0.7, boost_gamma=0.2, decay_beta=0.8)
    batch = paradecode.sample(tiny_model, prompts, "credit", **GEO, **opts)
    for i in range(prompts.shape[0]):
        ref_x, nfe = reference_credit(tiny_model, prompts[i : i + 1], 16, 8, 0.8, 0.7, 0.2, 0.8)
        assert batch.sequences[i].tolist() == ref_x[0].tolist(), i
        assert int(batch.trace.row_nfe[i]) == nfe


def test_credit_is_not_the_threshold_rule_on_this_model(tiny_model, prompts):
    # guards the test above against passing because credit never changes a decision
    kw = dict(GEO, threshold=0.8)
    thr = paradecode.sample(tiny_model, prompts, "threshold", **kw)
    cred = paradecode.sample(tiny_model, prompts, "credit", credit_alpha=2.0, **kw)
    assert not torch.equal(thr.trace.row_nfe, cred.trace.row_nfe) or not torch.equal(thr.sequences, cred.sequences)


def test_credit_with_alpha_zero_equals_threshold(tiny_model, prompts):
    for t in (0.9, 0.6):
        thr = paradecode.sample(tiny_model, prompts, "threshold", **GEO, threshold=t)
        cred = paradecode.sample(tiny_model, prompts, "credit", **GEO, threshold=t, credit_alpha=0.0)
        assert torch.equal(thr.sequences, cred.sequences)
        assert torch.equal(thr.trace.row_nfe, cred.trace.row_nfe)


def test_credit_accumulates_decays_and_resets_per_row():
    cls = get_strategy_class("credit")
    strat = cls(cls.Config(gen_length=8, block_length=4, credit_alpha=0.5, boost_gamma=0.5, decay_beta=0.8))
    B, V = 2, 5
    state = strat.start(torch.zeros(B, 1, dtype=torch.long), mask_id=4).rule
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -9.0]]).repeat(4, 1)
    mask = torch.tensor([[True, True, False, True]])
    rows = torch.tensor([1])
    p = torch.softmax(logits[0], -1)[0]
    view = BlockView(rows, logits[None], torch.zeros(1, 4, dtype=torch.long), mask, torch.zeros(1), torch.zeros(1))
    strat.adjust_logits(view, state, logits[None])
    fused = strat.adjust_logits(view, state, logits[None])
    credit = p.sqrt() * (1 + 0.8)  # two boosts, the first decayed once
    assert torch.allclose(fused[0, 0, 0], logits[0, 0] + 0.5 * torch.log1p(credit))
    assert torch.equal(fused[0, 0, 1:], logits[0, 1:])  # only the top-1 token gains credit
    assert torch.equal(fused[0, 2], logits[2])  # committed positions gather none
    assert state.credit[0].abs().sum() == 0  # row 0 untouched
    strat.on_block_end(state, rows)
    assert state.credit.abs().sum() == 0


@pytest.mark.parametrize("opts", [dict(credit_alpha=-1.0), dict(decay_beta=1.5), dict(boost_gamma=-0.1)])
def test_credit_bad_options_raise(tiny_model, prompts, opts):
    with pytest.raises(ValueError):
        paradecode.sample(tiny_model, prompts, "credit", **GEO, **opts)


# ---------------------------------------------------------------------------------------------
# LocalLeap
# ---------------------------------------------------------------------------------------------


def reference_localleap_select(conf, threshold, relaxed, radius):
    """The reference's per-row loop: sort the masked confidences, keep the first, keep each
    other one that passes its position's bar (relaxed within radius of an anchor)."""
    conf = conf.tolist()
    order = sorted(range(len(conf)), key=lambda j: -conf[j])
    masked = [j for j in range(len(conf)) if conf[j] != float("-inf")]
    anchors = [j for j in masked if conf[j] >= threshold]
    near = {k for a in anchors for k in range(max(0, a - radius), min(len(conf), a + radius + 1))}
    take = {order[0]}
    for j in order[1:]:
        if j in masked and conf[j] >= (relaxed if (anchors and j in near) else threshold):
            take.add(j)
    return sorted(take)


def _view(conf, mask):
    """A block view carrying only what a selection rule reads: confidences and the mask."""
    n, W = conf.shape
    zeros = torch.zeros(n, dtype=torch.long)
    return BlockView(torch.arange(n), None, torch.zeros(n, W, dtype=torch.long), mask, zeros, zeros, confidence=conf)


def test_localleap_rule_on_handmade_confidences():
    cls = get_strategy_class("localleap")
    strat = cls(cls.Config(gen_length=12, block_length=12, threshold=0.9, relaxed_threshold=0.75, radius=2))
    state = strat.start(torch.zeros(2, 1, dtype=torch.long), mask_id=9).rule
    ninf = float("-inf")
    conf = torch.tensor(
        [
            # anchor at 3: 0.8 at 1 and 5 are within radius 2, 0.8 at 6 is not; the -inf is committed
            [0.1, 0.8, ninf, 0.95, 0.2, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1, 0.85],
            # no anchor: only the most confident, as Fast-dLLM
            [0.1, 0.8, 0.3, 0.5, 0.2, 0.85, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1],
        ],
        dtype=torch.float64,
    )
    mask = conf > ninf
    got = strat.select(_view(conf, mask), state)
    assert torch.nonzero(got[0]).flatten().tolist() == [1, 3, 5]
    assert torch.nonzero(got[1]).flatten().tolist() == [5]
    for r in range(2):
        assert torch.nonzero(got[r]).flatten().tolist() == reference_localleap_select(conf[r], 0.9, 0.75, 2)
    assert state.extras["localleap_anchors"].tolist() == [1, 0]


def test_localleap_matches_reference_rule_on_random_confidences():
    cls = get_strategy_class("localleap")
    g = torch.Generator().manual_seed(0)
    for radius in (0, 1, 4):
        strat = cls(cls.Config(gen_length=32, block_length=32, threshold=0.7, relaxed_threshold=0.4, radius=radius))
        state = strat.start(torch.zeros(16, 1, dtype=torch.long), mask_id=9).rule
        conf = torch.rand(16, 32, generator=g, dtype=torch.float64)
        mask = torch.rand(16, 32, generator=g) < 0.7
        mask[:, 0] = True
        masked_conf = torch.where(mask, conf, float("-inf"))
        got = strat.select(_view(conf, mask), state)
        for r in range(16):
            assert torch.nonzero(got[r]).flatten().tolist() == reference_localleap_select(masked_conf[r], 0.7, 0.4, radius)


def test_anchor_neighbourhood_clips_at_edges():
    anchors = torch.tensor([[True, False, False, False, False, False, True]])
    assert anchor_neighbourhood(anchors, 2).int().tolist() == [[1, 1, 1, 0, 1, 1, 1]]


@pytest.mark.parametrize(
    "ll, thr",
    [
        (dict(threshold=1.01, relaxed_threshold=0.5), 1.01),  # no anchor can exist
        (dict(threshold=0.6, relaxed_threshold=0.6), 0.6),  # relaxed bar no lower
        (dict(threshold=0.6, relaxed_threshold=0.3, radius=0), 0.6),  # neighbourhood = anchors only
    ],
)
def test_localleap_degenerate_settings_equal_threshold(tiny_model, prompts, ll, thr):
    ref = paradecode.sample(tiny_model, prompts, "threshold", **GEO, threshold=thr)
    got = paradecode.sample(tiny_model, prompts, "localleap", **GEO, **ll)
    assert torch.equal(ref.sequences, got.sequences)
    assert torch.equal(ref.trace.row_nfe, got.trace.row_nfe)


def test_localleap_leaps_where_threshold_waits(tiny_model, prompts):
    thr = paradecode.sample(tiny_model, prompts, "threshold", **GEO, threshold=0.7)
    ll = paradecode.sample(tiny_model, prompts, "localleap", **GEO, threshold=0.7, relaxed_threshold=0.4)
    assert ll.trace.nfe < thr.trace.nfe


def test_localleap_bad_options_raise(tiny_model, prompts):
    with pytest.raises(ValueError, match="relaxed_threshold"):
        paradecode.sample(tiny_model, prompts, "localleap", **GEO, threshold=0.7, relaxed_threshold=0.8)
    with pytest.raises(ValueError, match="radius"):
        paradecode.sample(tiny_model, prompts, "localleap", **GEO, radius=-1)


# ---------------------------------------------------------------------------------------------
# Every registered diffusion-LM strategy, through the same checks
# ---------------------------------------------------------------------------------------------

DIFFUSION = [n for n in paradecode.strategies() if issubclass(get_strategy_class(n), BlockDiffusionStrategy)]
COMMON = dict(gen_length=128, block_length=32)  # the defaults (e.g. LLaDA's 128 steps) are valid here


@pytest.mark.parametrize("name", DIFFUSION)
class TestEveryDiffusionStrategy:
    def test_shapes_and_no_mask_left(self, name, tiny_model, prompts):
        out = paradecode.sample(tiny_model, prompts, name, **COMMON)
        assert out.sequences.shape == (3, 6 + 128) and out.sequences.dtype == torch.long
        assert torch.equal(out.sequences[:, :6], prompts)
        assert not (out.generated == MASK).any()
        assert out.trace.tokens_committed.tolist() == [128, 128, 128]
        assert out.trace.nfe == int(out.trace.row_nfe.max()) >= 1
        assert (out.state.commit_step >= 0).all()

    @pytest.mark.slow
    def test_seed_determinism(self, name, tiny_model, prompts):
        kw = dict(COMMON, temperature=1.0)
        a = paradecode.sample(tiny_model, prompts, name, seed=5, **kw)
        b = paradecode.sample(tiny_model, prompts, name, seed=5, **kw)
        c = paradecode.sample(tiny_model, prompts, name, seed=6, **kw)
        assert torch.equal(a.sequences, b.sequences) and torch.equal(a.trace.row_nfe, b.trace.row_nfe)
        assert not torch.equal(a.sequences, c.sequences)

    @pytest.mark.slow
    def test_batch_equals_row_by_row(self, name, tiny_model):
        rows = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14, 3]]
        batch = paradecode.sample(tiny_model, rows, name, **COMMON)
        for i, r in enumerate(rows):
            single = paradecode.sample(tiny_model, [r], name, **COMMON)
            assert batch.generated[i].tolist() == single.generated[0].tolist(), i
            assert int(batch.trace.row_nfe[i]) == single.trace.nfe, i


# ---------------------------------------------------------------------------------------------
# With cache policies: the strategies never call the model, so a cache refreshed every step
# changes nothing (an exit mid-way included)
# ---------------------------------------------------------------------------------------------

CANVAS_CACHES = [n for n in paradecode.cache_policies() if issubclass(get_cache_class(n), CanvasKVCache)]
OURS = [
    ("prophet", dict(base_options=dict(steps=16), answer_start=3, **prophet_thresholds(2.0, 1.5, 1.0))),
    ("credit", dict(threshold=0.8)),
    ("localleap", dict(threshold=0.7, relaxed_threshold=0.4)),
]


@pytest.mark.parametrize("cache", CANVAS_CACHES)
@pytest.mark.parametrize("name, opts", OURS)
def test_cache_refreshed_every_step_equals_no_cache(tiny_model, prompts, cache, name, opts):
    cache_options = dict(get_cache_class(cache).exact_options)  # the policy's "recompute everything"
    ref = paradecode.sample(tiny_model, prompts, name, **GEO, **opts)
    out = paradecode.sample(tiny_model, prompts, name, **GEO, cache=cache, cache_options=cache_options, **opts)
    assert torch.equal(ref.sequences, out.sequences)
    assert torch.equal(ref.trace.row_nfe, out.trace.row_nfe)


class _LogitWidths(ModelWrapper):
    """The model, recording how many logit columns each forward returned to the strategy."""

    def __init__(self, inner):
        super().__init__(inner)
        self.widths = []

    def forward(self, input_ids, **kw):
        out = self.model(input_ids, **kw)
        if kw.get("cache") is None:
            self.widths.append(out.shape[1])
        return out


@pytest.mark.parametrize("name, opts", [OURS[0], ("learn2pd", dict(steps=16, eot=True))])
def test_full_logit_rules_compute_no_prompt_logits_and_caches_keep_the_contract(tiny_model, prompts, name, opts):
    """A rule that reads beyond its block (Prophet, Learn2PD's end-of-text) gets the logits from
    the first block on: without a cache the model's head computes no prompt column; a cache that
    keeps the whole canvas's window gives the same range back, and the tokens do not change."""
    model = _LogitWidths(tiny_model)
    with pytest.warns(UserWarning) if name == "learn2pd" else contextlib.nullcontext():
        ref = paradecode.sample(model, prompts, name, **GEO, **opts)
    assert set(model.widths) == {GEO["gen_length"]}  # prompt 6 + 16 generated: the 16 from the first block
    for cache in ("dual", "dkv-decode"):
        with pytest.warns(UserWarning) if name == "learn2pd" else contextlib.nullcontext():
            exact = dict(get_cache_class(cache).exact_options)
            out = paradecode.sample(tiny_model, prompts, name, **GEO, cache=cache, cache_options=exact, **opts)
        assert torch.equal(ref.sequences, out.sequences)


def test_a_wide_cache_window_keeps_logits_from_the_first_block_on(tiny_model, prompts):
    """A cache serving a rule that reads beyond its block keeps logits for the columns the rule
    reads (the generation here), not for the prompt: its bytes are the K/V plus G + 1 rows."""
    name, opts = OURS[0]
    out = paradecode.sample(tiny_model, prompts, name, **GEO, cache="dual", **opts)
    c = tiny_model.config
    B, L, G = prompts.shape[0], prompts.shape[1] + GEO["gen_length"], GEO["gen_length"]
    kv = 2 * c.n_layers * B * c.n_kv_heads * (L + 1) * (c.d_model // c.n_heads) * 4  # float32 K and V, trash slot included
    logits = B * (G + 1) * c.vocab_size * 4
    assert max(out.trace.extra("cache_bytes")) == kv + logits


@pytest.mark.parametrize("cache", CANVAS_CACHES)
def test_runs_with_default_cache_options(tiny_model, prompts, cache):
    for name, opts in OURS:
        out = paradecode.sample(tiny_model, prompts, name, **GEO, cache=cache, **opts)
        assert not (out.generated == MASK).any() and out.trace.tokens_committed.tolist() == [16, 16, 16]


@pytest.mark.parametrize("name", ["prophet", "credit", "localleap"])
@pytest.mark.parametrize("gen, block", [(32, 32), (128, 32)])
def test_declared_bench_sweeps_are_valid_settings(name, gen, block):
    from paradecode.bench.runner import _full_options, sweep_for
    from paradecode.registry import build_config

    cls = get_strategy_class(name)
    settings = sweep_for(name, gen, block)
    assert len(settings) >= 5
    for s in settings:
        cls(build_config(cls.Config, name, _full_options(name, s, gen, block)))  # raises if invalid


def test_credit_commits_every_near_tie_when_none_passes_the_threshold():
    """dInfer's rule: below the threshold, the best and every candidate within 1e-5 of it."""
    from paradecode.samplers.credit import credit_threshold_mask

    ninf = float("-inf")
    conf = torch.tensor([[0.4, 0.4 - 5e-6, 0.3, ninf], [0.95, 0.92, 0.5, 0.2], [0.5, 0.5 - 2e-5, 0.1, 0.1]],
                        dtype=torch.float64)
    mask = conf > ninf
    got = credit_threshold_mask(conf, mask, 0.9)
    assert got.tolist() == [[True, True, False, False], [True, True, False, False], [True, False, False, False]]


def test_prophet_constraints_are_pinned_and_place_the_answer_window(tiny_model, prompts):
    """Prophet's eval pins tokens ({offset: id}) before decoding and after every step; the gap
    window then starts two past the last pinned offset."""
    cons = {3: 7, 4: 8}
    out = paradecode.sample(tiny_model, prompts, "prophet", **GEO, constraints=cons)
    assert (out.generated[:, 3] == 7).all() and (out.generated[:, 4] == 8).all()
    assert not (out.generated == MASK).any()
    cls = get_strategy_class("prophet")
    assert cls(cls.Config(**GEO, constraints=cons)).config.window_start == 6
    assert cls(cls.Config(**GEO, constraints=cons, answer_start=1)).config.window_start == 1
    # the pinned positions are never masked, so the base commits only the other positions
    assert int(out.trace.tokens_committed.sum()) == prompts.shape[0] * (GEO["gen_length"] - len(cons))
    for bad in ({GEO["gen_length"]: 1}, {0: -1}, {}):
        with pytest.raises(ValueError, match="constraints"):
            paradecode.sample(tiny_model, prompts, "prophet", **GEO, constraints=bad)


@pytest.mark.parametrize("name", ["lowconf", "threshold", "credit", "localleap"])
def test_nan_logits_are_an_error_not_token_zero(tiny_model, prompts, name):
    from paradecode.samplers.block import NonFiniteLogitsError

    def broken(tokens, **kw):
        out = tiny_model(tokens, **kw)
        return torch.full_like(out, float("nan"))

    broken.config = tiny_model.config
    opts = dict(steps=16) if name == "lowconf" else {}
    with pytest.raises(NonFiniteLogitsError, match="NaN"):
        paradecode.sample(broken, prompts, name, **GEO, **opts)


def test_prophet_names_base_options_when_the_base_refuses_a_value(tiny_model, prompts):
    with pytest.raises(ValueError, match="base_options.*multiple of the number of blocks"):
        paradecode.sample(tiny_model, prompts, "prophet", **GEO, base_options={"steps": 3})
