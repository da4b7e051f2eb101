"""A greedy low-confidence step's predictions, PyTorch's way and the fused kernel's, in one run;
and the rules' own kernels (CreditDecoding's update, Prophet's answer-window gap, Learn2PD's
end-of-text ranking, EB's and dParallel's entropy) the same way.

PyTorch's way (``paradecode.samplers.common.predict`` with ``fused_confidence(False)``) copies the
logits with the mask token at -inf, takes the argmax, a float64 softmax over the whole
vocabulary and gathers the argmax's probability. The kernel
(``paradecode.samplers.confidence_kernel.top1_confidence``) reads the logits in one pass per
chunk and writes two numbers per position. Timed at LLaDA-8B's vocabulary (126,464) over the
positions a dual-cache step predicts (32 per row) at batch 1, 8 and 32, each as back-to-back
calls captured in one CUDA graph; beside each, the rate at which the kernel reads the logits
and whether the two agree (tokens equal, largest relative confidence difference).

    PYTHONPATH=. python benchmarks/confidence_kernel.py --out-dir OUT                  # GPU, ~20 s
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/confidence_kernel.py --smoke     # CPU check

Writes ``confidence_kernel_<date>_<machine>.json`` and ``.txt``.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from benchmarks.elementwise_kernels import KernelRun, kernel_bench_args
from paradecode.samplers.common import fused_confidence, predict
from paradecode.samplers.confidence_kernel import top1_confidence

LLADA_VOCAB, LLADA_MASK_ID = 126464, 126336


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = kernel_bench_args(__doc__, "32,256,1024", "predicted positions per call (batch x 32 block tokens)", argv)
    t0 = time.perf_counter()
    run = KernelRun.from_args(args)
    cuda, device, timer, calls, reps = run.cuda, run.device, run.timer, run.calls, run.reps
    V, mask_id = (LLADA_VOCAB, LLADA_MASK_ID) if cuda else (3000, 2900)
    rows = [int(r) for r in args.rows.split(",")] if not args.smoke else [4, 12]
    res: dict[str, Any] = {**run.header(), "vocab": V, "dtype": "bfloat16", "rows": {}}
    g = torch.Generator(device=device).manual_seed(0)
    for n in rows:
        logits = (3 * torch.randn(n // 32 or 1, min(n, 32), V, device=device, generator=g)).to(torch.bfloat16)

        def torch_way() -> Any:
            fused_confidence(False)
            try:
                return predict(logits, 0.0, "low_confidence", None, mask_id)
            finally:
                fused_confidence(True)

        r: dict[str, Any] = {"positions": logits.shape[0] * logits.shape[1],
                             "torch_us": timer(torch_way, calls, reps),
                             "kernel_us": timer(lambda: top1_confidence(logits, mask_id), calls, reps)}
        r["kernel_GBps"] = logits.numel() * logits.element_size() / r["kernel_us"] / 1e3
        (x0, conf), (kx0, kconf) = torch_way(), top1_confidence(logits, mask_id)
        r["tokens_equal"] = bool(torch.equal(x0, kx0))
        r["max_rel_conf_diff"] = float(((kconf - conf).abs() / conf).max())
        res["rows"][str(n)] = r
        print(f"positions {r['positions']:5d}: torch {r['torch_us']:8.1f} us, kernel {r['kernel_us']:7.1f} us", flush=True)
    res["rules"] = rule_kernels(rows, V, mask_id, device, timer, calls, reps)
    res["wall_s"] = time.perf_counter() - t0
    run.finish("confidence_kernel", res, report(res), args.out_dir)
    return res


def switched(fn: Any, kernels: bool, switch: Any = fused_confidence, default: bool = True) -> Any:
    """``fn`` run with a process-wide kernel ``switch`` on or off (the samplers' kernels,
    ``fused_confidence``, unless another is given), its ``default`` restored."""
    def run() -> Any:
        switch(kernels)
        try:
            return fn()
        finally:
            switch(default)
    return run


def rule_kernels(rows: list[int], V: int, mask_id: int, device: str, timer: Any, calls: int, reps: int) -> dict:
    """CreditDecoding's logits adjustment, Prophet's answer-window gap, Learn2PD's end-of-text
    ranking and EB's entropy, each through the rule's own method with the samplers' kernels off
    (PyTorch) and on, at each batch (32 block positions per row; Prophet and Learn2PD over a
    256-column generation whose first masks lie in its second half)."""
    from paradecode.samplers.block import BlockView
    from paradecode.samplers.credit import CreditDecoding, CreditState
    from paradecode.samplers.eb import token_entropy
    from paradecode.samplers.prophet import Prophet

    credit_rule = CreditDecoding(CreditDecoding.Config(gen_length=256, block_length=32))
    prophet_rule = Prophet(Prophet.Config(gen_length=256, block_length=32))
    g = torch.Generator(device=device).manual_seed(1)
    out: dict[str, Any] = {}
    for n in rows:
        B = max(1, n // 32)
        logits = (3 * torch.randn(B, 32, V, device=device, generator=g)).to(torch.bfloat16)
        block = torch.full((B, 32), mask_id, device=device)
        view = BlockView(rows=torch.arange(B), logits=logits, tokens=block, mask=block == mask_id,
                         step_in_block=torch.zeros(B, dtype=torch.long), block_start=torch.zeros(B, dtype=torch.long))
        start = torch.rand(B, 32, V, device=device, generator=g) * (torch.rand(B, 32, V, device=device, generator=g) < 1e-3)
        states = {k: CreditState(B, mask_id) for k in (False, True)}
        for st in states.values():
            st.credit = start.clone()
        ways = {k: switched(lambda k=k: credit_rule.adjust_logits(view, states[k], logits), k) for k in (False, True)}
        r: dict[str, Any] = {"credit_torch_us": timer(ways[False], calls, reps), "credit_kernel_us": timer(ways[True], calls, reps)}
        for st in states.values():
            st.credit = start.clone()
        a, b = ways[False](), ways[True]()
        r["credit_max_rel_diff"] = float(((b - a).abs() / a.abs().clamp(min=1e-6)).max())
        r["credit_argmax_equal"] = bool(torch.equal(a.argmax(-1), b.argmax(-1)))
        r["credit_state_max_abs_diff"] = float((states[True].credit - states[False].credit).abs().max())
        G, P = 256, 64
        canvas = torch.randint(0, 1000, (B, P + G), device=device, generator=g)
        canvas[:, P + G // 2 :] = mask_id
        full = (3 * torch.randn(B, G, V, device=device, generator=g)).to(torch.bfloat16)
        pview = BlockView(rows=torch.arange(B), logits=logits, tokens=block, mask=block == mask_id,
                          step_in_block=torch.zeros(B, dtype=torch.long), block_start=torch.full((B,), P),
                          full_logits=full, full_start=P, canvas=canvas, gen_start=P)
        gaps = {k: switched(lambda: prophet_rule.answer_gap(pview, mask_id), k) for k in (False, True)}
        r["prophet_torch_us"] = timer(gaps[False], calls, reps)
        r["prophet_kernel_us"] = timer(gaps[True], calls, reps)
        r["prophet_max_abs_diff"] = float((gaps[True]() - gaps[False]()).abs().max())
        r.update(_end_of_text_ranking(pview, full, mask_id, timer, calls, reps))
        ent = {k: switched(lambda: token_entropy(logits, mask_id), k) for k in (False, True)}
        r["entropy_torch_us"] = timer(ent[False], calls, reps)
        r["entropy_kernel_us"] = timer(ent[True], calls, reps)
        r["entropy_max_abs_diff"] = float((ent[True]() - ent[False]()).abs().max())
        out[str(n)] = r
        print(f"rows {B}, PyTorch / kernels: " + ", ".join(
            f"{name} {r[name + '_torch_us']:.1f} / {r[name + '_kernel_us']:.1f} us" for name in ("credit", "prophet", "eot", "entropy")),
            flush=True)
    return out


def _end_of_text_ranking(view: Any, full: torch.Tensor, mask_id: int, timer: Any, calls: int, reps: int) -> dict:
    """Learn2PD's end-of-text ranking (``BlockView.full_token_confidence`` over the generation's
    columns, masked ones ranked) with the kernels off and on; the kernel again where half the
    masked columns predict end-of-text (each of them then needs its float64 sum)."""
    from paradecode.samplers.learn2pd import Learn2PD, Learn2PDState

    eos = 7
    config = Learn2PD.Config(gen_length=full.shape[1], block_length=32)
    state = Learn2PDState(full.shape[0], mask_id, eos, None)
    masked = view.canvas[:, view.gen_start :] == mask_id

    def ranking(kernels: bool) -> Any:
        def run() -> Any:
            view._full = None  # the view keeps its predictions; time them made anew
            return view.full_token_confidence(state, config, view.gen_start, eos, masked)
        return switched(run, kernels)

    r = {"eot_torch_us": timer(ranking(False), calls, reps), "eot_kernel_us": timer(ranking(True), calls, reps),
         "eot_max_abs_diff": float((ranking(True)() - ranking(False)()).abs().max())}
    half = masked & (torch.arange(full.shape[1], device=full.device) % 2 == 0)
    saved = full[..., eos].clone()
    full[..., eos] = torch.where(half, full.amax(-1) + 1, saved)
    try:
        r["eot_half_kernel_us"] = timer(ranking(True), calls, reps)
        hits = ranking(True)()
        r["eot_half_hits"] = int((hits >= 0).sum())
        r["eot_half_max_abs_diff"] = float((hits - ranking(False)()).abs().max())
    finally:
        full[..., eos] = saved
    return r


def report(res: dict[str, Any]) -> str:
    lines = [f"confidence_kernel {res['date']} on {res['device']} (torch {res['torch']}): greedy argmax and its float64 "
             f"softmax probability over {res['vocab']} {res['dtype']} logits; us per call in a CUDA graph",
             "| positions | PyTorch (forbid copy, argmax, float64 softmax, gather) | kernel (GB/s read) | PyTorch / kernel "
             "| tokens equal | max relative confidence difference |", "|---|---|---|---|---|---|"]
    for r in res["rows"].values():
        lines.append(f"| {r['positions']} | {r['torch_us']:.1f} | {r['kernel_us']:.1f} ({r['kernel_GBps']:.0f}) | "
                     f"{r['torch_us'] / r['kernel_us']:.1f}x | {r['tokens_equal']} | {r['max_rel_conf_diff']:.1e} |")
    if res.get("rules"):
        lines += ["rules' own kernels, us per call in a CUDA graph (PyTorch / kernels), and how far the two agree:",
                  "| rows | credit: softmax, credit update, fused logits | max relative difference (argmax equal) "
                  "| Prophet: answer-window gap | max absolute difference | EB / dParallel: entropy (nats) "
                  "| max absolute difference |", "|---|---|---|---|---|---|---|"]
        for n, r in res["rules"].items():
            lines.append(f"| {max(1, int(n) // 32)} | {r['credit_torch_us']:.1f} / {r['credit_kernel_us']:.1f} | "
                         f"{r['credit_max_rel_diff']:.1e} ({r['credit_argmax_equal']}) | {r['prophet_torch_us']:.1f} / "
                         f"{r['prophet_kernel_us']:.1f} | {r['prophet_max_abs_diff']:.1e} | {r['entropy_torch_us']:.1f} / "
                         f"{r['entropy_kernel_us']:.1f} | {r['entropy_max_abs_diff']:.1e} |")
    if res.get("rules") and "eot_torch_us" in next(iter(res["rules"].values())):
        lines += ["Learn2PD's end-of-text ranking over a 256-column generation (128 masked columns per row), us per call "
                  "(PyTorch: argmax and float64 softmax of every column; kernel: the argmax, then float64 sums where it is "
                  "end-of-text):", "| rows | PyTorch | kernel, no column predicts end-of-text | kernel, half the masked "
                  "columns do | max absolute difference |", "|---|---|---|---|---|"]
        for n, r in res["rules"].items():
            lines.append(f"| {max(1, int(n) // 32)} | {r['eot_torch_us']:.1f} | {r['eot_kernel_us']:.1f} | "
                         f"{r['eot_half_kernel_us']:.1f} ({r['eot_half_hits']} ranked) | "
                         f"{max(r['eot_max_abs_diff'], r['eot_half_max_abs_diff']):.1e} |")
    lines.append(f"wall {res['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
