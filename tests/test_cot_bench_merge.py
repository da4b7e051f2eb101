"""benchmarks/cot_bench.py's merging of split sweeps and its re-timing of iso-quality settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cot_bench  # noqa: E402


def _row(strategy, cache, setting, acc, nfe, seconds, options=None):
    opts = options or {"gen_length": 256, "block_length": 32, "steps": 256}
    return {"strategy": strategy, "cache": cache, "setting": setting, "task": "cot", "accuracy": acc,
            "strict_accuracy": acc, "final_accuracy": acc, "nfe": nfe, "tokens_per_forward": 256 / nfe,
            "seconds": seconds, "tokens_per_second": 500 * 256 / seconds,
            "answer_tokens_per_second": 100 / seconds, "n": 500, "options": opts}


def _result(rows, seed=4242, command="run"):
    return {"model": "m", "model_info": {"name": "m"}, "task": "cot", "n": 500, "seed": seed, "rows": rows,
            "skipped": [], "errors": [], "iso_quality": cot_bench.iso_quality(rows), "command": command,
            "seconds": 1.0}


BASE = _row("lowconf", "none", "steps=256", 0.90, 256.0, 10.0)
TH = {"gen_length": 256, "block_length": 32, "threshold": 0.9}


def _write(tmp_path, name, result):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(result))
    return str(path)


def test_merge_keeps_the_first_run_of_a_setting_and_recomputes_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(cot_bench, "plot", lambda *a, **k: None)
    a = _result([BASE, _row("threshold", "none", "threshold=0.9", 0.895, 30.0, 2.0, TH)])
    b = _result([_row("threshold", "none", "threshold=0.9", 0.5, 99.0, 9.0, TH),  # a repeat: dropped
                 _row("threshold", "dual", "threshold=0.9", 0.85, 30.0, 1.0, TH)])  # 5 points lower
    assert cot_bench.merge([_write(tmp_path, "a", a), _write(tmp_path, "b", b)], None, tmp_path, []) == 0
    merged = json.loads((tmp_path / "cot_bench.json").read_text())
    assert len(merged["rows"]) == 3
    iso = {(s["strategy"], s["cache"]): s for s in merged["iso_quality"]}
    assert iso[("threshold", "none")]["nfe"] == 30.0  # the first run's figures
    assert iso[("threshold", "none")]["speedup_time"] == pytest.approx(5.0)
    assert iso[("threshold", "dual")]["setting"] is None  # the dual row is not within 1 point


def test_merge_refuses_runs_of_other_problems(tmp_path):
    a, b = _result([BASE]), _result([BASE], seed=7)
    with pytest.raises(SystemExit, match="same problems"):
        cot_bench.merge([_write(tmp_path, "a", a), _write(tmp_path, "b", b)], None, tmp_path, [])


def test_timing_rows_replace_the_sweeps_wall_times_only(tmp_path):
    rows = [BASE, _row("threshold", "none", "threshold=0.9", 0.90, 30.0, 8.0, TH)]
    timing = [_row("lowconf", "none", "steps=256", 0.0, 1.0, 5.0),  # accuracy and NFE of the timing run are ignored
              _row("threshold", "none", "threshold=0.9", 0.0, 1.0, 1.0, TH)]
    iso = cot_bench.iso_quality(rows, timing)
    (s,) = [s for s in iso if s["strategy"] == "threshold"]
    assert (s["accuracy"], s["nfe"]) == (0.90, 30.0)
    assert s["speedup_time"] == pytest.approx(5.0) and s["timed_alone"] is True
    assert s["tokens_per_second"] == pytest.approx(500 * 256 / 1.0)


def test_only_iso_plans_the_tables_settings_with_their_full_options():
    rows = [BASE, _row("threshold", "none", "threshold=0.9", 0.90, 30.0, 2.0, TH),
            _row("threshold", "none", "threshold=0.5", 0.10, 10.0, 1.0, dict(TH, threshold=0.5)),
            _row("credit", "dual", "threshold=0.9", 0.20, 30.0, 2.0, TH)]
    plan = cot_bench.iso_plan(_result(rows), ["lowconf", "threshold", "credit"], ["none", "dual"])
    assert ("none", "threshold", TH, "threshold=0.9") in plan
    assert all(s != "credit" for _, s, _, _ in plan)  # no setting within a point: nothing to time
    assert cot_bench.iso_plan(_result(rows), ["credit"], ["none", "dual"]) == []


def test_only_iso_plans_each_caches_own_iso_settings_too():
    """A cached rule within a point of its cache's full-step row (not of the no-cache baseline) is
    re-timed too, with that full-step row, each once."""
    dual_base = _row("lowconf", "dual", "steps=256", 0.80, 256.0, 4.0)
    rows = [BASE, dual_base, _row("threshold", "dual", "threshold=0.9", 0.80, 30.0, 2.0, TH),
            _row("threshold", "dual", "threshold=0.5", 0.10, 10.0, 1.0, dict(TH, threshold=0.5))]
    plan = cot_bench.iso_plan(_result(rows), ["lowconf", "threshold"], ["none", "dual"])
    labels = [(c, s, label) for c, s, _, label in plan]
    assert ("dual", "threshold", "threshold=0.9") in labels and ("dual", "lowconf", "steps=256") in labels
    assert ("dual", "threshold", "threshold=0.5") not in labels
    assert len(labels) == len(set(labels))
    assert cot_bench.iso_plan(_result(rows), ["lowconf", "threshold"], ["none"]) == [
        ("none", "lowconf", BASE["options"], "steps=256")]


def test_per_cache_table_compares_with_the_retimed_no_cache_baseline():
    rows = [BASE, _row("lowconf", "dual", "steps=256", 0.80, 256.0, 4.0),
            _row("threshold", "dual", "threshold=0.9", 0.80, 30.0, 2.0, TH)]
    timing = [_row("lowconf", "none", "steps=256", 0.0, 1.0, 8.0), _row("threshold", "dual", "threshold=0.9", 0.0, 1.0, 1.0, TH)]
    (s,) = [s for s in cot_bench.iso_quality_per_cache(rows, timing) if s["strategy"] == "threshold"]
    assert s["cache"] == "dual" and s["timed_alone"] is True
    assert s["speedup_time"] == pytest.approx(4.0)  # the dual full-step row's 4 s over the retimed 1 s
    assert s["speedup_time_vs_no_cache"] == pytest.approx(8.0)  # the retimed baseline: 8 s, not the sweep's 10 s
