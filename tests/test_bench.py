"""``run_bench`` / ``paradecode bench``: sweeps, the table, the summary and the plot."""

import json
from dataclasses import dataclass

import pytest

from paradecode.bench import runner
from paradecode.bench.runner import format_summary, run_bench, summarize, sweep_for
from paradecode.cli import main

KEYS = {"strategy", "setting", "task", "accuracy", "nfe", "tokens_per_forward", "seconds"}


def test_default_sweeps():
    assert sweep_for("lowconf", 32, 32) == [{"steps": s} for s in (32, 16, 8, 4, 2, 1)]
    # one step per block at the least
    assert sweep_for("lowconf", 128, 32) == [{"steps": s} for s in (128, 64, 32, 16, 8, 4)]
    th = sweep_for("threshold", 32, 32)
    assert len(th) >= 4 and all(set(s) == {"threshold"} for s in th)
    assert sweep_for("threshold", 32, 32, {"threshold": {"threshold": [0.5]}}) == [{"threshold": 0.5}]


def test_a_strategy_class_can_declare_its_own_sweep(monkeypatch):
    @dataclass
    class Cfg:
        gen_length: int = 32
        block_length: int = 32
        steps: int = 128
        gap: float = 1.0

    class Fake:
        Config = Cfg
        sweep = {"gap": [7.5, 5.0]}

    class Plain:
        Config = Cfg

    monkeypatch.setattr(runner, "get_strategy_class", lambda name: {"fake": Fake, "plain": Plain}[name])
    assert sweep_for("fake", 32, 32) == [{"gap": 7.5}, {"gap": 5.0}]
    Fake.sweep = lambda gen, block: [{"gap": float(gen)}]
    assert sweep_for("fake", 64, 32) == [{"gap": 64.0}]
    assert sweep_for("plain", 32, 32) == [{}]  # no sweep declared: the defaults
    # a config with a steps field gets steps = gen_length unless the setting sets it
    assert runner._full_options("plain", {}, 64, 32) == {"gen_length": 64, "block_length": 32, "steps": 64}


def _row(strategy, setting, acc, nfe, seconds, steps=None, gen=32):
    opts = {"gen_length": gen, "block_length": gen}
    if steps is not None:
        opts["steps"] = steps
    return {"strategy": strategy, "setting": setting, "task": "t", "accuracy": acc, "nfe": nfe,
            "tokens_per_forward": gen / nfe, "seconds": seconds, "options": opts}


def test_summary_picks_fewest_forwards_within_one_point():
    rows = [
        _row("lowconf", "steps=32", 0.95, 32, 3.2, steps=32),
        _row("lowconf", "steps=16", 0.945, 16, 1.6, steps=16),
        _row("lowconf", "steps=8", 0.80, 8, 0.8, steps=8),
        _row("threshold", "threshold=0.9", 0.96, 10, 1.0),
        _row("threshold", "threshold=0.5", 0.93, 5, 0.5),
    ]
    s = {r["strategy"]: r for r in summarize(rows)}
    assert s["lowconf"]["setting"] == "steps=16" and s["lowconf"]["speedup_nfe"] == pytest.approx(2.0)
    assert s["threshold"]["setting"] == "threshold=0.9"
    assert s["threshold"]["speedup_nfe"] == pytest.approx(3.2)
    assert s["threshold"]["speedup_time"] == pytest.approx(3.2)
    assert "threshold=0.9" in format_summary(summarize(rows))


@pytest.mark.slow
def test_tiny_sweep_on_the_shipped_model_writes_table_and_plot(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "c.png"
    result = run_bench(strategies=["threshold"], tasks=["words"], n=6, batch_size=6, seed=1,
                       sweeps={"threshold": {"threshold": [0.9]}}, out=out, plot=png, progress=False)
    rows = json.loads(out.read_text())["rows"]
    assert rows == json.loads(json.dumps(result["rows"]))
    # the full-step baseline is always run as the reference
    assert [(r["strategy"], r["setting"]) for r in rows] == [("lowconf", "steps=32"), ("threshold", "threshold=0.9")]
    for r in rows:
        assert KEYS <= set(r) and 0 <= r["accuracy"] <= 1 and r["seconds"] > 0
    base, thr = rows
    assert base["nfe"] == 32 and base["tokens_per_forward"] == pytest.approx(1.0)
    assert 1 <= thr["nfe"] <= 32
    assert thr["tokens_per_forward"] == pytest.approx(32 / thr["nfe"])
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_cli_bench(tmp_path, capsys):
    out, png = tmp_path / "r.csv", tmp_path / "c.png"
    code = main(["bench", "--strategies", "lowconf", "--tasks", "add", "--n", "4", "--quiet",
                 "--sweep", "lowconf:steps=32,4", "--out", str(out), "--plot", str(png)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Fewest forwards within 1 point" in text and "steps=4" in text
    lines = out.read_text().splitlines()
    assert lines[0].startswith("strategy,setting,task,accuracy,nfe,tokens_per_forward,seconds")
    assert len(lines) == 3 and png.exists()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy"):
        run_bench(strategies=["nope"], tasks=["words"], n=2, progress=False)
    with pytest.raises(ValueError, match="unknown task"):
        run_bench(strategies=["lowconf"], tasks=["nope"], n=2, progress=False)
    with pytest.raises(ValueError, match="positive"):
        run_bench(n=0, progress=False)
    assert main(["bench", "--sweep", "threshold=0.9", "--n", "2"]) == 2
