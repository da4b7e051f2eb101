"""The ``paradecode`` command line. Subcommands register in ``COMMANDS``; each module that
adds one (bench, image) defines ``add_parser(subparsers)`` returning the handler."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional, Sequence


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["steps=64", "threshold=0.9"]`` -> ``{"steps": 64, "threshold": 0.9}``."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"option {pair!r} must look like name=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def _cmd_strategies(args: argparse.Namespace) -> int:
    import paradecode

    for name, desc in paradecode.strategies().items():
        print(f"{name:12s} {desc}")
    return 0


def _cmd_caches(args: argparse.Namespace) -> int:
    import paradecode

    policies = paradecode.cache_policies()
    if not policies:
        print("(no cache policies registered)")
    for name, desc in policies.items():
        print(f"{name:12s} {desc}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import paradecode
    from paradecode.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(args.model, device=args.device)
    ids = tok(args.prompt)["input_ids"] if tok is not None else json.loads(args.prompt)
    out = paradecode.sample(
        model, [ids], strategy=args.strategy, seed=args.seed, cache=args.cache,
        progress=args.progress, **parse_options(args.option),
    )
    gen = out.generated[0].tolist()
    print(tok.decode(gen, skip_special_tokens=True) if tok is not None else gen)
    print(json.dumps(out.trace.summary()), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paradecode", description="Parallel decoding toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("strategies", help="list registered strategies").set_defaults(func=_cmd_strategies)
    sub.add_parser("caches", help="list registered cache policies").set_defaults(func=_cmd_caches)
    s = sub.add_parser("sample", help="generate from a prompt")
    s.add_argument("--model", required=True, help="a zoo name or a checkpoint directory")
    s.add_argument("--prompt", required=True)
    s.add_argument("--strategy", default="lowconf")
    s.add_argument("--cache", default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default="cpu")
    s.add_argument("--progress", action="store_true")
    s.add_argument("-o", "--option", action="append", default=[], help="strategy option name=value")
    s.set_defaults(func=_cmd_sample)
    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Subcommands contributed by other modules (bench, image), when they are present."""
    found = []
    for module_name in ("paradecode.bench.cli", "paradecode.vision.cli", "paradecode.speculative.cli"):
        try:
            module = __import__(module_name, fromlist=["add_parser"])
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        found.append(module.add_parser)
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
