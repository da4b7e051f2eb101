"""RoPE, SwiGLU and a full forward's cache write at LLaDA-8B's shapes: eager, torch.compile's
kernels and paradecode's Triton kernels (``paradecode.models.elementwise_triton``), in one run.

Each kernel is timed as back-to-back calls captured in one CUDA graph (no launch gaps), over
the inputs a forward hands it: RoPE over the joined q/k view of a fused q/k/v output (32 + 32
heads of 128, float32 cos/sin per row), SwiGLU over the two halves of a fused gate/up output
(12,288 columns each), and the cache write of a full forward's keys (PyTorch's copy of the
(B, H, T, D) view into a (B, H, T + 1, D) buffer against ``copy_rows_triton``). Rows: 32 (a
dual-cache step at batch 1), 768 (a refresh at batch 1), 6,144 and 24,576 (refreshes at batch
8 and 32). Beside each time, the rate at which it moves its bytes (reads + writes), and how the
Triton result compares with eager's (equal elements, largest difference). Then a partial step's scatter of 256 fed positions per row into a 769-slot
canvas at batch 1, 8 and 32 (``scatter_`` against the kernel with an index).

    PYTHONPATH=. python benchmarks/elementwise_kernels.py --out-dir OUT          # GPU, ~1 min
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/elementwise_kernels.py --smoke   # CPU check

Writes ``elementwise_kernels_<date>_<machine>.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from paradecode.bench.results_file import write_results

from paradecode.models.elementwise_triton import copy_rows_triton, rope_triton, swiglu_triton
from paradecode.models.llada import apply_rope, rope_cos_sin, swiglu


def graph_time_us(fn: Callable[[], Any], calls: int, reps: int) -> float:
    """Microseconds per call of ``fn``: ``calls`` calls captured in one CUDA graph, replayed
    ``reps`` times (the best replay)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        best = min(best, a.elapsed_time(b) * 1e3 / calls)
    return best


def wall_time_us(fn: Callable[[], Any], calls: int, reps: int) -> float:
    """The CPU stand-in: microseconds per call, best of ``reps`` loops of ``calls``."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) * 1e6 / calls)
    return best


def compare(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    return {"equal_share": float((got == want).float().mean()), "max_abs_diff": float((got.float() - want.float()).abs().max())}


def kernel_bench_args(doc: str, rows: str, rows_help: str, argv: Optional[list[str]]) -> argparse.Namespace:
    """The options of a Triton kernel micro-benchmark (this one, ``confidence_kernel.py``): rows
    per call, graph calls and replays, machine name, output folder, and ``--smoke``, which runs
    the kernels on CPU under Triton's interpreter (refused unless TRITON_INTERPRET=1 is set)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under the Triton interpreter (TRITON_INTERPRET=1)")
    ap.add_argument("--rows", default=rows, help=rows_help)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--machine", default="h200")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    if args.smoke and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--smoke runs the Triton kernels in Triton's interpreter: set TRITON_INTERPRET=1 before starting.")
    return args


