"""Where a batch-1 forward's time goes beyond its weight-read floor (issue 15), in one run.

Two of issue 15's targets miss by the same kind of margin: a dual-cache LLaDA-8B step forward
(32 fed tokens) takes ~2x its weight-read floor, and speculative decoding's verify forward
(k + 1 = 6 tokens on Llama-3.1-8B) costs more than a one-token decode although both should
read the same weights once. This script measures, on one GPU in one run, whether the linear
layers at those skinny shapes are the cause:

* **GEMM sweep.** Every linear shape of LLaDA-8B (fused q/k/v and gate/up, as ``--fuse``
  runs), Llama-3.1-8B and Llama-3.2-1B (fused), at M fed rows in ``--rows``, each timed as
  back-to-back calls captured in one CUDA graph (no launch gaps), cycling through enough copies
  of the weight to overflow the L2 cache (a real forward reads every weight from HBM once).
  Under every BLAS back end in ``--blas`` (PyTorch's ``preferred_blas_library``: cuBLAS,
  cuBLASLt). Each time is given beside its weight-read time (weight bytes / the measured copy
  rate, read + write bytes per second, as ``dllm_throughput.py``'s floor counts it). Per model and M, the sum
  over one forward's linears (layers x shapes, plus the LM head on the logits rows) is the
  GEMM time of a forward, to set beside the forward's measured time.
* **Kernel profile.** The LLaDA-8B-shaped model (fused, elementwise kernels compiled),
  driven through the first ``--steps`` steps of a ``lowconf`` generation at batch 1 with the
  dual cache and with no cache, eagerly under ``torch.profiler``: device time per step by
  kernel class (GEMM, attention, compiled elementwise, other elementwise and reductions,
  copies), beside the same steps' bare forwards replayed from CUDA graphs. Kernel time summed
  vs the graph's time tells how much of a forward is gaps between kernels.

    PYTHONPATH=. python benchmarks/kernel_breakdown.py --out-dir OUT          # GPU, ~1-2 min
    PYTHONPATH=. python benchmarks/kernel_breakdown.py --smoke --out-dir /tmp # CPU check of the script

Writes ``kernel_breakdown_<date>_<machine>.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from paradecode.bench.results_file import write_results

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dllm_throughput as dt  # noqa: E402  (benchmarks/ sibling: model, drivers, rates)

# (name, in_features, out_features, per forward: count of layers that hold it, or 0 = LM head)
LINEARS: dict[str, list[tuple[str, int, int, int]]] = {
    "llada-8b": [("qkv", 4096, 12288, 32), ("o", 4096, 4096, 32), ("gate_up", 4096, 24576, 32),
                 ("down", 12288, 4096, 32), ("head", 4096, 126464, 0)],
    "llama-8b": [("qkv", 4096, 6144, 32), ("o", 4096, 4096, 32), ("gate_up", 4096, 28672, 32),
                 ("down", 14336, 4096, 32), ("head", 4096, 128256, 0)],
    "llama-1b": [("qkv", 2048, 3072, 16), ("o", 2048, 2048, 16), ("gate_up", 2048, 16384, 16),
                 ("down", 8192, 2048, 16), ("head", 2048, 128256, 0)],
}
SMOKE_LINEARS = {"tiny": [("qkv", 64, 192, 2), ("o", 64, 64, 2), ("head", 64, 512, 0)]}
# the logits rows of the forwards issue 15 times: a dual-cache block, a verify, a decode
HEAD_ROWS = {"llada-8b": 32, "llama-8b": 6, "llama-1b": 1, "tiny": 4}

KERNEL_CLASSES = (  # (class, substrings of a kernel's name), first match wins (fmha kernels are cutlass's)
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "gemv", "cublas", "splitk", "aten::mm", "aten::addmm",
              "aten::linear", "aten::bmm")),
    ("compiled", ("triton",)),
    ("copy", ("copy", "memcpy", "memset", "fill", "cat", "index")),
)


def log(msg: str) -> None:
    print(msg, flush=True)


def set_blas(name: str) -> None:
    """The matmul library of the next products; ``inductor`` keeps cuBLAS for PyTorch's own
    matmuls and times ``torch.compile``'s max-autotune choice instead (see :func:`linear_fn`)."""
    torch.backends.cuda.preferred_blas_library("cublas" if name == "inductor" else name)


