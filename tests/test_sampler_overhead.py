"""The block loop's per-step cost outside the forward: kept device copies, and (counted on CPU
by benchmarks/sampler_ops.py) at most one device->host read per step and no host->device copy
inside a block."""

import argparse

import pytest
import torch

from paradecode.interfaces import block_columns, to_device

from .conftest import load_script


def test_to_device_keeps_one_copy_per_value_and_never_aliases_the_host_tensor():
    rows = torch.tensor([0, 2, 3])
    a = to_device(rows, torch.device("cpu"))
    assert torch.equal(a, rows) and a.data_ptr() != rows.data_ptr()
    rows[0] = 1  # the caller's host tensor changes: the kept copy does not
    assert a.tolist() == [0, 2, 3]
    assert to_device(torch.tensor([0, 2, 3]), torch.device("cpu")) is a  # same values: the same copy
    b = to_device(rows, torch.device("cpu"))
    assert b is not a and b.tolist() == [1, 2, 3]
    assert to_device(torch.tensor([0, 2, 3], dtype=torch.int32), torch.device("cpu")) is not a  # dtype is part of the key


def test_to_device_makes_rows_0_to_n_on_the_device_with_the_index_dtype():
    rows = torch.arange(3)
    a = to_device(rows, torch.device("cpu"))
    assert a.tolist() == [0, 1, 2] and a.dtype == torch.long and a.data_ptr() != rows.data_ptr()
    flags = to_device(torch.tensor([False, True]), torch.device("cpu"))  # equal to [0, 1], but a mask
    assert flags.dtype == torch.bool and flags.tolist() == [False, True]
    small = to_device(torch.tensor([0, 1], dtype=torch.int32), torch.device("cpu"))
    assert small.dtype == torch.int32 and small.tolist() == [0, 1]


def test_block_columns_are_each_rows_block_and_kept_while_blocks_stay():
    cols = block_columns(torch.tensor([4, 8]), 3, torch.device("cpu"))
    assert cols.tolist() == [[4, 5, 6], [8, 9, 10]]
    assert block_columns(torch.tensor([4, 8]), 3, torch.device("cpu")) is cols
    assert block_columns(torch.tensor([8, 8]), 3, torch.device("cpu")).tolist() == [[8, 9, 10], [8, 9, 10]]


def _sampler_ops():
    return load_script("benchmarks/sampler_ops.py")


def test_the_counter_sees_a_device_read_a_copy_in_and_a_boolean_index():
    ops = _sampler_ops()
    taint = ops.Taint()
    counter = ops.Counter(taint)
    x = torch.arange(6)
    taint.add(x)
    with counter, ops.Propagate(counter):
        rows = torch.tensor([0, 1])
        dev_rows = rows.to(x.device)  # host -> device
        y = x[dev_rows] * 2
        y.tolist()  # device -> host
        x[x > 2]  # data-dependent shape
        torch.zeros(2) + 1  # host bookkeeping: no kernel
    assert counter.syncs == {"h2d": 1, "d2h": 1, "shape": 1}
    assert counter.launches >= 3 and counter.host_ops >= 2


def test_a_dual_cache_step_adds_no_copy_no_read_and_next_to_no_host_work():
    """Batch 1, one block: the dual cache plans a step inside the block from Python values and
    kept device tensors, so it adds no host->device copy (none at all at batch 1: the rows and
    the block's columns are made on the device), no device read, and at most a host op and a
    couple of launches per step (the policy's refresh test; a wide window's logits kept)."""
    ops = _sampler_ops()
    model = ops.build_model(2, "cpu", torch.float32, small=True)
    prompt = torch.randint(0, model.config.vocab_size - 200, (1, 16), generator=torch.Generator().manual_seed(0))
    args = argparse.Namespace(gen=32, block=32, tokens_per_step=4, steps=8)
    for rule in ("lowconf", "prophet"):  # a block window, and a wide window (needs_full_logits)
        none, dual = (ops.count(model, prompt, rule, cache, args) for cache in ("none", "dual"))
        assert dual["steps"] == none["steps"] == 8 and dual["blocks"] == 1, (rule, dual)
        assert "h2d" not in none["syncs_by_kind"] and "h2d" not in dual["syncs_by_kind"], (rule, dual["sites"])
        assert dual["syncs_by_kind"] == none["syncs_by_kind"], (rule, dual["sites"])
        assert dual["host_ops"] - none["host_ops"] <= 1.5, (rule, none["host_ops"], dual["host_ops"])
        assert dual["launches"] - none["launches"] <= 2, (rule, none["launches"], dual["launches"])


