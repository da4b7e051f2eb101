"""Text demo: decode prompts with the LLaDA baseline and Fast-dLLM's threshold rule and
show accuracy, forwards (NFE) and tokens per forward side by side.

    python demos/text_demo.py [--model NAME] [--n 32]
"""

from __future__ import annotations

import argparse

import paradecode
from paradecode import zoo
from paradecode.bench.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a shipped model (default: the best one)")
    ap.add_argument("--task", default=None)
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    name = args.model or zoo.available()[0]
    model, tok = zoo.load(name)
    task = get_task(args.task or zoo.info(name)["tasks"][0])
    examples = task.examples(args.n, seed=1234)
    prompts = [tok.encode(e.prompt) for e in examples]
    gen = zoo.info(name)["gen_length"]
    print(f"model {name}, task {task.name}: {args.n} held-out prompts, answers up to {gen} tokens\n")
    print(f"e.g. prompt: {examples[0].prompt!r}  reference: {examples[0].answer!r}\n")
    for strategy, opts in [
        ("lowconf", dict(steps=gen)),
        ("lowconf", dict(steps=gen // 4)),
        ("threshold", dict(threshold=0.9)),
    ]:
        out = paradecode.sample(model, prompts, strategy, gen_length=gen, block_length=gen, **opts)
        texts = [tok.decode(row, skip_special_tokens=True) for row in out.generated.tolist()]
        acc = sum(task.verify(e, t) for e, t in zip(examples, texts)) / len(examples)
        nfe = float(out.trace.row_nfe.float().mean())
        print(f"{strategy:10s} {str(opts):24s} accuracy {acc:6.1%}  NFE {nfe:5.1f}  "
              f"tokens/forward {gen / nfe:4.1f}   e.g. {texts[0]!r}")


if __name__ == "__main__":
    main()
