"""benchmarks/issue15.py: the one-run summary of issue 15's targets."""

import json

import pytest

from .conftest import load_script


def _dllm(x_limits: dict, mean_over_median: float = 1.4, shares: dict = None, equal: bool = True) -> dict:
    return {
        "batches": [1, 8], "shape": "LLaDA-8B random bf16", "prompt": 512, "gen": 256, "block": 32, "tokens_per_step": 4,
        "throughput": {k: {"tokens_per_s": 100.0, "x_limit": x} for k, x in x_limits.items()},
        "mean_vs_median": {"prompt": 1024, "gen": 1024, "mean_step_s": 0.0105, "median_step_s": 0.0075,
                           "mean_over_median": mean_over_median},
        "sampler_share": {k: {"unsynced_share": s} for k, s in (shares or {"lowconf/dual": 0.01}).items()},
        "graph_vs_eager": {"dual": {"equal": equal}},
    }


ALL_CELLS = {f"{b}/{c}": 1.2 for b in (1, 8) for c in ("none", "prefix", "dual", "dkv-decode")}


def test_cached_settings_are_met_only_when_every_cell_is_within_the_limit():
    mod = load_script("benchmarks/issue15.py", "issue15_bench")
    rows = {r["target"].split(" (")[0]: r for r in mod.dllm_targets(_dllm(ALL_CELLS), "f")}
    assert rows["every cached setting within 1.3x of its limit"]["met"]
    assert all(r["met"] for r in rows.values())

    over = dict(ALL_CELLS, **{"8/dkv-decode": 1.31, "1/none": 9.0})  # no cache has no 1.3x target
    row = mod.dllm_targets(_dllm(over), "f")[0]
    assert not row["met"] and "dkv-decode b8 1.310x" in row["value"] and "none" not in row["value"]
    assert row["worst"] == (8, "dkv-decode", 1.31)

    missing = {k: v for k, v in ALL_CELLS.items() if k != "1/prefix"}
    row = mod.dllm_targets(_dllm(missing), "f")[0]
    assert not row["met"] and "not measured: 1" in row["value"]


def test_mean_median_sampler_and_graph_rows():
    mod = load_script("benchmarks/issue15.py", "issue15_bench")
    rows = mod.dllm_targets(_dllm(ALL_CELLS, mean_over_median=1.51, shares={"a/dual": 0.049, "b/none": 0.07},
                                  equal=False), "f")
    by = {r["target"].split(" ")[0] + r["target"].split(" ")[1]: r for r in rows}
    assert not by["dualcache"]["met"] and "1.51" in by["dualcache"]["value"]
    assert not by["samplershare"]["met"] and by["samplershare"]["value"].startswith("1/2") and "b/none 7.0%" in by["samplershare"]["value"]
    assert not by["graphedforwards"]["met"] and "DIFFER" in by["graphedforwards"]["value"]
    empty = {k: v for k, v in _dllm(ALL_CELLS).items() if k not in ("mean_vs_median", "sampler_share", "graph_vs_eager")}
    assert [r["met"] for r in mod.dllm_targets(empty, "f")[1:]] == [False, False, False]  # not measured is not met


def test_the_sampler_target_reads_the_forwards_timed_inside_the_same_steps_when_measured():
    """A file with in-run shares is judged by them (the bare forwards timed in another run are
    reported beside); an older file without them by the unsynced shares."""
    mod = load_script("benchmarks/issue15.py", "issue15_bench")
    res = _dllm(ALL_CELLS)
    res["sampler_share"] = {"a/dual": {"unsynced_share": 0.07, "inrun_share": 0.04},
                            "b/none": {"unsynced_share": 0.03, "inrun_share": 0.06}}
    row = [r for r in mod.dllm_targets(res, "f") if r["target"].startswith("sampler")][0]
    assert not row["met"] and "b/none 6.0%" in row["value"] and "a/dual" not in row["value"]
    assert "timed inside the same steps" in row["value"] and "in another run: 1/2" in row["value"]
    for v in res["sampler_share"].values():
        v["inrun_share"] = 0.04
    row = [r for r in mod.dllm_targets(res, "f") if r["target"].startswith("sampler")][0]
    assert row["met"]


@pytest.mark.slow
def test_smoke_run_writes_one_summary_of_both_benchmarks(tmp_path):
    """Both scripts run (their CPU checks) as subprocesses; the summary names both files and
    holds the issue's nine targets, and its table the four caches."""
    mod = load_script("benchmarks/issue15.py", "issue15_bench")
    s = mod.main(["--smoke", "--parts", "all", "--out-dir", str(tmp_path)])
    assert s["failed"] == [] and s["of"] == 9 and len(s["targets"]) == 9
    assert s["files"]["speculative"].startswith("speculative_2") and s["files"]["dllm"].startswith("dllm_throughput_")
    assert s["files"]["batched"].startswith("speculative_batched_")
    assert s["files"]["continuous"].startswith("speculative_continuous_")
    assert [line.split(":")[0] for line in s["figures"]["speculative by batch size"]] == ["batch 1", "batch 2"]
    assert any(line.startswith("batch 4/min4:") for line in s["figures"]["continuous batching"])
    (summary,) = tmp_path.glob("issue15_*_cpu-smoke.json")
    assert json.loads(summary.read_text())["met"] == s["met"]
    text = next(tmp_path.glob("issue15_*_cpu-smoke.txt")).read_text()
    assert all(f"| {c} |" in text for c in ("none", "prefix", "dual", "dkv-decode"))
    assert "lossless" in text and "python benchmarks/speculative.py" in s["commands"]["speculative"]
    assert "continuous batching:" in text
    with pytest.raises(SystemExit):
        mod.main(["--smoke", "--parts", "speculative,paged", "--out-dir", str(tmp_path)])


def test_other_parts_write_their_own_summary_and_say_it_has_no_targets(tmp_path):
    """--summarize --parts batched: the summary is named by its parts (the default run's file is
    not overwritten) and lists the figures, with no target table."""
    mod = load_script("benchmarks/issue15.py", "issue15_bench")
    row = {"speedup_vs_target": {"target": 1.0, "ours": 1.5, "ours_trim": 1.6},
           "tokens_per_second": {"target": 800.0}, "rows_equal_target": {"ours": "8/8", "ours_trim": "8/8"}}
    (tmp_path / "speculative_batched_2026-12-04_h200_issue15.json").write_text(
        json.dumps({"info": {"device": "NVIDIA H200"}, "batched": {"batches": {"4": row}}}))
    s = mod.main(["--summarize", "--parts", "batched", "--out-dir", str(tmp_path)])
    assert s["of"] == 0 and s["files"] == {"batched": "speculative_batched_2026-12-04_h200_issue15"}
    assert s["figures"]["speculative by batch size"] == [
        "batch 4: target 800 tok/s; ours 1.50x, with VocabTrim 1.60x; rows equal 8/8, 8/8"]
    (summary,) = tmp_path.glob("issue15_*_h200_batched.txt")
    assert summary.read_text().startswith("issue 15, figures only") and not list(tmp_path.glob("issue15_*_h200.json"))