@dataclass
class KernelRun:
    """Where a kernel benchmark runs, from its ``--smoke`` and ``--machine``: a GPU (CUDA-graph
    timings, the options' calls and replays), or the CPU check (the kernels under Triton's
    interpreter, two calls and two loops by the wall clock), whose results file is named
    ``cpu-smoke`` so that it never passes for a GPU's."""

    cuda: bool
    device: str
    timer: Callable[[Callable[[], Any], int, int], float]
    calls: int
    reps: int
    machine: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "KernelRun":
        cuda = torch.cuda.is_available() and not args.smoke
        if cuda:
            # a benchmark that times nothing (kernel_tokens.py) has no --calls / --reps
            return cls(True, "cuda", graph_time_us, getattr(args, "calls", 0), getattr(args, "reps", 0), args.machine)
        return cls(False, "cpu", wall_time_us, 2, 2, "cpu-smoke")

    def header(self) -> dict[str, Any]:
        """The results' first fields: date, device, torch version."""
        return {"date": datetime.date.today().isoformat(),
                "device": torch.cuda.get_device_name() if self.cuda else "cpu (smoke, interpreter)",
                "torch": torch.__version__}

    def finish(self, bench: str, res: dict[str, Any], text: str, out_dir: Optional[str]) -> None:
        """Print the report; with ``out_dir``, write ``<bench>_<date>_<machine>.json`` and ``.txt``."""
        print(text)
        if out_dir:
            write_results(out_dir, f"{bench}_{res['date']}_{self.machine}", res, text)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = kernel_bench_args(__doc__, "32,768,6144,24576", "token rows (batch x tokens) per call", argv)
    t0 = time.perf_counter()
    run = KernelRun.from_args(args)
    cuda, device, timer, calls, reps = run.cuda, run.device, run.timer, run.calls, run.reps
    dtype = torch.bfloat16 if cuda else torch.float32
    H, D, inter = (32, 128, 12288) if not args.smoke else (4, 16, 48)
    rows = [int(r) for r in args.rows.split(",")] if not args.smoke else [4, 12]
    compiled_rope = torch.compile(apply_rope, dynamic=True) if cuda else apply_rope
    compiled_swiglu = torch.compile(swiglu, dynamic=True) if cuda else swiglu
    res: dict[str, Any] = {**run.header(), "dtype": str(dtype), "heads": H, "head_dim": D,
                           "intermediate": inter, "rope": {}, "swiglu": {}, "cache_write": {}}
    g = torch.Generator(device=device).manual_seed(0)
    for m in rows:
        B = 1 if m <= 768 else m // 768
        T = m // B
        qkv = torch.randn(B, T, 3 * H * D, device=device, generator=g).to(dtype)
        qk = qkv[..., : 2 * H * D].view(B, T, 2 * H, D).transpose(1, 2)
        cos, sin = rope_cos_sin(torch.arange(T, device=device).expand(B, T) + 512, D, 500000.0)
        nbytes = 2 * qk.numel() * qk.element_size() + 2 * B * T * D * 4  # q/k read + written, cos/sin read
        r: dict[str, Any] = {"batch": B, "tokens": T, "bytes": nbytes}
        for name, fn in (("eager", apply_rope), ("compiled", compiled_rope), ("triton", rope_triton)):
            us = timer(lambda: fn(qk, cos, sin), calls, reps)
            r[name] = {"us": us, "GBps": nbytes / us / 1e3}
        r["triton_vs_eager"] = compare(rope_triton(qk, cos, sin), apply_rope(qk, cos, sin))
        res["rope"][str(m)] = r
        gu = torch.randn(m, 2 * inter, device=device, generator=g).to(dtype).view(B, T, 2 * inter)
        gate, up = gu[..., :inter], gu[..., inter:]
        nbytes = 3 * m * inter * gate.element_size()
        s: dict[str, Any] = {"batch": B, "tokens": T, "bytes": nbytes}
        for name, fn in (("eager", swiglu), ("compiled", compiled_swiglu), ("triton", swiglu_triton)):
            us = timer(lambda: fn(gate, up), calls, reps)
            s[name] = {"us": us, "GBps": nbytes / us / 1e3}
        s["triton_vs_eager"] = compare(swiglu_triton(gate, up), swiglu(gate, up))
        res["swiglu"][str(m)] = s
        k = qkv[..., H * D: 2 * H * D].view(B, T, H, D).transpose(1, 2)
        buf = torch.zeros(B, H, T + 1, D, device=device, dtype=dtype)
        nbytes = 2 * k.numel() * k.element_size()
        w: dict[str, Any] = {"batch": B, "tokens": T, "bytes": nbytes}
        for name, fn in (("torch", lambda: buf[:, :, :T].copy_(k)), ("triton", lambda: copy_rows_triton(buf[:, :, :T], k))):
            us = timer(fn, calls, reps)
            w[name] = {"us": us, "GBps": nbytes / us / 1e3}
        copy_rows_triton(buf[:, :, :T], k)
        w["equal"] = bool(torch.equal(buf[:, :, :T], k))
        res["cache_write"][str(m)] = w
        print(f"rows {m:6d}: rope eager {r['eager']['us']:8.1f} compiled {r['compiled']['us']:8.1f} triton "
              f"{r['triton']['us']:8.1f} us; swiglu eager {s['eager']['us']:8.1f} compiled {s['compiled']['us']:8.1f} "
              f"triton {s['triton']['us']:8.1f} us", flush=True)
    # a partial step's fed keys scattered into the canvas (prefix: block + suffix, 256 per row at
    # the first block of G256; dKV: the masked and just-committed positions)
    fed, slots = (256, 769) if cuda else (6, 17)
    res["cache_scatter"] = {}
    for B in ([1, 8, 32] if cuda else [1, 2]):
        k = torch.randn(B, fed, 3 * H, D, device=device, generator=g).to(dtype)[:, :, H: 2 * H].transpose(1, 2)
        index = torch.stack([torch.randperm(slots - 1, device=device, generator=g)[:fed].sort().values for _ in range(B)])
        buf = torch.zeros(B, H, slots, D, device=device, dtype=dtype)
        spread = index[:, None, :, None].expand(-1, H, -1, D)
        nbytes = 2 * k.numel() * k.element_size()
        w = {"batch": B, "fed": fed, "bytes": nbytes}
        for name, fn in (("torch", lambda: buf.scatter_(2, spread, k)), ("triton", lambda: copy_rows_triton(buf, k, index))):
            us = timer(fn, calls, reps)
            w[name] = {"us": us, "GBps": nbytes / us / 1e3}
        want = buf.clone().zero_().scatter_(2, spread, k)
        buf.zero_()
        copy_rows_triton(buf, k, index)
        w["equal"] = bool(torch.equal(buf, want))
        res["cache_scatter"][str(B)] = w
    res["wall_s"] = time.perf_counter() - t0
    run.finish("elementwise_kernels", res, report(res), args.out_dir)
    return res