def linear_fn(lib: str) -> Any:
    """``F.linear``, or under ``inductor`` F.linear compiled with max-autotune (its Triton
    templates and cuBLAS searched per shape, no graphs of its own; one compile per shape)."""
    if lib != "inductor":
        return F.linear
    torch._dynamo.reset()  # a fresh compile per shape: the sweep's shapes outnumber dynamo's recompile limit
    return torch.compile(lambda x, w: F.linear(x, w), mode="max-autotune-no-cudagraphs", dynamic=False)


# ---- GEMM sweep -------------------------------------------------------------------------------
def linear_seconds(m: int, k: int, n: int, device: str, dtype: torch.dtype, calls: int, reps: int,
                   l2_bytes: int, linear: Any = F.linear) -> float:
    """Seconds of one ``F.linear`` of an (m, k) input with an (n, k) weight, the weight read
    from HBM: calls cycle through enough weight copies to exceed ``l2_bytes``."""
    wbytes = n * k * torch.finfo(dtype).bits // 8
    copies = max(1, math.ceil(2 * l2_bytes / wbytes))
    ws = [torch.randn(n, k, device=device, dtype=dtype) * 0.02 for _ in range(copies)]
    x = torch.randn(m, k, device=device, dtype=dtype)
    calls = max(calls, copies)

    def body() -> None:
        for i in range(calls):
            linear(x, ws[i % copies])

    if device != "cuda":
        body()
        t = time.perf_counter()
        for _ in range(reps):
            body()
        return (time.perf_counter() - t) / (reps * calls)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the capture stream, as CUDA graphs need
        body()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    del graph
    return start.elapsed_time(end) / 1e3 / (reps * calls)


def gemm_sweep(models: dict[str, list], rows: list[int], blas: list[str], device: str, dtype: torch.dtype,
               bytes_per_s: float, calls: int, reps: int, l2_bytes: int, flops_per_s: float) -> dict[str, Any]:
    """Per BLAS back end, model, shape and M: seconds, weight-read seconds, their ratio, and the
    ratio to the shape's limit (the larger of the read time and 2 M K N FLOPs at the measured
    matmul rate: at hundreds of rows a product is compute-bound); per back end, model and M,
    the GEMM seconds of one forward."""
    out: dict[str, Any] = {}
    bits = torch.finfo(dtype).bits
    for lib in blas:
        if device == "cuda":
            set_blas(lib)
        per_lib: dict[str, Any] = {}
        for model, shapes in models.items():
            per_model: dict[str, Any] = {"shapes": {}, "forward": {}}
            for m in rows:
                total = read = 0.0
                for name, k, n, layers in shapes:
                    mm = min(m, HEAD_ROWS[model]) if layers == 0 else m
                    s = linear_seconds(mm, k, n, device, dtype, calls, reps, l2_bytes, linear_fn(lib))
                    r = n * k * bits / 8 / bytes_per_s  # as dllm_throughput's floor: bytes / copy rate
                    limit = max(r, 2 * mm * k * n / flops_per_s)
                    per_model["shapes"].setdefault(name, {})[str(m)] = {"rows": mm, "us": 1e6 * s,
                                                                       "read_us": 1e6 * r, "x_read": s / r,
                                                                       "limit_us": 1e6 * limit, "x_limit": s / limit}
                    total += s * max(layers, 1)
                    read += r * max(layers, 1)
                per_model["forward"][str(m)] = {"gemm_ms": 1e3 * total, "read_ms": 1e3 * read, "x_read": total / read}
                log(f"  {lib:9s} {model:9s} M={m:3d}: linears of one forward {1e3 * total:7.3f} ms "
                    f"(weight read {1e3 * read:6.3f} ms, {total / read:5.2f}x)")
            per_lib[model] = per_model
        out[lib] = per_lib
    if device == "cuda":
        set_blas("cublas")
    return out


