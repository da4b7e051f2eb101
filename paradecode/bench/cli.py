"""``paradecode bench``: steps-to-quality sweeps from the command line.

    paradecode bench --strategies lowconf,threshold --n 500 --out results.json --plot curves.png
    paradecode bench --model GSAI-ML/LLaDA-8B-Instruct --tasks gsm8k --data-dir DATA --limit 200 \\
        --strategies threshold --sweep threshold:threshold=0.9 --cache dual --dtype bf16 --device cuda \\
        --batch-size 8 --no-baseline
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ..cli import _parse_value, parse_options
from .real.adapter import PROMPT_FORMATS


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


def parse_data(items: list[str], flag: str = "--data-dir") -> Optional[dict[str, str]]:
    """``["DIR"]`` -> ``{"*": "DIR"}``; ``["gsm8k=FILE", ...]`` -> ``{"gsm8k": "FILE", ...}`` (both
    may be mixed: a plain path serves the tasks not named); None when nothing was given."""
    from .real.adapter import REAL_TASKS

    out: dict[str, str] = {}
    for item in items:
        task, eq, path = item.partition("=")
        if eq and task.strip() in REAL_TASKS:
            out[task.strip()] = path.strip()
        elif eq and "/" not in task and "\\" not in task:
            raise ValueError(f"{flag} {item!r}: {task!r} is not a real task; use TASK=PATH with TASK one of "
                             f"{list(REAL_TASKS)}, or a plain path.")
        else:
            out["*"] = item
    return out or None


def _per_task(mapping: Optional[dict[str, str]], tasks: list[str]) -> Any:
    """``{"*": p, "gsm8k": q}`` -> ``{task: path}`` for every task (the plain path as default)."""
    if mapping is None:
        return None
    return {t: mapping.get(t, mapping.get("*")) for t in tasks if mapping.get(t, mapping.get("*")) is not None}


def _split(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def bench_from_args(args: argparse.Namespace, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Run the bench the parsed ``args`` describe and print its table; ``model`` / ``tokenizer``
    objects, when given, replace ``--model`` (benchmark scripts build models in memory and still
    run the command's code path)."""
    from .runner import format_summary, run_bench

    tasks = _split(args.tasks)
    data = parse_data(args.data_dir)
    if data is not None and tasks is None:
        raise ValueError("--data-dir was given without --tasks; name the real tasks, e.g. --tasks gsm8k.")
    cache = None if args.cache in (None, "none") else args.cache
    cache_options = parse_options(args.cache_option, "--cache-option")
    if cache_options and cache is None:
        raise ValueError("--cache-option was given without --cache NAME (paradecode caches lists the policies).")
    result = run_bench(
        model if model is not None else args.model, tokenizer,
        strategies=_split(args.strategies) or [],
        tasks=tasks,
        n=args.n, seed=args.seed, batch_size=args.batch_size, device=args.device,
        sweeps=parse_sweep(args.sweep) or None, out=args.out, plot=args.plot, progress=not args.quiet,
        cache=cache, cache_options=cache_options or None, dtype=args.dtype, limit=args.limit,
        data=_per_task(data, tasks or []), prompt_format=args.prompt_format, num_fewshot=args.num_fewshot,
        shot_data=_per_task(parse_data(args.shots, "--shots"), tasks or []),
        gen_length=args.gen_length, block_length=args.block_length, cuda_graphs=args.cuda_graphs,
        baseline=not args.no_baseline, trust_remote_code=args.trust_remote_code, exec_timeout=args.exec_timeout,
        samples_out=args.log_samples,
    )
    print(f"model {result['model']}, N={result['n']} per task, seed {result['seed']}, device {result['device']}, "
          f"cache {result['cache']}, batch {result['batch_size']}")
    print(f"{'strategy':12s} {'setting':22s} {'task':9s} {'accuracy':>8s} {'NFE':>7s} {'tok/fwd':>7s} {'seconds':>8s} "
          f"{'tok/s':>8s} {'ans tok/s':>9s} {'s/sample':>8s}  notes")
    for r in result["rows"]:
        notes = (f"strict {r['accuracy_strict']:.1%} flexible {r['accuracy_flexible']:.1%}"
                 if "accuracy_strict" in r else r.get("metric", ""))
        print(f"{r['strategy']:12s} {r['setting']:22s} {r['task']:9s} {r['accuracy']:8.1%} {r['nfe']:7.1f} "
              f"{r['tokens_per_forward']:7.2f} {r['seconds']:8.2f} {r['tokens_per_second']:8.1f} {r['answer_tokens_per_second']:9.1f} "
              f"{r['seconds_per_sample']:8.3f}  {notes}")
    if result["summary"]:
        print("\nFewest forwards within 1 point of the full-step lowconf baseline:")
        print(format_summary(result["summary"]))
    for what, path in (("table", args.out), ("plot", args.plot), ("samples", args.log_samples)):
        if path:
            print(f"wrote {what} {path}")
    return result


