"""Each block rule's own work per step at a real vocabulary, with the model replaced by fixed logits.

``dllm_throughput.py`` gives the sampler's share of a step, but it needs a GPU and an 8B model.
This script isolates the rule. A stub model returns fixed random logits of the LLaDA-8B shape
(prompt 512, generation 256, vocabulary 126,464; bf16 on CUDA, float32 on CPU), so a step's
time is the rule's own work: its kernels, its host bookkeeping and its read. There is no forward.

Per rule: ms per step over the first block (block 32; 4 tokens per step for rules with
``steps``), each step synced, best of ``--repeats`` runs. Random logits make the threshold rules
commit their one fallback token per step, and Prophet never exits: the timed steps are the
rules' common case. On a CPU every kernel computes on the host, so the times there are a proxy
for the device work, not GPU figures.

    PYTHONPATH=. python benchmarks/rule_work.py [--rules prophet,learn2pd] [--device cuda] [--out-dir DIR]

Writes ``rule_work_<date>_<machine>.json`` and ``.txt`` to ``--out-dir`` (none: printed only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dllm_throughput import driver  # noqa: E402
from sampler_ops import block_rules  # noqa: E402
from step_overhead import LogitsStub  # noqa: E402

from paradecode.loop import synchronize as sync  # noqa: E402
from paradecode.models import LLaDAConfig  # noqa: E402


def step_ms(model: LogitsStub, prompt: torch.Tensor, rule: str, args: argparse.Namespace) -> tuple[float, int]:
    """Best-of-repeats ms per step of the first block's steps, and the steps timed."""
    best, steps = float("inf"), 0
    for _ in range(args.repeats + 1):  # the first run warms up
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # learn2pd: the shipped filter stands in for this model's
            strat, state, call = driver(model, prompt, rule, "none", args.gen, args.block, args.tokens_per_step)
        times = []
        with torch.inference_mode():
            while len(times) < args.steps and not strat.done(state):
                sync(args.device)
                t0 = time.perf_counter()
                strat.step(state, call)
                sync(args.device)
                times.append(time.perf_counter() - t0)
        best, steps = min(best, 1e3 * sum(times[1:]) / max(1, len(times) - 1)), len(times) - 1
    return best, steps


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=LLaDAConfig().vocab_size)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="steps timed per run (the first is left out: a block start)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rules", default="", help="comma list (default: every block rule a canvas cache serves)")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--tag", default="", help="a variant name for the results file")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda needs a CUDA device; on this machine run with --device cpu (the CPU proxy).")
    if args.gen % args.block:
        sys.exit(f"error: --gen ({args.gen}) must be a multiple of --block ({args.block}).")
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    base = LLaDAConfig()
    config = LLaDAConfig(vocab_size=args.vocab, embedding_size=args.vocab, mask_token_id=min(base.mask_token_id, args.vocab - 1),
                         eos_token_id=min(base.eos_token_id, args.vocab - 2))
    L = args.prompt + args.gen
    logits = torch.randn(1, L, args.vocab, device=args.device).to(dtype)
    model = LogitsStub(logits, config.mask_token_id, config)
    prompt = torch.randint(0, config.eos_token_id - 1, (1, args.prompt), device=args.device)
    rules = [r for r in args.rules.split(",") if r] or block_rules()
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "device": args.device,
                           "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                           "torch": torch.__version__, "shape": dict(prompt=args.prompt, gen=args.gen, block=args.block,
                                                                      vocab=args.vocab), "rules": {}}
    lines = [f"rule_work {res['date']} on {res['device_name']} (torch {res['torch']}): P{args.prompt}/G{args.gen}, "
             f"block {args.block}, vocabulary {args.vocab}, {dtype} logits; ms per step of the rule alone "
             f"(first block, synced steps, best of {args.repeats})"]
    for rule in rules:
        try:
            ms, n = step_ms(model, prompt, rule, args)
        except Exception as exc:  # a rule this stub cannot drive: keep the others
            res["rules"][rule] = {"error": repr(exc)[:300]}
            lines.append(f"  {rule:12s} skipped: {exc!r}"[:200])
            continue
        res["rules"][rule] = {"step_ms": ms, "steps": n}
        lines.append(f"  {rule:12s} {ms:9.3f} ms per step ({n} steps)")
    text = "\n".join(lines)
    print(text)
    if args.out_dir:
        machine = "cpu" if args.device == "cpu" else torch.cuda.get_device_name().split()[-1].lower()
        stem = f"rule_work_{res['date']}_{machine}" + (f"_{args.tag}" if args.tag else "")
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
        (out / f"{stem}.txt").write_text(text + "\n")
        res["stem"] = stem
    return res


if __name__ == "__main__":
    main()