# ---- kernel profile ---------------------------------------------------------------------------
def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def time_by_class(prof: Any, steps: int, cuda: bool) -> tuple[dict[str, float], dict[str, list]]:
    """From a finished ``torch.profiler.profile``: ms per step by kernel class, and per kernel
    [class, calls per step, ms per step]. On a GPU the device kernels; on CPU (``--smoke``) the
    aten ops stand in for them."""
    want = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    by_class: dict[str, float] = {}
    kernels: dict[str, list] = {}
    for e in prof.key_averages():
        if e.device_type != want or (not cuda and not e.key.startswith("aten::")):
            continue
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us <= 0:
            continue
        cls = kernel_class(e.key)
        by_class[cls] = by_class.get(cls, 0.0) + us / 1e3 / steps
        kernels[e.key[:120]] = [cls, e.count / steps, us / 1e3 / steps]
    return by_class, kernels


GAP_BUCKETS_US = (2.0, 5.0, 20.0, 100.0)  # launch gaps inside a graph < ~2 us; a host that lags shows > 20 us


def device_gaps(prof: Any, steps: int, cuda: bool, worst: int = 8) -> dict[str, Any]:
    """Where the device idles between its kernels and copies, from a finished profile.

    Device events are merged where they overlap; each gap between consecutive busy spans is
    counted per step in buckets of ``GAP_BUCKETS_US`` (graph-internal launch gaps are ~1-2 us;
    a gap of tens of microseconds means the device waited for the host). The ``worst`` pairs
    (kernel before, kernel after) by total gap time say where the long waits sit. On CPU there
    are no device events: an empty result."""
    if not cuda:
        return {"buckets_us": list(GAP_BUCKETS_US), "count_per_step": [], "ms_per_step": [], "worst": []}
    evs = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                 if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start)
    counts = [0.0] * (len(GAP_BUCKETS_US) + 1)
    totals = [0.0] * (len(GAP_BUCKETS_US) + 1)
    pairs: dict[tuple[str, str], list[float]] = {}
    end, before = None, ""
    for s, e, name in evs:
        if end is not None and s > end:
            gap = s - end
            b = sum(gap >= edge for edge in GAP_BUCKETS_US)
            counts[b] += 1
            totals[b] += gap
            if gap >= GAP_BUCKETS_US[-2]:
                rec = pairs.setdefault((before[:70], name[:70]), [0, 0.0])
                rec[0] += 1
                rec[1] += gap
        if end is None or e > end:
            end, before = e, name
    top = sorted(pairs.items(), key=lambda kv: -kv[1][1])[:worst]
    return {"buckets_us": list(GAP_BUCKETS_US),
            "count_per_step": [c / steps for c in counts], "ms_per_step": [t / 1e3 / steps for t in totals],
            "worst": [{"before": a, "after": b, "per_step": n / steps, "ms_per_step": us / 1e3 / steps}
                      for (a, b), (n, us) in top]}


def gaps_report(g: dict[str, Any]) -> str:
    """One line per bucket and per worst pair of :func:`device_gaps`."""
    if not g["count_per_step"]:
        return "device gaps: none (no device events)\n"
    edges = [0.0] + g["buckets_us"]
    names = [f"[{a:g}, {b:g}) us" for a, b in zip(edges, edges[1:])] + [f">= {edges[-1]:g} us"]
    lines = ["device gaps per step: " + ", ".join(f"{n} x{c:.1f} = {ms:.3f} ms" for n, c, ms in
                                                   zip(names, g["count_per_step"], g["ms_per_step"]))]
    lines += [f"  gap >= {g['buckets_us'][-2]:g} us x{w['per_step']:.2f}/step, {w['ms_per_step']:.3f} ms/step: "
              f"{w['before']} -> {w['after']}" for w in g["worst"]]
    return "\n".join(lines) + "\n"


