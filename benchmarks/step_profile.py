"""Where a dLLM step's time goes beyond its forward, per rule, in one run (issue 15).

``dllm_throughput.py`` gives each rule's sampler share (1 - bare forward / step); this script
says what the rest is. LLaDA-8B's shape (random bf16, fused projections, compiled elementwise
kernels, the canvas attention kernel), the forwards replayed from CUDA graphs, the first block's
steps at 4 tokens per step (P512/G256, block 32; batch 1 unless ``--batch``), run as ``sample(timing=False)`` runs them (one
sync at the end), under ``torch.profiler``. Per rule and step:

* wall ms (timed without the profiler) and device kernel ms, by class;
* the device's idle time between kernels, in buckets (:func:`kernel_breakdown.device_gaps`):
  a gap of tens of microseconds means the device waited for the host (a read of the step's
  flags, then the host's work until the next forward);
* the host events that ran while the device waited (:func:`host_in_gaps`);
* the heaviest kernels, the forward's GEMMs and attention among them, so that the rule's
  own kernels (softmax, top-k, scatter) can be read off beside them.

    PYTHONPATH=. python benchmarks/step_profile.py --out-dir OUT                 # GPU, ~1 min
    PYTHONPATH=. python benchmarks/step_profile.py --smoke --out-dir /tmp        # CPU check of the script

Writes ``step_profile_<date>_<machine>.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from paradecode.bench.results_file import write_results

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dllm_throughput as dt  # noqa: E402
from kernel_breakdown import device_gaps, gaps_report, time_by_class  # noqa: E402

from paradecode.loop import synchronize as sync  # noqa: E402
from paradecode.models.graphs import CUDAGraphModel  # noqa: E402


def profile_rule(graphed, prompt: torch.Tensor, rule: str, cache: str, args, device: str) -> dict[str, Any]:
    """One rule's first-block steps: wall (best of two unprofiled runs), then one profiled run."""
    from torch.profiler import ProfilerActivity, profile

    steps = args.block // args.tokens_per_step
    run = lambda: dt.run_steps(graphed, prompt, args.gen, args.block, args.tokens_per_step, rule, cache,  # noqa: E731
                               steps, device, sync_each=False)
    for _ in range(2):
        run()
    wall = min(sum(run()) for _ in range(2))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        n = len(run())
        sync(device)
    cuda = device == "cuda"
    classes, kernels = time_by_class(prof, n, cuda)
    top = sorted(kernels.items(), key=lambda kv: -kv[1][2])[:args.top]
    kernel_ms = sum(classes.values())
    return {"steps": n, "wall_ms_per_step": 1e3 * wall / n, "kernel_ms_per_step": kernel_ms,
            "idle_ms_per_step": 1e3 * wall / n - kernel_ms if cuda else None,
            "kernel_ms_by_class": classes, "gaps": device_gaps(prof, n, cuda),
            "host_in_gaps": host_in_gaps(prof, n) if cuda else [],
            "top_kernels": [{"kernel": k, "class": c, "per_step": cnt, "ms_per_step": ms} for k, (c, cnt, ms) in top]}


def host_in_gaps(prof: Any, steps: int, min_gap_us: float = 50.0, top: int = 15) -> list[dict[str, Any]]:
    """What the host ran while the device idled: for every device gap of at least ``min_gap_us``
    (the device waiting for the host), the host events (aten ops, CUDA runtime calls) whose time
    overlaps it, summed by name per step, the largest first. Nested events each count (an
    ``aten::copy_`` and the ``cudaMemcpyAsync`` inside it), so the sums overlap."""
    dev = torch.autograd.DeviceType.CUDA
    busy = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                  if e.device_type == dev and e.time_range.end > e.time_range.start)
    gaps, end = [], None
    for s, e in busy:
        if end is not None and s - end >= min_gap_us:
            gaps.append((end, s))
        end = e if end is None else max(end, e)
    if not gaps:
        return []
    by_name: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type == dev:
            continue
        a, b = e.time_range.start, e.time_range.end
        for g0, g1 in gaps:
            ov = min(b, g1) - max(a, g0)
            if ov > 0:
                rec = by_name.setdefault(e.name[:90], [0.0, 0.0])
                rec[0] += 1
                rec[1] += ov
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"host_event": k, "per_step": n / steps, "overlap_ms_per_step": us / 1e3 / steps} for k, (n, us) in rows]


