"""Why token-to-token editing (``editing``) breaks a plain masked-diffusion model's answers.

LLaDA-style training puts the loss on masked positions only, so what such a model predicts at a
position whose token is visible is untrained. ``editing`` (LLaDA2.1's draft-and-edit) replaces a
committed token when the model's top prediction there is another token above
``editing_threshold``; LLaDA2.1 is trained for those edits. This probe feeds each held-out
problem's reference answer, fully visible on the canvas the model is evaluated on (prompt, the
answer, ``<eos>`` to the end of the generation), and counts the answer positions whose argmax is
not the visible token, and how sure the model is there.

    python benchmarks/visible_token_probe.py --model cot-8m --n 32      # CPU, under a minute
"""

from __future__ import annotations

import argparse
from typing import Optional

import torch

from paradecode import zoo
from paradecode.bench.tasks import get_task


@torch.no_grad()
def probe(model_name: str, task_name: str, n: int, seed: int, thresholds: tuple[float, ...]) -> dict:
    from paradecode.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(model_name)  # a shipped model's name or a model directory
    info = zoo.info(model_name)
    task = get_task(task_name)
    gen = info.get("task_gen_length", {}).get(task_name, task.gen_length)
    differ = total = 0
    sure = {t: 0 for t in thresholds}
    for e in task.examples(n, seed=seed):
        prompt, answer = tok.encode(e.prompt), tok.encode(e.answer)
        canvas = prompt + answer + [tok.eos_token_id] * (gen - len(answer))
        out = model(torch.tensor([canvas]))
        logits = out.logits if hasattr(out, "logits") else out
        probs = logits[0, len(prompt): len(prompt) + len(answer)].float().softmax(-1)
        conf, top = probs.max(-1)
        wrong = top != torch.tensor(answer)
        differ += int(wrong.sum())
        total += len(answer)
        for t in thresholds:
            sure[t] += int((wrong & (conf > t)).sum())
    return {"model": model_name, "task": task_name, "n": n, "seed": seed, "answer_positions": total,
            "argmax_differs": differ, "differs_above": sure}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cot-8m", help="a shipped model's name or a model directory")
    ap.add_argument("--task", default="cot")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args(argv)
    r = probe(args.model, args.task, args.n, args.seed, (0.5, 0.9))
    print(f"{r['model']} on {r['task']} (N = {r['n']}, seed {r['seed']}), reference answers fully visible: "
          f"the argmax differs from the visible token at {r['argmax_differs']} of {r['answer_positions']} answer "
          f"positions ({r['argmax_differs'] / r['answer_positions']:.1%}); "
          + ", ".join(f"{v} of them at confidence > {t}" for t, v in r["differs_above"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