def profile_steps(model, prompt: torch.Tensor, cache: str, args, device: str) -> dict[str, Any]:
    """Device time per step by kernel class over the first ``args.steps`` steps (eager)."""
    from torch.profiler import ProfilerActivity, profile

    run = lambda: dt.run_steps(model, prompt, args.gen, args.block, args.tokens_per_step, "lowconf", cache,  # noqa: E731
                               args.steps, device)
    run()  # warm-up: compiled kernels, allocator
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        steps = len(run())
    by_class, kernels = time_by_class(prof, steps, device == "cuda")
    top = sorted(kernels.items(), key=lambda kv: -kv[1][2])[:args.top]
    return {"steps": steps, "ms_per_step": by_class, "kernel_ms_per_step": sum(by_class.values()),
            "top": [{"kernel": k, "class": c, "per_step": n, "ms_per_step": ms} for k, (c, n, ms) in top]}


def graphed_forward(graphed, prompt: torch.Tensor, cache: str, args, device: str) -> dict[str, Any]:
    """Bare forward ms per step, replayed from CUDA graphs (the less disturbed of two runs)."""
    run = lambda m: dt.run_steps(m, prompt, args.gen, args.block, args.tokens_per_step, "lowconf", cache,  # noqa: E731
                                 args.steps, device)
    for _ in range(2):
        run(graphed)
    recs = [dt.Recorder(graphed, device, timed=True) for _ in range(2)]
    steps = [run(rec) for rec in recs]
    best = min(range(2), key=lambda i: sum(recs[i].seconds))
    n = len(steps[best])
    return {"forward_ms": 1e3 * sum(recs[best].seconds) / n, "step_ms": 1e3 * sum(steps[best]) / n}


def kernel_profile(args, device: str) -> dict[str, Any]:
    from paradecode.models.graphs import CUDAGraphModel
    from paradecode.models.llada import compile_elementwise

    model = dt.build_model(device, args.smoke)
    model.fuse_projections()
    if device == "cuda":
        compile_elementwise()
    graphed = CUDAGraphModel(model, max_graphs=64, capture_after=0) if device == "cuda" else None
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, min(vocab, 100_000) - 16, (1, args.prompt), generator=g).to(device)
    out: dict[str, Any] = {}
    try:
        for cache in ("dual", "none"):
            with torch.inference_mode():
                r = profile_steps(model, prompt, cache, args, device)
                if graphed is not None:
                    r["graphed"] = graphed_forward(graphed, prompt, cache, args, device)
            out[cache] = r
            classes = ", ".join(f"{c} {ms:.3f}" for c, ms in sorted(r["ms_per_step"].items(), key=lambda kv: -kv[1]))
            log(f"  profile {cache}: kernels {r['kernel_ms_per_step']:.3f} ms/step ({classes})"
                + (f"; graphed forward {r['graphed']['forward_ms']:.3f} ms" if "graphed" in r else ""))
    finally:
        if device == "cuda":
            compile_elementwise(False)
    return out