def report(res: dict[str, Any]) -> str:
    lines = [f"elementwise_kernels {res['date']} on {res['device']} (torch {res['torch']}), {res['dtype']}; "
             f"RoPE over {2 * res['heads']} heads of {res['head_dim']} (joined q/k view), SwiGLU over "
             f"{res['intermediate']} columns (joined gate/up halves); us per call in a CUDA graph (GB/s moved)"]
    for kernel in ("rope", "swiglu"):
        lines += [f"{kernel}:", "| rows | eager | compiled | triton | compiled / triton | triton == eager |",
                  "|---|---|---|---|---|---|"]
        for m, r in res[kernel].items():
            cells = [f"{r[k]['us']:.1f} ({r[k]['GBps']:.0f})" for k in ("eager", "compiled", "triton")]
            cmp_ = r["triton_vs_eager"]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {r['compiled']['us'] / r['triton']['us']:.2f}x | "
                         f"{100 * cmp_['equal_share']:.2f}% (max diff {cmp_['max_abs_diff']:.2g}) |")
    lines += ["cache write of a full forward's keys (one layer):", "| rows | torch copy | triton | torch / triton | equal |",
              "|---|---|---|---|---|"]
    for m, w in res.get("cache_write", {}).items():
        lines.append(f"| {m} | {w['torch']['us']:.1f} ({w['torch']['GBps']:.0f}) | {w['triton']['us']:.1f} "
                     f"({w['triton']['GBps']:.0f}) | {w['torch']['us'] / w['triton']['us']:.2f}x | {w['equal']} |")
    if res.get("cache_scatter"):
        lines += ["a partial step's fed keys scattered to their canvas slots (one layer's keys):",
                  "| batch x fed | torch scatter_ | triton | torch / triton | equal |", "|---|---|---|---|---|"]
        for w in res["cache_scatter"].values():
            lines.append(f"| {w['batch']} x {w['fed']} | {w['torch']['us']:.1f} ({w['torch']['GBps']:.0f}) | "
                         f"{w['triton']['us']:.1f} ({w['triton']['GBps']:.0f}) | {w['torch']['us'] / w['triton']['us']:.2f}x "
                         f"| {w['equal']} |")
    lines.append(f"wall {res['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
