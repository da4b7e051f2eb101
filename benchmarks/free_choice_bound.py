"""Issue 17: how much of the [0.5, 0.9) confidence share the free choices can add, from the data alone.

A free choice (``CotSpec.free_choice``, paradecode/bench/cot_tasks.py) is one token per choice
that no other token of the answer pins: a decoder that commits it while the choice is open sees
a calibrated confidence of ``1 - free_choice`` (0.7 for the ``cot-free`` tasks); committing it
fixes the rest of the choice (the other operand, the names of a long-form step). So per answer
there is one such commit per step (the verb) plus one per commutative step whose order shows
(a ``plus``; a ``sum`` unless short-form with equal values). Their share of the answer tokens
and of all canvas commits (256, ``<eos>`` included) is the most the option can add to the band.

    python benchmarks/free_choice_bound.py                 # the eval set of train_cot.py, N = 500
"""

from __future__ import annotations

import argparse
import json
from typing import Optional

from paradecode.bench.cot_tasks import GEN_LENGTH
from paradecode.bench.tasks import get_task


def free_choices(data: dict, answer: str) -> tuple[int, int]:
    """(steps = verb choices, operand-order choices) in ``answer`` (a free-choice reference)."""
    head = answer.rpartition(" the answer is ")[0]
    steps = [s.strip().split(" ") for s in head.split(" .") if s.strip()]
    orders = 0
    for words in steps:
        kind = data["relations"][words[0]][0]
        short = len(words) == 7  # "x has va + vb = v" (the "." was split off)
        orders += kind == "plus" or (kind == "sum" and not (short and words[2] == words[4]))
    return len(steps), orders


def bound(task_name: str, n: int, seed: int) -> dict:
    task = get_task(task_name)
    verbs = orders = steps = tokens = 0
    for ex in task.examples(n, seed=seed):
        s, o = free_choices(ex.data, ex.answer)
        verbs, orders, steps = verbs + s, orders + o, steps + s
        tokens += len(ex.answer.split(" "))
    free = verbs + orders
    return {"task": task_name, "n": n, "seed": seed, "steps": steps, "answer_tokens": tokens,
            "verb_choices": verbs, "order_choices": orders, "free_choices": free,
            "per_answer": free / n, "share_of_answer_tokens": free / tokens,
            "share_of_canvas_commits": free / (n * GEN_LENGTH), "canvas": GEN_LENGTH}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="cot-free")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20261201, help="train_cot.py's held-out seed")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)
    if "free_choice" not in get_task(args.task).examples(1, seed=0)[0].data:
        raise SystemExit(f"--task {args.task} has no free choices; use a cot-free* task")
    r = bound(args.task, args.n, args.seed)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['task']} (N = {r['n']}, seed {r['seed']}): {r['free_choices']} free choices "
          f"({r['verb_choices']} verbs + {r['order_choices']} operand orders) in {r['steps']} steps, "
          f"{r['per_answer']:.2f} per answer; {r['answer_tokens'] / r['n']:.1f} answer tokens per answer")
    print(f"upper bound of what they add to the [0.5, 0.9) share: {r['share_of_answer_tokens']:.1%} of the answer "
          f"tokens, {r['share_of_canvas_commits']:.2%} of all {r['canvas']} canvas commits (<eos> included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
