"""Two pieces of a diffusion step's sampler, measured where issue 15's sampler share is decided.

1. **The k most confident positions** (``paradecode.samplers.common.topk_mask``: LLaDA's
   low-confidence schedule, and the top-1 that Fast-dLLM's threshold rule, editing and LocalLeap
   always commit). PyTorch's way (the default): a ``topk`` of the whole block and a scatter of its
   first k; the kernel's (``topk_kernel.topk_rank_mask``, ``selection_kernels(True)``): one launch.
   At 32 block positions per row and batch 1, 8, 32, with k = 4 (LLaDA's schedule at 8 steps per
   block) and k = 1 given as bool (the threshold rules' top-1).
2. **Ties on the GPU.** Rows drawn from four values (ties everywhere, committed positions at
   -inf): how many rows' sets the kernel shares with PyTorch's whole-block ``topk`` then first k
   (what ``topk_mask`` did before) and with a per-row ``torch.topk(row, k)`` (what the
   references call).
3. **The argmax-only read** (``top1_confidence(confidence=False)``, the first read of Learn2PD's
   end-of-text ranking) over LLaDA-8B's vocabulary, for several programs per multiprocessor
   (``confidence_kernel.ARGMAX_PROGRAMS_PER_SM``), with the rate it reads the logits at.

    PYTHONPATH=. python benchmarks/select_kernels.py --out-dir OUT                  # GPU, ~30 s
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/select_kernels.py --smoke     # CPU check

Writes ``select_kernels_<date>_<machine>.json`` and ``.txt``.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from benchmarks.confidence_kernel import LLADA_MASK_ID, LLADA_VOCAB, switched
from benchmarks.elementwise_kernels import KernelRun, kernel_bench_args
from paradecode.samplers import confidence_kernel
from paradecode.samplers.common import selection_kernels, topk_mask
from paradecode.samplers.topk_kernel import topk_rank_mask

PER_SM = (1, 2, 4, 8, 16, 32)


def _switched(fn: Any, kernels: bool) -> Any:
    """``fn`` with the selection kernels on or off (the default, off, restored)."""
    return switched(fn, kernels, selection_kernels, False)


def selection(rows: list[int], device: str, timer: Any, calls: int, reps: int) -> dict[str, Any]:
    g = torch.Generator(device=device).manual_seed(0)
    out: dict[str, Any] = {}
    for B in rows:
        conf = torch.rand(B, 32, dtype=torch.float64, device=device, generator=g)
        conf[:, ::3] = float("-inf")  # committed positions
        r: dict[str, Any] = {}
        for name, k in (("k4", torch.full((B,), 4, device=device)), ("top1", torch.ones(B, dtype=torch.bool, device=device))):
            ways = {on: _switched(lambda k=k: topk_mask(conf, k), on) for on in (False, True)}
            r[f"{name}_torch_us"] = timer(ways[False], calls, reps)
            r[f"{name}_kernel_us"] = timer(ways[True], calls, reps)
            r[f"{name}_equal"] = bool(torch.equal(ways[False](), ways[True]()))
        out[str(B)] = r
        print(f"batch {B}: k=4 {r['k4_torch_us']:.1f} / {r['k4_kernel_us']:.1f} us, top-1 {r['top1_torch_us']:.1f} / "
              f"{r['top1_kernel_us']:.1f} us (PyTorch / kernel)", flush=True)
    return out


def ties(device: str, rows: int = 4096, width: int = 32) -> dict[str, Any]:
    g = torch.Generator(device=device).manual_seed(1)
    conf = torch.randint(0, 4, (rows, width), device=device, generator=g).double() / 3
    conf[conf == 0] = float("-inf")
    k = torch.randint(1, width + 1, (rows,), device=device, generator=g)
    kernel = topk_rank_mask(conf, k)
    order = torch.topk(conf, width, dim=-1).indices
    ranked = torch.arange(width, device=device)[None, :] < k[:, None]
    whole = torch.empty_like(ranked).scatter_(-1, order, ranked)
    per_row = torch.zeros_like(ranked)
    for i in range(rows):
        per_row[i, torch.topk(conf[i], int(k[i])).indices] = True
    return {"rows": rows, "width": width,
            "kernel_eq_whole_block_topk": int((kernel == whole).all(-1).sum()),
            "kernel_eq_per_row_topk": int((kernel == per_row).all(-1).sum()),
            "whole_block_eq_per_row": int((whole == per_row).all(-1).sum())}


def argmax_read(positions: list[int], V: int, mask_id: int, device: str, timer: Any, calls: int, reps: int) -> dict:
    g = torch.Generator(device=device).manual_seed(2)
    out: dict[str, Any] = {}
    saved = confidence_kernel.ARGMAX_PROGRAMS_PER_SM
    try:
        for n in positions:
            logits = (3 * torch.randn(1, n, V, device=device, generator=g)).to(torch.bfloat16)
            want = None
            if n * V < 2**31:  # PyTorch's argmax with the mask column excluded, as the kernel excludes it
                ref = logits.float()
                ref[..., mask_id] = float("-inf")
                want = ref.argmax(-1)
                del ref
            r: dict[str, Any] = {}
            for per_sm in PER_SM:
                confidence_kernel.ARGMAX_PROGRAMS_PER_SM = per_sm
                us = timer(lambda: confidence_kernel.top1_confidence(logits, mask_id, confidence=False), calls, reps)
                x0 = confidence_kernel.top1_confidence(logits, mask_id, confidence=False)[0]
                r[str(per_sm)] = {"us": us, "GBps": logits.numel() * logits.element_size() / us / 1e3,
                                  "tokens_equal": None if want is None else bool(torch.equal(x0, want))}
            out[str(n)] = r
            print(f"argmax of {n} positions: " + ", ".join(f"{p}/SM {v['us']:.1f} us" for p, v in r.items()), flush=True)
    finally:
        confidence_kernel.ARGMAX_PROGRAMS_PER_SM = saved
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"select_kernels {res['date']} on {res['device']} (torch {res['torch']}); us per call in a CUDA graph",
             "k most confident of 32 positions per row (PyTorch: topk of the block + scatter; kernel: one ranking launch):",
             "| batch | k = 4: PyTorch / kernel | top-1 (bool k): PyTorch / kernel | same sets |", "|---|---|---|---|"]
    for B, r in res["selection"].items():
        lines.append(f"| {B} | {r['k4_torch_us']:.1f} / {r['k4_kernel_us']:.1f} | {r['top1_torch_us']:.1f} / "
                     f"{r['top1_kernel_us']:.1f} | {r['k4_equal'] and r['top1_equal']} |")
    t = res["ties"]
    lines.append(f"ties ({t['rows']} rows of {t['width']} from four values): the kernel's set equals the whole-block "
                 f"topk's first k in {t['kernel_eq_whole_block_topk']} rows, a per-row topk(k) in "
                 f"{t['kernel_eq_per_row_topk']}; those two agree in {t['whole_block_eq_per_row']}")
    lines += [f"argmax-only read of {res['vocab']} bfloat16 logits per position, by programs per SM: us (GB/s)",
              "| positions | " + " | ".join(f"{p}/SM" for p in PER_SM) + " |", "|---|" + "---|" * len(PER_SM)]
    for n, r in res["argmax"].items():
        lines.append(f"| {n} | " + " | ".join(f"{v['us']:.1f} ({v['GBps']:.0f})" for v in r.values()) + " |")
    lines.append(f"tokens equal to PyTorch's argmax at every setting: "
                 f"{all(v['tokens_equal'] is not False for r in res['argmax'].values() for v in r.values())}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = kernel_bench_args(__doc__, "32,256,1024,8192", "positions per argmax read", argv)
    t0 = time.perf_counter()
    run = KernelRun.from_args(args)
    cuda, device, timer, calls, reps = run.cuda, run.device, run.timer, run.calls, run.reps
    V, mask_id = (LLADA_VOCAB, LLADA_MASK_ID) if cuda else (3000, 2900)
    res: dict[str, Any] = {**run.header(), "vocab": V}
    res["selection"] = selection([1, 8, 32] if cuda else [1, 2], device, timer, calls, reps)
    res["ties"] = ties(device, *((4096, 32) if cuda else (64, 32)))
    res["argmax"] = argmax_read([int(r) for r in args.rows.split(",")] if cuda else [4, 12], V, mask_id, device,
                                timer, calls, reps)
    res["wall_s"] = time.perf_counter() - t0
    run.finish("select_kernels", res, report(res), args.out_dir)
    return res


if __name__ == "__main__":
    main()
