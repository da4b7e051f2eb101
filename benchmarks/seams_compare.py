"""Old vs new code in one run: per-step overhead and the dual-cache step (issue 14).

Runs ``step_overhead.py`` and ``cache_speed.py`` (dual cache at prompt 512 / gen 256) for the
pre-redesign tree and for this one, alternately (old, new, then new, old: ABBA, so that clock
or thermal drift falls on both), each in a fresh process. The old tree is an ignored copy of
commit 8abafc1 at ``.old/`` (its ``paradecode`` and ``benchmarks``, .py files only):

    mkdir -p .old && git archive 8abafc1 paradecode benchmarks | tar -x -C .old --wildcards '*.py'
    mkdir -p .new && git archive HEAD paradecode benchmarks | tar -x -C .new --wildcards '*.py'  # optional
    python benchmarks/seams_compare.py                 # GPU: LLaDA-8B shape, the README's options
    python benchmarks/seams_compare.py --sampler       # GPU: the sampler alone (stub) + launch counts
    python benchmarks/seams_compare.py --smoke         # CPU smoke: toy shapes, a minute

Each old run executes ``.old/benchmarks/<script>`` with cwd ``.old`` and ``PYTHONPATH=.old``;
each new run the same from ``.new/`` (a snapshot of a commit, so that uncommitted edits in the
checkout do not enter the figures) or, without ``.new/``, from the repo with ``PYTHONPATH=.``;
the package each one imported, and whether diffusers was imported, is checked and recorded. Writes ``seams_compare.json`` (every run's
own JSON, the summary: mean of the old runs, of the new runs, and new/old) and
``seams_compare.txt`` (the children's output and the summary table) to ``--out`` (default
``$OUT``). Runs that would not fit in ``--budget`` seconds are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD = os.path.join(ROOT, ".old")
NEW = ROOT  # set in main(): ``.new`` when present (a snapshot of a commit), else this checkout

# (label, value getter, unit): the figures compared; smaller is better except tokens/s
STEP_METRICS = [
    ("forward, all logits", lambda r: r["forward_all_logits_ms"], "ms"),
    ("forward, block logits", lambda r: r["forward_block_logits_ms"], "ms"),
    ("lowconf full step", lambda r: r["lowconf_model_step_ms"], "ms"),
    ("threshold 0.9 full step", lambda r: r["threshold_model_step_ms"], "ms"),
    ("lowconf sampler alone (stub)", lambda r: r["lowconf_stub_step_ms"], "ms"),
    ("threshold sampler alone (stub)", lambda r: r["threshold_stub_step_ms"], "ms"),
]


def _setting(r):
    return next(v for k, v in r.items() if "x" in k and isinstance(v, dict) and "forward" in v)


CACHE_METRICS = [
    ("one forward: full, eager", lambda r: 1e3 * _setting(r)["forward"]["full"], "ms"),
    ("one forward: full, graphs", lambda r: 1e3 * _setting(r)["forward"]["full_graphs"], "ms"),
    ("one forward: prefix step, graphs", lambda r: 1e3 * _setting(r)["forward"]["prefix_graphs"], "ms"),
    ("one forward: dual step, eager", lambda r: 1e3 * _setting(r)["forward"]["dual_eager"], "ms"),
    ("one forward: dual step, graphs", lambda r: 1e3 * _setting(r)["forward"]["dual_graphs"], "ms"),
    ("generation, no cache eager: mean step", lambda r: 1e3 * _setting(r)["generate"]["none-eager"]["mean_step_s"], "ms"),
    ("generation, dual (graphs): mean step", lambda r: 1e3 * _setting(r)["generate"]["dual"]["mean_step_s"], "ms"),
    ("generation, dual (graphs): median step", lambda r: 1e3 * _setting(r)["generate"]["dual"]["median_step_s"], "ms"),
    ("generation, dual (graphs): median forward", lambda r: 1e3 * _setting(r)["generate"]["dual"]["median_forward_s"], "ms"),
    ("generation, dual (graphs): tokens/s", lambda r: _setting(r)["generate"]["dual"]["tokens_per_s"], "tok/s"),
]


def commands(smoke: bool, json_path: str) -> dict[str, list[str]]:
    if smoke:
        return {
            "step_overhead": ["step_overhead.py", "--device", "cpu", "--small", "--layers", "2", "--prompt", "64",
                              "--gen", "64", "--block", "16", "--repeats", "2", "--out", json_path],
            "cache_speed": ["cache_speed.py", "--tiny", "--caches", "none-eager,dual", "--out", json_path],
        }
    return {
        # the README's command (benchmarks/README.md, "Sampler overhead per step")
        "step_overhead": ["step_overhead.py", "--device", "cuda", "--repeats", "20", "--out", json_path],
        # the README's dual-cache figure: --fuse (CUDA graphs + compiled RMSNorm/RoPE), 512/256;
        # none-eager is the script's baseline for its ratios
        "cache_speed": ["cache_speed.py", "--fuse", "--settings", "512x256", "--caches", "none-eager,dual",
                        "--repeats", "20", "--out", json_path],
    }


def run_one(tree: str, bench: str, smoke: bool, tmp: str, log, timeout: float) -> dict:
    json_path = os.path.join(tmp, f"{bench}_{tree}_{time.time_ns()}.json")
    argv = commands(smoke, json_path)[bench]
    base = OLD if tree == "old" else NEW
    env = dict(os.environ, PYTHONPATH=base, PYTHONUNBUFFERED="1")
    script = os.path.join(base, "benchmarks", argv[0])
    check = ("import sys, paradecode; print(paradecode.__file__); "
             "print('diffusers imported' if any(m == 'diffusers' or m.startswith('diffusers.') for m in sys.modules) "
             "else 'no diffusers')")
    pkg = subprocess.run([sys.executable, "-c", check], cwd=base, env=env, capture_output=True, text=True)
    header = f"\n===== {tree} {bench}: cwd {base}; {' '.join([sys.executable, script] + argv[1:])}\n"
    log.write(header + pkg.stdout + pkg.stderr)
    log.flush()
    print(header + pkg.stdout + pkg.stderr, end="", flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, script] + argv[1:], cwd=base, env=env, capture_output=True,
                              text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = "timeout", (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    wall = time.perf_counter() - t
    log.write(out + f"[{tree} {bench}: rc {rc}, {wall:.1f} s]\n")
    log.flush()
    print(out[-3000:] + f"[{tree} {bench}: rc {rc}, {wall:.1f} s]", flush=True)
    res = {"tree": tree, "bench": bench, "rc": rc, "wall_s": wall, "package": pkg.stdout.strip(),
           "argv": argv[:-2] + ["--out", "..."]}
    if rc == 0 and os.path.exists(json_path):
        with open(json_path) as f:
            res["result"] = json.load(f)
    return res


# --sampler: the sampler's own work per step, in fresh processes alternating old / new. Run with
# cwd and PYTHONPATH the tree; argv: mode (stub | model), prompt, gen, block, repeats, small.
SAMPLER_CHILD = r"""
import json, statistics, sys, time
import torch
import paradecode
sys.path.insert(0, "benchmarks")
from step_overhead import LogitsStub, build_model
mode, P, G, B, R, small = sys.argv[1], *map(int, sys.argv[2:7])
dev = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if dev == "cuda" else torch.float32
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
torch.manual_seed(0)
common = dict(gen_length=G, block_length=B, timing=False)
rules = {"lowconf": dict(steps=G), "threshold": dict(threshold=0.9)}
res = {"package": paradecode.__file__, "mode": mode}

