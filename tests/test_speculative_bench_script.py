"""benchmarks/speculative.py --batches: the batch sweep's figures on the tiny random pair (CPU)."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _args(**kw) -> argparse.Namespace:
    base = dict(k=3, max_new_tokens=10, prompt_length=6, batches=[1, 3], batch_repeats=1, eager=True,
                fuse_projections=False, compile_forward=None, compile_roles="target,draft", attention="sdpa")
    return argparse.Namespace(**{**base, **kw})


def test_batch_sweep_checks_every_row_against_the_target_alone_in_its_batch():
    mod = load_script("benchmarks/speculative.py", "speculative_bench")
    target, draft, info = mod.random_pair("tiny", 0.8, "cpu", torch.float32)
    calib = mod.random_prompts(4, 6, info["vocab"], seed=2)
    trim = mod.calibrate(target, calib, info["vocab"] // 4, max_new_tokens=16, do_sample=True)
    res = mod.bench_batched(target, draft, _args(), torch.device("cpu"), trim, info["vocab"])
    assert set(res["batches"]) == {"1", "3"}
    for B, row in res["batches"].items():
        n = int(B)
        assert row["rows_equal_target"] == {m: f"{n}/{n}" for m in ("target", "ours", "ours_trim")}
        for m in ("ours", "ours_trim"):
            # a row commits 1 .. k + 1 tokens per verify while it runs; 10 tokens need >= 3 verifies of 4
            assert 0 < row["tokens_per_forward_and_row"][m] <= 4
            assert row["target_forwards"][m] >= 3
        assert row["tokens_per_second"]["target"] == pytest.approx(n * 10 / row["seconds"]["target"], rel=0.01)
    text = mod.batched_report({"info": info, "batched": res})
    assert "ours_trim" in text and text.count("\n") == 3 + 2 * 3


def test_batch_sweep_refuses_the_trained_pair_with_a_reason(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speculative.py"), "--batches", "1,4",
                           "--device", "cpu", "--out-dir", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--batches needs --random" in proc.stderr


def test_sampled_table_checks_recorded_steps_against_one_graph_per_forward(monkeypatch):
    """--sampled: every method samples each prompt with one seed, so the recorded steps' tokens
    equal the per-forward path's (here through the CPU stand-ins for CUDA graphs)."""
    from .test_static_llama import fake_cuda_graphs

    mod = load_script("benchmarks/speculative.py", "speculative_bench")
    target, draft, info = mod.random_pair("tiny", 0.8, "cpu", torch.float32)
    prompts = mod.random_prompts(2, 6, info["vocab"], seed=1)
    trim = mod.calibrate(target, mod.random_prompts(4, 6, info["vocab"], seed=2), info["vocab"] // 4,
                         max_new_tokens=16, do_sample=True)
    fake_cuda_graphs(monkeypatch)
    res = mod.bench_sampled(target, draft, prompts, _args(eager=False, sampled=0.8, lookup_k=4), torch.device("cpu"),
                            trim)
    assert res["recorded_equal_per_forward"] == {m: "2/2" for m in ("ours", "ours_trim", "prompt_lookup")}
    assert res["recorded_equal_eager_first_prompt"] == {"ours": True, "ours_trim": True}
    assert set(res["seconds"]) == {"target", "ours", "ours_trim", "prompt_lookup", "ours_per_forward",
                                   "ours_trim_per_forward", "prompt_lookup_per_forward"}
    assert res["mean_accepted_drafts_per_step"]["ours"] > 0
    text = mod.sampled_report({"info": info, "sampled": res})
    assert "temperature 0.8" in text and "'ours': '2/2'" in text