def _cmd_bench(args: argparse.Namespace) -> int:
    bench_from_args(args)
    return 0


def add_parser(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to ``paradecode``'s parser."""
    p = subparsers.add_parser("bench", help="steps-to-quality sweep of strategies on verifiable tasks",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="a shipped model name, a checkpoint directory or a hub id (read from the local cache "
                        "when there; LLaDA, Dream, others through transformers) (default: the best shipped model)")
    p.add_argument("--strategies", default="lowconf,threshold", help="comma-separated strategy names")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks: real gsm8k,humaneval,mbpp or synthetic ones (default: the model's tasks)")
    p.add_argument("--n", type=int, default=500, help="problems per synthetic task")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each real task (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic problems")
    p.add_argument("--batch-size", type=int, default=256, help="prompts per sample() call (left-padded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=("bf16", "bfloat16", "fp16", "float16", "fp32", "float32"), help="cast the weights (default: the checkpoint's)")
    p.add_argument("--cache", default=None, help="a cache policy for every run (`paradecode caches` lists them; none: no cache)")
    p.add_argument("--cache-option", action="append", default=[], metavar="KEY=VALUE",
                   help="cache policy option (repeatable), e.g. --cache-option cache_reloading_step=2")
    p.add_argument("--cuda-graphs", action="store_true", help="replay fixed-shape forwards as CUDA graphs (cuda only)")
    p.add_argument("--data-dir", action="append", default=[], metavar="PATH|TASK=PATH",
                   help="where the real tasks' test sets are: a directory (gsm8k/test.jsonl, HumanEval.jsonl.gz, "
                        "sanitized-mbpp.json ...) or TASK=FILE (repeatable); without it they come from the hub")
    p.add_argument("--shots", action="append", default=[], metavar="TASK=FILE",
                   help="few-shot exemplars of a task (default: its train / prompt split beside the test set)")
    p.add_argument("--prompt-format", default="auto", choices=PROMPT_FORMATS,
                   help="fewshot (lm-eval's layouts), chat-fewshot (that text in one chat turn, Fast-dLLM's setting "
                        "for instruct models), chat (zero-shot chat); auto: chat-fewshot when the tokenizer has a "
                        "chat template, else fewshot")
    p.add_argument("--num-fewshot", type=int, default=None, help="exemplars (default: gsm8k 5, mbpp 3)")
    p.add_argument("--gen-length", type=int, default=None, help="generated tokens (default: the task's; real tasks 256)")
    p.add_argument("--block-length", type=int, default=None, help="block length (default: the task's; real tasks 32)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the full-step lowconf reference run (then there is no summary)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let transformers run a checkpoint's own modeling code (models we do not implement)")
    p.add_argument("--exec-timeout", type=float, default=10.0, help="seconds per HumanEval/MBPP program")
    p.add_argument("--sweep", action="append", default=[],
                   help="override a strategy's sweep: STRATEGY:KNOB=V1,V2,... (repeatable)")
    p.add_argument("--out", default=None, help="results table: .json (everything) or .csv (rows)")
    p.add_argument("--plot", default=None, help="steps-to-quality PNG: accuracy vs NFE per task")
    p.add_argument("--log-samples", default=None, metavar="FILE.jsonl",
                   help="write every prompt, cut generation and verdict")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