def per_step(m, name):
    sync(); t = time.perf_counter()
    out = paradecode.sample(m, prompt, name, **common, **rules[name])
    sync()
    return 1e3 * (time.perf_counter() - t) / out.trace.nfe, out.trace.nfe

if mode == "stub":
    V = 1000 if small else 126464
    mask = V - 1 if small else 126336
    prompt = torch.randint(0, 1000 - 200, (1, P), device=dev)
    stub = LogitsStub(torch.randn(1, P + G, V, device=dev).to(dtype), mask)
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    for name in rules:
        per_step(stub, name)  # warm-up
        ts = [per_step(stub, name) for _ in range(R)]
        res[name + "_step_ms"] = [t for t, _ in ts]
        res[name + "_median_ms"] = statistics.median(t for t, _ in ts)
        res[name + "_nfe"] = ts[0][1]
        with profile(activities=acts) as prof:
            _, nfe = per_step(stub, name)
        ev = prof.key_averages()
        launches = sum(e.count for e in ev if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel")))
        syncs = sum(e.count for e in ev if e.key == "aten::_local_scalar_dense")
        ops = sum(e.count for e in ev if e.key.startswith("aten::"))
        res[name + "_per_step"] = {"kernel_launches": launches / nfe, "host_syncs": syncs / nfe, "aten_ops": ops / nfe}
        top = sorted((e for e in ev if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:8]
        res[name + "_top_self_cpu"] = [(e.key, e.count, round(e.self_cpu_time_total / 1e3, 2)) for e in top]
else:
    model = build_model(2 if small else 32, dev, dtype, bool(small))
    prompt = torch.randint(0, model.config.vocab_size - 200, (1, P), device=dev)
    canvas = torch.cat([prompt, torch.full((1, G), model.config.mask_token_id, device=dev)], dim=1)
    with torch.inference_mode():
        for _ in range(3):
            model(canvas, logits_range=(P, P + B))
    per_step(model, "lowconf")  # warm-up
    per_step(model, "threshold")
    fwd, step, thr = [], [], []
    for _ in range(R):  # interleaved: forward alone, then a whole generation
        with torch.inference_mode():
            sync(); t = time.perf_counter()
            for _ in range(10):
                model(canvas, logits_range=(P, P + B))
            sync(); fwd.append(1e3 * (time.perf_counter() - t) / 10)
        step.append(per_step(model, "lowconf")[0])
        thr.append(per_step(model, "threshold")[0])
    res.update(forward_block_ms=fwd, lowconf_step_ms=step,
               lowconf_minus_forward_ms=[s - f for s, f in zip(step, fwd)],
               threshold_step_ms=thr, threshold_minus_forward_ms=[s - f for s, f in zip(thr, fwd)])
print("RESULT " + json.dumps(res))
"""


def run_sampler(tree: str, mode: str, smoke: bool, log, timeout: float) -> dict:
    base = OLD if tree == "old" else NEW
    env = dict(os.environ, PYTHONPATH=base, PYTHONUNBUFFERED="1")
    argv = [mode, "64", "64", "16", "2", "1"] if smoke else [mode, "512", "256", "32", "8" if mode == "stub" else "3", "0"]
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", SAMPLER_CHILD] + argv, cwd=base, env=env, capture_output=True,
                              text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        rc, out = "timeout", ""
    wall = time.perf_counter() - t
    res = {"tree": tree, "bench": "sampler_" + mode, "rc": rc, "wall_s": wall, "argv": argv}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            res["result"] = json.loads(line[7:])
    msg = f"===== {tree} sampler {mode} ({base}): rc {rc}, {wall:.1f} s\n" + (
        json.dumps(res.get("result"), indent=None) if "result" in res else out[-3000:]) + "\n"
    log.write(msg)
    log.flush()
    print(msg, end="", flush=True)
    return res


def summarise_sampler(runs: list[dict]) -> dict:
    table = {}
    keys = [("stub", "lowconf_median_ms", "lowconf sampler alone, median of repeats", "ms"),
            ("stub", "threshold_median_ms", "threshold sampler alone, median of repeats", "ms"),
            ("model", "forward_block_ms", "forward, block logits (each cycle)", "ms"),
            ("model", "lowconf_step_ms", "lowconf full step (each cycle)", "ms"),
            ("model", "lowconf_minus_forward_ms", "lowconf step - forward (each cycle)", "ms"),
            ("model", "threshold_step_ms", "threshold full step (each cycle)", "ms"),
            ("model", "threshold_minus_forward_ms", "threshold step - forward (each cycle)", "ms")]
    for mode, key, label, unit in keys:
        vals = {"old": [], "new": []}
        for r in runs:
            if r["bench"] == "sampler_" + mode and "result" in r:
                v = r["result"][key]
                vals[r["tree"]] += v if isinstance(v, list) else [v]
        if vals["old"] and vals["new"]:
            o, n = statistics.median(vals["old"]), statistics.median(vals["new"])
            table[f"sampler_{mode}: {label}"] = {"unit": unit, "old": vals["old"], "new": vals["new"], "old_median": o,
                                                 "new_median": n, "old_mean": o, "new_mean": n, "new_over_old": n / o}
    for name in ("lowconf", "threshold"):
        for count in ("kernel_launches", "host_syncs", "aten_ops"):
            vals = {t: [r["result"][name + "_per_step"][count] for r in runs
                        if r["bench"] == "sampler_stub" and r["tree"] == t and "result" in r] for t in ("old", "new")}
            if vals["old"] and vals["new"]:
                o, n = vals["old"][0], vals["new"][0]
                table[f"sampler_stub: {name} {count} per step"] = {"unit": "count", "old": vals["old"][:1],
                                                                   "new": vals["new"][:1], "old_mean": o,
                                                                   "new_mean": n, "new_over_old": n / o if o else float("nan")}
    return table


def summarise(runs: list[dict]) -> dict:
    table = {}
    for bench, metrics in (("step_overhead", STEP_METRICS), ("cache_speed", CACHE_METRICS)):
        for label, get, unit in metrics:
            vals = {"old": [], "new": []}
            for r in runs:
                if r["bench"] == bench and "result" in r:
                    try:
                        vals[r["tree"]].append(float(get(r["result"])))
                    except (KeyError, StopIteration, TypeError):
                        pass
            if vals["old"] and vals["new"]:
                o, n = statistics.mean(vals["old"]), statistics.mean(vals["new"])
                table[f"{bench}: {label}"] = {"unit": unit, "old": vals["old"], "new": vals["new"], "old_mean": o,
                                              "new_mean": n, "new_over_old": n / o}
    return table


def format_table(table: dict) -> str:
    lines = [f"{'figure':60s} {'old (each run)':>24s} {'new (each run)':>24s} {'new/old':>8s}"]
    for k, v in table.items():
        fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)
        lines.append(f"{k + ' [' + v['unit'] + ']':60s} {fmt(v['old']):>24s} {fmt(v['new']):>24s} {v['new_over_old']:8.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, toy shapes: checks both trees import and run")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--budget", type=float, default=560.0, help="seconds for all runs; later runs that would not fit are skipped")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sampler", action="store_true",
                    help="instead: the sampler alone against a logits stub (median of repeats, kernel launches and "
                         "host syncs per step) and forward vs full lowconf step interleaved in one process, "
                         "alternating old / new for --rounds rounds (stub: 2 processes a round; model: 1)")
    ap.add_argument("--model-only", action="store_true",
                    help="with --sampler: only the real-model runs (forward vs lowconf and threshold steps)")
    ap.add_argument("--new-tree", default=None,
                    help="folder holding the new paradecode/ and benchmarks/ (default: .new if present, else the repo)")
    args = ap.parse_args()
    global NEW
    NEW = os.path.abspath(args.new_tree or (os.path.join(ROOT, ".new") if os.path.isdir(os.path.join(ROOT, ".new")) else ROOT))
    if not os.path.isdir(os.path.join(OLD, "paradecode")):
        sys.exit(f"no old tree at {OLD}: see this script's docstring")
    os.makedirs(args.out, exist_ok=True)
    order = []
    for i in range(args.rounds):
        trees = ("old", "new") if i % 2 == 0 else ("new", "old")
        if args.sampler:
            order += [(t, "sampler_stub") for t in trees + trees[::-1]] + [(t, "sampler_model") for t in trees]
        else:
            order += [(t, "step_overhead") for t in trees] + [(t, "cache_speed") for t in trees]
    if args.model_only:  # the sampler with the real model only: old, new, new, old ...
        order = [o for o in order if o[1] == "sampler_model"]
    if args.sampler and not args.model_only:  # stub runs first (cheap, many), then the model runs
        order = [o for o in order if o[1] == "sampler_stub"] + [o for o in order if o[1] == "sampler_model"]
    start = time.perf_counter()
    last: dict[str, float] = {}
    runs: list[dict] = []
    env_info = {}
    try:
        import torch
        env_info = {"torch": torch.__version__, "python": sys.version.split()[0],
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    except Exception as exc:  # pragma: no cover
        env_info = {"error": repr(exc)}
    env_info["old_tree"], env_info["new_tree"] = OLD, NEW
    stem = "seams_compare_sampler" if args.sampler else "seams_compare"
    txt = os.path.join(args.out, stem + ".txt")
    with tempfile.TemporaryDirectory() as tmp, open(txt, "w") as log:
        log.write(f"seams_compare: {json.dumps(env_info)}; order {order}\n")
        for tree, bench in order:
            left = args.budget - (time.perf_counter() - start)
            need = 1.15 * last.get(bench, 0.0)
            if left < max(need, 20.0):
                note = f"[skipped {tree} {bench}: {left:.0f} s left, the last such run took {last.get(bench, 0):.0f} s]"
                print(note, flush=True)
                log.write(note + "\n")
                runs.append({"tree": tree, "bench": bench, "rc": "skipped"})
                continue
            if bench.startswith("sampler_"):
                r = run_sampler(tree, bench[len("sampler_"):], args.smoke, log, timeout=max(left - 5, 20.0))
            else:
                r = run_one(tree, bench, args.smoke, tmp, log, timeout=max(left - 5, 20.0))
            last[bench] = max(last.get(bench, 0.0), r["wall_s"])
            runs.append(r)
            table = summarise_sampler(runs) if args.sampler else summarise(runs)
            with open(os.path.join(args.out, stem + ".json"), "w") as f:
                json.dump({"env": env_info, "smoke": args.smoke, "order": order, "runs": runs, "summary": table}, f,
                          indent=1)
        table = summarise_sampler(runs) if args.sampler else summarise(runs)
        text = format_table(table)
        log.write("\n===== summary (mean of each tree's runs; new/old < 1 means the new code is faster, "
                  "except tokens/s)\n" + text + f"\n[total {time.perf_counter() - start:.0f} s]\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
