"""Why CreditDecoding and LocalLeap gain little on the shipped task model (CPU-sized probe).

CreditDecoding: the step's tokens are the argmax of the *fused* logits; count the committed
tokens where that differs from the current logits' argmax (the credit of an earlier top-1
outvotes the model's present choice), and the accuracy of rows with and without such an
override. LocalLeap: the share of masked positions whose confidence falls in the relaxed band
[relaxed_threshold, threshold) (the only ones LocalLeap can commit earlier than Fast-dLLM), and
the share of those within ``radius`` of an anchor.

    python benchmarks/training_free_probe.py --n 64 --tasks words,lists
"""

from __future__ import annotations

import argparse

import torch

import paradecode
from paradecode import zoo
from paradecode.bench.tasks import get_task
from paradecode.registry import register
from paradecode.samplers.credit import CreditDecoding
from paradecode.samplers.localleap import LocalLeap, anchor_neighbourhood


@register("credit-probe")
class CreditProbe(CreditDecoding):
    description = "CreditDecoding recording credit overrides (benchmarks only)"

    stats: dict = {}  # per run: overrides per row, committed tokens

    def adjust_logits(self, view, state, logits):
        self.stats["raw_argmax"] = logits.argmax(-1)
        return super().adjust_logits(view, state, logits)

    def select(self, view, state):
        take = super().select(view, state) & view.mask
        over = take & (view.x0 != self.stats["raw_argmax"])
        counts = self.stats.setdefault("overrides", torch.zeros(state.batch_size, dtype=torch.long))
        counts[view.rows] += over.sum(-1).cpu()
        self.stats["committed"] = self.stats.get("committed", 0) + int(take.sum())
        return take


@register("localleap-probe")
class LocalLeapProbe(LocalLeap):
    description = "LocalLeap recording the relaxed confidence band (benchmarks only)"

    stats: dict = {}  # per run: masked confidences, those in the relaxed band, those near an anchor

    def select(self, view, state):
        c, mask, confidence = self.config, view.mask, view.confidence
        band = mask & (confidence >= c.relaxed_threshold) & (confidence < c.threshold)
        near = anchor_neighbourhood(mask & (confidence >= c.threshold), c.radius)
        stats = self.stats.setdefault("band", [0, 0, 0])
        stats[0] += int(mask.sum())
        stats[1] += int(band.sum())
        stats[2] += int((band & near).sum())
        return super().select(view, state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--tasks", default="words,lists")
    ap.add_argument("--threshold", type=float, default=0.9)
    args = ap.parse_args()
    name = zoo.available()[0]
    model, tok = zoo.load(name)
    info = zoo.info(name)
    for tname in args.tasks.split(","):
        task = get_task(tname)
        geo = dict(gen_length=info["task_gen_length"][tname], block_length=info["task_block_length"][tname])
        ex = task.examples(args.n, seed=0)
        prompts = [tok.encode(e.prompt) for e in ex]

        def score(out):
            texts = tok.batch_decode(out.generated.tolist(), skip_special_tokens=True)
            return torch.tensor([task.verify(e, t) for e, t in zip(ex, texts)])

        thr = paradecode.sample(model, prompts, "threshold", threshold=args.threshold, **geo)
        CreditProbe.stats, LocalLeapProbe.stats = {}, {}
        cred = paradecode.sample(model, prompts, "credit-probe", threshold=args.threshold, **geo)
        ok_t, ok_c = score(thr), score(cred)
        over = CreditProbe.stats["overrides"] > 0
        f = lambda m: f"{m.float().mean():.1%}" if len(m) else "-"  # noqa: E731
        print(f"{tname}: threshold {ok_t.float().mean():.1%} acc, {thr.trace.row_nfe.float().mean():.1f} NFE; "
              f"credit {ok_c.float().mean():.1%} acc, {cred.trace.row_nfe.float().mean():.1f} NFE")
        print(f"  credit overrides: {int(CreditProbe.stats['overrides'].sum())} of {CreditProbe.stats['committed']} "
              f"committed tokens; rows with one: {int(over.sum())}/{args.n}, credit acc on them {f(ok_c[over])} "
              f"(threshold {f(ok_t[over])}), on the others {f(ok_c[~over])} (threshold {f(ok_t[~over])})")
        ll = paradecode.sample(model, prompts, "localleap-probe", threshold=args.threshold,
                               relaxed_threshold=round(args.threshold - 0.15, 2), **geo)
        masked, band, near = LocalLeapProbe.stats["band"]
        print(f"  localleap: {score(ll).float().mean():.1%} acc, {ll.trace.row_nfe.float().mean():.1f} NFE; "
              f"masked confidences in [{args.threshold - 0.15:.2f}, {args.threshold}): {band / masked:.1%} "
              f"({band} of {masked}), of them near an anchor: {near / max(band, 1):.1%}")


if __name__ == "__main__":
    main()
