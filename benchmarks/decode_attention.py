"""One layer's RoPE + cache write + attention: the Triton kernels against the SDPA path.

For each shape (the Llama-3.2-1B draft's one- and two-token steps, the Llama-3.1-8B target's
k + 1 = 6 token verify, at batch 1 and 4; a dual-cache step of LLaDA-8B and Dream-7B, 32 block
tokens over a 768-position canvas), both paths run on the same inputs and cache:

* ``sdpa``: what ``LlamaLM``'s fused forward runs per layer today: ``rope_joined`` (one RoPE
  call over q and k), the cache write (``StaticKVCache.update``) and ``_attend`` (SDPA with
  the cache's additive key mask; the mask is built once per forward, outside the timed layer).
* ``triton``: :func:`paradecode.models.decode_attention.rope_cache_attention`, one kernel.

The dual-cache shapes compare ``rope_joined``, the canvas cache's scatter of the block's k/v
and SDPA over the canvas (``cached_attention``'s ops under CUDA graphs) with
:func:`~paradecode.models.decode_attention.canvas_attention` (two kernels).

Reported per shape: the largest difference of the outputs and of the written cache slots (bf16
rounding), and microseconds per layer, each path captured in a CUDA graph of ``--layers``
layers (as a forward replays them) and replayed; the ratio is measured in the same run.

    PYTHONPATH=. python benchmarks/decode_attention.py --out-dir OUT
    PYTHONPATH=. python benchmarks/decode_attention.py --smoke      # CPU: Triton's interpreter, float16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton reads it

import torch

from paradecode.bench.results_file import write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paradecode.caches.static_kv import StaticKVCache  # noqa: E402
from paradecode.loop import synchronize as sync  # noqa: E402
from paradecode.models.attention import sdpa  # noqa: E402
from paradecode.models.decode_attention import canvas_attention, rope_cache_attention, rope_cache_splits  # noqa: E402
from paradecode.speculative.causal_lm import bucket_length  # noqa: E402
from paradecode.models.graphs import capture_graph  # noqa: E402
from paradecode.models.llada import compile_elementwise, rope_joined, split_qkv  # noqa: E402
from paradecode.models.llama import _additive_mask, _attend, _pack_mask, gqa_mode  # noqa: E402

# name: (heads, kv heads, head dim, new tokens T, slots written before the step)
SHAPES = {
    "draft-1b T=1": (32, 8, 64, 1, 100),
    "draft-1b T=2": (32, 8, 64, 2, 100),
    "target-8b T=6": (32, 8, 128, 6, 100),
}
# name: (heads, kv heads, head dim, block tokens, canvas length): a dual-cache step at P512/G256
CANVAS_SHAPES = {
    "llada-8b dual": (32, 32, 128, 32, 768),
    "dream-7b dual": (28, 4, 128, 32, 768),
}


def make(B: int, H: int, Hkv: int, D: int, T: int, length: int, S: int, dtype, device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    qkv = torch.randn(B, T, (H + 2 * Hkv) * D, generator=g).to(device, dtype)
    pos = (length + torch.arange(T)).expand(B, T).to(device)
    inv = 1.0 / (500000.0 ** (torch.arange(0, D, 2, device=device).float() / D))
    f = pos[..., None].float() * inv
    emb = torch.cat((f, f), -1)[:, None]
    cache = StaticKVCache(1, B, Hkv, S, D, dtype, device)
    cache.k[0].copy_(torch.randn(cache.k[0].shape, generator=g).to(device, dtype))
    cache.v[0].copy_(torch.randn(cache.v[0].shape, generator=g).to(device, dtype))
    cache.length.fill_(length)
    return qkv, emb.cos(), emb.sin(), cache


def sdpa_layer(qkv, cos, sin, cache, H, Hkv, D, mode, bias, packed):
    q, k, v = rope_joined(qkv, H, Hkv, D, cos, sin)
    k, v, _ = cache.update(0, k, v, None)
    return _attend(q, k, v, bias, D ** -0.5, mode, packed)


def triton_layer(qkv, cos, sin, cache, H, Hkv, D):
    q, k, v = split_qkv(qkv, H, Hkv, D)
    return cache.attend(0, q, k, v, cos, sin, H, D ** -0.5)


def graph_us(fn, layers: int, replays: int) -> float:
    """Microseconds per call of ``fn`` captured ``layers`` times in one CUDA graph."""
    graph, _ = capture_graph(lambda: [fn() for _ in range(layers)])
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(replays):
        graph.replay()
    torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - t) / (replays * layers)


def run_shape(name, B, args, device, dtype, length: int | None = None) -> dict:
    """One shape at ``length`` cached slots (None: the shape's own), in a cache of ``--slots``
    or the bucket that holds them."""
    H, Hkv, D, T, own = SHAPES[name]
    length = own if length is None else length
    S = max(args.slots, bucket_length(length + T + 1))
    mode = gqa_mode(H, Hkv, D, dtype, device)
    qkv, cos, sin, c1 = make(B, H, Hkv, D, T, length, S, dtype, device)
    _, _, _, c2 = make(B, H, Hkv, D, T, length, S, dtype, device)
    c1.begin_forward(cos[:, 0, :, 0])
    bias = _additive_mask(c1._mask, dtype)
    packed = _pack_mask(bias, H // Hkv) if mode == "pack" else None
    ref = sdpa_layer(qkv, cos, sin, c1, H, Hkv, D, mode, bias, packed)
    out = triton_layer(qkv, cos, sin, c2, H, Hkv, D)
    sync(device)
    new = slice(length, length + T)
    row = {"shape": name, "batch": B, "gqa_mode": mode, "length": length, "slots": S,
           "splits": rope_cache_splits(B, T, H, Hkv, S, device),
           "max_abs_diff_out": float((out.float() - ref.float()).abs().max()),
           "max_abs_ref_out": float(ref.float().abs().max()),
           "max_abs_diff_k_written": float((c1.k[0][:, :, new].float() - c2.k[0][:, :, new].float()).abs().max()),
           "max_abs_diff_v_written": float((c1.v[0][:, :, new].float() - c2.v[0][:, :, new].float()).abs().max())}
    if device.type == "cuda":
        row["sdpa_us"] = graph_us(lambda: sdpa_layer(qkv, cos, sin, c1, H, Hkv, D, mode, bias, packed),
                                  args.layers, args.replays)
        row["triton_us"] = graph_us(lambda: triton_layer(qkv, cos, sin, c2, H, Hkv, D), args.layers, args.replays)
        row["sdpa_over_triton"] = row["sdpa_us"] / row["triton_us"]
        q, k, v = split_qkv(qkv, H, Hkv, D)
        row["triton_us_by_split"] = {
            n: graph_us(lambda: rope_cache_attention(q, k, v, cos, sin, c2.k[0], c2.v[0], c2.length, c2.start, H, Hkv,
                                                     D, D ** -0.5, n_split=n), args.layers, args.replays)
            for n in args.cache_splits}
    return row


def run_canvas_shape(name, B, args, device, dtype) -> dict:
    H, Hkv, D, T, L = CANVAS_SHAPES[name]
    g = torch.Generator(device="cpu").manual_seed(0)
    qkv = torch.randn(B, T, (H + 2 * Hkv) * D, generator=g).to(device, dtype)
    start = 512  # the first block of the generation
    widx = (start + torch.arange(T)).expand(B, T).contiguous().to(device)
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device=device).float() / D))
    f = widx[..., None].float() * inv
    emb = torch.cat((f, f), -1)[:, None]
    cos, sin = emb.cos(), emb.sin()
    kc = torch.randn(B, Hkv, L + 1, D, generator=g).to(device, dtype)
    vc = torch.randn(B, Hkv, L + 1, D, generator=g).to(device, dtype)
    caches = [(kc.clone(), vc.clone()), (kc, vc)]
    index = widx[:, None, :, None].expand(-1, Hkv, -1, D)
    rep = H // Hkv

    def sdpa_layer():
        kb, vb = caches[0]
        q, k, v = rope_joined(qkv, H, Hkv, D, cos, sin)
        kb.scatter_(2, index, k)
        vb.scatter_(2, index, v)
        ks, vs = kb[:, :, :L], vb[:, :, :L]
        if rep != 1:
            ks, vs = ks.repeat_interleave(rep, dim=1), vs.repeat_interleave(rep, dim=1)
        return sdpa(q, ks, vs, None).transpose(1, 2).reshape(B, T, H * D)

    def triton_layer(n_split=None, block_n=None):
        kb, vb = caches[1]
        q, k, v = split_qkv(qkv, H, Hkv, D)
        return canvas_attention(q, k, v, cos, sin, kb, vb, widx, None, H, Hkv, D, D ** -0.5, block_n=block_n,
                                n_split=n_split)

    ref, out = sdpa_layer(), triton_layer()
    sync(device)
    new = slice(start, start + T)
    (k1, v1), (k2, v2) = caches
    row = {"shape": name, "batch": B, "max_abs_diff_out": float((out.float() - ref.float()).abs().max()),
           "max_abs_ref_out": float(ref.float().abs().max()),
           "max_abs_diff_k_written": float((k1[:, :, new].float() - k2[:, :, new].float()).abs().max()),
           "max_abs_diff_v_written": float((v1[:, :, new].float() - v2[:, :, new].float()).abs().max())}
    if device.type == "cuda":
        row["sdpa_us"] = graph_us(sdpa_layer, args.layers, args.replays)
        row["triton_us"] = graph_us(triton_layer, args.layers, args.replays)
        row["sdpa_over_triton"] = row["sdpa_us"] / row["triton_us"]
        # the kernels' settings: splits over the canvas x key block (the default picks ~1 program per SM)
        row["triton_us_by_split_block"] = {
            f"{n}x{bn}": graph_us(lambda n=n, bn=bn: triton_layer(n, bn), args.layers, args.replays)
            for n in args.canvas_splits for bn in args.canvas_block_n}
    return row


def report(rows: list[dict], info: dict) -> str:
    sweeps = [f"  {r['shape']} batch {r['batch']}, canvas_attention by splits x key block: "
              + ", ".join(f"{k} {us:.2f} us" for k, us in r["triton_us_by_split_block"].items())
              for r in rows if r.get("triton_us_by_split_block")]
    sweeps += [f"  {r['shape']} batch {r['batch']} at {r['length']} slots, rope_cache_attention by splits: "
               + ", ".join(f"{k} {us:.2f} us" for k, us in r["triton_us_by_split"].items())
               for r in rows if r.get("triton_us_by_split")]
    lines = [f"one layer's RoPE + cache write + attention: {info}",
             f"{'shape':<16} {'B':>2} {'cached':>6} {'splits':>6} {'sdpa us':>8} {'triton us':>9} {'ratio':>6} "
             f"{'|diff| out':>10} {'k':>8} {'v':>8}"]
    for r in rows:
        t = (f"{r['sdpa_us']:>8.2f} {r['triton_us']:>9.2f} {r['sdpa_over_triton']:>6.2f}" if "sdpa_us" in r
             else f"{'-':>8} {'-':>9} {'-':>6}")
        lines.append(f"{r['shape']:<16} {r['batch']:>2} {r.get('length', '-'):>6} {r.get('splits', '-'):>6} {t} "
                     f"{r['max_abs_diff_out']:>10.2e} "
                     f"{r['max_abs_diff_k_written']:>8.1e} {r['max_abs_diff_v_written']:>8.1e}")
    return "\n".join(lines + sweeps) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton's interpreter, float16, batch 1 (a check of the script)")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--canvas-batches", default="1,8", help="batches of the dual-cache shapes")
    ap.add_argument("--canvas-splits", default="", help="also time canvas_attention with these split counts, e.g. 1,2,4,8,16")
    ap.add_argument("--canvas-block-n", default="64", help="key block sizes of that sweep, e.g. 32,64,128")
    ap.add_argument("--slots", type=int, default=192, help="cache slots per row (the bench's 32 + 96 + k + 2, rounded to 64)")
    ap.add_argument("--lengths", default="", help="cached slots before the step for the draft / verify shapes, e.g. "
                                                  "100,2000,8000 (default: each shape's own, 100)")
    ap.add_argument("--cache-splits", default="", help="also time rope_cache_attention with these split counts, e.g. 1,2,4,8")
    ap.add_argument("--layers", type=int, default=32, help="layers captured per graph")
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--compile-elementwise", action="store_true", help="the SDPA path's RoPE and cache write compiled")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float16 if args.smoke else torch.bfloat16  # the interpreter's bf16 dot is wrong
    if args.smoke:
        args.batches, args.canvas_batches = "1", "1"
    args.canvas_splits = [int(n) for n in args.canvas_splits.split(",") if n]
    args.canvas_block_n = [int(n) for n in args.canvas_block_n.split(",") if n]
    args.cache_splits = [int(n) for n in args.cache_splits.split(",") if n]
    lengths = [int(n) for n in args.lengths.split(",") if n] or [None]
    if args.compile_elementwise:
        compile_elementwise()
    rows = [run_shape(name, int(B), args, device, dtype, n) for n in lengths for B in args.batches.split(",")
            for name in SHAPES]
    rows += [run_canvas_shape(name, int(B), args, device, dtype) for B in args.canvas_batches.split(",")
             for name in CANVAS_SHAPES]
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)",
            "dtype": str(dtype), "torch": torch.__version__, "slots": args.slots,
            "compile_elementwise": args.compile_elementwise}
    text = report(rows, info)
    print(text, flush=True)
    if args.out_dir:
        machine = "h200" if "H200" in info["device"] else ("cpu" if device.type == "cpu" else "gpu")
        write_results(args.out_dir, f"decode_attention_{time.strftime('%Y-%m-%d', time.gmtime())}_{machine}",
                      {"info": info, "rows": rows}, text)


if __name__ == "__main__":
    main()
