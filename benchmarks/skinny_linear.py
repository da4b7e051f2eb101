"""Few-row linears: :func:`paradecode.models.skinny_linear.skinny_linear` against cuBLAS.

Every linear of a Llama-3.2-1B draft forward (fused q/k/v and gate/up, as ``fuse_projections``
runs; the LM head whole and trimmed to a quarter, as ``speculative.py``'s VocabTrim) and of a
Llama-3.1-8B forward, at the row counts speculative decoding feeds (1B: 1 and 2 tokens; 8B: a
1-token decode and the 6-token verify), each timed as back-to-back calls captured in one CUDA
graph, cycling through enough weight copies to overflow the L2 cache (a forward reads every
weight from HBM once), beside its weight-read time (bytes / the measured copy rate, read +
write bytes per second, as the other benchmarks count the floor).

The kernel's settings are searched per shape in three passes (output columns x reduction
slice; then warps x pipeline stages; then K splits), and the best is reported with cuBLAS's
time, both as x of the weight-read time, and per model the sum over one forward (layers x
shapes). The settings that are best over all shapes of a model are reported as well: one
default must serve every shape.

    PYTHONPATH=. python benchmarks/skinny_linear.py --out-dir OUT     # GPU, ~3-4 min
    PYTHONPATH=. python benchmarks/skinny_linear.py --smoke           # CPU: the interpreter, tiny shapes
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton reads it

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paradecode.models.skinny_linear import SkinnyConfig, skinny_linear  # noqa: E402

# model: [(name, K, N, layers)]; layers 0 = the LM head (once per forward)
SHAPES = {
    "llama-1b": [("qkv", 2048, 3072, 16), ("o", 2048, 2048, 16), ("gate_up", 2048, 16384, 16),
                 ("down", 8192, 2048, 16), ("head", 2048, 128256, 0), ("head_trim", 2048, 32064, 0)],
    "llama-8b": [("qkv", 4096, 6144, 32), ("o", 4096, 4096, 32), ("gate_up", 4096, 28672, 32),
                 ("down", 14336, 4096, 32), ("head", 4096, 128256, 0)],
}
ROWS = {"llama-1b": [1, 2], "llama-8b": [1, 6]}
SMOKE_SHAPES = {"tiny": [("a", 64, 48, 2), ("head", 64, 80, 0)]}
SMOKE_ROWS = {"tiny": [1, 2]}


def log(msg: str) -> None:
    print(msg, flush=True)


def copy_rate(device: str, nbytes: int = 1 << 30) -> float:
    """Read + write bytes per second of a device-to-device copy."""
    a = torch.empty(nbytes // 2, dtype=torch.int16, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * nbytes * 10 / (time.perf_counter() - t)


def graph_seconds(fn: Callable[[int], Any], copies: int, calls: int, reps: int, device: str) -> float:
    """Seconds per call of ``fn(i)`` (i cycles through ``copies``), captured in one CUDA graph."""
    calls = max(calls, copies)

    def body() -> None:
        for i in range(calls):
            fn(i % copies)

    if device != "cuda":
        body()
        t = time.perf_counter()
        for _ in range(reps):
            body()
        return (time.perf_counter() - t) / (reps * calls)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (and Triton's compile) off the capture stream
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


def candidates(stage: int, best: SkinnyConfig, m: int, smoke: bool) -> list[SkinnyConfig]:
    """The settings tried in one pass of the search, around the best so far."""
    m_pad = 1 << max(0, (m - 1).bit_length())
    if smoke:
        return [best, replace(best, block_n=16, block_k=32), replace(best, split=2, block_k=32)][: 1 + (stage == 1) + (stage == 3)]
    if stage == 1:
        grid = itertools.product((4, 8, 16, 32), (128, 256, 512, 1024))
        return [replace(best, block_n=n, block_k=k) for n, k in grid if m_pad * n * k <= 32768]
    if stage == 2:
        return [replace(best, num_warps=w, num_stages=s) for w, s in itertools.product((2, 4, 8), (1, 2, 3, 4, 5))]
    return [replace(best, split=s) for s in (1, 2, 4, 8)]


def sweep_shape(k: int, n: int, m: int, args, device: str, dtype: torch.dtype, rate: float) -> dict[str, Any]:
    wbytes = n * k * torch.finfo(dtype).bits // 8
    copies = max(1, math.ceil(2 * args.l2_bytes / wbytes)) if device == "cuda" else 1
    gen = torch.Generator(device=device).manual_seed(0)
    ws = [torch.randn(n, k, device=device, dtype=dtype, generator=gen) * 0.02 for _ in range(copies)]
    x = torch.randn(m, k, device=device, dtype=dtype, generator=gen)
    ref = F.linear(x, ws[0])
    read = wbytes / rate
    cublas = graph_seconds(lambda i: F.linear(x, ws[i]), copies, args.calls, args.reps, device)
    tried: dict[str, float] = {}
    best, best_s = SkinnyConfig(), math.inf
    diff = 0.0
    for stage in (1, 2, 3):
        for cfg in candidates(stage, best, m, device != "cuda"):
            key = json.dumps(asdict(cfg), sort_keys=True)
            if key not in tried:
                try:
                    out = skinny_linear(x, ws[0], None, cfg)
                    diff = max(diff, (out.float() - ref.float()).abs().max().item())
                    tried[key] = graph_seconds(lambda i, c=cfg: skinny_linear(x, ws[i], None, c), copies, args.calls,
                                               args.reps, device)
                except Exception as e:  # a setting Triton cannot compile (registers, shared memory)
                    log(f"    {cfg}: {type(e).__name__}: {str(e)[:120]}")
                    tried[key] = math.inf
            if tried[key] < best_s:
                best, best_s = cfg, tried[key]
    return {"rows": m, "K": k, "N": n, "read_us": 1e6 * read, "cublas_us": 1e6 * cublas, "cublas_x_read": cublas / read,
            "skinny_us": 1e6 * best_s, "skinny_x_read": best_s / read, "best": asdict(best),
            "max_abs_diff_vs_cublas": diff, "tried_us": {k_: 1e6 * v for k_, v in tried.items()}}


def summarize(res: dict[str, Any]) -> None:
    """Per model and rows: one forward's linears (layers x shapes) under cuBLAS, under each
    shape's best settings, and under the one setting best over the forward (of those tried
    on every shape)."""
    for model, per_m in res["models"].items():
        for m, shapes in per_m.items():
            weight = {s["name"]: max(s["layers"], 1) for s in shapes}
            heads = [s["name"] for s in shapes if s["layers"] == 0]
            body = [s for s in shapes if s["name"] not in heads[1:]]  # the forward runs one head
            tot = lambda key: sum(s[key] * weight[s["name"]] for s in body)  # noqa: E731
            common = set.intersection(*(set(s["tried_us"]) for s in body))
            one = min(common, key=lambda c: sum(s["tried_us"][c] * weight[s["name"]] for s in body)) if common else None
            res.setdefault("forward", {}).setdefault(model, {})[m] = {
                "read_ms": tot("read_us") / 1e3, "cublas_ms": tot("cublas_us") / 1e3, "skinny_best_ms": tot("skinny_us") / 1e3,
                "one_setting": json.loads(one) if one else None,
                "one_setting_ms": sum(s["tried_us"][one] * weight[s["name"]] for s in body) / 1e3 if one else None,
            }


def report(res: dict[str, Any]) -> str:
    lines = [f"skinny_linear vs cuBLAS: {res['info']}",
             f"{'model':<9} {'M':>2} {'shape':<10} {'read us':>8} {'cublas us':>9} {'x read':>6} {'skinny us':>9} {'x read':>6} best"]
    for model, per_m in res["models"].items():
        for m, shapes in per_m.items():
            for s in shapes:
                b = s["best"]
                lines.append(f"{model:<9} {m:>2} {s['name']:<10} {s['read_us']:>8.2f} {s['cublas_us']:>9.2f} "
                             f"{s['cublas_x_read']:>6.2f} {s['skinny_us']:>9.2f} {s['skinny_x_read']:>6.2f} "
                             f"n{b['block_n']} k{b['block_k']} s{b['split']} w{b['num_warps']} st{b['num_stages']}")
    lines.append("one forward's linears (first LM head only), ms:")
    for model, per_m in res.get("forward", {}).items():
        for m, f in per_m.items():
            one = f["one_setting"]
            lines.append(f"  {model} M={m}: weight read {f['read_ms']:.3f}, cuBLAS {f['cublas_ms']:.3f} "
                         f"({f['cublas_ms'] / f['read_ms']:.2f}x), skinny best per shape {f['skinny_best_ms']:.3f} "
                         f"({f['skinny_best_ms'] / f['read_ms']:.2f}x), one setting {f['one_setting_ms'] or float('nan'):.3f} {one}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton's interpreter, tiny float32 shapes")
    ap.add_argument("--models", default="llama-1b,llama-8b")
    ap.add_argument("--calls", type=int, default=24, help="calls per captured graph (at least the weight copies)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--l2-bytes", type=int, default=60 << 20)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    shapes, rows = (SMOKE_SHAPES, SMOKE_ROWS) if args.smoke else (SHAPES, ROWS)
    if args.smoke:
        args.calls, args.reps = 1, 1
    else:
        shapes = {m: shapes[m] for m in args.models.split(",")}
    rate = copy_rate(device) if device == "cuda" else 1e9
    res: dict[str, Any] = {"info": {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)",
                                    "dtype": str(dtype), "torch": torch.__version__, "copy_GBps": rate / 1e9},
                           "models": {}}
    for model, model_shapes in shapes.items():
        for m in rows[model]:
            for name, k, n, layers in model_shapes:
                r = sweep_shape(k, n, m, args, device, dtype, rate)
                r.update(name=name, layers=layers)
                res["models"].setdefault(model, {}).setdefault(m, []).append(r)
                log(f"{model} M={m} {name}: cuBLAS {r['cublas_us']:.2f} us ({r['cublas_x_read']:.2f}x), "
                    f"skinny {r['skinny_us']:.2f} us ({r['skinny_x_read']:.2f}x) {r['best']}")
    summarize(res)
    text = report(res)
    print(text, flush=True)
    if args.out_dir:
        machine = "h200" if "H200" in res["info"]["device"] else ("cpu" if device == "cpu" else "gpu")
        stem = Path(args.out_dir) / f"skinny_linear_{time.strftime('%Y-%m-%d', time.gmtime())}_{machine}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
        stem.with_suffix(".txt").write_text(text)
    return res


if __name__ == "__main__":
    main()
