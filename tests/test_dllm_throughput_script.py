"""benchmarks/dllm_throughput.py: its arithmetic, and its CPU smoke mode end to end."""

import json

import pytest
import torch

from .conftest import load_script


def _script():
    return load_script("benchmarks/dllm_throughput.py")


def test_interpolate_sums_a_linear_cost_exactly_and_holds_flat_outside():
    bench = _script()
    cost = {b: 10.0 - b for b in range(8)}
    assert bench.interpolate({0: cost[0], 3: cost[3], 7: cost[7]}, 8) == pytest.approx(sum(cost.values()))
    assert bench.interpolate({0: 2.0}, 8) == pytest.approx(16.0)  # one block stands for all
    assert bench.interpolate({2: 1.0, 4: 3.0}, 6) == pytest.approx(1 + 1 + 1 + 2 + 3 + 3)


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_costs_count_every_matmul_weight_once(name):
    bench = _script()
    model = bench.build_model("cpu", smoke=True, name=name)
    costs = bench.Costs(model)
    _, _, _, d, layers = bench.model_parts(model)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert costs.body_params + costs.head_params == linear
    # one token, one key, no logits: the body's matmuls plus q.k and a.v
    assert costs.flops(1, 1, 0) == 2 * (costs.body_params + 2 * layers * d)
    if name == "dream":
        return
    c = model.config
    assert costs.flops(6, 5, 4) == 2 * (costs.body_params * 6 + 2 * c.n_layers * c.d_model * 30
                                        + costs.head_params * 4)
    # a forward's limit: the slower of computing and reading the weights
    assert bench.limit_seconds([(1, 1, 0)], costs, 1e30, costs.weight_bytes) == pytest.approx(1.0)
    # padding of a cache's feed (column == keys) is not work; without a cache every token is
    idx = torch.tensor([[0, 1, 8, 8], [2, 8, 8, 8]])
    assert bench.forward_work([(2, 4, 8, 6, idx), (2, 4, 4, 8, None)]) == [(3, 8, 6), (8, 4, 8)]


@pytest.mark.slow
def test_smoke_run_writes_every_figure(tmp_path):
    bench = _script()
    res = bench.main(["--smoke", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / f"dllm_throughput_{res['date']}_cpu-smoke.json").read_text())
    assert set(data["throughput"]) == {f"{b}/{c}" for b in (1, 2) for c in bench.CACHES}
    for row in data["throughput"].values():
        assert row["tokens_per_s"] > 0 and row["limit_tokens_per_s"] > 0
    assert data["mean_vs_median"]["steps"] == 4  # G16 at 4 tokens per step, a whole generation
    share = data["sampler_share"]["lowconf/dual"]
    assert share["step_ms"] > 0 and share["unsynced_step_ms"] > 0  # unsynced: the same steps, one sync at the end
    assert data["graph_replays"] > 0  # the smoke run walks the graph wrapper's replay paths
    text = (tmp_path / f"dllm_throughput_{res['date']}_cpu-smoke.txt").read_text()
    assert "tokens/s" in text
    # no Fast-dLLM checkout given: its rows are skipped, and the run says why
    assert data["fast_dllm"]["error"].startswith("skipped: no --fast-dllm-dir")
    assert "Fast-dLLM rows: skipped: no --fast-dllm-dir" in text


@pytest.mark.slow
def test_dream_smoke_run_checks_graphs_against_eager_and_times_every_cache(tmp_path):
    bench = _script()
    res = bench.main(["--smoke", "--model", "dream", "--fuse", "--skip", "sampler,long", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / f"dllm_throughput_dream_{res['date']}_cpu-smoke.json").read_text())
    assert data["model"] == "dream" and data["fused"]
    assert all(r["equal"] for r in data["graph_vs_eager"].values())
    assert set(data["graph_vs_eager"]) == set(bench.CACHES)
    assert all(row["tokens_per_s"] > 0 for row in data["throughput"].values())
    assert data["fast_dllm"]["error"].startswith("skipped: Fast-dLLM's llada/")
    assert data["graph_replays"] > 0


def test_fast_dllm_dir_without_its_files_is_a_clear_error(tmp_path):
    bench = _script()
    (tmp_path / "generate.py").write_text("")
    with pytest.raises(FileNotFoundError, match=r"lacks model/__init__.py.*llada/ directory"):
        bench.fast_dllm_ref.load(tmp_path)


