"""``paradecode image``: the VAR / CoDe / ScaleKV comparison grid with the shipped models."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "image", help="VAR demo grid: full model, CoDe at two depths, ScaleKV at two budgets",
        description="Generate one image per class with the shipped shapes models under several strategies "
                    "(same seed and classes) and write a captioned PNG grid.",
    )
    p.add_argument("--out", default="grid.png", help="PNG to write")
    p.add_argument("--models", default=None, help="checkpoint directory (default: the shipped shapes32 models)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, nargs="+", default=None, help="class ids (default: all ten)")
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--draft-steps", type=int, nargs=2, default=[5, 4], help="CoDe drafting depths N")
    p.add_argument("--budgets", type=float, nargs=2, default=[0.25, 0.10], help="ScaleKV budgets (fractions)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .demo import render_grid, run_comparison
    from .shapes import NUM_CLASSES
    from .zoo import load_shapes_models

    models = load_shapes_models(args.models, device=args.device)
    labels = args.classes if args.classes is not None else list(range(NUM_CLASSES))
    rows = run_comparison(models, labels, seed=args.seed, draft_steps=args.draft_steps, budgets=args.budgets,
                          cfg=args.cfg, top_k=args.top_k, top_p=args.top_p)
    render_grid(rows, labels).save(args.out)
    for r in rows:
        print(json.dumps(dict(setting=r.name, ms=round(r.seconds * 1e3, 1), kv_peak_bytes=r.kv_peak_bytes,
                              class_accuracy=r.accuracy, psnr_vs_full=r.psnr_vs_full)))
    print(f"wrote {args.out}")
    return 0
