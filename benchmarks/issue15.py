"""Every figure issue 15 asks for, in one run, with each target as met or not.

Runs the two benchmarks one after the other, each in its own process (so each gets the whole GPU
and its own compile state), on the settings of the README's single-GPU table:

1. ``speculative.py --random 8b-1b``: Llama-3.1-8B / 3.2-1B shapes, bf16, batch 1, joined
   projections, compiled elementwise kernels, the Triton attention kernel. The target alone,
   ours, ours + VocabTrim, prompt lookup, transformers' greedy and assisted generation, the
   target's weight-read floor.
2. ``dllm_throughput.py``: LLaDA-8B's shape, bf16, joined projections, compiled elementwise
   kernels, the Triton attention kernel. Tokens/s at batch 1, 8, 32 for no cache, prefix, dual
   and dKV, each beside its limit and, with ``--fast-dllm-dir``, beside Fast-dLLM's own loops.
   Also the dual cache's mean/median step at P1024/G1024 and each rule's sampler share.

Then it reads both results files and writes ``issue15_<date>_<machine>.{json,txt}``: each
target of the issue with its value, met or not, and the file it comes from. The two
benchmarks' own files stay beside it, with their full tables. ``--parts all`` adds speculative
decoding at batch 1 / 4 / 16 / 32 and continuous batching against fixed batches (256 prompts,
``min_refill`` 1 and 4) as figures beside the targets; they take about eight more minutes.

    PYTHONPATH=. python benchmarks/issue15.py --fast-dllm-dir .gpu/fast-dllm --out-dir OUT   # GPU, ~7 min
    PYTHONPATH=. python benchmarks/issue15.py --smoke --out-dir /tmp/i15                     # CPU check
    PYTHONPATH=. python benchmarks/issue15.py --summarize --out-dir OUT    # the summary of files already there

``--smoke`` runs both scripts' CPU checks (tiny models): the summary's form, not its figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
CACHED = ("prefix", "dual", "dkv-decode")
LIMIT_X, MEAN_MEDIAN, SAMPLER_SHARE = 1.3, 1.5, 0.05


def commands(args: argparse.Namespace, out: Path) -> dict[str, list[str]]:
    """The benchmark command lines of every part."""
    py = sys.executable
    spec = [py, str(HERE / "speculative.py"), "--tag", f"{args.tag}", "--out-dir", str(out)]
    dllm = [py, str(HERE / "dllm_throughput.py"), "--machine", f"{args.machine}_{args.tag}", "--out-dir", str(out),
            "--budget-s", str(args.dllm_budget_s)]
    if args.smoke:
        spec.append("--smoke")
        dllm.append("--smoke")
    else:
        spec += ["--random", "8b-1b", "--device", "cuda", "--dtype", "bfloat16", "--fuse-projections",
                 "--compile-norm", "--attention", "triton", "--skip-eager-row"]
        dllm += ["--fuse", "--compile-elementwise", "--attention", "triton"]
    if args.fast_dllm_dir:
        dllm += ["--fast-dllm-dir", args.fast_dllm_dir]
    batched = spec + ["--batches", "1,2" if args.smoke else "1,4,16,32"]
    continuous = spec + ["--continuous", "2,4" if args.smoke else "4,16,32", "--min-refill", "1,4"] + (
        ["--prompts", "8"] if args.smoke else ["--prompts", "256"])
    return {"speculative": spec, "dllm": dllm, "batched": batched, "continuous": continuous}


def newest(out: Path, pattern: str) -> Optional[Path]:
    found = sorted(out.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def speculative_targets(res: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The autoregressive half: rows from ``speculative.py``'s batch-1 table and its own targets."""
    b = res["batch1"]
    t = b["targets"]
    sp, sa = b["speedup_vs_target"], b["speedup_vs_hf_assisted"]
    both = f"ours {sp['ours']:.2f}x, with VocabTrim {sp['ours_trim']:.2f}x"
    floor = b["floor"]
    return [
        {"target": "speculative >= 1.8x the target alone (batch 1)", "value": both,
         "met": t["speculative_vs_target_alone>=1.8"]["met"], "source": source},
        {"target": "speculative >= 2x transformers' assisted generation", "value":
         f"ours {sa['ours']:.1f}x, with VocabTrim {sa['ours_trim']:.1f}x",
         "met": t["speculative_vs_hf_assisted>=2"]["met"], "source": source},
        {"target": "lossless: outputs equal the target's greedy output", "value":
         ", ".join(f"{m} {v}" for m, v in b["outputs_equal_target_greedy"].items() if m.startswith("ours")),
         "met": t["lossless"]["met"], "source": source},
        {"target": "VocabTrim saves >= 15% of a draft forward", "value": f"{100 * b['vocabtrim_draft_time_saving']:.1f}%",
         "met": t["vocabtrim_draft_time_saving>=0.15"]["met"], "source": source},
        {"target": "the target alone within 2x of its weight-read floor", "value":
         f"{floor['target_ms_per_token']:.2f} ms/token, {floor['target_over_floor']:.2f}x of "
         f"{floor['weight_read_floor_ms_per_token']:.2f} ms", "met": t["target_within_2x_of_floor"]["met"],
         "source": source},
    ]


