"""benchmarks/dllm_throughput.py: its arithmetic, and its CPU smoke mode end to end."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("dllm_throughput", ROOT / "benchmarks" / "dllm_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_interpolate_sums_a_linear_cost_exactly_and_holds_flat_outside():
    bench = _script()
    cost = {b: 10.0 - b for b in range(8)}
    assert bench.interpolate({0: cost[0], 3: cost[3], 7: cost[7]}, 8) == pytest.approx(sum(cost.values()))
    assert bench.interpolate({0: 2.0}, 8) == pytest.approx(16.0)  # one block stands for all
    assert bench.interpolate({2: 1.0, 4: 3.0}, 6) == pytest.approx(1 + 1 + 1 + 2 + 3 + 3)


def test_costs_count_every_matmul_weight_once():
    bench = _script()
    model = bench.build_model("cpu", smoke=True)
    costs = bench.Costs(model)
    c = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert costs.body_params + costs.head_params == linear
    # one token, one key, no logits: the body's matmuls plus q.k and a.v
    assert costs.flops(1, 1, 0) == 2 * (costs.body_params + 2 * c.n_layers * c.d_model)
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
    assert "lowconf/dual" in data["sampler_share"] and "step_ms" in data["sampler_share"]["lowconf/dual"]
    assert data["graph_replays"] > 0  # the smoke run walks the graph wrapper's replay paths
    assert "tokens/s" in (tmp_path / f"dllm_throughput_{res['date']}_cpu-smoke.txt").read_text()