def test_continuous_table_checks_every_prompt_against_fixed_batches():
    """--continuous: rows ending on the EOS set at varied lengths; continuous batching gives every
    prompt the fixed batches' tokens in no more batch steps (fewer once rows end apart)."""
    mod = load_script("benchmarks/speculative.py", "speculative_bench")
    target, draft, info = mod.random_pair("tiny", 0.8, "cpu", torch.float32)
    args = _args(continuous=[2, 4], prompts=9, eos_tokens=400, max_new_tokens=24, min_refill=None)
    res = mod.bench_continuous(target, draft, args, torch.device("cpu"), info["vocab"])
    assert set(res["batches"]) == {"2", "4"} and res["eos_tokens"] == 400
    lengths = set()
    for B, row in res["batches"].items():
        assert row["prompts_equal"] == "9/9", B
        assert row["continuous"]["tokens"] == row["fixed"]["tokens"]
        assert row["continuous"]["steps"] <= row["fixed"]["steps"], B
        lengths.add(row["fixed"]["tokens"])
    assert any(row["continuous"]["steps"] < row["fixed"]["steps"] for row in res["batches"].values())
    assert next(iter(lengths)) < 9 * 24  # some rows ended on an EOS
    text = mod.continuous_report({"info": info, "continuous": res})
    assert "continuous tok/s" in text and text.count("\n") == 3 + 2


def test_continuous_table_runs_each_min_refill_beside_the_same_fixed_batches(monkeypatch):
    """--min-refill 1,2,4,8 at batch 4: one continuous row per value (keyed batch/min<m>), each
    checked against the same fixed batches; 8 is clipped to 4, which runs once."""
    mod = load_script("benchmarks/speculative.py", "speculative_bench")
    target, draft, info = mod.random_pair("tiny", 0.8, "cpu", torch.float32)
    calls = []
    real = mod.generate_continuous
    monkeypatch.setattr(mod, "generate_continuous", lambda *a, **kw: calls.append(kw["min_refill"]) or real(*a, **kw))
    args = _args(continuous=[4], prompts=9, eos_tokens=400, max_new_tokens=24, min_refill=[1, 2, 4, 8])
    res = mod.bench_continuous(target, draft, args, torch.device("cpu"), info["vocab"])
    assert set(res["batches"]) == {"4/min1", "4/min2", "4/min4"} and res["min_refill"] == [1, 2, 4, 8]
    assert calls == [1, 1, 2, 2, 4, 4]  # each value untimed, then timed; the clipped 8 not again
    rows = list(res["batches"].values())
    assert rows[0]["fixed"] is rows[1]["fixed"] is rows[2]["fixed"]  # one fixed measurement for all
    assert all(r["prompts_equal"] == "9/9" and r["continuous"]["tokens"] == r["fixed"]["tokens"] for r in rows)
    assert rows[1]["continuous"]["refills"] <= rows[0]["continuous"]["refills"]  # groups of two: no more forwards
    assert "4/min2" in mod.continuous_report({"info": info, "continuous": res})


def test_trim_coverage_follows_the_pairs_map():
    """trim_coverage.py: greedy chains follow the random pair's target map; a test prompt ending
    in a calibration prompt's last token is kept whole, and a kept set too small for the
    calibration's tokens is not."""
    mod = load_script("benchmarks/trim_coverage.py", "trim_coverage")
    target_map, draft_map = mod.next_token_maps(8192, 0.8)
    target, _, _ = load_script("benchmarks/speculative.py", "speculative_bench").random_pair("tiny", 0.8, "cpu", torch.float32)
    with torch.no_grad():
        assert greedy_next(target, 5) == int(target_map[5])
    chain = mod.greedy_chain(target_map, 5, 10)
    assert chain[0] == int(target_map[5]) and all(chain[i + 1] == int(target_map[chain[i]]) for i in range(9))
    calib = [[1, 2, 5], [3, 4, 77]]
    keep = mod.kept_set(target_map, calib, 10, 2048)
    assert set(chain) <= keep and set(mod.greedy_chain(target_map, 77, 10)) <= keep
    small = mod.kept_set(target_map, calib, 10, 3)
    assert len(small) == 3 and not set(chain) | set(mod.greedy_chain(target_map, 77, 10)) <= small


def greedy_next(model, token: int) -> int:
    return int(model(torch.tensor([[token]])).logits[0, -1].argmax())
