"""``paradecode bench``: steps-to-quality sweeps from the command line.

    paradecode bench --strategies lowconf,threshold --n 500 --out results.json --plot curves.png
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..cli import _parse_value


def parse_sweep(items: list[str]) -> dict[str, dict[str, list[Any]]]:
    """``["threshold:threshold=0.9,0.7", "lowconf:steps=32,8"]`` ->
    ``{"threshold": {"threshold": [0.9, 0.7]}, "lowconf": {"steps": [32, 8]}}``."""
    out: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        strategy, sep, rest = item.partition(":")
        knob, eq, values = rest.partition("=")
        if not sep or not eq or not values:
            raise ValueError(f"--sweep {item!r} must look like STRATEGY:KNOB=V1,V2,... (e.g. threshold:threshold=0.9,0.7)")
        out.setdefault(strategy.strip(), {})[knob.strip()] = [_parse_value(v.strip()) for v in values.split(",")]
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    from .runner import format_summary, run_bench

    result = run_bench(
        args.model,
        strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
        n=args.n, seed=args.seed, batch_size=args.batch_size, device=args.device,
        sweeps=parse_sweep(args.sweep) or None, out=args.out, plot=args.plot, progress=not args.quiet,
    )
    print(f"model {result['model']}, N={result['n']} per task, seed {result['seed']}, device {result['device']}")
    print(f"{'strategy':12s} {'setting':22s} {'task':9s} {'accuracy':>8s} {'NFE':>7s} {'tok/fwd':>7s} {'seconds':>8s}")
    for r in result["rows"]:
        print(f"{r['strategy']:12s} {r['setting']:22s} {r['task']:9s} {r['accuracy']:8.1%} {r['nfe']:7.1f} "
              f"{r['tokens_per_forward']:7.2f} {r['seconds']:8.2f}")
    print("\nFewest forwards within 1 point of the full-step lowconf baseline:")
    print(format_summary(result["summary"]))
    if args.out:
        print(f"\nwrote {args.out}")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to ``paradecode``'s parser."""
    p = subparsers.add_parser("bench", help="steps-to-quality sweep of strategies on verifiable tasks",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a shipped model name or checkpoint directory (default: the best shipped model)")
    p.add_argument("--strategies", default="lowconf,threshold", help="comma-separated strategy names")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: the model's tasks)")
    p.add_argument("--n", type=int, default=500, help="problems per task")
    p.add_argument("--seed", type=int, default=0, help="seed of the problems")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sweep", action="append", default=[],
                   help="override a strategy's sweep: STRATEGY:KNOB=V1,V2,... (repeatable)")
    p.add_argument("--out", default=None, help="results table: .json (everything) or .csv (rows)")
    p.add_argument("--plot", default=None, help="steps-to-quality PNG: accuracy vs NFE per task")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
