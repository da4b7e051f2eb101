"""The tokens every strategy x cache gives on the shipped models equal those recorded before
the seams redesign (issue 14): ``tests/golden/record.py`` recorded them on the old code."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(HERE))

import record  # noqa: E402

SHARDS = 2  # CI's cores: the cases run in two processes side by side, one torch thread each


@pytest.mark.slow
def test_every_recorded_case_gives_the_same_tokens_and_forwards(tmp_path):
    old = json.loads(record.OUT.read_text())
    outs = [tmp_path / f"shard{i}.json" for i in range(SHARDS)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "record.py"), "--shard", f"{i}/{SHARDS}", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, out in enumerate(outs)]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
    now = {}
    for out in outs:
        part = json.loads(out.read_text())
        assert not set(part) & set(now), "a case was computed by two shards"
        now.update(part)
    assert set(now) == set(old)
    differ = [k for k in old if now[k] != old[k]]
    assert not differ, f"{len(differ)} of {len(old)} cases changed: {differ[:10]}"


def test_the_recording_covers_every_registered_strategy_and_cache():
    import paradecode
    from paradecode.registry import get_cache_class, get_strategy_class

    keys = json.loads(record.OUT.read_text())
    recorded = {k.split("/")[2].split("-")[0] for k in keys if k.startswith("dllm/")}
    recorded |= {"speculative"} if any(k.startswith("spec/") for k in keys) else set()
    recorded |= {k.split("/")[1].split("-")[0] for k in keys if k.startswith("vision/")}
    assert set(paradecode.strategies()) <= recorded
    caches = {k.split("/")[3] for k in keys if k.startswith("dllm/")}
    if any("scalekv" in k for k in keys):
        caches.add("scalekv")
    assert set(paradecode.cache_policies()) <= caches
    assert all(get_strategy_class(s).family for s in paradecode.strategies())
    assert all(get_cache_class(c).families for c in paradecode.cache_policies())

