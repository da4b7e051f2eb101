"""Quality, speed and KV memory of VAR / CoDe / ScaleKV on the shipped (trained) shapes models.

For each setting the same class labels and seeds are generated; reported per setting:
classifier accuracy (does the image show the asked class), Fréchet distance in the
classifier's feature space against real procedural images, PSNR / SSIM against the full
large model's image from the same seed, time per batch and speedup (median of timed runs,
no per-step sync), KV-cache peak (bytes the cache holds at its fullest) and device peak
memory above the weights.

    python benchmarks/var_trained.py --device cuda --out var_trained.json
    python benchmarks/var_trained.py --n-images 200 --time-batch 32      # CPU, ~a minute
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
from paradecode.vision import generate
from paradecode.vision.metrics import frechet_distance, psnr, ssim
from paradecode.vision.shapes import NUM_CLASSES, make_shapes
from paradecode.vision.zoo import load_shapes_models


def settings(m, opts: dict, window: int, draft_depths: list[int], budgets: list[float]) -> dict[str, Callable]:
    plan = calibrate(m.large, m.vae, None, ScaleKVConfig(window_size=window), **opts)
    out: dict[str, Callable] = {
        "VAR large (full cache)": lambda y, s, **kw: generate(m.large, y, seed=s, **opts, **kw),
        "VAR small alone": lambda y, s, **kw: generate(m.small, y, seed=s, **opts, **kw),
    }
    refiners = [("small", m.small)] + ([("specialised refiner", m.refiner)] if m.refiner is not None else [])
    for rname, ref in refiners:
        for n in draft_depths:
            out[f"CoDe large->{rname}, N={n}"] = (
                lambda y, s, n=n, ref=ref, **kw: generate(m.large, y, "code", refiner=ref, draft_steps=n, seed=s,
                                                          **opts, **kw)
            )
    for b in budgets:
        policy = ScaleKV(ScaleKVConfig(budget=b, window_size=window), plan)
        out[f"ScaleKV {round(b * 100)}% (large)"] = (
            lambda y, s, policy=policy, **kw: generate(m.large, y, seed=s, cache=policy, **opts, **kw)
        )
    return out


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    dev = args.device
    m = load_shapes_models(args.models, device=dev)
    opts = dict(cfg=args.cfg, top_k=args.top_k, top_p=args.top_p)
    runs = settings(m, opts, args.window, args.draft_steps, args.budgets)
    g = torch.Generator(device=dev).manual_seed(12345)
    real, _ = make_shapes(args.n_real, 32, generator=g, device=dev)
    with torch.no_grad():
        real_feats = m.classifier.features(real)
    n_batches = max(1, args.n_images // args.batch)
    labels = [torch.arange(args.batch, device=dev) % NUM_CLASSES for _ in range(n_batches)]
    rows, reference = [], None
    for name, fn in runs.items():
        t0 = time.perf_counter()
        imgs, peaks = [], []
        for b in range(n_batches):
            out = fn(labels[b], 1000 + b, timing=False)
            imgs.append(out.images)
            peaks.append(max(out.trace.extra("kv_peak_bytes")))
        imgs = torch.cat(imgs)
        ys = torch.cat(labels)
        with torch.no_grad():
            logits = m.classifier(imgs * 2 - 1)
            feats = m.classifier.features(imgs * 2 - 1)
        row: dict[str, Any] = dict(
            setting=name, images=len(imgs), accuracy=float((logits.argmax(-1) == ys).float().mean()),
            frechet=frechet_distance(feats, real_feats), kv_peak_bytes_per_image=max(peaks) / args.batch,
        )
        if reference is None:
            reference = imgs
        else:
            p = psnr(imgs, reference)
            row.update(psnr=float(p[torch.isfinite(p)].mean()) if bool(torch.isfinite(p).any()) else float("inf"),
                       psnr_identical=float((~torch.isfinite(p)).float().mean()),
                       ssim=float(ssim(imgs, reference).mean()))
        # speed: median of timed runs at --time-batch, after one warm-up
        y = torch.arange(args.time_batch, device=dev) % NUM_CLASSES
        fn(y, 7, timing=False)
        times = []
        base = 0
        for r in range(args.repeats):
            if dev.startswith("cuda"):
                sync(dev)
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            sync(dev)
            t = time.perf_counter()
            out = fn(y, 7 + r, timing=False)
            sync(dev)
            times.append(time.perf_counter() - t)
        row.update(seconds_per_batch=statistics.median(times), time_batch=args.time_batch,
                   kv_peak_bytes=max(out.trace.extra("kv_peak_bytes")), nfe=out.trace.nfe_by_role)
        if dev.startswith("cuda"):
            row["device_peak_bytes_above_weights"] = torch.cuda.max_memory_allocated() - base
        row["eval_seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    full = rows[0]
    for r in rows:
        r["speedup"] = full["seconds_per_batch"] / r["seconds_per_batch"]
        r["kv_ratio"] = r["kv_peak_bytes"] / full["kv_peak_bytes"]
    return dict(device=str(torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu"), options=opts,
                window=args.window, n_real=args.n_real, rows=rows)


def markdown(result: dict[str, Any]) -> str:
    head = ("| setting | accuracy | Fréchet (clf feats) | PSNR vs full (dB) | SSIM vs full | time/batch | speedup "
            "| KV peak | KV vs full |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in result["rows"]:
        lines.append(
            f"| {r['setting']} | {r['accuracy']:.3f} | {r['frechet']:.2f} | {r.get('psnr', float('nan')):.2f} "
            f"| {r.get('ssim', float('nan')):.3f} | {r['seconds_per_batch'] * 1e3:.1f} ms | {r['speedup']:.2f}x "
            f"| {r['kv_peak_bytes'] / 2**20:.2f} MiB | {r['kv_ratio'] * 100:.0f}% |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="checkpoint directory (default: the shipped one)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--n-real", type=int, default=2000)
    p.add_argument("--time-batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--window", type=int, default=4, help="ScaleKV observation window (155 tokens in all here)")
    p.add_argument("--draft-steps", type=int, nargs="+", default=[5, 4])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.10])
    p.add_argument("--out", default="results/var_trained.json")
    args = p.parse_args()
    result = evaluate(args)
    result["command"] = "python benchmarks/var_trained.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if v is not None and k != "out"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
