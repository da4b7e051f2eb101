"""Record (or check) the tokens every strategy x cache gives on the shipped models.

    python tests/golden/record.py            # writes tests/golden/outputs.json
    python tests/golden/record.py --check    # compares with it (tests/test_golden.py does this)
    python tests/golden/record.py --update lowconf-random   # re-records the cases whose key contains it
    python tests/golden/record.py --shard 0/2 --out part0.json   # every other case (tests/test_golden.py
                                                                   # runs two shards side by side)

The recorded file is the behaviour the seams redesign (issue 14) had to keep: greedy dLLM
decoding of the shipped ``tasks-6m`` model for every strategy x cache policy (and the LLaDA2
layout), speculative decoding of the shipped pair, and VAR / CoDe / ScaleKV on the shipped
shapes models. Each case stores the generated token ids and the forward counts.

dLLM-Cache's cases run the model in float64 (``FLOAT64``): its V-verify recomputes the
response columns whose values are least cosine-similar to the cached ones, and in float32 those
similarities sit within 1e-4 of 1 with exact ties at the cut (float32's spacing there is 6e-8),
so a CPU with other vector widths picked other columns and other tokens from the same code. In
float64 the closest cut on the recorded cases is 1.6e-8 apart, far above the rounding.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import zlib
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "outputs.json"
VERBOSE = False
ONLY = None  # --update: compute only the dllm cases whose key contains it
SHARD = (0, 1)  # --shard i/n: compute only the cases whose key hashes to i (mod n)


def _mine(key: str) -> bool:
    """Whether this process computes ``key``: every case seeds its own run, so shards are independent."""
    index, count = SHARD
    return zlib.crc32(key.encode()) % count == index

STRATEGIES = {
    "lowconf": {"steps": "half"},
    "lowconf-random": {"steps": "half", "remasking": "random"},
    "threshold": {},
    "threshold-factor": {"factor": 1.0},
    "prophet": {},
    "prophet-threshold": {"base": "threshold", "base_options": {"threshold": 0.9}},
    "credit": {},
    "localleap": {},
    "learn2pd": {},
    "eb": {},
    "editing": {},
    "wino": {},
    "dparallel": {},
}
UNCACHEABLE = {"wino"}  # its forward carries a verification block no cache policy plans
CACHES = [None, "prefix", "dual", "dkv-decode", "dkv-greedy", "elastic", "dllm-cache"]
# the layer-adaptive caches (issue 18) are recorded with one strategy only (test time)
ADAPTIVE = {"elastic": ("threshold",), "dllm-cache": ("threshold",)}
# caches whose cases run the model in float64 (the docstring says why)
FLOAT64 = {"dllm-cache"}
# (task, gen_length, block_length): one-block and multi-block canvases
CANVASES = [("words", 32, 32), ("lists", 128, 32), ("avoid", 64, 32)]


def _options(name: str, gen: int, block: int) -> dict:
    opts = dict(STRATEGIES[name])
    if opts.get("steps") == "half":
        opts["steps"] = gen // 2
    return opts


def dllm_cases():
    import paradecode
    from paradecode import zoo
    from paradecode.bench.tasks import get_task

    model, tok = zoo.load("tasks-6m")
    model64 = None
    for task, gen, block in CANVASES:
        prompts = [tok.encode(ex.prompt) for ex in get_task(task).examples(3, seed=7)]
        for sname in STRATEGIES:
            strategy = sname.split("-")[0]
            for cache in CACHES:
                if sname == "lowconf-random" and cache is not None:
                    continue
                if cache in ADAPTIVE and sname not in ADAPTIVE[cache]:
                    continue
                if sname in UNCACHEABLE and cache is not None:
                    continue
                key = f"dllm/{task}-{gen}-{block}/{sname}/{cache}"
                if (ONLY and ONLY not in key) or not _mine(key):
                    continue
                if cache in FLOAT64 and model64 is None:
                    model64 = copy.deepcopy(model).double()
                out = paradecode.sample(
                    model64 if cache in FLOAT64 else model, prompts, strategy, cache=cache, seed=3,
                    gen_length=gen, block_length=block,
                    **_options(sname, gen, block),
                )
                yield key, out.generated.tolist(), out.trace.nfe
        for sname in ("lowconf", "threshold", "prophet", "learn2pd"):
            key = f"dllm/{task}-{gen}-{block}/{sname}/llada2"
            if not _mine(key):
                continue
            out = paradecode.sample(
                model, prompts, sname.split("-")[0], seed=3, gen_length=gen, block_length=block, layout="llada2",
                **_options(sname, gen, block),
            )
            yield key, out.generated.tolist(), out.trace.nfe
        key = f"dllm/{task}-{gen}-{block}/lowconf-cfg/None"
        if not _mine(key):
            continue
        out = paradecode.sample(model, prompts, "lowconf", seed=3, gen_length=gen, block_length=block,
                                steps=gen // 2, cfg_scale=1.0)
        yield key, out.generated.tolist(), out.trace.nfe


def spec_cases():
    import paradecode
    from paradecode.speculative import pair

    target, draft = pair.load_pair()
    prompts = [pair.encode(t) for t in ("sort 3,1,2 >", "add 12+7 >", "reverse abc >", "words fruit >")]
    for name, opts in {
        "greedy-k5": dict(num_draft_tokens=5),
        "greedy-heuristic": dict(num_draft_tokens=3, draft_length_schedule="heuristic"),
        "sampled": dict(num_draft_tokens=4, do_sample=True, temperature=0.8),
    }.items():
        if not _mine(f"spec/{name}"):
            continue
        out = paradecode.sample(target, prompts, "speculative", draft_model=draft, max_new_tokens=24, seed=5, **opts)
        yield f"spec/{name}", out.sequences.tolist(), out.trace.nfe


def vision_cases():
    from paradecode.vision import generate
    from paradecode.vision.zoo import load_shapes_models

    m = load_shapes_models()
    labels = [0, 1, 2, 3]
    opts = dict(cfg=2.0, top_k=100, top_p=0.95)
    runs = {
        "var": (m.large, "var", {}, None, None),
        "var-scalekv": (m.large, "var", {}, "scalekv", {"budget": 0.3}),
        "code": (m.large, "code", {"refiner": m.code_refiner, "draft_steps": 3}, None, None),
    }
    for name, (model, strategy, extra, cache, copts) in runs.items():
        if not _mine(f"vision/{name}"):
            continue
        out = generate(model, labels, strategy, seed=1, cache=cache, cache_options=copts, decode=False, **extra, **opts)
        yield f"vision/{name}", [t.tolist() for t in out.tokens], out.trace.nfe


def record() -> dict:
    torch.set_num_threads(1)
    result = {}
    for gen in (dllm_cases, spec_cases, vision_cases):
        t0 = time.perf_counter()
        for key, tokens, nfe in gen():
            result[key] = {"tokens": tokens, "nfe": nfe}
            t1 = time.perf_counter()
            if VERBOSE:
                print(f"{t1 - t0:6.2f}s {key}", flush=True)
            t0 = t1
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--update", default=None, help="re-record only the cases whose key contains this")
    ap.add_argument("--shard", default=None, metavar="I/N", help="compute only shard I of N (with --out)")
    ap.add_argument("--out", default=None, help="with --shard: write this shard's cases here as JSON")
    args = ap.parse_args()
    global VERBOSE, ONLY, SHARD
    VERBOSE = args.v
    ONLY = args.update
    if args.shard:
        index, count = (int(v) for v in args.shard.split("/"))
        if not 0 <= index < count or not args.out or args.update or args.check:
            ap.error("--shard I/N needs 0 <= I < N and --out, and goes with neither --update nor --check")
        SHARD = (index, count)
        Path(args.out).write_text(json.dumps(record(), separators=(",", ":")))
        return 0
    now = record()
    if args.update:
        old = json.loads(OUT.read_text())
        changed = {k: v for k, v in now.items() if args.update in k}
        old.update(changed)
        OUT.write_text(json.dumps(old, separators=(",", ":")))
        print(f"re-recorded {len(changed)} cases: {sorted(changed)}")
        return 0
    if not args.check:
        OUT.write_text(json.dumps(now, separators=(",", ":")))
        print(f"wrote {len(now)} cases to {OUT}")
        return 0
    old = json.loads(OUT.read_text())
    bad = [k for k in old if now.get(k) != old[k]]
    print(f"{len(old) - len(bad)} / {len(old)} cases equal")
    for k in bad:
        print("differs:", k)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