def test_a_dkv_step_plans_its_feed_with_one_device_read():
    """dKV feeds each row's own columns: its plan reads the widest row of each part, whether
    the window is whole and the reuse rate in one read of the device, not one read each."""
    ops = _sampler_ops()
    model = ops.build_model(2, "cpu", torch.float32, small=True)
    prompt = torch.randint(0, model.config.vocab_size - 200, (1, 16), generator=torch.Generator().manual_seed(0))
    args = argparse.Namespace(gen=32, block=32, tokens_per_step=4, steps=8)
    row = ops.count(model, prompt, "lowconf", "dkv-decode", args)
    reads = {site: n for site, n in row["sites"].items() if site.startswith("d2h") and "caches/" in site}
    assert reads and sum(reads.values()) <= 1 + 1e-9, reads  # per step; steps that refresh read nothing


@pytest.mark.slow
def test_every_block_rule_reads_the_device_at_most_once_per_step_inside_a_block():
    ops = _sampler_ops()
    res = ops.main(["--steps", "6", "--repeats", "1", "--prompt", "16", "--gen", "64"])
    rows = res["rows"]
    assert {"lowconf/none", "threshold/dual", "learn2pd/dual", "editing/none"} <= set(rows)
    for key, row in rows.items():
        assert "error" not in row, key
        sites = row["sites"]
        # copies in happen when rows or blocks change (a new block), not per step
        copies = row["steps"] * sum(v for k, v in sites.items() if k.startswith("h2d"))
        assert copies <= 2 * row["blocks"] + 1e-9, (key, row["blocks"], sites)  # rows and columns, per block
        reads = sum(v for k, v in sites.items() if not k.startswith("h2d"))
        allowed = 0 if key.startswith("lowconf/") else 1  # lowconf's schedule needs no read at all
        assert reads <= allowed + 1e-9, (key, sites)
        # the host path from the step's flags read to the next forward is timed where there is one
        flags_read = key.split("/")[0] != "lowconf"  # prophet over lowconf reads its exit flags
        assert (row["read_to_forward_ms"] is not None) == flags_read, (key, row["read_to_forward_ms"])
        assert not flags_read or row["read_to_forward_ms"] > 0, key


def test_active_rows_is_the_same_tensor_until_a_row_changes_block():
    """A step inside a block reuses the last active rows (and so its plan); a row that moves to
    another block (or finishes the generation) gives fresh rows, under inference mode too."""
    from paradecode.samplers.base import DiffusionState

    state = DiffusionState(x=torch.zeros(3, 8, dtype=torch.long), prompt_length=2, attention_mask=None,
                           block=torch.zeros(3, dtype=torch.long), step_in_block=torch.zeros(3, dtype=torch.long),
                           commit_step=torch.zeros(3, 6, dtype=torch.long), origin=2, num_blocks=2, rule=None)
    rows = state.active_rows()
    assert rows.tolist() == [0, 1, 2] and state.active_rows() is rows
    state.step_in_block += 1  # steps inside the block: same rows
    assert state.active_rows() is rows
    state.block[1] += 1
    assert state.active_rows() is not rows and state.active_rows().tolist() == [0, 1, 2]
    state.block[1] = state.num_blocks  # row 1 is done
    assert state.active_rows().tolist() == [0, 2]
    state.block = torch.full((3,), 2)  # a new tensor
    assert state.active_rows().tolist() == []
    with torch.inference_mode():  # the loop runs under it: tensors made there keep no version counter
        state.block = torch.zeros(3, dtype=torch.long)
        rows = state.active_rows()
        state.block[0] = 2
        assert state.active_rows().tolist() == [1, 2]