def report(res: dict[str, Any]) -> str:
    lines = [f"step_profile {res['date']} on {res['device']} (torch {res['torch']}): {res['shape']}, "
             f"P{res['prompt']}/G{res['gen']} block {res['block']}, {res['tokens_per_step']} tokens per step, "
             f"batch {res['batch']}, graphed forwards, steps unsynced (as sample(timing=False))"]
    for key, p in res["rules"].items():
        if "error" in p:
            lines.append(f"{key}: {p['error']}")
            continue
        classes = ", ".join(f"{c} {ms:.3f}" for c, ms in sorted(p["kernel_ms_by_class"].items(), key=lambda kv: -kv[1]))
        idle = "" if p["idle_ms_per_step"] is None else f", device idle {p['idle_ms_per_step']:.3f} ms"
        lines.append(f"{key}: {p['steps']} steps; per step wall {p['wall_ms_per_step']:.3f} ms, device kernels "
                     f"{p['kernel_ms_per_step']:.3f} ms ({classes}){idle}")
        lines.append(gaps_report(p["gaps"]).rstrip("\n"))
        if p.get("host_in_gaps"):
            lines.append("  host events overlapping the device's gaps of >= 50 us, ms per step:")
            lines += [f"    {h['overlap_ms_per_step']:7.3f} ms x{h['per_step']:5.1f}  {h['host_event']}" for h in p["host_in_gaps"]]
        lines += [f"  {t['ms_per_step']:7.3f} ms x{t['per_step']:6.1f}/step  {t['class']:<9} {t['kernel']}"
                  for t in p["top_kernels"]]
    lines.append(f"wall {res['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: a check of the script")
    ap.add_argument("--rules", default="lowconf,threshold,credit,prophet,learn2pd")
    ap.add_argument("--caches", default="dual")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1, help="rows per step (the timed steps are still the first block's)")
    ap.add_argument("--top", type=int, default=25, help="kernels listed per rule")
    ap.add_argument("--machine", default="h200")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if args.smoke:
        args.prompt, args.gen, args.block = 8, 16, 8
    model = dt.build_model(device, args.smoke)
    model.fuse_projections()
    if device == "cuda":
        from paradecode.models.llada import compile_elementwise

        model.use_attention_kernel("triton")
        compile_elementwise()
    graphed = CUDAGraphModel(model, max_graphs=64, capture_after=0) if device == "cuda" else model
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, min(vocab, 100_000) - 16, (args.batch, args.prompt), generator=g).to(device)
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
        "torch": torch.__version__,
        "shape": "LLaDA-8B random bf16, fused projections, compiled elementwise, canvas attention kernel"
                 if device == "cuda" else "tiny LLaDA fp32 (smoke)",
        "prompt": args.prompt, "gen": args.gen, "block": args.block, "tokens_per_step": args.tokens_per_step,
        "batch": args.batch, "rules": {},
    }
    with torch.inference_mode():
        for cache in args.caches.split(","):
            for rule in args.rules.split(","):
                key = f"{rule}/{cache}"
                try:
                    res["rules"][key] = p = profile_rule(graphed, prompt, rule, cache, args, device)
                except Exception as exc:  # a rule a random model cannot run: keep the others
                    res["rules"][key] = {"error": repr(exc)[:300]}
                    continue
                dt.log(f"  {key}: wall {p['wall_ms_per_step']:.3f} ms/step, kernels {p['kernel_ms_per_step']:.3f} ms")
    res["wall_s"] = time.perf_counter() - t_start
    text = report(res)
    dt.log(text)
    if args.out_dir:
        stem = write_results(args.out_dir, f"step_profile_{res['date']}_{args.machine if device == 'cuda' else 'cpu-smoke'}",
                             res, text)
        dt.log(f"wrote {stem}.json/.txt")
    return res


if __name__ == "__main__":
    main()
