"""benchmarks/select_kernels.py and benchmarks/kernel_tokens.py: their CPU checks (the Triton
kernels under the interpreter) write a report whose checks hold."""

import json

import pytest

from paradecode.samplers import common
from paradecode.samplers.topk_kernel import triton

from .conftest import load_script

pytestmark = pytest.mark.skipif(triton is None, reason="needs the triton package (its interpreter runs on CPU)")


def test_select_kernels_smoke(tmp_path):
    mod = load_script("benchmarks/select_kernels.py")
    res = mod.main(["--smoke", "--out-dir", str(tmp_path)])
    assert all(r["k4_equal"] and r["top1_equal"] for r in res["selection"].values())
    assert set(res["ties"]) >= {"kernel_eq_whole_block_topk", "kernel_eq_per_row_topk"}
    assert all(v["tokens_equal"] for r in res["argmax"].values() for v in r.values())
    assert not common._selection_kernels  # the default is restored
    (saved,) = tmp_path.glob("select_kernels_*_cpu-smoke.json")
    assert json.loads(saved.read_text())["vocab"] == res["vocab"]


def test_kernel_tokens_smoke(tmp_path, monkeypatch):
    mod = load_script("benchmarks/kernel_tokens.py")
    monkeypatch.setattr(common, "sampler_kernels_run", common.sampler_kernels_run)  # the script overrides it
    res = mod.main(["--smoke", "--out-dir", str(tmp_path)])
    cells = res["models"]["tiny-x20"]
    assert set(cells) == {"lowconf/dual", "threshold/dual"}
    assert all(c["rows_differ"] == 0 and c["nfe"][0] == c["nfe"][1] for c in cells.values())
    assert not common._selection_kernels
    assert "2 of 2 rule/cache pairs give the same tokens" in next(tmp_path.glob("kernel_tokens_*.txt")).read_text()