def dllm_targets(res: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The diffusion half: each cached setting against its limit, the mean/median step, the
    sampler shares, and graphed tokens against eager ones."""
    rows: list[dict[str, Any]] = []
    thr = res.get("throughput", {})
    cells, missing = [], []
    for b in res["batches"]:
        for cache in CACHED:
            r = thr.get(f"{b}/{cache}", {})
            (cells if "x_limit" in r else missing).append((b, cache, r.get("x_limit")))
    worst = max(cells, key=lambda c: c[2]) if cells else None
    over = [f"{c} b{b} {x:.3f}x" for b, c, x in cells if x > LIMIT_X]  # 3 places: 1.304 is over
    rows.append({"target": f"every cached setting within {LIMIT_X}x of its limit (batch {', '.join(map(str, res['batches']))})",
                 "value": (f"{len(cells) - len(over)}/{len(cells)} cells; over: " + ", ".join(over) if over
                           else f"all {len(cells)} cells") + (f"; not measured: {len(missing)}" if missing else ""),
                 "met": bool(cells) and not over and not missing, "worst": worst, "source": source})
    m = res.get("mean_vs_median")
    shape = f"P{m['prompt']}/G{m['gen']}" if m else "P1024/G1024"
    rows.append({"target": f"dual cache mean step within {MEAN_MEDIAN}x of the median ({shape})",
                 "value": f"{m['mean_over_median']:.2f} (mean {1e3 * m['mean_step_s']:.2f} ms, median "
                          f"{1e3 * m['median_step_s']:.2f} ms)" if m else "not measured",
                 "met": bool(m) and m["mean_over_median"] <= MEAN_MEDIAN, "source": source})
    # The forwards' device spans inside the same steps (in-run); files from before it was measured
    # have only the bare forwards timed in another run (unsynced), whose clocks may differ.
    sampler = res.get("sampler_share", {})
    field = "inrun_share" if any("inrun_share" in v for v in sampler.values()) else "unsynced_share"
    shares = {k: v[field] for k, v in sampler.items() if field in v}
    over = sorted(((k, s) for k, s in shares.items() if s > SAMPLER_SHARE), key=lambda kv: -kv[1])
    apart = {k: v["unsynced_share"] for k, v in sampler.items() if "unsynced_share" in v}
    rows.append({"target": f"sampler share of a step <= {100 * SAMPLER_SHARE:.0f}% at batch 1, every rule "
                           "(steps as sample() runs them)",
                 "value": (f"{len(shares) - len(over)}/{len(shares)} rule/cache pairs"
                           + (" (forwards timed inside the same steps)" if field == "inrun_share" else "")
                           + ("; over: " + ", ".join(f"{k} {100 * s:.1f}%" for k, s in over) if over else "")
                           + (f"; with the bare forwards timed in another run: "
                              f"{sum(s <= SAMPLER_SHARE for s in apart.values())}/{len(apart)}"
                              if field == "inrun_share" and apart else "")) if shares else "not measured",
                 "met": bool(shares) and not over, "source": source})
    gve = res.get("graph_vs_eager", {})
    rows.append({"target": "graphed forwards give the eager model's tokens (every cache)",
                 "value": ", ".join(f"{c} {'equal' if r['equal'] else 'DIFFER'}" for c, r in gve.items()) or "not measured",
                 "met": bool(gve) and all(r["equal"] for r in gve.values()), "source": source})
    return rows


def dllm_table(res: dict[str, Any]) -> list[str]:
    """Tokens/s (x of limit) per cache and batch, and Fast-dLLM's batch-1 rows beside ours."""
    lines = ["| cache | " + " | ".join(f"batch {b}" for b in res["batches"]) + " | Fast-dLLM batch 1 (ours / theirs) |",
             "|---|" + "---|" * (len(res["batches"]) + 1)]
    fd = res.get("fast_dllm", {}).get("rows", {})
    for cache in ("none",) + CACHED:
        cells = []
        for b in res["batches"]:
            r = res.get("throughput", {}).get(f"{b}/{cache}", {})
            cells.append(f"{r['tokens_per_s']:.0f} ({r['x_limit']:.2f}x)" if "tokens_per_s" in r else "-")
        theirs = fd.get(f"1/{cache}", {})
        cells.append(f"{theirs['tokens_per_s']:.0f} tok/s, {theirs['ours_over_theirs']:.1f}x"
                     if "ours_over_theirs" in theirs else "-")
        lines.append(f"| {cache} | " + " | ".join(cells) + " |")
    return lines


def batch_figures(res: dict[str, Any]) -> list[str]:
    """The batched table in one line per batch: ours (and with VocabTrim) over the target alone."""
    out = []
    for B, row in res["batched"]["batches"].items():
        sp, eq = row["speedup_vs_target"], row["rows_equal_target"]
        out.append(f"batch {B}: target {row['tokens_per_second']['target']:.0f} tok/s; ours {sp['ours']:.2f}x, "
                   f"with VocabTrim {sp['ours_trim']:.2f}x; rows equal {eq['ours']}, {eq['ours_trim']}")
    return out


def continuous_figures(res: dict[str, Any]) -> list[str]:
    """Continuous batching over fixed batches, one line per batch size and min_refill."""
    return [f"batch {key}: {row['speedup']:.2f}x fixed batches ({row['continuous']['tokens_per_second']:.0f} against "
            f"{row['fixed']['tokens_per_second']:.0f} tok/s), prompts equal {row['prompts_equal']}"
            for key, row in res["continuous"]["batches"].items()]


def summary(spec: Optional[dict], dllm: Optional[dict], names: dict[str, Optional[str]],
            batched: Optional[dict] = None, continuous: Optional[dict] = None) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    if spec is not None:
        rows += speculative_targets(spec, names.get("speculative"))
    if dllm is not None:
        rows += dllm_targets(dllm, names.get("dllm"))
    figures = {}
    if batched is not None:
        figures["speculative by batch size"] = batch_figures(batched)
    if continuous is not None:
        figures["continuous batching"] = continuous_figures(continuous)
    runs = (("speculative", spec), ("dllm", dllm), ("batched", batched), ("continuous", continuous))
    return {"targets": rows, "figures": figures, "files": names, "met": sum(r["met"] for r in rows), "of": len(rows),
            "devices": {k: v.get("device") or v.get("info", {}).get("device") for k, v in runs if v is not None}}


def report(s: dict[str, Any], dllm: Optional[dict]) -> str:
    if s["targets"]:
        lines = [f"issue 15 in one run: {s['met']} of {s['of']} targets met; devices {s['devices']}",
                 "| target | value | met |", "|---|---|---|"]
        lines += [f"| {r['target']} | {r['value']} | {'yes' if r['met'] else 'no'} |" for r in s["targets"]]
    else:
        lines = [f"issue 15, figures only (the parts with targets, speculative and dllm, did not run); devices {s['devices']}"]
    for title, lines_ in s.get("figures", {}).items():
        lines += ["", f"{title}:"] + [f"  {line}" for line in lines_]
    if dllm is not None and dllm.get("throughput"):
        lines += ["", f"{dllm['shape']}, P{dllm['prompt']}/G{dllm['gen']}, block {dllm['block']}, "
                      f"{dllm['tokens_per_step']} tokens per step: tokens/s (x of limit)"] + dllm_table(dllm)
    lines += ["", "files: " + ", ".join(f"{k} {v}" for k, v in s["files"].items())]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="both scripts' CPU checks: the summary's form, not figures")
    ap.add_argument("--fast-dllm-dir", default=None,
                    help="checkout of NVlabs/Fast-dLLM's llada/ (generate.py, model/): its loops beside ours")
    ap.add_argument("--machine", default="h200", help="machine name in the results file names")
    ap.add_argument("--tag", default="issue15", help="suffix of the two benchmarks' results files")
    ap.add_argument("--dllm-budget-s", type=float, default=300.0,
                    help="dllm_throughput.py --budget-s: parts not started by then are skipped and reported")
    ap.add_argument("--parts", default="speculative,dllm",
                    help="comma list of speculative, dllm (the issue's targets), batched and continuous (speculative "
                         "decoding at batch 1-32 and continuous batching: figures beside them, ~8 more minutes on "
                         "an H200); 'all' for the four")
    ap.add_argument("--summarize", action="store_true",
                    help="run nothing: summarize the newest results files of both benchmarks in --out-dir")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    known = ("speculative", "dllm", "batched", "continuous")
    parts = list(known) if args.parts == "all" else [p for p in args.parts.split(",") if p]
    if not parts or set(parts) - set(known):
        ap.error(f"--parts takes a comma list of {', '.join(known)} (or all), got {args.parts!r}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmds = commands(args, out)
    failed = []
    for part in [] if args.summarize else parts:
        print(f"== {part}: {' '.join(cmds[part])}", flush=True)
        if subprocess.run(cmds[part]).returncode != 0:
            failed.append(part)
    spec_file = newest(out, f"speculative_2*_{args.tag}.json") if "speculative" in parts else None  # 2...: the date
    batched_file = newest(out, f"speculative_batched_*_{args.tag}.json") if "batched" in parts else None
    continuous_file = newest(out, f"speculative_continuous_*_{args.tag}.json") if "continuous" in parts else None
    dllm_machine = "cpu-smoke" if args.smoke else f"{args.machine}_{args.tag}"  # --smoke names its own file
    dllm_file = newest(out, f"dllm_throughput_*_{dllm_machine}*.json") if "dllm" in parts else None
    spec = json.loads(spec_file.read_text()) if spec_file else None
    dllm = json.loads(dllm_file.read_text()) if dllm_file else None
    names = {p: f and f.stem for p, f in (("speculative", spec_file), ("dllm", dllm_file)) if p in parts}
    extra = {}
    for part, f in (("batched", batched_file), ("continuous", continuous_file)):
        if f is not None:
            names[part], extra[part] = f.stem, json.loads(f.read_text())
    s = summary(spec, dllm, names, **extra)
    s["commands"] = {p: " ".join(["python"] + [str(Path(c).relative_to(HERE.parent)) if c.endswith(".py") else c
                                               for c in cmds[p][1:]]) for p in parts}
    s["failed"] = failed
    machine = "cpu-smoke" if args.smoke else args.machine
    # the default parts name the file alone; other sets of parts say which, so they do not overwrite it
    variant = "" if parts == ["speculative", "dllm"] or args.smoke else "_" + "-".join(parts)
    stem = out / f"issue15_{datetime.date.today().isoformat()}_{machine}{variant}"
    text = report(s, dllm)
    stem.with_suffix(".json").write_text(json.dumps(s, indent=1) + "\n")
    stem.with_suffix(".txt").write_text(text)
    print(text + f"wrote {stem}.json/.txt", flush=True)
    if failed:
        sys.exit(f"error: {', '.join(failed)} exited with an error; the summary holds what its file had.")
    return s


if __name__ == "__main__":
    main()
