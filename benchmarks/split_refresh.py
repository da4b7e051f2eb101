"""Fast-dLLM's caches when rows finish blocks at different steps: mixed steps vs split steps.

Under a threshold rule each row of a batch leaves its block when its own block is decoded,
so at most steps some rows start a block (a cache refresh over the whole canvas) while the
others are inside theirs. Before ``split_refresh`` such a *mixed* step fed every row the whole
canvas (the cache then saves nothing); a *split* step runs every row at its block's width and
then the refreshing rows alone over the canvas. This runs each strategy x cache both ways on
the same prompts and reports time, forwards, tokens fed to the model, and whether the tokens
are equal (they must be).

    PYTHONPATH=. python benchmarks/split_refresh.py --smoke                   # CPU, cot-8m, 8 prompts
    PYTHONPATH=. python benchmarks/split_refresh.py --device cuda --n 500     # the cot_bench setting
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import paradecode
from paradecode.caches.blockcache import _BlockCache
from paradecode.caches.canvas import CanvasKVCache


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Counters:
    """Model calls, tokens fed (rows x width), split steps and row compactions of one run."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = self.fed = self.splits = self.compactions = 0
        self.compacted_bytes = 0
        self._hook = model.register_forward_pre_hook(self._on_forward, with_kwargs=True)
        self._patched = (CanvasKVCache._run_refresh, CanvasKVCache._compact)
        counters = self
        run_refresh, compact = self._patched

        def spy_refresh(cache, m, out):
            counters.splits += 1
            return run_refresh(cache, m, out)

        def spy_compact(cache, rows):
            counters.compactions += 1
            counters.compacted_bytes += sum(t.numel() * t.element_size() for t in cache._k + cache._v if t is not None) * len(rows) // max(1, cache._k[0].shape[0])
            return compact(cache, rows)

        CanvasKVCache._run_refresh, CanvasKVCache._compact = spy_refresh, spy_compact

    def _on_forward(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs["input_ids"]
        self.calls += 1
        self.fed += ids.shape[0] * ids.shape[1]

    def close(self) -> None:
        self._hook.remove()
        CanvasKVCache._run_refresh, CanvasKVCache._compact = self._patched


def _allocator(device: torch.device) -> dict[str, int]:
    """CUDA caching-allocator counters: device allocations (cudaMalloc) and out-of-memory retries."""
    if device.type != "cuda":
        return {}
    stats = torch.cuda.memory_stats(device)
    return {"device_allocs": stats.get("segment.all.allocated", 0), "alloc_retries": stats.get("num_alloc_retries", 0)}


def run(model, prompts, strategy: str, opts: dict, cache: str, split: bool, batch_size: int, device, count: bool) -> dict:
    _BlockCache.split_refresh = split
    before = _allocator(device)
    counters = Counters(model) if count else None
    seconds, nfe, steps, seqs = 0.0, 0.0, 0, []
    try:
        for b in range(0, len(prompts), batch_size):
            _sync(device)
            t0 = time.perf_counter()
            out = paradecode.sample(model, prompts[b : b + batch_size], strategy, cache=None if cache == "none" else cache,
                                    timing=False, **opts)
            seqs.append(out.generated.cpu())
            _sync(device)
            seconds += time.perf_counter() - t0
            nfe += float(out.trace.row_nfe.float().sum())
            steps += out.trace.steps
    finally:
        if counters is not None:
            counters.close()
        _BlockCache.split_refresh = True
    r = {"strategy": strategy, "cache": cache, "split": split, "seconds": seconds, "row_nfe": nfe / len(prompts),
         "loop_steps": steps, "tokens_per_second": len(prompts) * opts["gen_length"] / seconds,
         "generated": torch.cat([s.flatten() for s in seqs]),
         **{k: v - before[k] for k, v in _allocator(device).items()}}
    if counters is not None:
        r.update(model_calls=counters.calls, fed_tokens=counters.fed, split_steps=counters.splits,
                 compactions=counters.compactions, compacted_mb=counters.compacted_bytes / 2**20)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cot-8m", help="a shipped model's name or a model directory")
    ap.add_argument("--task", default="cot")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=None, help="prompts (default 500; --smoke: 8)")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per generation (default: --n, at most 500)")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--runs", default="lowconf:steps=256,threshold:threshold=0.95",
                    help="strategy:option=value[;option=value] items, comma separated")
    ap.add_argument("--caches", default="none,dual,prefix")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per setting (the fastest is kept)")
    ap.add_argument("--matmul-precision", default="high", choices=("highest", "high", "medium"))
    ap.add_argument("--smoke", action="store_true", help="CPU, threshold only, dual and prefix, one timed run")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.repeat, args.n = "cpu", 1, args.n or 8
        args.runs, args.caches = "threshold:threshold=0.95", "dual,prefix"
    args.n = args.n or 500
    args.batch_size = args.batch_size or min(args.n, 500)
    from paradecode.bench.tasks import get_task
    from paradecode.models.loading import load_model_and_tokenizer

    device = torch.device(args.device)
    torch.set_float32_matmul_precision(args.matmul_precision)
    model, tok = load_model_and_tokenizer(args.model, device=args.device)
    task = get_task(args.task)
    gen, block = task.gen_length, task.block_length
    prompts = [tok.encode(e.prompt) for e in task.examples(args.n, seed=args.seed)]
    runs = []
    for item in args.runs.split(","):
        name, _, rest = item.partition(":")
        opts = {k: json.loads(v) for k, v in (kv.split("=") for kv in rest.split(";") if kv)}
        runs.append((name.strip(), dict(opts, gen_length=gen, block_length=block)))
    caches = [c.strip() for c in args.caches.split(",") if c.strip()]
    for cache in caches:  # warm-up: kernels and allocator
        paradecode.sample(model, prompts[:8], "lowconf", cache=None if cache == "none" else cache, timing=False,
                          gen_length=gen, block_length=block, steps=gen // block * 2)
    print(f"model {args.model}, task {args.task}, N={args.n}, batch {args.batch_size}, device {device}", flush=True)
    print(f"{'strategy':10} {'cache':7} {'step':6} {'seconds':>8} {'tok/s':>8} {'row NFE':>7} {'loop':>5} "
          f"{'calls':>6} {'fed ktok':>8} {'splits':>6} {'compact':>7} {'MB':>7}  same   runs (s, counted run first)")
    rows = []
    for strategy, opts in runs:
        for cache in caches:
            ref = None
            for split in ([True] if cache == "none" else [False, True]):
                counted = run(model, prompts, strategy, opts, cache, split, args.batch_size, device, count=True)
                timed = [run(model, prompts, strategy, opts, cache, split, args.batch_size, device, count=False)
                         for _ in range(args.repeat - 1)]
                best = min([counted] + timed, key=lambda r: r["seconds"])
                r = dict(counted, seconds=best["seconds"], tokens_per_second=best["tokens_per_second"],
                         run_seconds=[x["seconds"] for x in [counted] + timed],
                         run_device_allocs=[x.get("device_allocs") for x in [counted] + timed])
                same = "" if ref is None else str(torch.equal(ref, r["generated"]))
                ref = r.pop("generated") if ref is None else ref
                r.pop("generated", None)
                r["same_tokens_as_mixed"] = same or None
                rows.append(r)
                kind = "-" if cache == "none" else ("split" if split else "mixed")
                print(f"{strategy:10} {cache:7} {kind:6} {r['seconds']:8.2f} {r['tokens_per_second']:8.0f} "
                      f"{r['row_nfe']:7.1f} {r['loop_steps']:5d} {r['model_calls']:6d} {r['fed_tokens'] / 1e3:8.1f} "
                      f"{r['split_steps']:6d} {r['compactions']:7d} {r['compacted_mb']:7.0f}  {same:5}  runs "
                      + " ".join(f"{t:.2f}" for t in r["run_seconds"])
                      + ("" if device.type != "cuda" else "  cudaMallocs " + " ".join(map(str, r["run_device_allocs"]))),
                      flush=True)
    if any(r["same_tokens_as_mixed"] == "False" for r in rows):
        print("ERROR: split steps changed tokens", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python benchmarks/split_refresh.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
