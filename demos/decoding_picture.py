"""Decoding as a picture: which answer position is committed at which step, for the LLaDA
baseline (one token per step, and a quarter of the steps) and Fast-dLLM's threshold rule,
on the same prompt of a shipped model.

Each panel is a grid: one row per step, one column per answer position. A cell is
coloured once its position is committed, by the step that committed it (dark = early), and
the committed character is written in the row where it appeared (``·`` is <eos>, ``_`` a
space).

    python demos/decoding_picture.py [--task words] [--index 0] [--out decoding.png]
"""

from __future__ import annotations

import argparse

import paradecode
from paradecode import zoo
from paradecode.bench.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a shipped model (default: the best one)")
    ap.add_argument("--task", default=None, help="default: the model's main task")
    ap.add_argument("--index", type=int, default=0, help="which held-out problem")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--out", default="decoding.png")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    name = args.model or zoo.available()[0]
    model, tok = zoo.load(name)
    info = zoo.info(name)
    task = get_task(args.task or info["tasks"][0])
    gen = info.get("task_gen_length", {}).get(task.name, task.gen_length)
    block = info.get("task_block_length", {}).get(task.name, task.block_length)
    ex = task.examples(args.index + 1, seed=1234)[args.index]
    prompt = tok.encode(ex.prompt)
    runs = [
        ("lowconf", {"steps": gen}, f"lowconf, steps={gen}"),
        ("lowconf", {"steps": max(gen // block, gen // 4)}, f"lowconf, steps={max(gen // block, gen // 4)}"),
        ("threshold", {"threshold": args.threshold}, f"threshold {args.threshold}"),
    ]
    results = []
    for strategy, opts, label in runs:
        out = paradecode.sample(model, [prompt], strategy, gen_length=gen, block_length=block, **opts)
        ids = out.generated[0].tolist()
        text = tok.decode(ids, skip_special_tokens=True)
        steps = out.state.commit_step[0].tolist()
        ok = task.verify(ex, text)
        print(f"{label:22s} NFE {out.trace.nfe:3d}  {'valid  ' if ok else 'INVALID'}  {text!r}")
        results.append((label, ids, steps, out.trace.nfe, ok, text))

    shown = max(len(tok.decode(r[1], skip_special_tokens=True)) for r in results) + 3
    shown = min(gen, max(shown, 8))
    fig, axes = plt.subplots(1, len(results), figsize=(0.32 * shown * len(results) + 2, 6), squeeze=False)
    for ax, (label, ids, steps, nfe, ok, text) in zip(axes[0], results):
        S = max(steps) + 1
        grid = np.full((S, shown), np.nan)
        for p in range(shown):
            grid[steps[p]:, p] = steps[p]
        ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(S - 1, 1), interpolation="nearest")
        for p in range(shown):
            ch = "·" if ids[p] == tok.eos_token_id else tok.decode([ids[p]]).replace(" ", "_")
            ax.text(p, steps[p], ch, ha="center", va="center", fontsize=8, color="white")
        ax.set_title(f"{label}\nNFE {nfe}, {'valid' if ok else 'invalid'}: {text!r}", fontsize=9)
        ax.set_xlabel("answer position")
        ax.set_ylabel("step")
    fig.suptitle(f"{name}, task {task.name}: prompt {ex.prompt!r}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
