"""benchmarks/speculative.py --profile: a step's time split on CPU (the smoke pair), end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_profile_splits_each_target_step(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speculative.py"), "--smoke", "--profile",
                    "--out-dir", str(tmp_path)], check=True, env=env, capture_output=True, timeout=300)
    res = json.loads(next(tmp_path.glob("speculative_profile_*_cpu_smoke.json")).read_text())["profile"]
    assert res["new_tokens"] == 24 and 1 <= res["target_steps"] <= 24
    assert res["kernel_ms_by_class"]["gemm"] > 0  # the forwards' matmuls are found and classed
    assert res["kernel_ms_per_step"] == pytest.approx(sum(res["kernel_ms_by_class"].values()))
    assert res["idle_ms_per_step"] == pytest.approx(res["wall_ms_per_step"] - res["kernel_ms_per_step"])