# ---- report -----------------------------------------------------------------------------------
def report(res: dict[str, Any]) -> str:
    lines = [f"kernel_breakdown {res['date']} on {res['device']} (torch {res['torch']}), {res['dtype']}",
             f"copy {res['copy_GBps']:.0f} GB/s (read + write); GEMMs timed inside CUDA graphs, weights from HBM",
             "linears of one forward, ms (x of their weight-read time), LM head on "
             + ", ".join(f"{m} {r}" for m, r in HEAD_ROWS.items() if m in res["models"]) + " rows:"]
    rows = res["rows"]
    lines.append("| blas | model | " + " | ".join(f"M={m}" for m in rows) + " |")
    lines.append("|---|---|" + "---|" * len(rows))
    for lib, per_lib in res["gemm"].items():
        for model, pm in per_lib.items():
            cells = [f"{pm['forward'][str(m)]['gemm_ms']:.3f} ({pm['forward'][str(m)]['x_read']:.2f}x)" for m in rows]
            lines.append(f"| {lib} | {model} | " + " | ".join(cells) + " |")
    libs = list(res["gemm"])
    for key, what in (("x_read", "weight-read time"),
                      ("x_limit", f"limit, max(read, FLOPs at {res.get('matmul_TFLOPs', 0):.4g} TFLOP/s)")):
        lines.append(f"per shape, x of {what} (first blas | others):")
        for model in res["models"]:
            for name in res["gemm"][libs[0]][model]["shapes"]:
                cells = []
                for m in rows:
                    vals = [res["gemm"][lib][model]["shapes"][name][str(m)][key] for lib in libs]
                    cells.append(" | ".join(f"{v:.2f}" for v in vals))
                lines.append(f"  {model:9s} {name:8s} " + "  ".join(f"M={m}: {c}" for m, c in zip(rows, cells)))
    for cache, r in res.get("profile", {}).items():
        g = r.get("graphed")
        lines.append(f"LLaDA-8B fused lowconf/{cache} batch 1, first {r['steps']} steps: kernel time "
                     f"{r['kernel_ms_per_step']:.3f} ms/step"
                     + (f"; graphed bare forward {g['forward_ms']:.3f} ms, graphed step {g['step_ms']:.3f} ms" if g else ""))
        for c, ms in sorted(r["ms_per_step"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {c:10s} {ms:8.3f} ms/step")
        for t in r["top"]:
            lines.append(f"    {t['ms_per_step']:8.3f} ms  x{t['per_step']:6.1f}  {t['class']:9s} {t['kernel']}")
    lines.append(f"wall {res['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and model on CPU: a check of the script")
    ap.add_argument("--rows", default="1,2,4,6,8,16,32,64", help="M, the fed rows of each GEMM")
    ap.add_argument("--blas", default="cublas,cublaslt",
                    help="back ends: cublas, cublaslt (torch.backends.cuda.preferred_blas_library), inductor "
                         "(torch.compile max-autotune per shape: minutes)")
    ap.add_argument("--models", default=",".join(LINEARS), help="which models' linear shapes to sweep")
    ap.add_argument("--calls", type=int, default=24, help="GEMM calls per captured graph (at least the weight copies)")
    ap.add_argument("--reps", type=int, default=20, help="graph replays timed per GEMM")
    ap.add_argument("--l2-mb", type=int, default=60, help="L2 size the weight copies must overflow (H200: 60 MB)")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="steps profiled (the first block at 4 tokens per step)")
    ap.add_argument("--top", type=int, default=12, help="kernels listed per profile")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: gemm,profile")
    ap.add_argument("--machine", default="h200")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; use --smoke for a CPU check of the script.")
    if args.smoke:
        args.rows, args.blas, args.calls, args.reps, args.l2_mb = "1,4", "cpu", 2, 2, 0
        args.prompt, args.gen, args.block, args.steps, args.machine = 8, 16, 8, 2, "cpu-smoke"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = [int(v) for v in args.rows.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    models = SMOKE_LINEARS if args.smoke else {m: LINEARS[m] for m in args.models.split(",")}
    bytes_per_s = dt.copy_rate(device, 1 << (20 if args.smoke else 30), 3 if args.smoke else 20)
    flops_per_s = dt.matmul_rate(device, 256 if args.smoke else 8192, 3 if args.smoke else 20)
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""), "copy_GBps": bytes_per_s / 1e9,
        "matmul_TFLOPs": flops_per_s / 1e12, "rows": rows,
        "models": list(models), "head_rows": {m: HEAD_ROWS[m] for m in models}, "args": vars(args),
    }
    if "gemm" not in skip:
        res["gemm"] = gemm_sweep(models, rows, args.blas.split(","), device, dtype, bytes_per_s, args.calls,
                                 args.reps, args.l2_mb << 20, flops_per_s)
    if "profile" not in skip:
        res["profile"] = kernel_profile(args, device)
    res["wall_s"] = time.perf_counter() - t0
    text = report(res) if "gemm" in res else json.dumps(res.get("profile", {}), indent=1)
    stem = write_results(args.out_dir, f"kernel_breakdown_{res['date']}_{args.machine}", res, text)
    log(text)
    log(f"wrote {stem}.json/.txt")
    return res


if __name__ == "__main__":
    main()
