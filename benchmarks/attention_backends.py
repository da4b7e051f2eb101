"""What cuDNN attention costs batched decoding when shapes change (issue 15), in one run.

PyTorch 2.11 picks cuDNN's SDPA for bf16 on Hopper. cuDNN builds an execution plan for each new
(rows, queries, keys, mask) shape, and batched decoding makes new shapes at most steps: rows leave
the batch as they finish and a split refresh feeds a varying row count. paradecode's attention
(``paradecode.models.set_attention_backends``) leaves cuDNN out by default. This runs the same
generations in one fresh process per back-end setting, so each starts with no plans built:

* prompts A, first time (cold: every shape is new);
* prompts A again (warm: the same shapes);
* prompts B, a new batch (the shapes a new batch of a real workload brings);
* prompts B again;

for ``threshold`` without a cache, ``threshold`` with the dual cache and ``lowconf`` full steps with
the dual cache (its rows stay in step: few shapes), and reports seconds and whether each repeat
gave the same tokens as the first run on the same prompts.

    PYTHONPATH=. python benchmarks/attention_backends.py --out-dir OUT        # GPU, ~2 min
    PYTHONPATH=. python benchmarks/attention_backends.py --smoke --out-dir /tmp  # CPU check of the script
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from paradecode.bench.results_file import write_results

SETTINGS = (("threshold", None, {"threshold": 0.99}), ("threshold", "dual", {"threshold": 0.95}),
            ("lowconf", "dual", {"steps": 256}))
RUNS = ("A cold", "A warm", "B new prompts", "B again")


def one_backend(args: argparse.Namespace) -> dict[str, Any]:
    """The four runs of every setting under ``args.one`` ('default', 'torch' or a comma list)."""
    import paradecode
    from paradecode.bench.tasks import get_task
    from paradecode.loop import synchronize
    from paradecode.models import attention_backends, set_attention_backends
    from paradecode.models.loading import load_model_and_tokenizer

    if args.one != "default":
        set_attention_backends(None if args.one == "torch" else args.one.split(","))
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("high")
    model, tok = load_model_and_tokenizer(args.model, device=args.device)
    task = get_task(args.task)
    gen, block = (16, 8) if args.smoke else (task.gen_length, task.block_length)
    prompts = {name: [tok.encode(e.prompt) for e in task.examples(args.n, seed=seed)]
               for name, seed in (("A", args.seed), ("B", args.seed_b))}

    def go(batch: list, strategy: str, cache: Optional[str], opts: dict) -> tuple[float, list]:
        synchronize(device)
        t0 = time.perf_counter()
        out = paradecode.sample(model, batch, strategy, cache=cache, timing=False, gen_length=gen,
                                block_length=block, **opts)
        ids = out.generated.tolist()
        synchronize(device)
        return time.perf_counter() - t0, ids

    for cache in (None, "dual"):  # kernels and allocator, as cot_bench warms up: 8 rows of lowconf
        go(prompts["A"][:8], "lowconf", cache, {"steps": gen // block * 2})
    rows = []
    for strategy, cache, opts in SETTINGS:
        opts = dict(opts, steps=gen) if "steps" in opts else opts
        runs = [go(prompts[name[0]], strategy, cache, opts) for name in RUNS]
        rows.append({"strategy": strategy, "cache": cache or "none", "options": opts,
                     "seconds": dict(zip(RUNS, (r[0] for r in runs))),
                     "same_tokens_on_repeat": runs[0][1] == runs[1][1] and runs[2][1] == runs[3][1]})
    return {"setting": args.one, "backends": attention_backends() or "torch's choice",
            "dtype": str(next(model.parameters()).dtype), "rows": rows}


def report(res: dict[str, Any]) -> str:
    lines = [f"attention_backends {res['date']} on {res['device']} (torch {res['torch']}), {res['model']} on {res['task']}, "
             f"{res['n']} rows per batch, dtype {res['results'][0]['dtype']}",
             "seconds per generation, each back-end setting in a fresh process: " + ", ".join(RUNS),
             f"{'back ends':32} {'strategy':10} {'cache':6} " + " ".join(f"{r:>14}" for r in RUNS) + "  same tokens on repeat"]
    for r in res["results"]:
        for row in r["rows"]:
            lines.append(f"{str(r['backends']):32} {row['strategy']:10} {row['cache']:6} "
                         + " ".join(f"{row['seconds'][k]:14.2f}" for k in RUNS) + f"  {row['same_tokens_on_repeat']}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="paradecode/zoo/cot-free-8m",
                    help="a model directory (a shipped model's directory loads in its stored bf16)")
    ap.add_argument("--task", default="cot-free")
    ap.add_argument("--n", type=int, default=500, help="rows per batch")
    ap.add_argument("--seed", type=int, default=4242, help="prompts A (cot_bench's seed)")
    ap.add_argument("--seed-b", type=int, default=777, help="prompts B, the new batch")
    ap.add_argument("--backends", default="default,torch",
                    help="comma-separated settings, each run in its own process: default, torch, or a '+'-joined list "
                         "such as cudnn+flash+efficient+math")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--machine", default="h200")
    ap.add_argument("--smoke", action="store_true", help="CPU, 4 rows, a 16-token canvas: a check of the script")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one setting, JSON to stdout
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.n, args.machine = "cpu", 4, "cpu-smoke"
    if args.one is not None:
        print("RESULT " + json.dumps(one_backend(args)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; use --smoke for a CPU check of the script.")
    results = []
    for setting in args.backends.split(","):
        cmd = [sys.executable, __file__, "--one", setting.replace("+", ","), "--model", args.model, "--task", args.task,
               "--n", str(args.n), "--seed", str(args.seed), "--seed-b", str(args.seed_b), "--device", args.device] + (["--smoke"] if args.smoke else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            sys.exit(f"error: the {setting!r} process failed:\n{done.stderr[-2000:]}")
        results.append(json.loads(line[len("RESULT "):]))
    res = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
           "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke)",
           "model": args.model, "task": args.task, "n": args.n, "seed": args.seed, "seed_b": args.seed_b,
           "command": "python benchmarks/attention_backends.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "results": results}
    text = report(res)
    write_results(args.out_dir, f"attention_backends_{res['date']}_{args.machine}", res, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
