"""Issue 9's GPU run: the `paradecode bench` sweep of lowconf, threshold, prophet, credit and
localleap on every task of the shipped model (results saved after each task, so a cut-off run
keeps what it finished), then where Prophet exits and what its exits cost.

Prophet probe, per task: LLaDA's baseline at full steps next to Prophet (lowconf base, full
steps, the paper's thresholds) with three answer windows: the default (first 5 still-masked
positions), every still-masked position, and the fixed window at the start of the generation
(the reference's ``answer_start_pos``; these tasks' answers start there). Per variant:
accuracy, forwards, the share of rows that exit early, the accuracy of the exiting rows next to
the baseline's on the same rows, and, at the exit, the share of the masks it fills whose own
top-2 logit gap is below 1 (positions the model has not decided: the window mean hides them).

    python benchmarks/training_free.py --n 500 --device cuda --out DIR

DIR receives training_free_bench.{json,png} and prophet_exits.json; the committed copies
are ``benchmarks/results/training_free_<date>_<machine>{,_prophet-exits}.*`` (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import paradecode
from paradecode import zoo
from paradecode.bench.runner import format_summary, run_bench, summarize
from paradecode.bench.tasks import get_task
from paradecode.registry import register
from paradecode.samplers.prophet import Prophet

STRATEGIES = ("lowconf", "threshold", "prophet", "credit", "localleap")


@register("prophet-probe")
class ProphetProbe(Prophet):
    """Prophet, recording at each exit the top-2 gaps of the masks the exit fills."""

    description = "Prophet with exit statistics (benchmarks only)"
    log: list = []

    def early_exit(self, view, state):
        out = super().early_exit(view, state)
        rows = view.rows
        stop = out[0].cpu()  # Prophet decides on the device every step
        if stop.any():
            P = view.gen_start
            top2 = torch.topk(view.full_logits[:, P:].float(), 2, dim=-1).values
            gap = (top2[..., 0] - top2[..., 1]).cpu()
            masked = (view.canvas[:, P:] == state.mask_id).cpu()
            for i in torch.nonzero(stop).flatten().tolist():
                g = gap[i][masked[i]]
                ProphetProbe.log.append((int(rows[i]), len(g), float((g < 1.0).float().mean()) if len(g) else 0.0))
        return out


def run_task(model, tok, task, examples, strategy, batch_size, **opts):
    """(correct per example, forwards per example, exit log [(example, filled, share gap<1)])."""
    ok, nfe, log = [], [], []
    for b in range(0, len(examples), batch_size):
        ex = examples[b : b + batch_size]
        ProphetProbe.log = []
        out = paradecode.sample(model, [tok.encode(e.prompt) for e in ex], strategy, timing=False, **opts)
        texts = tok.batch_decode(out.generated.tolist(), skip_special_tokens=True)
        ok += [task.verify(e, t) for e, t in zip(ex, texts)]
        nfe += out.trace.row_nfe.tolist()
        log += [(b + r, n, u) for r, n, u in ProphetProbe.log]
    return torch.tensor(ok), torch.tensor(nfe, dtype=torch.float), log


def prophet_probe(name, tasks, n, batch_size, device):
    model, tok = zoo.load(name, device=device)
    info = zoo.info(name)
    rows = []
    print(f"\nProphet exits: model {name}, N={n} per task")
    print(f"{'task':9s} {'window':14s} {'acc':>6s} {'NFE':>6s} {'exit%':>6s} {'acc|exit':>8s} "
          f"{'base|exit':>9s} {'filled':>6s} {'gap<1':>6s}")
    for tname in tasks:
        task = get_task(tname)
        gen = int(info["task_gen_length"][tname])
        geo = dict(gen_length=gen, block_length=int(info["task_block_length"][tname]))
        examples = task.examples(n, seed=0)
        base_ok, _, _ = run_task(model, tok, task, examples, "lowconf", batch_size, steps=gen, **geo)
        print(f"{tname:9s} {'lowconf full':14s} {base_ok.float().mean():6.1%} {gen:6.1f}")
        for window, opts in {"first-5-masked": {}, "all-masked": dict(answer_length=gen),
                             "fixed-at-0": dict(answer_start=0)}.items():
            ok, nfe, log = run_task(model, tok, task, examples, "prophet-probe", batch_size, **geo, **opts)
            exited = torch.zeros(len(examples), dtype=torch.bool)
            for r, _, _ in log:
                exited[r] = True
            k = int(exited.sum())
            row = {
                "task": tname, "window": window, "accuracy": float(ok.float().mean()), "nfe": float(nfe.mean()),
                "full_steps": gen, "baseline_accuracy": float(base_ok.float().mean()), "exit_fraction": k / n,
                "accuracy_exited": float(ok[exited].float().mean()) if k else None,
                "baseline_accuracy_exited": float(base_ok[exited].float().mean()) if k else None,
                "mean_filled": sum(x[1] for x in log) / k if k else None,
                "filled_gap_below_1": sum(x[2] for x in log) / k if k else None,
            }
            rows.append(row)
            f = lambda v, s: format(v, s) if v is not None else "-"  # noqa: E731
            print(f"{'':9s} {window:14s} {row['accuracy']:6.1%} {row['nfe']:6.1f} {row['exit_fraction']:6.1%} "
                  f"{f(row['accuracy_exited'], '8.1%')} {f(row['baseline_accuracy_exited'], '9.1%')} "
                  f"{f(row['mean_filled'], '6.1f')} {f(row['filled_gap_below_1'], '6.1%')}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.model or zoo.available()[0]
    tasks = args.tasks.split(",") if args.tasks else zoo.info(name)["tasks"]
    t0 = time.perf_counter()
    if not args.skip_bench:
        rows = []
        for tname in tasks:
            res = run_bench(name, strategies=STRATEGIES, tasks=[tname], n=args.n, batch_size=args.batch_size,
                            device=args.device, progress=False)
            rows += res["rows"]
            result = {**res, "rows": rows, "summary": summarize(rows)}
            (out / "training_free_bench.json").write_text(json.dumps(result, indent=1) + "\n")
            print(f"[{time.perf_counter() - t0:6.1f}s] {tname} done", flush=True)
        for r in rows:
            print(f"{r['strategy']:10s} {r['setting']:50s} {r['task']:9s} {r['accuracy']:7.1%} {r['nfe']:6.1f} "
                  f"{r['seconds']:7.2f}")
        print(format_summary(result["summary"]))
        from paradecode.bench.plot import plot_curves

        plot_curves(rows, out / "training_free_bench.png",
                    title=f"{name}: accuracy vs forwards (N={args.n} per task)")
    probe = prophet_probe(name, tasks, args.n, args.batch_size, args.device)
    (out / "prophet_exits.json").write_text(json.dumps(probe, indent=1) + "\n")
    print(f"[{time.perf_counter() - t0:6.1f}s] done", flush=True)


if __name__ == "__main__":
    main()
