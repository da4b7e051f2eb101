"""Issue 17: the committed confidences of a perfectly calibrated model, from the data generator alone.

The "oracle" knows the exact distribution the generator draws answers from (step order, phrasing,
free choices, with their probabilities). Decoding with LLaDA's baseline (lowconf, one token per
step, blocks of 32 over a 256-word canvas, the answer then ``<eos>``), its confidence at a
position is the probability of the most likely word there among the answers consistent with
what is already committed. Committing the most confident position first, a choice that later
commits pin is decided before its own token comes up, so its token commits near 1. This
measures how much ambiguity survives to commit time, on ``cot`` and on ``cot-free``, without
training anything: the share of commits in [0.5, 0.9) a trained model can at best reach.

Only problems whose answers can be listed (``--max-steps`` steps, ``--max-chains`` answers) are
decoded; the share per answer token does not depend much on the number of steps.

    python benchmarks/oracle_commit_confidences.py --n 200        # CPU, ~1 minute
"""

from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

from paradecode.bench.cot_tasks import (BLOCK_LENGTH, GEN_LENGTH, PROMPT_ORDER_SHARE, _needed, _uses, evaluate_all,
                                        step_distribution)
from paradecode.bench.tasks import get_task

EOS = "<eos>"


def answer_distribution(ex, max_chains: int) -> Optional[list[tuple[list[str], float]]]:
    """Every answer the generator may write for ``ex`` with its probability (None: too many): the
    step order as :func:`paradecode.bench.cot_tasks.answer_text` draws it (the prompt's first
    ready person with ``PROMPT_ORDER_SHARE``, else any ready one), each step's phrasing from
    :func:`step_distribution`."""
    rels = {n: tuple(r) for n, r in ex.data["relations"].items()}
    values, target = evaluate_all(rels), ex.data["target"]
    needed = _needed(target, rels)
    free = float(ex.data.get("free_choice", 0.0))
    rank = {s.split(" ")[0]: i for i, s in enumerate(ex.prompt.split(" . "))}
    steps = {n: step_distribution(n, rels[n], values, free) for n in needed}
    final = f"the answer is {values[target]}".split(" ")
    out: list[tuple[list[str], float]] = []

    def walk(done: frozenset, words: list[str], p: float) -> bool:
        if len(out) > max_chains:
            return False
        if len(done) == len(needed):
            out.append((words + final, p))
            return True
        ready = sorted(n for n in needed - done if all(u in done or rels[u][0] == "const" for u in _uses(rels[n])))
        first = min(ready, key=rank.__getitem__)
        for n in ready:
            pn = PROMPT_ORDER_SHARE * (n == first) + (1 - PROMPT_ORDER_SHARE) / len(ready)
            for text, ps in steps[n].items():
                if not walk(done | {n}, words + text.split(" "), p * pn * ps):
                    return False
        return True

    return out if walk(frozenset(), [], 1.0) else None


def oracle_decode(chains: list[tuple[list[str], float]], vocab: dict[str, int]) -> list[tuple[float, str]]:
    """(confidence, word) of each commit of lowconf at full steps under the exact posterior."""
    T = np.array([[vocab[w] for w in c] + [vocab[EOS]] * (GEN_LENGTH - len(c)) for c, _ in chains])
    w = np.array([p for _, p in chains])
    alive = np.ones(len(chains), dtype=bool)
    words = {i: s for s, i in vocab.items()}
    out = []
    for start in range(0, GEN_LENGTH, BLOCK_LENGTH):
        masked = list(range(start, start + BLOCK_LENGTH))
        while masked:
            ww = w[alive]
            best = None
            for j in masked:
                counts = np.bincount(T[alive, j], weights=ww, minlength=len(vocab))
                k = int(counts.argmax())
                conf = counts[k] / ww.sum()
                if best is None or conf > best[0]:
                    best = (conf, j, k)
            conf, j, k = best
            out.append((float(conf), words[k]))
            alive &= T[:, j] == k
            masked.remove(j)
    return out


def measure(task_name: str, n: int, seed: int, max_steps: int, max_chains: int) -> dict:
    task = get_task(task_name)
    vocab: dict[str, int] = {EOS: 0}
    commits: list[tuple[float, str]] = []
    decoded = skipped = 0
    for ex in task.examples(n, seed=seed):
        rels = {k: tuple(r) for k, r in ex.data["relations"].items()}
        chains = answer_distribution(ex, max_chains) if len(_needed(ex.data["target"], rels)) <= max_steps else None
        if chains is None:
            skipped += 1
            continue
        for c, _ in chains:
            for word in c:
                vocab.setdefault(word, len(vocab))
        commits += oracle_decode(chains, vocab)
        decoded += 1
    conf = np.array([c for c, _ in commits])
    answer = np.array([wd != EOS for _, wd in commits])
    band = (conf >= 0.5) & (conf < 0.9)
    in_band_words: dict[str, int] = {}
    for (c, wd), b in zip(commits, band):
        if b:
            key = "number" if wd.isdigit() else wd
            in_band_words[key] = in_band_words.get(key, 0) + 1
    return {"task": task_name, "decoded": decoded, "skipped": skipped, "commits": len(commits),
            "share_in_band": float(band.mean()), "share_in_band_without_eos": float(band[answer].mean()),
            "share_below_band": float((conf < 0.5).mean()),
            "share_at_least_0.99": float((conf >= 0.99).mean()),
            "in_band_by_word": dict(sorted(in_band_words.items(), key=lambda kv: -kv[1])),
            "mean_in_band_confidence": float(conf[band].mean()) if band.any() else float("nan")}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="cot,cot-free")
    ap.add_argument("--n", type=int, default=200, help="problems drawn per task (those too large are skipped)")
    ap.add_argument("--seed", type=int, default=20261201, help="train_cot.py's held-out seed")
    ap.add_argument("--max-steps", type=int, default=3)
    ap.add_argument("--max-chains", type=int, default=20000)
    args = ap.parse_args(argv)
    for t in args.tasks.split(","):
        r = measure(t.strip(), args.n, args.seed, args.max_steps, args.max_chains)
        print(f"{r['task']}: oracle lowconf on {r['decoded']} problems ({r['skipped']} skipped: > {args.max_steps} "
              f"steps or > {args.max_chains} answers): in [0.5, 0.9) {r['share_in_band']:.2%} of {r['commits']} "
              f"commits, {r['share_in_band_without_eos']:.1%} without <eos>; below 0.5 {r['share_below_band']:.2%}; "
              f">= 0.99 {r['share_at_least_0.99']:.1%}; mean in-band confidence {r['mean_in_band_confidence']:.3f}")
        print(f"  in-band commits by word: {r['in_band_by_word']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
