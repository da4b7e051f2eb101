"""Train a Learn2PD filter for a model and save it next to the model.

    python scripts/train_learn2pd.py                         # the best shipped model, all its tasks
    python scripts/train_learn2pd.py --model paradecode/zoo/tasks-6m --n 200 --seed 123

Trajectories (see ``paradecode/samplers/learn2pd_filter.py``): each prompt is decoded by the
LLaDA baseline (one token per step) for its final tokens, then replayed by the Extremely
Greedy Parallel oracle, which records the block's confidences and whether each prediction
already equals the final token. The filter (logistic regression over the block's
confidences) is fit with BCE; it is written to ``<model dir>/learn2pd_filter``, where
``paradecode.sample(model, ..., strategy="learn2pd")`` finds it. The prompts come from the
task generators with a seed (default 123) that neither ``paradecode bench`` (seed 0) nor the
zoo's evaluation (seed 10000) uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from paradecode import zoo
from paradecode.bench.tasks import get_task
from paradecode.bench.learn2pd_training import collect_trajectories, train_filter
from paradecode.samplers.learn2pd_filter import FILTER_DIRNAME


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="zoo name or model directory (default: the best shipped model)")
    ap.add_argument("--tasks", default=None, help="comma-separated tasks (default: the model's tasks)")
    ap.add_argument("--n", type=int, default=200, help="prompts per task")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--hidden", default="", help="hidden layer sizes, e.g. 64 or 64,64 (default: logistic regression)")
    ap.add_argument("--epochs", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threshold", type=float, default=0.96, help="accept threshold for the reported precision")
    ap.add_argument("--out", default=None, help=f"output directory (default: <model dir>/{FILTER_DIRNAME})")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=None, help="trajectory file (.pt): loaded if it exists, else written after collection")
    args = ap.parse_args(argv)

    name = args.model or zoo.available()[0]
    if Path(name).is_dir():
        from paradecode.models.loading import load_model_and_tokenizer

        model_dir = Path(name)
        model, tok = load_model_and_tokenizer(str(model_dir), device=args.device)
        info = zoo.info(model_dir)
    else:
        model_dir = zoo.model_dir(name)
        model, tok = zoo.load(name, device=args.device)
        info = zoo.info(name)
    tasks = args.tasks.split(",") if args.tasks else list(info.get("tasks", []))
    if not tasks:
        raise SystemExit("no tasks: pass --tasks")
    t0 = time.time()
    xs, ys, per_task = [], [], {}
    block = None
    cached = torch.load(args.data) if args.data and Path(args.data).exists() else None
    if cached is not None:
        xs, ys, per_task = [cached["X"]], [cached["Y"]], cached["per_task"]
        tasks = cached["tasks"]
        print(f"loaded {cached['X'].shape[0]} block-steps from {args.data}")
    for tname in tasks if cached is None else []:
        task = get_task(tname)
        gen = int(info.get("task_gen_length", {}).get(tname, task.gen_length))
        bl = int(info.get("task_block_length", {}).get(tname, task.block_length))
        if block is not None and bl != block:
            raise SystemExit(f"task {tname} uses block_length {bl}, others {block}: train one filter per block length")
        block = bl
        prompts = [tok.encode(e.prompt) for e in task.examples(args.n, seed=args.seed)]
        X, Y = collect_trajectories(model, prompts, gen_length=gen, block_length=bl)
        xs.append(X)
        ys.append(Y)
        per_task[tname] = {"records": int(X.shape[0]), "final_share": float(Y.mean())}
        print(f"{tname:9s} gen {gen:4d} block {bl}: {X.shape[0]} block-steps, {float(Y.mean()):.1%} predictions already final",
              flush=True)
    if args.data and cached is None:
        torch.save({"X": torch.cat(xs), "Y": torch.cat(ys), "per_task": per_task, "tasks": tasks}, args.data)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    filt, stats = train_filter(torch.cat(xs), torch.cat(ys), hidden_sizes=hidden, epochs=args.epochs, lr=args.lr,
                               seed=args.seed, threshold=args.threshold)
    out = Path(args.out) if args.out else model_dir / FILTER_DIRNAME
    filt.save_pretrained(out, trained_for=str(info.get("name", name)), tasks=tasks, n_per_task=args.n,
                         seed=args.seed, epochs=args.epochs, lr=args.lr, stats=stats, per_task=per_task,
                         command="python scripts/train_learn2pd.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                         seconds=round(time.time() - t0, 1))
    print(json.dumps(stats, indent=1))
    print(f"saved {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
