"""The ``paradecode`` command line: ``strategies``, ``caches``, ``sample`` here; other modules
(``bench``, ``image``) add theirs through ``add_parser(subparsers)``.

Bad input (an unknown strategy, option or model, a malformed ``name=value``) prints one line
``error: ...`` on stderr and exits with status 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``paradecode sample: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: Sequence[str], flag: str = "-o") -> dict[str, Any]:
    """``["steps=64", "threshold=0.9"]`` -> ``{"steps": 64, "threshold": 0.9}`` (values are
    read as JSON when they parse, else kept as strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{flag} {pair!r} must look like name=value (e.g. {flag} threshold=0.9)")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _describe(cls: type) -> str:
    """The first line of the class's own docstring, else its registry description."""
    doc = cls.__dict__.get("__doc__") or ""
    first = doc.strip().splitlines()[0].strip() if doc.strip() else ""
    return first or getattr(cls, "description", "")


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def option_rows(config_cls: Optional[type]) -> list[tuple[str, str, str]]:
    """``(name, type, default)`` of each user-settable field of a config dataclass."""
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        return []
    rows = []
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, _type_name(f.type), default))
    return rows


def _print_options(kind: str, name: str, cls: type) -> None:
    print(f"{name}: {_describe(cls)}")
    rows = option_rows(getattr(cls, "Config", None))
    if not rows:
        print(f"  (this {kind} has no options)")
        return
    w_name = max(len(r[0]) for r in rows)
    w_type = max(len(r[1]) for r in rows)
    print(f"  {'option':{w_name}s}  {'type':{w_type}s}  default")
    for opt, tp, default in rows:
        print(f"  {opt:{w_name}s}  {tp:{w_type}s}  {default}")


def _cmd_strategies(args: argparse.Namespace) -> int:
    import paradecode

    if args.name:
        from paradecode.registry import get_strategy_class

        _print_options("strategy", args.name, get_strategy_class(args.name))
        return 0
    for name, desc in paradecode.strategies().items():
        print(f"{name:12s} {desc}")
    return 0


def _cmd_caches(args: argparse.Namespace) -> int:
    import paradecode

    if args.name:
        from paradecode.registry import get_cache_class

        _print_options("cache policy", args.name, get_cache_class(args.name))
        return 0
    policies = paradecode.cache_policies()
    if not policies:
        print("(no cache policies registered)")
    for name, desc in policies.items():
        print(f"{name:12s} {desc}")
    return 0


def generation_options(strategy: str, model_defaults: dict[str, int], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` completed with the model's ``gen_length`` / ``block_length`` (from its
    info.json) and a fitting ``steps``: :func:`paradecode.config.generation_defaults`, the
    rule ``paradecode.sample`` applies to ``model.generation_defaults``."""
    from paradecode.config import generation_defaults
    from paradecode.registry import get_strategy_class

    return generation_defaults(get_strategy_class(strategy).Config, model_defaults, options)


def prompt_ids(text: str, tokenizer: Any, owner: str) -> list[int]:
    """A ``--prompt``'s token ids: ``text`` through ``tokenizer``, or (a model without one) read
    as a JSON list of ids."""
    if tokenizer is not None:
        return list(tokenizer(text)["input_ids"])
    try:
        ids = json.loads(text)
    except json.JSONDecodeError:
        ids = None
    if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
        raise ValueError(f"{owner} has no tokenizer, so --prompt must be a JSON list of token ids (e.g. '[5, 9, 2]')")
    return ids


def _cmd_sample(args: argparse.Namespace) -> int:
    import paradecode
    from paradecode import zoo
    from paradecode.models.loading import load_model_and_tokenizer

    options = parse_options(args.option, "-o")
    cache_options = parse_options(args.cache_option, "--cache-option")
    if cache_options and args.cache is None:
        raise ValueError("--cache-option was given without --cache NAME")
    model, tok = load_model_and_tokenizer(args.model, device=args.device)
    ids = prompt_ids(args.prompt, tok, args.model)
    options = generation_options(args.strategy, zoo.generation_defaults(args.model), options)
    out = paradecode.sample(
        model, [ids], strategy=args.strategy, seed=args.seed, cache=args.cache,
        cache_options=cache_options or None, progress=args.progress, **options,
    )
    gen = out.generated[0].tolist()
    print(tok.decode(gen, skip_special_tokens=True) if tok is not None else gen)
    print(json.dumps(out.trace.summary()), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="paradecode", description="Parallel decoding toolkit.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("strategies", help="list registered strategies, or one strategy's options")
    p.add_argument("name", nargs="?", help="a strategy: print its options (type, default)")
    p.set_defaults(func=_cmd_strategies)
    p = sub.add_parser("caches", help="list registered cache policies, or one policy's options")
    p.add_argument("name", nargs="?", help="a cache policy: print its options (type, default)")
    p.set_defaults(func=_cmd_caches)
    s = sub.add_parser("sample", help="generate from a prompt")
    s.add_argument("--model", required=True, help="a zoo name or a checkpoint directory")
    s.add_argument("--prompt", required=True, help="text (or a JSON list of ids when the model has no tokenizer)")
    s.add_argument("--strategy", default="lowconf")
    s.add_argument("--cache", default=None, help="a cache policy (`paradecode caches` lists them)")
    s.add_argument("--cache-option", action="append", default=[], metavar="KEY=VALUE",
                   help="cache policy option (repeatable), e.g. --cache-option cache_reloading_step=2")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default="cpu")
    s.add_argument("--progress", action="store_true")
    s.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy option (repeatable), e.g. -o threshold=0.9; gen_length/block_length "
                        "default to the model's info.json")
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
    except (ValueError, TypeError, OSError) as err:
        message = " ".join(str(err).split())  # one line
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
