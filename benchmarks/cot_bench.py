"""Issue 17's bench: every dLLM strategy's sweep on the chain-of-thought task, without a cache
and with the prefix and dual caches, on a model from scripts/train_cot.py.

Per (strategy, setting, cache): accuracy (chain and final line verified), final-answer-only
accuracy, forwards per sample (NFE), tokens per forward, wall time, tokens/s (canvas tokens,
N x gen_length, per second, as the issue-16 bench counts them) and answer tokens/s (tokens
before the first <eos>). Then the iso-quality table:
per strategy and cache, the fewest forwards within 1 point of LLaDA's baseline at full steps
without a cache (``paradecode.bench.runner.summarize``), with its tokens/s and speed-ups, next
to the papers' figures; and the steps-to-quality plot (accuracy vs NFE, one panel per cache).

Learn2PD needs a filter trained for the model: when ``<model>/learn2pd_filter`` is missing it is
trained first (scripts/train_learn2pd.py on ``cot-train`` prompts, seed 123; ``cot-free-train``
with ``--task cot-free``, for a model from ``scripts/train_cot.py --free-choice``).

    python benchmarks/cot_bench.py --model $OUT/cot-10m --device cuda --n 500 --seed 4242 --out $OUT/cot-bench
    python benchmarks/cot_bench.py --smoke --out /tmp/cot-bench-smoke        # CPU, tiny random model

A sweep too long for one call can run as several processes (e.g. one per ``--caches`` entry, on
one GPU at once: accuracy and NFE do not depend on the load, wall times do), merged afterwards;
then ``--only-iso`` re-runs just the baseline and each iso-quality setting alone, so the table's
tokens/s come from one unloaded run, and ``--timing`` puts those into the merged table:

    python benchmarks/cot_bench.py --merge A/cot_bench.json B/cot_bench.json --out M
    python benchmarks/cot_bench.py --model cot-8m --only-iso M/cot_bench.json --out T
    python benchmarks/cot_bench.py --merge M/cot_bench.json --timing T/cot_bench.json --out FINAL

Results are written after every strategy (a run cut off by a timeout keeps what it finished);
``--time-limit`` stops starting new runs after that many seconds (the order: no cache, dual,
prefix), and lists what it skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import paradecode  # noqa: E402
from paradecode.bench.cot_tasks import check_chain, check_final  # noqa: E402
from paradecode.bench.runner import BASELINE, setting_label, summarize, sweep_for, _full_options  # noqa: E402
from paradecode.bench.tasks import get_task  # noqa: E402

STRATEGIES = ("lowconf", "threshold", "prophet", "credit", "localleap", "learn2pd", "eb", "editing", "wino",
              "dparallel")
CACHES = ("none", "dual", "prefix", "elastic", "dllm-cache")
# What each paper reports against LLaDA-8B decoding at full steps (the list).
PAPERS = {
    "threshold": "Fast-dLLM: threshold 0.9 parallel decoding (+ prefix/dual cache) on GSM8K-256",
    "prophet": "Prophet: up to 3.4x fewer steps",
    "credit": "CreditDecoding: 5.48x speed-up",
    "localleap": "LocalLeap: steps down to 14.2% (7.0x)",
    "learn2pd": "Learn2PD: 22.6x with End-of-Text Prediction",
    "eb": "EB-Sampler: 2-3x without loss on math and code (entropy bound gamma)",
    "editing": "LLaDA2.1 draft-and-edit (SGLang JointThreshold defaults 0.5 / 0.0)",
    "wino": "WINO: 6x fewer steps on GSM8K with +2.58% accuracy (LLaDA)",
    "dparallel": "dParallel: 256 -> 30 steps on GSM8K (8.5x) after certainty-forcing distillation",
    "lowconf": "LLaDA: steps = gen_length (the reference)",
}


TIMING_FIELDS = ("seconds", "tokens_per_second", "answer_tokens_per_second")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(model, tok, task, examples, prompts, strategy: str, opts: dict, cache: Optional[str],
            batch_size: int, device: torch.device) -> dict[str, Any]:
    correct = strict = final = answer_tokens = 0
    nfe = tokens = seconds = 0.0
    for b in range(0, len(examples), batch_size):
        _sync(device)
        t0 = time.perf_counter()
        out = paradecode.sample(model, prompts[b : b + batch_size], strategy, cache=cache, timing=False, **opts)
        ids = out.generated.tolist()
        _sync(device)
        seconds += time.perf_counter() - t0
        texts = tok.batch_decode(ids, skip_special_tokens=True)
        answer_tokens += sum(r.index(tok.eos_token_id) if tok.eos_token_id in r else len(r) for r in ids)
        chunk = examples[b : b + batch_size]
        correct += sum(task.verify(e, t) for e, t in zip(chunk, texts))
        final += sum(check_final(e.data, t.strip()) for e, t in zip(chunk, texts))
        strict += sum(check_chain(e.data, t.strip(), strict=True) for e, t in zip(chunk, texts))
        nfe += float(out.trace.row_nfe.float().sum())
        tokens += float(out.trace.tokens_committed.float().sum())
    n = len(examples)
    return {"accuracy": correct / n, "strict_accuracy": strict / n, "final_accuracy": final / n, "nfe": nfe / n,
            "tokens_per_forward": tokens / nfe if nfe else 0.0, "seconds": seconds,
            "tokens_per_second": n * opts["gen_length"] / seconds if seconds else 0.0,
            "answer_tokens_per_second": answer_tokens / seconds if seconds else 0.0, "n": n}


def ensure_learn2pd_filter(model_dir: Path, device: str, n: int, epochs: int, task: str = "cot") -> None:
    """Train the filter on the training prompts of ``task`` (``cot-train``, or ``cot-free-train``
    for the free-choice task) when the model has none."""
    if (model_dir / "learn2pd_filter").exists():
        return
    import train_learn2pd

    t0 = time.perf_counter()
    train_tasks = "cot-free-train" if task == "cot-free" else "cot-train"
    train_learn2pd.main(["--model", str(model_dir), "--tasks", train_tasks, "--n", str(n), "--seed", "123",
                         "--epochs", str(epochs), "--device", device])
    print(f"learn2pd filter trained in {time.perf_counter() - t0:.0f}s", flush=True)


def make_smoke_model(directory: Path) -> Path:
    """A tiny random LLaDA model with the cot tokenizer (CPU smoke runs)."""
    from paradecode.bench.cot_tasks import cot_vocabulary
    from paradecode.bench.tokenizer import build_word_tokenizer
    from paradecode.models import LLaDAConfig, LLaDAModel

    tok = build_word_tokenizer(cot_vocabulary())
    V = len(tok)
    torch.manual_seed(0)
    model = LLaDAModel(LLaDAConfig(d_model=32, n_heads=2, n_kv_heads=2, n_layers=2, mlp_hidden_size=64,
                                   vocab_size=V, embedding_size=(V + 15) // 16 * 16, max_sequence_length=512,
                                   rope_theta=10000.0, mask_token_id=tok.mask_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    info = {"name": "cot-smoke", "tasks": ["cot"], "gen_length": 256, "block_length": 32,
            "task_gen_length": {"cot": 256}, "task_block_length": {"cot": 32}}
    (directory / "info.json").write_text(json.dumps(info) + "\n")
    return directory


def _is_baseline(r: dict) -> bool:
    return (r["cache"] == "none" and r["strategy"] == BASELINE
            and r["options"].get("steps") == r["options"]["gen_length"])


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caches = list(dict.fromkeys(r["cache"] for r in rows))
    fig, axes = plt.subplots(1, len(caches), figsize=(5.2 * len(caches), 4.2), squeeze=False)
    markers = "osD^v<>p*h"
    base = next((r for r in rows if _is_baseline(r)), None)
    for ax, cache in zip(axes.flat, caches):
        for i, s in enumerate(dict.fromkeys(r["strategy"] for r in rows)):
            pts = sorted((r["nfe"], 100 * r["accuracy"]) for r in rows if r["cache"] == cache and r["strategy"] == s)
            if pts:
                # one colour per strategy in every panel (a panel without some strategies would
                # otherwise shift matplotlib's colour cycle and the one legend would mislabel it)
                ax.plot(*zip(*pts), marker=markers[i % len(markers)], color=f"C{i % 10}", label=s,
                        linewidth=1.4, markersize=4)
        if base is not None:
            ax.axhline(100 * base["accuracy"] - 1, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(f"cache: {cache}")
        ax.set_xlabel("forwards per sample (NFE)")
        ax.set_ylabel("accuracy (%), chain + answer")
        ax.set_ylim(-3, 103)
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _retimed(rows: list[dict], timing: Optional[list[dict]]) -> list[dict]:
    """``rows`` with the wall times of the ``timing`` rows of the same (strategy, cache, setting)."""
    if not timing:
        return rows
    timed = {(t["strategy"], t["cache"], t["setting"]): t for t in timing}
    out = []
    for r in rows:
        t = timed.get((r["strategy"], r["cache"], r["setting"]))
        out.append(dict(r, **{k: t[k] for k in TIMING_FIELDS}, timed_alone=True) if t else dict(r, timed_alone=False))
    return out


def iso_quality(rows: list[dict], timing: Optional[list[dict]] = None) -> list[dict]:
    """``summarize`` against the no-cache full-step baseline, per strategy and cache.

    ``timing``: rows of an ``--only-iso`` run; where one has the same (strategy, cache, setting),
    its wall time replaces the sweep's (the sweep may have shared the GPU with other processes).
    """
    rows = _retimed(rows, timing)
    base = [r for r in rows if _is_baseline(r)]
    if not base:
        return []
    labelled = [dict(base[0], strategy=BASELINE)] + [
        dict(r, strategy=f"{r['strategy']}+{r['cache']}") for r in rows]
    out = []
    for s in summarize(labelled):
        if s["strategy"] == BASELINE:
            continue
        strategy, _, cache = s["strategy"].rpartition("+")
        row = next((r for r in rows if r["strategy"] == strategy and r["cache"] == cache
                    and r["setting"] == s["setting"]), None)
        out.append(dict(s, strategy=strategy, cache=cache, tokens_per_second=row["tokens_per_second"] if row else None,
                        answer_tokens_per_second=row["answer_tokens_per_second"] if row else None,
                        baseline_tokens_per_second=base[0]["tokens_per_second"], paper=PAPERS.get(strategy, ""),
                        timed_alone=row.get("timed_alone") if row else None))
    return out


def iso_quality_per_cache(rows: list[dict], timing: Optional[list[dict]] = None) -> list[dict]:
    """Per cache: each strategy against that cache's own full-step baseline.

    A cache that already loses points at full steps has no setting within a point of the no-cache
    baseline; this table says how much parallelism each rule keeps at the cache's own quality.
    ``speedup_time_vs_no_cache`` compares the wall time with the no-cache full-step baseline's.
    """
    rows = _retimed(rows, timing)
    plain = [r for r in rows if _is_baseline(r)]
    out = []
    for cache in dict.fromkeys(r["cache"] for r in rows):
        if cache == "none":
            continue
        for s in iso_quality([dict(r, cache="none") for r in rows if r["cache"] == cache]):
            t = s["tokens_per_second"]
            out.append(dict(s, cache=cache, speedup_time_vs_no_cache=(
                t / plain[0]["tokens_per_second"] if plain and t else None)))
    return out


def format_iso(table: list[dict], vs_no_cache: bool = False) -> str:
    extra = f" {'x no-cache':>10s}" if vs_no_cache else ""
    head = (f"{'strategy':10s} {'cache':10s} {'setting (within 1 pt)':40s} {'acc':>6s} {'NFE':>6s} {'x NFE':>6s} "
            f"{'x time':>6s} {'tok/s':>8s} {'ans t/s':>7s}{extra}  paper")
    lines = [head, "-" * (len(head) + 30)]
    for s in table:
        if s["setting"] is None:
            lines.append(f"{s['strategy']:10s} {s['cache']:10s} {'(none within 1 point)':40s} {'':>6s} {'':>6s} "
                         f"{'':>6s} {'':>6s} {'':>8s} {'':>7s}  {s['paper']}")
            continue
        lines.append(f"{s['strategy']:10s} {s['cache']:10s} {s['setting'][:40]:40s} {s['accuracy']:6.1%} {s['nfe']:6.1f} "
                     f"{s['speedup_nfe']:6.2f} {s['speedup_time'] or 0:6.2f} {s['tokens_per_second']:8.0f} "
                     f"{s['answer_tokens_per_second']:7.0f}"
                     + (f" {s.get('speedup_time_vs_no_cache') or 0:10.2f}" if vs_no_cache else "") + f"  {s['paper']}")
    return "\n".join(lines)


def report(result: dict, out_dir: Path, name: str, t_start: float) -> None:
    """The plot and the printed iso-quality table of a written ``result``."""
    title = f"{name}: accuracy vs forwards (N={result['n']}, seed {result['seed']})"
    try:
        plot(result["rows"], out_dir / "cot_bench.png", title)
    except ImportError:
        print("matplotlib missing: no plot", flush=True)
    print("\nFewest forwards within 1 point of LLaDA's baseline at full steps (no cache):")
    print(format_iso(result["iso_quality"]))
    if result.get("iso_quality_per_cache"):
        print("\nThe same within each cache, against that cache's own full-step lowconf row "
              "(x time: over that row; x no-cache: tokens/s over the no-cache baseline's):")
        print(format_iso(result["iso_quality_per_cache"], vs_no_cache=True))
    if result["skipped"]:
        print(f"\nskipped (time limit): {len(result['skipped'])} runs, e.g. {result['skipped'][:3]}")
    if result["errors"]:
        print(f"errors: {len(result['errors'])} runs, e.g. {result['errors'][:2]}")
    print(f"\nwrote {out_dir / 'cot_bench.json'} and {out_dir / 'cot_bench.png'}; {time.perf_counter() - t_start:.0f}s")


def iso_plan(previous: dict, strategies: list[str], caches: list[str]) -> list[tuple[str, str, dict, str]]:
    """(cache, strategy, full options, label) of each setting in a previous result's two iso-quality
    tables: within a point of the no-cache baseline, and within a point of each cache's own
    full-step row (that row included), so both tables can be re-timed."""
    per_cache = previous.get("iso_quality_per_cache")
    if per_cache is None:
        per_cache = iso_quality_per_cache(previous["rows"])
    plan, seen = [], set()
    for s in previous["iso_quality"] + per_cache:
        key = (s["cache"], s["strategy"], s["setting"])
        if s["setting"] is None or s["strategy"] not in strategies or s["cache"] not in caches or key in seen:
            continue
        seen.add(key)
        row = next(r for r in previous["rows"] if (r["cache"], r["strategy"], r["setting"]) == key)
        plan.append((s["cache"], s["strategy"], row["options"], s["setting"]))
    return plan


def merge(paths: list[str], timing_path: Optional[str], out_dir: Path, argv: Optional[list[str]]) -> int:
    """One result from several runs of the same problems (the first run of a setting wins)."""
    t_start = time.perf_counter()
    parts = [json.loads(Path(p).read_text()) for p in paths]
    keys = {(p["task"], p["n"], p["seed"]) for p in parts}
    if len(keys) != 1:
        raise SystemExit(f"--merge: the files are not runs of the same problems (task, N, seed): {sorted(keys)}")
    rows, seen = [], set()
    for part in parts:
        for r in part["rows"]:
            key = (r["strategy"], r["cache"], r["setting"])
            if key not in seen:
                seen.add(key)
                rows.append(r)
    done = {(r["strategy"], r["cache"], r["setting"]) for r in rows}
    timing = json.loads(Path(timing_path).read_text())["rows"] if timing_path else None
    result = dict(parts[0], rows=rows, iso_quality=iso_quality(rows, timing),
                  iso_quality_per_cache=iso_quality_per_cache(rows, timing),
                  skipped=[s for p in parts for s in p["skipped"]
                           if (s["strategy"], s["cache"], s["setting"]) not in done],
                  errors=[e for p in parts for e in p["errors"]], merged_from=[p.get("command") for p in parts],
                  timing_from=json.loads(Path(timing_path).read_text()).get("command") if timing_path else None,
                  seconds=sum(p.get("seconds", 0.0) for p in parts),
                  command="python benchmarks/cot_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    (out_dir / "cot_bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    name = (result.get("model_info") or {}).get("name") or Path(result["model"]).name
    report(result, out_dir, f"{name} on {result['task']}", t_start)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory from scripts/train_cot.py")
    ap.add_argument("--task", default="cot")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=4242, help="problem seed (train_cot.py evaluates on 20261201)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--caches", default=",".join(CACHES), help="comma-separated: none, dual, prefix")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=1,
                    help="timed runs per setting; the fastest is kept, every run's seconds are recorded")
    ap.add_argument("--time-limit", type=float, default=330.0, help="start no new run after this many seconds")
    ap.add_argument("--matmul-precision", default="high", choices=("highest", "high", "medium"),
                    help="float32 matmuls on cuda: 'high' = TF32, as scripts/train_cot.py evaluates its models")
    ap.add_argument("--learn2pd-n", type=int, default=200, help="prompts for the Learn2PD filter (if missing)")
    ap.add_argument("--learn2pd-epochs", type=int, default=3000)
    ap.add_argument("--out", required=True, help="output directory: cot_bench.json, cot_bench.png")
    ap.add_argument("--smoke", action="store_true", help="CPU: a tiny random model, N=4, two settings per sweep")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="no run: merge these cot_bench.json files (same task, N and seed) into --out")
    ap.add_argument("--timing", default=None, metavar="JSON",
                    help="with --merge: an --only-iso run's cot_bench.json whose wall times replace the sweep's")
    ap.add_argument("--only-iso", default=None, metavar="JSON",
                    help="run only the baseline and the iso-quality settings of this cot_bench.json, one by one")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(args.merge, args.timing, out_dir, argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1 (timed runs per setting)")
    if args.smoke:
        args.device, args.n, args.batch_size, args.learn2pd_n, args.learn2pd_epochs = "cpu", 4, 4, 4, 20
        if args.model is None:
            args.model = str(make_smoke_model(out_dir / "smoke-model"))
    if args.model is None:
        raise SystemExit("--model is required (a directory written by scripts/train_cot.py), or use --smoke")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    caches = [c.strip() for c in args.caches.split(",") if c.strip()]
    for c in caches:
        if c != "none":
            paradecode.registry.get_cache_class(c)
    for s in strategies:
        paradecode.registry.get_strategy_class(s)
    device = torch.device(args.device)
    torch.set_float32_matmul_precision(args.matmul_precision)
    from paradecode import zoo

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        if args.model in zoo.available():  # a shipped model's name
            model_dir = zoo.model_dir(args.model)
    if "learn2pd" in strategies:
        ensure_learn2pd_filter(model_dir, args.device, args.learn2pd_n, args.learn2pd_epochs, args.task)
    from paradecode.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(model_dir), device=args.device)
    info = zoo.info(model_dir)
    if info.get("tasks") and args.task not in info["tasks"]:
        print(f"warning: {model_dir} was evaluated on {info['tasks']}, not --task {args.task} (a model trained with "
              f"scripts/train_cot.py --free-choice writes forms only --task cot-free accepts)", flush=True)
    task = get_task(args.task)
    gen, block = task.gen_length, task.block_length
    examples = task.examples(args.n, seed=args.seed)
    prompts = [tok.encode(e.prompt) for e in examples]
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")  # a model directory loads in its stored dtype
    print(f"model {model_dir} ({info.get('parameters', '?')} parameters, {dtype}), task {args.task}, N={args.n}, "
          f"seed {args.seed}, device {device}, batch {args.batch_size}", flush=True)

    # the baseline first, then every strategy's sweep, cache by cache
    plan = [("none", BASELINE, {"steps": gen}, setting_label({"steps": gen}))] if "none" in caches or args.only_iso else []
    if args.only_iso:
        planned = {(c, s, label) for c, s, _, label in plan}  # the baseline: run once, not again as an iso row
        plan += [p for p in iso_plan(json.loads(Path(args.only_iso).read_text()), strategies, caches)
                 if (p[0], p[1], p[3]) not in planned]
        caches = list(dict.fromkeys(c for c, _, _, _ in plan))
    else:
        for cache in caches:
            for s in strategies:
                for st in sweep_for(s, gen, block):
                    if args.smoke and st not in sweep_for(s, gen, block)[:2]:
                        continue
                    if (cache, s, st, setting_label(st)) not in plan:
                        plan.append((cache, s, st, setting_label(st)))
    for cache in caches:  # warm-up: kernels and allocator, once per cache
        paradecode.sample(model, prompts[:8], "lowconf", cache=None if cache == "none" else cache, timing=False,
                          gen_length=gen, block_length=block, steps=gen // block * 2)
    rows, skipped, errors = [], [], []
    result: dict[str, Any] = {}

    def save() -> None:
        result.update(model=str(model_dir), model_info={k: info.get(k) for k in ("name", "parameters", "train", "eval")},
                      task=args.task, n=args.n, seed=args.seed, device=str(device),
                      gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      batch_size=args.batch_size, dtype=dtype, matmul_precision=args.matmul_precision, rows=rows, skipped=skipped, errors=errors,
                      iso_quality=iso_quality(rows), iso_quality_per_cache=iso_quality_per_cache(rows), command="python benchmarks/cot_bench.py " + " ".join(
                          argv if argv is not None else sys.argv[1:]),
                      seconds=round(time.perf_counter() - t_start, 1))
        (out_dir / "cot_bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")

    last = None
    for cache, strategy, setting, label in plan:
        if time.perf_counter() - t_start > args.time_limit:
            skipped.append({"strategy": strategy, "cache": cache, "setting": label})
            continue
        opts = setting if "gen_length" in setting else _full_options(strategy, setting, gen, block)
        try:
            runs = [run_one(model, tok, task, examples, prompts, strategy, opts,
                            None if cache == "none" else cache, args.batch_size, device) for _ in range(args.repeat)]
            r = dict(min(runs, key=lambda x: x["seconds"]), run_seconds=[x["seconds"] for x in runs])
            if len({(x["accuracy"], x["nfe"]) for x in runs}) > 1:  # greedy decoding: repeats must agree
                print(f"warning: {strategy} {cache} {label}: repeats differ in accuracy or forwards "
                      f"{[(x['accuracy'], x['nfe']) for x in runs]}", flush=True)
        except (ValueError, TypeError, NotImplementedError) as e:  # an unsupported combination: recorded
            errors.append({"strategy": strategy, "cache": cache, "setting": label, "error": f"{type(e).__name__}: {e}"})
            print(f"{strategy:10s} {cache:10s} {label[:40]:40s} ERROR {type(e).__name__}: {str(e)[:150]}", flush=True)
            continue
        rows.append({"strategy": strategy, "cache": cache, "setting": label, "task": args.task, **r, "options": opts})
        print(f"{strategy:10s} {cache:10s} {label[:40]:40s} acc {r['accuracy']:6.1%} final {r['final_accuracy']:6.1%} "
              f"NFE {r['nfe']:6.1f} tok/fwd {r['tokens_per_forward']:5.2f} {r['seconds']:6.2f}s "
              f"{r['tokens_per_second']:8.0f} tok/s {r['answer_tokens_per_second']:7.0f} ans tok/s  [{time.perf_counter() - t_start:.0f}s]"
              + ("" if args.repeat == 1 else "  runs " + " ".join(f"{t:.2f}s" for t in r["run_seconds"])), flush=True)
        if last is not None and (strategy, cache) != last:
            save()
        last = (strategy, cache)
    save()
    report(result, out_dir, f"{info.get('name', model_dir.name)} on {args.task}", t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
