"""benchmarks/kernel_breakdown.py: its kernel classes, its per-forward sums, and its CPU smoke run;
speculative.py --profile, which splits a step with the same kernel classes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_script("benchmarks/kernel_breakdown.py")  # it imports its sibling dllm_throughput


@pytest.mark.parametrize("name, cls", [
    ("nvjet_sm90_tst_192x32_64x7_2x1_v_bz_TNT", "gemm"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float>", "gemm"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),  # a cutlass kernel, but attention's
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16", "attention"),
    ("triton_poi_fused_mul_silu_0", "compiled"),
    ("void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>", "copy"),
    ("void at::native::vectorized_elementwise_kernel<8, CUDAFunctor_add<c10::BFloat16>>", "other"),
])
def test_kernel_names_fall_in_their_class(name, cls):
    assert _script().kernel_class(name) == cls


def test_device_gaps_bucket_the_idle_time_between_merged_kernels():
    """Overlapping kernels merge into one busy span; each gap lands in its bucket, per step,
    and the long gaps are attributed to the kernels on either side."""
    from types import SimpleNamespace

    import torch

    cuda = torch.autograd.DeviceType.CUDA

    def ev(start, end, name, dev=cuda):
        return SimpleNamespace(time_range=SimpleNamespace(start=start, end=end), name=name, device_type=dev)

    events = [ev(0, 10, "a"), ev(5, 12, "b"),  # overlap: busy 0..12
              ev(13, 20, "c"),  # gap 1 us
              ev(50, 60, "d"),  # gap 30 us: c -> d
              ev(260, 270, "e"),  # gap 200 us: d -> e
              ev(0, 999, "host", dev=torch.autograd.DeviceType.CPU)]  # host events are not device time
    g = _script().device_gaps(SimpleNamespace(events=lambda: events), steps=2, cuda=True)
    assert g["count_per_step"] == [0.5, 0.0, 0.0, 0.5, 0.5]
    assert g["ms_per_step"] == pytest.approx([0.0005, 0.0, 0.0, 0.015, 0.1])
    assert [(w["before"], w["after"]) for w in g["worst"]] == [("d", "e"), ("c", "d")]
    assert "d -> e" in _script().gaps_report(g)


def test_smoke_run_sums_each_forward_from_its_shapes(tmp_path):
    bench = _script()
    res = bench.main(["--smoke", "--out-dir", str(tmp_path)])
    written = json.loads(next(tmp_path.glob("kernel_breakdown_*_cpu-smoke.json")).read_text())
    assert written["rows"] == [1, 4]
    per_model = written["gemm"]["cpu"]["tiny"]
    for m in ("1", "4"):
        shapes = bench.SMOKE_LINEARS["tiny"]
        want = sum(per_model["shapes"][name][m]["us"] * max(layers, 1) for name, _, _, layers in shapes) / 1e3
        assert per_model["forward"][m]["gemm_ms"] == pytest.approx(want)
        assert per_model["shapes"]["head"][m]["rows"] == min(int(m), bench.HEAD_ROWS["tiny"])
    for cache in ("dual", "none"):
        prof = res["profile"][cache]
        assert prof["steps"] == 2
        assert prof["ms_per_step"]["gemm"] > 0  # the model's matmuls are seen and classed
        assert prof["kernel_ms_per_step"] == pytest.approx(sum(prof["ms_per_step"].values()))


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


def test_speculative_bench_reads_each_roles_own_wrapper():
    """The bench counts graph replays on the wrapper the strategy uses: with ``--compile-roles
    draft`` the draft's wrapper is the one keyed by the compile mode (reading the target's key gave
    a fresh wrapper with no graphs, so a run reported 0 draft replays)."""
    import argparse

    import torch

    mod = load_script("benchmarks/speculative.py", "speculative_bench")
    target, draft, _ = mod.random_pair("tiny", 0.8, "cpu", torch.float32)
    args = argparse.Namespace(fuse_projections=False, compile_forward="default", compile_roles="draft", attention="sdpa")
    assert mod.wrapper(draft, args, "draft").compile_mode == "default"
    assert mod.wrapper(target, args, "target").compile_mode is None
    assert mod.wrapper(draft, args, "draft") is mod.wrapper(draft, args, "draft")  # the one kept on the model


def test_step_profile_smoke_profiles_each_rule_and_writes_its_results(tmp_path):
    """benchmarks/step_profile.py on CPU: every asked rule's steps are profiled (aten ops stand in
    for kernels), and the results file names each rule with its per-step figures."""
    script = load_script("benchmarks/step_profile.py")
    res = script.main(["--smoke", "--rules", "lowconf,threshold", "--out-dir", str(tmp_path)])
    assert set(res["rules"]) == {"lowconf/dual", "threshold/dual"}
    for p in res["rules"].values():
        assert p["steps"] >= 1 and p["wall_ms_per_step"] > 0 and p["kernel_ms_per_step"] > 0
        assert any(t["kernel"].startswith("aten::") for t in p["top_kernels"])
    saved = json.loads(next(tmp_path.glob("step_profile_*_cpu-smoke.json")).read_text())
    assert saved["rules"].keys() == res["rules"].keys()


def test_step_profile_names_the_host_work_that_overlaps_the_device_gaps():
    """Only gaps of >= 50 us count; a host event is charged the part of it inside them."""
    from types import SimpleNamespace

    import torch

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def ev(start, end, name, dev=cuda):
        return SimpleNamespace(time_range=SimpleNamespace(start=start, end=end), name=name, device_type=dev)

    events = [ev(0, 10, "k1"), ev(20, 30, "k2"),  # 10 us gap: too short to count
              ev(130, 140, "k3"),  # 100 us gap: 30..130
              ev(0, 200, "step", dev=cpu), ev(40, 100, "cudaGraphLaunch", dev=cpu),
              ev(120, 150, "aten::copy_", dev=cpu), ev(11, 19, "in short gap", dev=cpu)]
    script = load_script("benchmarks/step_profile.py")
    rows = script.host_in_gaps(SimpleNamespace(events=lambda: events), steps=2)
    got = {r["host_event"]: r["overlap_ms_per_step"] for r in rows}
    assert got == pytest.approx({"step": 0.05, "cudaGraphLaunch": 0.03, "aten::copy_": 0.005})
