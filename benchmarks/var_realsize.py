"""VAR at real size with random weights: time and KV memory of the full cache, ScaleKV budgets,
and CoDe (d30 drafter + d16 refiner) against d30 alone, in one run.

Shapes are the official ones (VAR-d30: 2.0B parameters, width 1920, 30 heads; VAR-d16; the
VQ-VAE with ch 160, vocabulary 4096, 32 latent channels; 256x256, patch numbers 1..16, 680
tokens); weights are random (time per scale does not depend on them), in bfloat16. Sampling
uses the reference demo's settings (cfg 4, top-k 900, top-p 0.95). Reported: generation
time per batch (median, no per-step sync, VQ-VAE decoding excluded and timed apart), speedup,
the KV cache's peak bytes (what it holds at its fullest) and the device's peak memory above
the weights.

    python benchmarks/var_realsize.py --out var_realsize.json      # needs a GPU

Committed results are named by benchmark, date and machine (benchmarks/README.md),
e.g. ``benchmarks/results/var_realsize_2026-11-25_h100_b64.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from paradecode.caches.scalekv import ScaleKV, ScaleKVConfig
from paradecode.loop import synchronize as sync
from paradecode.vision import calibrate_scalekv as calibrate
from paradecode.vision import VAR, VARConfig, VQVAE, VQVAEConfig, generate


def build(depth: int, vae: VQVAE, dtype: torch.dtype, device: str) -> VAR:
    with torch.device(device):
        var = VAR(VARConfig.official(depth, drop_path_rate=0.0), vae=vae)
    var.init_weights()
    return var.to(dtype).eval()


def timed(fn: Callable, repeats: int, device: str) -> tuple[float, Any, int]:
    fn(0)  # warm-up
    times, out, peak, cuda = [], None, 0, device == "cuda"
    for r in range(repeats):
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        t = time.perf_counter()
        out = fn(r + 1)
        sync(device)
        times.append(time.perf_counter() - t)
        peak = max(peak, torch.cuda.max_memory_allocated() - base if cuda else 0)
    return statistics.median(times), out, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--refiner-depth", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.10])
    p.add_argument("--draft-steps", type=int, nargs="+", default=[8, 6])
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--device", default="cuda")
    p.add_argument("--vae-ch", type=int, default=160, help="VQ-VAE width (160 = official; smaller for CPU smoke tests)")
    p.add_argument("--out", default="results/var_realsize.json")
    args = p.parse_args()
    dev, dtype = args.device, torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    with torch.device(dev):
        vae = VQVAE(VQVAEConfig(ch=args.vae_ch)).eval()
    big = build(args.depth, vae, dtype, dev)
    small = build(args.refiner_depth, vae, dtype, dev)
    opts = dict(cfg=args.cfg, top_k=args.top_k, top_p=args.top_p)
    labels = torch.arange(args.batch, device=dev) * 61 % 1000
    t0 = time.perf_counter()
    plan = calibrate(big, vae, [1, 250, 500, 750], ScaleKVConfig(), **opts)
    calib_s = time.perf_counter() - t0
    runs: dict[str, Callable] = {f"VAR-d{args.depth} full cache": lambda s: generate(big, labels, seed=s, decode=False, timing=False, **opts)}
    for b in args.budgets:
        pol = ScaleKV(ScaleKVConfig(budget=b), plan)
        runs[f"VAR-d{args.depth} ScaleKV {round(b * 100)}%"] = (
            lambda s, pol=pol: generate(big, labels, seed=s, cache=pol, decode=False, timing=False, **opts)
        )
    for n in args.draft_steps:
        runs[f"CoDe d{args.depth}+d{args.refiner_depth}, N={n}"] = (
            lambda s, n=n: generate(big, labels, "code", refiner=small, draft_steps=n, seed=s, decode=False,
                                    timing=False, **opts)
        )
    runs[f"VAR-d{args.refiner_depth} alone"] = lambda s: generate(small, labels, seed=s, decode=False, timing=False, **opts)
    rows = []
    for name, fn in runs.items():
        with torch.inference_mode():
            sec, out, peak = timed(fn, args.repeats, dev)
        row = dict(setting=name, seconds_per_batch=sec, images_per_second=args.batch / sec,
                   kv_peak_bytes=max(out.trace.extra("kv_peak_bytes")), device_peak_bytes_above_weights=peak,
                   nfe=out.trace.nfe_by_role)
        rows.append(row)
        print(json.dumps(row), flush=True)
    # per-scale time with per-step sync (the loop's trace) for the full model and CoDe
    per_scale = {}
    for name in (rows[0]["setting"], f"CoDe d{args.depth}+d{args.refiner_depth}, N={args.draft_steps[0]}"):
        kw = dict(refiner=small, draft_steps=args.draft_steps[0]) if name.startswith("CoDe") else {}
        out = generate(big, labels, "code" if kw else "var", seed=1, decode=False, timing=True, **kw, **opts)
        per_scale[name] = [round(r.seconds * 1e3, 2) for r in out.trace.records]
    with torch.inference_mode():
        f_hat = out.f_hat
        vae.fhat_to_img(f_hat)
        sync(dev)
        t = time.perf_counter()
        vae.fhat_to_img(f_hat)
        sync(dev)
        decode_s = time.perf_counter() - t
    full = rows[0]
    for r in rows:
        r["speedup"] = full["seconds_per_batch"] / r["seconds_per_batch"]
        r["kv_ratio"] = r["kv_peak_bytes"] / full["kv_peak_bytes"]
        r["device_mem_ratio"] = r["device_peak_bytes_above_weights"] / max(1, full["device_peak_bytes_above_weights"])
    result = dict(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", batch=args.batch, dtype="bfloat16", options=opts,
                  calibration_seconds=calib_s, decode_seconds_per_batch=decode_s, per_scale_ms=per_scale,
                  scalekv_drafters=plan.drafters, rows=rows, command="python benchmarks/var_realsize.py " +
                  " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                           for k, v in vars(args).items() if k != "out"))
    lines = ["| setting | time/batch | img/s | speedup | KV peak | KV vs full | device peak above weights |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['seconds_per_batch'] * 1e3:.0f} ms | {r['images_per_second']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['kv_peak_bytes'] / 2**30:.2f} GiB | {r['kv_ratio'] * 100:.0f}% | "
                     f"{r['device_peak_bytes_above_weights'] / 2**30:.2f} GiB |")
    md = "\n".join(lines) + "\n"
    outp = Path(args.out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.write_text(json.dumps(result, indent=2) + "\n")
    outp.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
