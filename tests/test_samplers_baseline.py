"""Behaviour of the baseline strategies that users rely on (LLaDA / Fast-dLLM semantics)."""

import pytest
import torch

import paradecode
from paradecode.samplers.common import factor_mask, num_transfer_schedule, threshold_mask, topk_mask

from .conftest import MASK


def test_lowconf_full_steps_commits_one_token_per_step_per_row(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=16)
    assert out.trace.steps == 16 and out.trace.nfe == 16
    for record in out.trace.records:
        assert record.committed.tolist() == [1, 1, 1]
    assert not (out.generated == MASK).any()


def test_lowconf_schedule_spreads_remainder_first(tiny_model, prompts):
    assert num_transfer_schedule(torch.tensor([8]), 3).tolist() == [[3, 3, 2]]
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=6)
    assert [int(r.committed[0]) for r in out.trace.records] == [3, 3, 2, 3, 3, 2]


def test_lowconf_is_semi_autoregressive(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=4)
    steps = out.state.commit_step
    # every token of block 0 is committed before any token of block 1
    assert steps[:, :8].max() < steps[:, 8:].min()


def test_threshold_above_one_equals_lowconf_greedy(tiny_model, prompts):
    low = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=16)
    thr = paradecode.sample(tiny_model, prompts, "threshold", gen_length=16, block_length=8, threshold=1.01)
    assert torch.equal(low.sequences, thr.sequences)
    assert thr.trace.nfe == 16
    assert all(r.committed.tolist() == [1, 1, 1] for r in thr.trace.records)


def test_threshold_commits_several_tokens_when_confident(tiny_model, prompts):
    thr = paradecode.sample(tiny_model, prompts, "threshold", gen_length=16, block_length=8, threshold=0.5)
    assert thr.trace.nfe < 16
    assert not (thr.generated == MASK).any()


def test_threshold_rule_matches_reference_semantics():
    conf = torch.tensor([[0.95, 0.2, 0.91, float("-inf")], [0.3, 0.1, 0.2, 0.25]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    got = threshold_mask(conf, mask, 0.9)
    # row 0: both above threshold; row 1: none above, so only the most confident one
    assert got.tolist() == [[True, False, True, False], [True, False, False, False]]


def test_factor_rule_matches_reference_semantics():
    mask = torch.ones(1, 5, dtype=torch.bool)
    # thresholds 1 - 1/(i+2): -1, 0.667, 0.75, 0.8, 0.833
    conf = torch.tensor([[0.9, 0.7, 0.5, 0.99, 0.1]], dtype=torch.float64)
    # sorted: .99 .9 .7 .5 .1 -> index 2 (.7 < .75) fails first -> commit 2
    assert factor_mask(conf, mask, 1.0).tolist() == [[True, False, False, True, False]]
    # reference quirk: when only the last one fails, all n are committed
    conf = torch.tensor([[0.99, 0.98, 0.97, 0.96, 0.1]], dtype=torch.float64)
    assert factor_mask(conf, mask, 1.0).all()


def test_topk_mask_per_row_k():
    conf = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    assert topk_mask(conf, torch.tensor([2, 1])).tolist() == [[False, True, True], [True, False, False]]


def test_factor_variant_runs_end_to_end(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "threshold", gen_length=16, block_length=8, factor=1.0)
    assert not (out.generated == MASK).any()


def test_batched_equals_row_by_row(tiny_model, prompts):
    for name, opts in [("lowconf", dict(steps=8)), ("threshold", dict(threshold=0.6))]:
        batch = paradecode.sample(tiny_model, prompts, name, gen_length=16, block_length=8, **opts)
        for i in range(prompts.shape[0]):
            single = paradecode.sample(tiny_model, prompts[i : i + 1], name, gen_length=16, block_length=8, **opts)
            assert torch.equal(batch.sequences[i], single.sequences[0]), (name, i)
            assert int(batch.trace.row_nfe[i]) == single.trace.nfe


def test_batched_prompts_of_different_lengths_equal_row_by_row(tiny_model):
    rows = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    batch = paradecode.sample(tiny_model, rows, "threshold", gen_length=16, block_length=8, threshold=0.6)
    for i, r in enumerate(rows):
        single = paradecode.sample(tiny_model, [r], "threshold", gen_length=16, block_length=8, threshold=0.6)
        assert batch.generated[i].tolist() == single.generated[0].tolist()


def test_rows_stop_independently(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "threshold", gen_length=16, block_length=8, threshold=0.5)
    # a finished row is dropped from later forwards: per-row NFE differs from the batch total
    assert out.trace.nfe == int(out.trace.row_nfe.max())
    assert out.trace.tokens_committed.tolist() == [16, 16, 16]


def test_seed_makes_sampling_reproducible(tiny_model, prompts):
    kw = dict(gen_length=16, block_length=8, steps=8, temperature=1.0)
    a = paradecode.sample(tiny_model, prompts, "lowconf", seed=7, **kw).sequences
    b = paradecode.sample(tiny_model, prompts, "lowconf", seed=7, **kw).sequences
    c = paradecode.sample(tiny_model, prompts, "lowconf", seed=8, **kw).sequences
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_remasking_and_cfg_run(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=4,
                            remasking="random", cfg_scale=1.0, seed=0)
    assert out.trace.nfe == 4 and not (out.generated == MASK).any()


def test_cfg_mixes_conditional_and_unconditional(tiny_model, prompts):
    a = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8)
    b = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8, cfg_scale=3.0)
    assert not torch.equal(a.sequences, b.sequences)


def test_logits_eos_inf_never_predicts_eos(tiny_model, prompts):
    eos = tiny_model.config.eos_token_id
    with torch.no_grad():  # make EOS the favourite everywhere
        tiny_model.model.transformer["ff_out"].bias = None
        tiny_model.model.transformer["ff_out"].weight[eos] = tiny_model.model.transformer["ff_out"].weight.abs().max(0).values * 50
    plain = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8)
    assert (plain.generated == eos).any()
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8, logits_eos_inf=True)
    assert not (out.generated == eos).any()


def test_confidence_eos_eot_inf_commits_eos_last(tiny_model, prompts):
    eos = tiny_model.config.eos_token_id
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8)
    demoted = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=8, block_length=8, steps=8,
                                confidence_eos_eot_inf=True, eot_token_id=int(out.generated[0, 0]))
    assert not (demoted.generated == MASK).any()
    steps = demoted.state.commit_step
    special = (demoted.generated == eos) | (demoted.generated == int(out.generated[0, 0]))
    for row in range(3):
        if special[row].any() and (~special[row]).any():
            assert steps[row][special[row]].min() > steps[row][~special[row]].max()
