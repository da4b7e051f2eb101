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

``--forward`` times whole forwards instead: a Llama-3.2-1B-shaped model (random weights, bf16,
``fuse_projections``, the one-kernel attention, elementwise kernels compiled) fed 1 and 2 tokens
against a static cache of 100 tokens, each forward captured as a CUDA graph and replayed, with
``linear="torch"`` and ``linear="triton"`` (norms, SwiGLU and residual adds folded into the
products), with the whole LM head and with VocabTrim's quarter of it, beside the forward's
weight-read time; and the largest logit difference between the two.

    PYTHONPATH=. python benchmarks/skinny_linear.py --out-dir OUT     # GPU, ~4 min
    PYTHONPATH=. python benchmarks/skinny_linear.py --forward --out-dir OUT   # GPU, ~1 min
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


# ---- whole forwards ----------------------------------------------------------------------------
FORWARD_MODELS = {  # LlamaConfig kwargs (speculative.py's 8b-1b draft; a tiny one for --smoke)
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, vocab_size=128256),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
}


def forward_compare(model_name: str, device: str, dtype: torch.dtype, rate: float, replays: int) -> dict[str, Any]:
    """Per fed-token count, head and ``linear``: microseconds per forward (graph replays on a
    GPU) and the logits' largest difference from ``linear="torch"``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from paradecode.caches.static_kv import StaticKVCache
    from paradecode.models.llama import LlamaLM
    from paradecode.models.graphs import capture_graph

    torch.manual_seed(0)
    cfg = LlamaConfig(max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=0,
                      **FORWARD_MODELS[model_name])
    with torch.device(device):
        hf = LlamaForCausalLM(cfg).to(dtype).eval()
    attention = "triton" if device == "cuda" else "sdpa"
    keep = torch.randperm(cfg.vocab_size, device=device)[: cfg.vocab_size // 4].sort().values
    out: dict[str, Any] = {"model": model_name, "attention": attention, "rows": []}
    for head, keep_ids in (("full", None), ("trim", keep)):
        lms = {lin: LlamaLM(hf, keep_ids, fuse_projections=True, attention=attention, linear=lin)
               for lin in ("torch", "triton")}
        floor = lms["torch"].weight_bytes() / rate
        for T in (1, 2):
            ids = torch.randint(1, cfg.vocab_size, (1, T), device=device)
            logits, times = {}, {}
            for lin, lm in lms.items():
                cache = StaticKVCache.for_model(lm, 1, 256)
                cache.length.fill_(100)
                fwd = lambda lm=lm, cache=cache: lm(ids, cache.positions(T), cache, 1)  # noqa: E731
                with torch.inference_mode():
                    if device == "cuda":
                        graph, res = capture_graph(fwd)
                        torch.cuda.synchronize()
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        for _ in range(replays):
                            graph.replay()
                        end.record()
                        torch.cuda.synchronize()
                        times[lin] = 1e3 * start.elapsed_time(end) / replays
                    else:
                        res = fwd()
                logits[lin] = res.float()
            row = {"head": head, "tokens": T, "read_us": 1e6 * floor,
                   "max_abs_diff_logits": (logits["triton"] - logits["torch"]).abs().max().item(),
                   "max_abs_logit": logits["torch"].abs().max().item()}
            row.update({f"{lin}_us": t for lin, t in times.items()})
            out["rows"].append(row)
            log(f"forward {model_name} {head} head, {T} token(s): {row}")
    return out


def forward_report(res: dict[str, Any]) -> str:
    lines = [f"one {res['model']} forward (attention {res['attention']}), CUDA graph replays, us:",
             f"{'head':<5} {'T':>2} {'read':>7} {'torch':>7} {'triton':>7} {'torch/triton':>12} {'|diff| logits':>13}"]
    for r in res["rows"]:
        t, k = r.get("torch_us"), r.get("triton_us")
        times = f"{t:>7.1f} {k:>7.1f} {t / k:>12.3f}" if t and k else f"{'-':>7} {'-':>7} {'-':>12}"
        lines.append(f"{r['head']:<5} {r['tokens']:>2} {r['read_us']:>7.1f} {times} {r['max_abs_diff_logits']:>13.2e}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton's interpreter, tiny float32 shapes")
    ap.add_argument("--models", default="llama-1b,llama-8b")
    ap.add_argument("--calls", type=int, default=24, help="calls per captured graph (at least the weight copies)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--l2-bytes", type=int, default=60 << 20)
    ap.add_argument("--forward", action="store_true", help="time whole 1B forwards, linear torch vs triton")
    ap.add_argument("--replays", type=int, default=200, help="--forward: graph replays per timing")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    if args.forward:
        if device == "cuda":
            from paradecode.models.llada import compile_elementwise

            compile_elementwise()  # the torch path's norms, RoPE and SwiGLU as speculative.py --compile-norm runs them
        res = forward_compare("tiny" if args.smoke else "llama-1b", device, dtype,
                              copy_rate(device) if device == "cuda" else 1e9, args.replays)
        text = forward_report(res)
        print(text, flush=True)
        if args.out_dir:
            write(args.out_dir, "skinny_linear_forward", res, text, device)
        return res
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
        write(args.out_dir, "skinny_linear", res, text, device)
    return res


def write(out_dir: str, name: str, res: dict[str, Any], text: str, device: str) -> None:
    gpu = torch.cuda.get_device_name() if device == "cuda" else ""
    machine = "h200" if "H200" in gpu else ("cpu" if device == "cpu" else "gpu")
    stem = Path(out_dir) / f"{name}_{time.strftime('%Y-%m-%d', time.gmtime())}_{machine}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".txt").write_text(text)


if __name__ == "__main__":
    main()