def test_fast_dllm_rows_sit_beside_ours_and_record_what_their_loops_cannot_run(monkeypatch):
    """The rows' plumbing with a stand-in for Fast-dLLM's loops (its code is not in the repo):
    every (batch, cache) gets a row, a loop that fails at batch > 1 (theirs hold one row) is
    recorded as such, ours/theirs is taken against our row, and torch's SDPA switches that
    their model class flips are restored."""
    bench = _script()
    ref = bench.fast_dllm_ref
    model = bench.build_model("cpu", smoke=True)
    calls = []

    def fake_model(gen_mod, ours):
        torch.backends.cuda.enable_mem_efficient_sdp(False)  # as their LLaDAModel.__init__ does
        return ours

    def fake_run(gen_mod, theirs, cache, prompt, gen, block, tps, mask_id):
        calls.append((cache, prompt.shape[0], gen, block, tps, mask_id))
        if prompt.shape[0] != 1:
            raise RuntimeError("the expanded size of the tensor (1) must match")
        for _ in range(gen // tps):  # one forward per step, as their no-cache loop runs
            theirs(prompt)
        return prompt, gen // tps

    monkeypatch.setattr(ref, "load", lambda d: object())
    monkeypatch.setattr(ref, "their_model", fake_model)
    monkeypatch.setattr(ref, "run", fake_run)
    before = ref.sdpa_switches()
    args = type("A", (), dict(fast_dllm_dir="x", fast_dllm_reps=2, smoke=False, prompt=8, gen=16, block=8,
                              tokens_per_step=4))()
    ours = {"1/dual": {"tokens_per_s": 1e12}}
    out = bench.fast_dllm_rows(model, lambda b, n: torch.zeros(b, n, dtype=torch.long), [1, 2], args, "cpu",
                               ours, 0.0, lambda work: 1e-3 * sum(t * k for t, k, _ in work))
    assert ref.sdpa_switches() == before
    assert set(out["rows"]) == {f"{b}/{c}" for b in (1, 2) for c in ref.LOOPS}
    for cache in ref.LOOPS:
        one, two = out["rows"][f"1/{cache}"], out["rows"][f"2/{cache}"]
        assert one["forwards"] == 4 and one["tokens_per_s"] > 0 and len(one["all_seconds"]) == 2
        # the limit counts the forwards of one timed generation: 4 x 8 tokens over 8 keys
        assert one["fed"] == [8] * 4 and one["limit_seconds"] == pytest.approx(4 * 64e-3)
        assert "failed at batch 2" in two["error"]
    assert out["rows"]["1/dual"]["ours_over_theirs"] > 1 and "ours_over_theirs" not in out["rows"]["1/none"]
    # a one-block warm-up, then whole generations at the run's settings, greedy k per step
    assert ("dual", 1, 8, 8, 4, model.config.mask_token_id) in calls
    assert calls.count(("dual", 1, 16, 8, 4, model.config.mask_token_id)) == 2
    lines = bench.fast_dllm_report(out, [1, 2])
    assert any(ln.startswith("| Fast-dLLM dual | ") and ln.endswith("x) | 1 row only |") for ln in lines)


def test_fast_dllm_forward_work_counts_keys_as_their_caches_use_them():
    """No cache: keys = fed; prefix: the cached prefix plus the fed suffix; dual: the fed block
    overwrites its columns of the whole-canvas cache (``replace_position``)."""
    bench = _script()

    class Theirs(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, use_cache=False, replace_position=None):
            return input_ids

    model = Theirs()
    work = bench.fast_dllm_ref.ForwardWork(model)
    kv = [(torch.zeros(2, 4, 20, 8), torch.zeros(2, 4, 20, 8))]
    model(torch.zeros(2, 30, dtype=torch.long))
    model(torch.zeros(2, 10, dtype=torch.long), past_key_values=kv, use_cache=True)
    model(torch.zeros(2, 5, dtype=torch.long), past_key_values=kv, use_cache=True,
          replace_position=torch.ones(2, 20, dtype=torch.bool))
    work.close()
    model(torch.zeros(1, 3, dtype=torch.long))  # after close: not counted
    assert work.work == [(60, 30, 60), (20, 30, 20), (10, 20, 10)]
