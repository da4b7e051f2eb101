"""Batched dLLM throughput at the LLaDA-8B shape, each figure beside its limit, in one run.

An LLaDA-8B-shaped ``LLaDAModel`` with random bf16 weights behind :class:`CUDAGraphModel`
(time per step does not depend on the weights), prompt 512, generation 256, block 32,
``lowconf`` at 4 tokens per step (random weights give meaningless confidences, so a threshold
rule would not be a fixed workload). The run measures:

* the device's rates: a large bf16 matmul (FLOP/s) and a device-to-device copy (bytes/s,
  read + write, as ``cache_speed.py`` counts it);
* tokens/s at batch 1, 8, 32 for no cache, ``prefix``, ``dual`` and ``dkv-decode``, each
  beside its limit. Block ``b`` of a P512/G256 generation sees the same canvas as the first
  block of a P(512+32b)/G(256-32b) one (every policy refreshes at a block start), so the
  script times whole blocks (8 steps, after two warm-up runs of the same block, so that every
  forward replays a graph) at a few block indices and interpolates the others linearly (no
  cache and dual cost the same at every block: block 0 alone, a few steps for no cache). The
  limit sums, over the forwards the timed steps ran, max(FLOPs / matmul rate, weight bytes /
  copy rate): FLOPs of the fed tokens' matmuls, their attention over the canvas and the LM
  head on the logits window; weight bytes of everything but the embedding table;
* first, whether the graphed model gives the eager model's tokens for each cache (batch 2,
  two blocks): what the figures time is what the model computes;
* the dual cache's mean and median step over a whole P1024/G1024 generation at batch 1;
* the sampler's share of a step at batch 1 for every block rule, with no cache and with the
  dual cache: 1 - (bare forwards, timed alone with syncs around them) / (steps, timed without),
  and in-run: 1 - (the forwards' device spans, CUDA events inside the same unsynced steps) /
  (those steps), which ``issue15.py`` judges the 5% target by;
* with ``--fast-dllm-dir`` (a checkout of NVlabs/Fast-dLLM's ``llada/``, never part of this
  repo), Fast-dLLM's own ``generate`` / ``generate_with_prefix_cache`` /
  ``generate_with_dual_cache`` on the same weights (our state dict loaded into their class),
  prompt, block and 4 tokens per step (their ``threshold=None`` fixed-k path, which is our
  ``lowconf``): whole timed generations, eager as published, after a one-block warm-up; their
  loops hold one row, so batches above 1 are recorded as failing there. ``--smoke`` then also
  checks that their loops and ours give the same tokens. Without the flag these rows are
  skipped with the reason printed.

Writes ``benchmarks/results/dllm_throughput_<date>_<machine>.json`` and ``.txt`` (or
``--out-dir``). ``--smoke`` runs a tiny model on CPU through the same code.

    python benchmarks/dllm_throughput.py                      # GPU, ~2-3 minutes
    python benchmarks/dllm_throughput.py --smoke              # CPU check of the script
    python benchmarks/dllm_throughput.py --fast-dllm-dir .gpu/fast-dllm   # with Fast-dLLM's rows
    python benchmarks/dllm_throughput.py --model dream --fuse --skip sampler   # Dream-7B's shape

``--model dream`` runs a Dream-v0-7B-shaped ``DreamModel`` (28 layers, hidden 3584, MLP 18944,
28 query / 4 key-value heads, q/k/v biases, vocabulary 152064) the same way; its logits are
shifted (column i read from the output at i - 1), so every cached step also feeds the block's
predecessor column as a query. Fast-dLLM's rows are LLaDA's loops and are skipped for it.
``--fuse`` computes q/k/v and the SwiGLU input projections as one matmul each
(``fuse_projections``), as ``gsm8k_realsize.py`` does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from paradecode.interfaces import staged_call
from paradecode.loop import ModelCaller, Trace, synchronize as sync
from paradecode.models import DreamConfig, DreamModel, LLaDAConfig, LLaDAModel, ModelWrapper
from paradecode.models.graphs import CUDAGraphModel
from paradecode.registry import build_config, get_cache_class, get_strategy_class, strategies

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fast_dllm_ref  # noqa: E402  (benchmarks/ sibling: Fast-dLLM's loops, loaded from outside the repo)

CACHES = ("none", "prefix", "dual", "dkv-decode")
# block indices timed per cache (others interpolated); none and dual cost the same at every block
BLOCKS = {"none": (0,), "prefix": (0, 3, 7), "dual": (0,), "dkv-decode": (0, 3, 7)}


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- model and rates -------------------------------------------------------------------------
def build_model(device: str, smoke: bool, name: str = "llada") -> torch.nn.Module:
    """LLaDA-8B's (``name='llada'``) or Dream-v0-7B's shape with random weights (tiny for ``smoke``)."""
    if name == "dream":
        sizes = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                     intermediate_size=128, vocab_size=512, max_position_embeddings=4096, mask_token_id=500,
                     eos_token_id=501, pad_token_id=501, bos_token_id=501) if smoke else {}
        cls, config = DreamModel, DreamConfig(**sizes)
    else:
        sizes = dict(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=512,
                     embedding_size=512, mask_token_id=500, eos_token_id=501, pad_token_id=501) if smoke else {}
        cls, config = LLaDAModel, LLaDAConfig(**sizes)
    with torch.device("meta"):
        model = cls(config)
    model = model.to_empty(device=device).to(torch.bfloat16 if device == "cuda" else torch.float32)
    torch.manual_seed(0)
    model.reset_parameters()
    return model.eval()


def matmul_rate(device: str, n: int, reps: int, rounds: int = 5) -> float:
    """FLOP/s of an n x n x n matmul in the model's dtype: the best of ``rounds`` timed loops of
    ``reps`` (one loop read 762 TFLOP/s in a call whose other runs read 785-790, which made that
    run's limits 3% lower; the best loop is the rate the device can sustain)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(rounds):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def copy_rate(device: str, nbytes: int, reps: int) -> float:
    """Bytes/s moved (read + write) by a device-to-device copy."""
    a = torch.empty(nbytes, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    sync(device)
    return 2 * nbytes * reps / (time.perf_counter() - t)


def model_parts(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module, int, int]:
    """(embedding table, LM head weight, the layers, hidden size, layer count) of LLaDA or Dream."""
    c = model.config
    if isinstance(model, DreamModel):
        emb = model.model.embed_tokens.weight
        head = emb if c.tie_word_embeddings else model.lm_head.weight
        return emb, head, model.model.layers, c.hidden_size, c.num_hidden_layers
    emb = model.model.transformer["wte"].weight
    head = model.model.transformer["ff_out"].weight if not c.weight_tying else emb
    return emb, head, model.model.transformer["blocks"], c.d_model, c.n_layers


class Costs:
    """FLOPs and weight bytes of one forward of this model."""

    def __init__(self, model: torch.nn.Module) -> None:
        emb, head, blocks, self.d, self.layers = model_parts(model)
        self.body_params = sum(p.numel() for p in blocks.parameters() if p.dim() == 2)
        self.head_params = head.numel()
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) - emb.numel() * emb.element_size()

    def flops(self, tokens: int, keys: int, logits: int) -> float:
        """Matmuls of ``tokens`` fed tokens (all rows), their attention over ``keys`` positions,
        and the LM head on ``logits`` positions (all rows)."""
        return 2.0 * (self.body_params * tokens + 2 * self.layers * self.d * tokens * keys + self.head_params * logits)


class Recorder(ModelWrapper):
    """Passes forwards to the model, noting each one's (rows, fed, keys, logits); with ``timed``
    it also syncs around the forward and notes its seconds (the bare forward of a step)."""

    def __init__(self, inner: torch.nn.Module, device: str, timed: bool = False) -> None:
        super().__init__(inner)
        self.device_name, self.timed = device, timed
        self.shapes: list[tuple] = []
        self.seconds: list[float] = []

    def forward(self, input_ids, positions=None, cache=None, attention_mask=None, logits_range=None,
                logits_from=None):
        rows, fed = input_ids.shape
        keys = getattr(cache, "_L", fed) if cache is not None else fed
        if logits_from is not None:
            logits = rows * logits_from.shape[1]
        else:
            logits = rows * (fed if logits_range is None else logits_range[1] - logits_range[0])
        head = {} if logits_from is None else {"logits_from": logits_from}
        # the cache's fed columns (padding to a graph bucket = column ``keys``) are counted
        # after the run: no device sync inside the timed steps
        idx = cache.graph_index() if cache is not None and hasattr(cache, "graph_index") else None
        self.shapes.append((rows, fed, keys, logits, idx))
        if self.timed:
            sync(self.device_name)
            t = time.perf_counter()
        out = self.model(input_ids, positions=positions, cache=cache, attention_mask=attention_mask,
                         logits_range=logits_range, **head)
        if self.timed:
            sync(self.device_name)
            self.seconds.append(time.perf_counter() - t)
        return out


class SpanRecorder(ModelWrapper):
    """Marks each forward's device span (the graph's replay and the LM head) with CUDA events and
    no sync, inside steps run as ``sample()`` runs them: the forwards' device time and the steps'
    wall time then come from the same run (the bare forwards timed in another run differed by up
    to 7% between runs of the same shape, compute-bound, at batch 1). Passes the next step's
    planning through (``stage_forward``): a graph's input copies, queued before a step's read,
    fall outside the span. On a CPU each span is the call's own time."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__(inner)
        self.spans: list[Any] = []

    def forward(self, input_ids, **kwargs):
        return self.stage_forward(input_ids, **kwargs)()

    def stage_forward(self, input_ids, **kwargs):
        run = staged_call(self.model, input_ids, **kwargs)

        def spanned():
            if input_ids.is_cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                out = run()
                b.record()
                self.spans.append((a, b))
                return out
            t = time.perf_counter()
            out = run()
            self.spans.append(time.perf_counter() - t)
            return out

        return spanned

    def seconds(self) -> float:
        """The spans' total (after the run's final sync)."""
        return sum(s if isinstance(s, float) else s[0].elapsed_time(s[1]) / 1e3 for s in self.spans)


def forward_work(shapes) -> list[tuple[int, int, int]]:
    """(tokens, keys, logits) of each recorded forward: real fed tokens only (a cache's padding
    of the feed to a graph bucket is our overhead, not the method's work)."""
    out = []
    for rows, fed, keys, logits, idx in shapes:
        tokens = rows * fed if idx is None else int((idx < keys).sum())
        out.append((tokens, keys, logits))
    return out


def limit_seconds(work, costs: Costs, flops_per_s: float, bytes_per_s: float) -> float:
    """Sum over forwards of max(compute time, weight-read time)."""
    return sum(max(costs.flops(*w) / flops_per_s, costs.weight_bytes / bytes_per_s) for w in work)


# ---- running steps ---------------------------------------------------------------------------
def driver(model, prompt: torch.Tensor, rule: str, cache: str, gen: int, block: int, tps: int):
    """(strategy, state, call) ready to step, as ``paradecode.sample`` builds them (``tps``
    tokens per step for rules with ``steps``). Also used by sampler_ops.py."""
    cls = get_strategy_class(rule)
    opts = dict(gen_length=gen, block_length=block)
    if "steps" in getattr(cls.Config, "__dataclass_fields__", {}):
        opts["steps"] = gen // tps
    strat = cls(build_config(cls.Config, rule, opts))
    models, ctx = strat.setup(model)
    caches = dict(strat.default_caches(models))
    if cache != "none":
        ccls = get_cache_class(cache)
        caches.update(ccls(build_config(ccls.Config, cache, {})).caches_for(strat, models))
    state = strat.start(prompt, attention_mask=None, generator=None, **ctx)
    return strat, state, ModelCaller(models, caches, Trace(prompt.shape[0]), strat.name)


def run_steps(model, prompt: torch.Tensor, gen: int, block: int, tps: int, rule: str, cache: str,
              max_steps: Optional[int], device: str, sync_each: bool = True) -> list[float]:
    """Seconds of each step of a generation driven as ``paradecode.sample`` does, stopped after
    ``max_steps`` steps (None: the whole generation). ``sync_each=False`` syncs once, at the end,
    as ``sample(timing=False)`` runs: a step's host work then overlaps the device work queued
    before it, except where the rule itself reads the device, so only the sum of the times is
    the device's (the last one takes the final sync)."""
    strat, state, call = driver(model, prompt, rule, cache, gen, block, tps)
    times: list[float] = []
    with torch.inference_mode():
        sync(device)
        t0 = time.perf_counter()
        while not strat.done(state) and (max_steps is None or len(times) < max_steps):
            strat.step(state, call)
            if sync_each:
                sync(device)
            t1 = time.perf_counter()
            times.append(t1 - t0)
            t0 = t1
        if not sync_each and times:
            sync(device)
            times[-1] += time.perf_counter() - t0
    return times


def timed_block(graphed, make_prompt: Callable[[int], torch.Tensor], P: int, G: int, block: int, tps: int,
                cache: str, b: int, steps: int, costs: Costs, rates: tuple[float, float], device: str,
                warmups: int = 2) -> dict[str, Any]:
    """Block ``b`` of a P/G generation as the first block of a P+block*b / G-block*b one."""
    prompt = make_prompt(P + block * b)
    for _ in range(warmups):
        run_steps(graphed, prompt, G - block * b, block, tps, "lowconf", cache, steps, device)
    rec = Recorder(graphed, device)
    times = run_steps(rec, prompt, G - block * b, block, tps, "lowconf", cache, steps, device)
    return {"block": b, "steps": len(times), "seconds": sum(times), "step_seconds": times,
            "limit_seconds": limit_seconds(forward_work(rec.shapes), costs, *rates),
            "fed": [s[1] for s in rec.shapes], "fed_real": [w[0] for w in forward_work(rec.shapes)]}


def interpolate(points: dict[int, float], n: int) -> float:
    """Sum over blocks 0..n-1 of a quantity known at some blocks, linear in between (flat outside)."""
    xs = sorted(points)
    total = 0.0
    for b in range(n):
        if b <= xs[0]:
            total += points[xs[0]]
        elif b >= xs[-1]:
            total += points[xs[-1]]
        else:
            hi = next(x for x in xs if x >= b)
            lo = max(x for x in xs if x <= b)
            total += points[lo] if hi == lo else points[lo] + (points[hi] - points[lo]) * (b - lo) / (hi - lo)
    return total


def throughput(graphed, make_prompt, batch: int, cache: str, args, costs, rates, device) -> dict[str, Any]:
    P, G, block, tps = args.prompt, args.gen, args.block, args.tokens_per_step
    per_block = block // tps
    n_blocks = G // block
    steps = args.none_steps if cache == "none" else per_block
    rows = [timed_block(graphed, lambda n: make_prompt(batch, n), P, G, block, tps, cache, b, steps, costs, rates,
                        device) for b in BLOCKS[cache] if b < n_blocks]
    scale = per_block / steps  # none: a few steps stand for the block (every step is the same forward)
    secs = interpolate({r["block"]: r["seconds"] * scale for r in rows}, n_blocks)
    lim = interpolate({r["block"]: r["limit_seconds"] * scale for r in rows}, n_blocks)
    tokens = batch * G
    return {"batch": batch, "cache": cache, "generation_seconds": secs, "tokens_per_s": tokens / secs,
            "limit_seconds": lim, "limit_tokens_per_s": tokens / lim, "x_limit": secs / lim, "blocks": rows}


def mean_vs_median(graphed, make_prompt, args, device) -> dict[str, Any]:
    P, G = args.long
    prompt = make_prompt(1, P)
    run_steps(graphed, prompt, G, args.block, args.tokens_per_step, "lowconf", "dual", None, device)  # warm-up
    times = run_steps(graphed, prompt, G, args.block, args.tokens_per_step, "lowconf", "dual", None, device)
    mean, median = statistics.mean(times), statistics.median(times)
    return {"prompt": P, "gen": G, "steps": len(times), "mean_step_s": mean, "median_step_s": median,
            "mean_over_median": mean / median, "tokens_per_s": G / sum(times)}


def graph_vs_eager(graphed, model, make_prompt, args, device) -> dict[str, Any]:
    """Whether the graphed model gives the eager model's tokens (batch 2, one prompt length,
    two blocks of lowconf) per cache: a check that capture and replay compute what the model
    does on this device, before its speed is read."""
    import paradecode

    prompt = make_prompt(2, args.prompt)
    opts = dict(gen_length=2 * args.block, block_length=args.block, steps=2 * args.block // args.tokens_per_step)
    res = {}
    for cache in CACHES:
        c = None if cache == "none" else cache
        with torch.inference_mode():
            ref = paradecode.sample(model, prompt, "lowconf", cache=c, **opts).sequences
            replays = graphed.replays
            out = paradecode.sample(graphed, prompt, "lowconf", cache=c, **opts).sequences
        res[cache] = {"equal": bool(torch.equal(out, ref)), "replays": graphed.replays - replays}
    graphed.release()
    return res


def block_rules() -> list[str]:
    """Registered diffusion-LM rules that run on a plain model without extra parts."""
    out = []
    for name in strategies():
        cls = get_strategy_class(name)
        if getattr(cls, "family", None) == "dllm":
            out.append(name)
    return out


def sampler_share(graphed, make_prompt, args, device) -> dict[str, Any]:
    """Per rule and cache at batch 1: 1 - bare forwards / steps over the first block (each the
    smaller of two runs). With a cache, the cache's own bookkeeping (feed planning, logits
    kept for the window) counts as the sampler's: it is what a step adds to the forward."""
    prompt = make_prompt(1, args.prompt)
    steps = args.block // args.tokens_per_step
    res: dict[str, Any] = {}
    rules = args.sampler_rules.split(",") if args.sampler_rules else block_rules()
    for rule in rules:
        for cache in args.sampler_caches.split(","):
            key = f"{rule}/{cache}"
            if cache != "none" and not getattr(get_strategy_class(rule), "cacheable", True):
                res[key] = {"skipped": "the method has no cached form (cacheable = False)"}
                continue
            try:
                run = lambda m: run_steps(m, prompt, args.gen, args.block, args.tokens_per_step, rule, cache,  # noqa: E731
                                          steps, device)
                for _ in range(2):
                    run(graphed)
                step_t = min((run(graphed) for _ in range(2)), key=sum)  # the less disturbed of two runs
                free = min((run_steps(graphed, prompt, args.gen, args.block, args.tokens_per_step, rule, cache, steps,
                                      device, sync_each=False) for _ in range(2)), key=sum)
                free_s, free_n = sum(free), len(free)
                recs = [Recorder(graphed, device, timed=True) for _ in range(2)]
                for rec in recs:
                    run(rec)
                rec = min(recs, key=lambda r: sum(r.seconds))
                inrun = []  # (step seconds, forward spans) of the same unsynced steps
                for _ in range(2):
                    spans = SpanRecorder(graphed)
                    t = run_steps(spans, prompt, args.gen, args.block, args.tokens_per_step, rule, cache, steps, device,
                                  sync_each=False)
                    inrun.append((sum(t), spans.seconds(), len(t)))
                in_s, in_fwd, in_n = min(inrun)
            except Exception as exc:  # a rule that needs parts a random model lacks: keep the others
                res[key] = {"error": repr(exc)[:300]}
                log(f"  sampler share {key}: skipped ({exc!r})"[:200])
                continue
            step_s, fwd_s = sum(step_t), sum(rec.seconds)
            res[key] = {"steps": len(step_t), "step_ms": 1e3 * step_s / len(step_t),
                        "forward_ms": 1e3 * fwd_s / len(step_t), "forwards": len(rec.seconds),
                        "sampler_share": 1 - fwd_s / step_s}
            if free_n == len(step_t):  # the same steps without a sync after each
                res[key].update(unsynced_step_ms=1e3 * free_s / free_n, unsynced_share=1 - fwd_s / free_s)
            res[key].update(inrun_step_ms=1e3 * in_s / in_n, inrun_forward_ms=1e3 * in_fwd / in_n,
                            inrun_share=1 - in_fwd / in_s)
            r = res[key]
            log(f"  sampler share {key:20s} step {r['step_ms']:7.2f} ms  forward {r['forward_ms']:7.2f} ms  "
                f"share {100 * r['sampler_share']:5.1f}%" + (f"  unsynced step {r['unsynced_step_ms']:7.2f} ms, share "
                f"{100 * r['unsynced_share']:5.1f}%" if "unsynced_share" in r else "")
                + f"  in-run: step {r['inrun_step_ms']:7.2f} ms, forward {r['inrun_forward_ms']:7.2f} ms, share "
                  f"{100 * r['inrun_share']:5.1f}%")
    return res


# ---- Fast-dLLM's own loops ----------------------------------------------------------------------
def fast_dllm_rows(model: LLaDAModel, make_prompt, batches: list[int], args, device: str,
                   ours: dict[str, Any], t_start: float, limit: Callable[[list], float]) -> dict[str, Any]:
    """Fast-dLLM's loops on ``model``'s weights, one row per (batch, cache) beside ours;
    ``limit`` gives the limit seconds of a list of forwards' (tokens, keys, logits)."""
    gen_mod = fast_dllm_ref.load(args.fast_dllm_dir)
    switches = fast_dllm_ref.sdpa_switches()  # their model class flips torch's SDPA switches
    out: dict[str, Any] = {"dir": str(args.fast_dllm_dir), "reps": args.fast_dllm_reps, "rows": {},
                           "setting": "their threshold=None fixed-k path, low_confidence, temperature 0, eager"}
    try:
        theirs = fast_dllm_ref.their_model(gen_mod, model)
        if args.smoke:  # the speed rows compare equal work only if the loops agree token for token
            out["same_tokens"] = same_tokens_smoke(gen_mod, args)
        for cache in fast_dllm_ref.LOOPS:
            for batch in batches:
                key = f"{batch}/{cache}"
                try:
                    r = time_fast_dllm(gen_mod, theirs, cache, make_prompt(batch, args.prompt), args, device,
                                       limit)
                except Exception as exc:  # their loops hold one row: batches above 1 fail there
                    r = {"error": f"their loop failed at batch {batch}: {exc!r}"[:300]}
                    log(f"  Fast-dLLM batch {batch:2d} {cache:10s} {r['error']}"[:200])
                else:
                    mine = ours.get(key, {}).get("tokens_per_s")
                    if mine:
                        r["ours_over_theirs"] = mine / r["tokens_per_s"]
                    log(f"  Fast-dLLM batch {batch:2d} {cache:10s} {r['tokens_per_s']:9.1f} tok/s  limit "
                        f"{r['limit_tokens_per_s']:9.1f}  x{r['x_limit']:.2f}  step {r['mean_step_ms']:.2f} ms  ours/theirs "
                        f"{r.get('ours_over_theirs', float('nan')):.2f}  ({time.perf_counter() - t_start:.0f} s)")
                out["rows"][key] = r
                if device == "cuda":
                    torch.cuda.empty_cache()
    finally:
        fast_dllm_ref.restore_sdpa(switches)
    return out


def time_fast_dllm(gen_mod, theirs, cache: str, prompt: torch.Tensor, args, device: str,
                   limit: Callable[[list], float]) -> dict[str, Any]:
    """Whole generations of their loop (the faster of ``--fast-dllm-reps``) after a one-block
    warm-up, with the limit of the forwards their loop ran (counted as ours are)."""
    mask_id = theirs.config.mask_token_id
    tps = args.tokens_per_step
    fast_dllm_ref.run(gen_mod, theirs, cache, prompt, args.block, args.block, tps, mask_id)
    secs, nfe = [], 0
    for _ in range(args.fast_dllm_reps):
        work = fast_dllm_ref.ForwardWork(theirs)
        try:
            sync(device)
            t = time.perf_counter()
            _, nfe = fast_dllm_ref.run(gen_mod, theirs, cache, prompt, args.gen, args.block, tps, mask_id)
            sync(device)
            secs.append(time.perf_counter() - t)
        finally:
            work.close()
    s, lim = min(secs), limit(work.work)
    tokens = prompt.shape[0] * args.gen
    return {"batch": prompt.shape[0], "cache": cache, "generation_seconds": s, "tokens_per_s": tokens / s,
            "limit_seconds": lim, "limit_tokens_per_s": tokens / lim, "x_limit": s / lim,
            "forwards": nfe, "mean_step_ms": 1e3 * s / nfe, "all_seconds": secs, "fed": [w[0] for w in work.work]}


def same_tokens_smoke(gen_mod, args) -> dict[str, Any]:
    """Tiny fp32 model with weights spread wide enough that greedy tokens vary by position (the
    default init gives nearly one token everywhere, which would agree by accident)."""
    model = build_model("cpu", smoke=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    prompt = torch.randint(0, 400, (1, args.prompt), generator=g)
    res = fast_dllm_ref.same_tokens(gen_mod, model, fast_dllm_ref.their_model(gen_mod, model), prompt,
                                    args.gen, args.block, args.tokens_per_step)
    for cache, r in res.items():
        log(f"  Fast-dLLM vs ours, {cache}: same tokens {r['equal']} ({r['distinct_tokens']} distinct generated "
            f"tokens, their forwards {r['their_forwards']}, our steps {r['our_steps']})")
    return res


# ---- report ----------------------------------------------------------------------------------
def fast_dllm_report(fd: dict[str, Any], batches: list[int]) -> list[str]:
    """Lines for Fast-dLLM's rows: tokens/s (ours / theirs), or why they are missing."""
    if "rows" not in fd:
        return [f"Fast-dLLM rows: {fd['error']}"] if fd else []
    lines = ["Fast-dLLM's own loops, same weights/prompt/blocks/k (eager, threshold=None); tokens/s "
             "(limit, x of limit; ours / theirs):"]
    for cache in fast_dllm_ref.LOOPS:
        cells = []
        for b in batches:
            r = fd["rows"].get(f"{b}/{cache}", {})
            cells.append(f"{r['tokens_per_s']:.0f} ({r['limit_tokens_per_s']:.0f}, {r['x_limit']:.2f}x; ours "
                         f"{r['ours_over_theirs']:.2f}x)" if "ours_over_theirs" in r
                         else f"{r['tokens_per_s']:.0f} ({r['limit_tokens_per_s']:.0f}, {r['x_limit']:.2f}x)"
                         if "tokens_per_s" in r
                         else "1 row only" if "failed at batch" in r.get("error", "") else "-")
        lines.append(f"| Fast-dLLM {cache} | " + " | ".join(cells) + " |")
    for cache, r in fd.get("same_tokens", {}).items():
        lines.append(f"  same tokens as ours ({cache}, smoke model): {r['equal']}")
    return lines


def report(res: dict[str, Any]) -> str:
    lines = [f"dllm_throughput {res['date']} on {res['device']} (torch {res['torch']}), {res['shape']}",
             f"attention back ends: {res.get('sdpa_backends', 'not recorded')} (in graphs: "
             f"{res.get('graph_sdpa_backends', 'same')}); cached steps' attention kernel: "
             f"{res.get('attention', 'sdpa')}; elementwise kernels: {res.get('elementwise_kernels', 'see the flags')}"
             f"; greedy confidence: {res.get('confidence', 'torch')}; matmul library: {res.get('blas', 'default')}"
             f"; next step planned during the read: {res.get('look_ahead', 'off')}"
             f"; residual add and next norm: {res.get('residual_norms', 'apart')}",
             f"matmul {res['matmul_tflops']:.0f} TFLOP/s (bf16 {res['matmul_n']}^3), copy {res['copy_GBps']:.0f} GB/s, "
             f"weights {res['weight_bytes'] / 1e9:.2f} GB -> weight-read floor {res['weight_floor_ms']:.2f} ms/forward",
             f"P{res['prompt']}/G{res['gen']} block {res['block']}, lowconf {res['tokens_per_step']} tokens/step, "
             f"CUDA graphs; tokens/s (limit, x of limit):"]
    if res.get("split_k"):
        split = {key: v for key, v in res["split_k"]["table"].items() if v > 1}
        lines.insert(-1, f"split-K (attn_out, ff_out), splits kept as faster: {split or 'none'}")
    if not res["throughput"]:
        lines[-1] = lines[-1].replace("; tokens/s (limit, x of limit):", "; tokens/s not measured in this run (--skip)")
    else:
        lines += ["| cache | " + " | ".join(f"batch {b}" for b in res["batches"]) + " |",
                  "|---|" + "---|" * len(res["batches"])]
    for cache in CACHES if res["throughput"] else ():
        cells = []
        for b in res["batches"]:
            r = res["throughput"].get(f"{b}/{cache}", {})
            cells.append(f"{r['tokens_per_s']:.0f} ({r['limit_tokens_per_s']:.0f}, {r['x_limit']:.2f}x)"
                         if "tokens_per_s" in r else ("skipped" if "skipped" in r.get("error", "") else "error"))
        lines.append(f"| {cache} | " + " | ".join(cells) + " |")
    lines += fast_dllm_report(res.get("fast_dllm", {}), res["batches"])
    gve = res.get("graph_vs_eager")
    if gve:
        lines.append("graphs vs eager tokens (batch 2, two blocks): " + ", ".join(
            f"{c} {'equal' if r['equal'] else 'DIFFER'} ({r['replays']} replays)" for c, r in gve.items()))
        if res.get("graph_sdpa_backends", "same") != "same":
            lines.append("  (the graphs ran their own attention back ends, --graph-sdpa-backends: other kernels than "
                         "the eager forwards', so tokens may differ where predictions are within rounding)")
    m = res.get("mean_vs_median")
    if m:
        lines.append(f"dual P{m['prompt']}/G{m['gen']} batch 1: mean step {1e3 * m['mean_step_s']:.2f} ms, "
                     f"median {1e3 * m['median_step_s']:.2f} ms, mean/median {m['mean_over_median']:.2f}, "
                     f"{m['tokens_per_s']:.0f} tokens/s")
    if res.get("sampler_share"):
        lines.append("sampler share of a step at batch 1 (first block; 1 - bare forwards / steps; steps synced each, "
                     "then unsynced as sample(timing=False) runs them; in-run: the forwards' device spans inside the "
                     "same unsynced steps):")
    for key, r in res.get("sampler_share", {}).items():
        unsynced = (f"; unsynced step {r['unsynced_step_ms']:.2f} ms, share {100 * r['unsynced_share']:.1f}%"
                    if "unsynced_share" in r else "")
        if "inrun_share" in r:
            unsynced += (f"; in-run step {r['inrun_step_ms']:.2f} ms, forward {r['inrun_forward_ms']:.2f} ms, "
                         f"share {100 * r['inrun_share']:.1f}%")
        lines.append(f"  {key:22s} " + (f"step {r['step_ms']:.2f} ms, forward {r['forward_ms']:.2f} ms, "
                                        f"share {100 * r['sampler_share']:.1f}%{unsynced}" if "step_ms" in r
                                        else r.get("error") or f"skipped: {r['skipped']}"))
    lines.append(f"graph captures {res['graph_captures']}, replays {res['graph_replays']}; wall {res['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: a check of the script, not a figure")
    ap.add_argument("--model", choices=("llada", "dream"), default="llada",
                    help="LLaDA-8B's shape (default) or Dream-v0-7B's (shifted logits)")
    ap.add_argument("--fuse", action="store_true", help="fuse_projections: one q/k/v and one gate/up matmul")
    ap.add_argument("--attention", choices=("sdpa", "triton"), default="sdpa",
                    help="triton: a cached step's RoPE, KV write and attention in Triton kernels "
                         "(model.use_attention_kernel; results named ..._triton-attention)")
    ap.add_argument("--compile-elementwise", action="store_true",
                    help="torch.compile the model's elementwise kernels (paradecode.models.llada.compile_elementwise: "
                         "RMSNorm, RoPE, SwiGLU, add + norm); pays off inside the CUDA graphs this script replays")
    ap.add_argument("--elementwise-kernels", choices=("triton", "compiled"), default="triton",
                    help="with --compile-elementwise: RoPE and SwiGLU as paradecode's Triton kernels (the default) "
                         "or as torch.compile's")
    ap.add_argument("--confidence", choices=("kernel", "torch"), default="kernel",
                    help="the samplers' Triton kernels (paradecode.samplers.common.fused_confidence): greedy steps' "
                         "argmax and float64 softmax confidence in one pass, CreditDecoding's update, Prophet's gap, "
                         "EB's and dParallel's entropy (the default), or PyTorch's ops for all of them")
    ap.add_argument("--look-ahead", choices=("auto", "off"), default="auto",
                    help="steps that read the device plan the next step's forward while they wait (the default on a "
                         "GPU, paradecode.samplers.base.look_ahead), or plan each step after its read (off, for an A/B)")
    ap.add_argument("--sdpa-backends", default="default",
                    help="attention back ends: 'default' (paradecode's: no cuDNN), 'torch' (PyTorch's own choice) "
                         "or a comma list of flash, efficient, math, cudnn")
    ap.add_argument("--graph-sdpa-backends", default="same",
                    help="attention back ends of the captured forwards only (set_graph_attention_backends): "
                         "'same' as --sdpa-backends, or a comma list such as cudnn,flash,efficient,math")
    ap.add_argument("--blas", choices=("default", "cublas", "cublaslt"), default="default",
                    help="the matmul library (torch.backends.cuda.preferred_blas_library): kernel_breakdown.py "
                         "found cuBLASLt faster than cuBLAS for some skinny projections")
    ap.add_argument("--split-k", action="store_true",
                    help="split the attention output and MLP down matmuls where timing on this GPU says it pays "
                         "(LLaDAModel.use_split_k('tune'); --smoke: a fixed plan that splits every shape in two)")
    ap.add_argument("--residual-norms", choices=("joined", "apart"), default="joined",
                    help="each layer's last residual add and the next layer's input norm as one kernel "
                         "(join_residual_norms of LLaDA and Dream, the default) or apart (an A/B)")
    ap.add_argument("--sampler-rules", default="", help="rules of the sampler-share part (comma list; default: all)")
    ap.add_argument("--sampler-caches", default="none,dual", help="caches of the sampler-share part")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--none-steps", type=int, default=3, help="steps timed for no cache (each is one full forward)")
    ap.add_argument("--long", default="1024x1024", help="promptxgen of the dual mean-vs-median generation")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: check,throughput,fast-dllm,long,sampler")
    ap.add_argument("--budget-s", type=float, default=160.0,
                    help="seconds after which parts not yet started are skipped (recorded as such)")
    ap.add_argument("--fast-dllm-dir", default=None,
                    help="checkout of NVlabs/Fast-dLLM's llada/ (generate.py, model/): adds its loops' rows")
    ap.add_argument("--fast-dllm-reps", type=int, default=1, help="timed generations per Fast-dLLM row")
    ap.add_argument("--machine", default="h200",
                    help="machine name in the results file name; with a variant of its own (h200_x), no other is added")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def save(res: dict[str, Any], partial: bool) -> None:
        tag = "" if args.model == "llada" else f"{args.model}_"
        # a --machine with its own variant (h200_issue15) is the name as given: one variant per name
        variant = "_triton-attention" if args.attention == "triton" and "_" not in args.machine else ""
        stem = out / f"dllm_throughput_{tag}{res['date']}_{args.machine}{variant}"
        res["graph_captures"], res["graph_replays"] = graphed.captures, graphed.replays
        res["wall_s"], res["complete"] = time.perf_counter() - t_start, not partial
        stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
        if not partial:
            text = report(res)
            log(text)
            stem.with_suffix(".txt").write_text(text + "\n")
            log(f"wrote {stem}.json/.txt")

    def over_budget() -> bool:
        if time.perf_counter() - t_start <= args.budget_s:
            return False
        log(f"  --budget-s {args.budget_s:.0f} s reached: skipping the rest")
        return True

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; use --smoke for a CPU check of the script.")
    if args.smoke:
        args.batches, args.prompt, args.gen, args.block, args.long = "1,2", 8, 16, 8, "8x16"
        args.machine = "cpu-smoke"
    args.long = tuple(int(v) for v in args.long.split("x"))
    skip = set(filter(None, args.skip.split(",")))
    from paradecode.models import (attention_backends, graph_attention_backends, set_attention_backends,
                                   set_graph_attention_backends)
    from paradecode.samplers.base import look_ahead
    from paradecode.samplers.common import fused_confidence

    fused_confidence(args.confidence == "kernel")
    look_ahead(None if args.look_ahead == "auto" else False)
    if args.blas != "default" and device == "cuda":
        torch.backends.cuda.preferred_blas_library(args.blas)
    if args.sdpa_backends != "default":
        set_attention_backends(None if args.sdpa_backends == "torch" else args.sdpa_backends.split(","))
    if args.graph_sdpa_backends != "same":
        set_graph_attention_backends(args.graph_sdpa_backends.split(","))
    model = build_model(device, args.smoke, args.model)
    if args.fuse:
        model.fuse_projections()
    if args.attention == "triton":
        model.use_attention_kernel("triton")
    if args.residual_norms == "apart":
        if not hasattr(model, "join_residual_norms"):
            sys.exit(f"error: --residual-norms apart is an A/B of LLaDA's and Dream's layers; {args.model} has no "
                     "such setting.")
        model.join_residual_norms = False
    split_plan = None
    if args.split_k:
        if args.model != "llada":
            sys.exit("error: --split-k is built for LLaDA's blocks (LLaDAModel.use_split_k).")
        if args.smoke:
            from paradecode.models.split_k import SplitKPlan

            blk = model.model.transformer["blocks"][0]
            shapes = {tuple(blk.attn_out.weight.shape), tuple(blk.ff_out.weight.shape)}
            model.use_split_k(SplitKPlan({(m, n, k): 2 for m in (32, 64, 128, 256) for n, k in shapes}))
        else:
            t_tune = time.perf_counter()
            model.use_split_k("tune")
            log(f"split-K tuned in {time.perf_counter() - t_tune:.1f} s: {model.model.transformer['blocks'][0].split_k}")
        split_plan = model.model.transformer["blocks"][0].split_k
    if args.compile_elementwise:
        from paradecode.models.llada import compile_elementwise

        compile_elementwise(triton_kernels=args.elementwise_kernels == "triton")
    # capture on first sight: the warm-up runs then leave every timed forward a replay (the
    # default, capture_after=1, only differs in which early forwards of a first call run eagerly)
    graphed = CUDAGraphModel(model, max_graphs=256, capture_after=0)
    if args.smoke:  # exercise the graph bookkeeping on CPU with a recording stand-in for capture
        graphed = _smoke_graphs(model)
    costs = Costs(model)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)

    def make_prompt(batch: int, length: int) -> torch.Tensor:
        return torch.randint(0, min(vocab, 100_000) - 16, (batch, length), generator=gen).to(device)

    n = 64 if args.smoke else 8192
    flops_per_s = matmul_rate(device, n, 3 if args.smoke else 30)
    bytes_per_s = copy_rate(device, 1 << (20 if args.smoke else 30), 3 if args.smoke else 20)
    rates = (flops_per_s, bytes_per_s)
    batches = [int(b) for b in args.batches.split(",")]
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
        "torch": torch.__version__, "model": args.model, "fused": args.fuse,
        "compiled_elementwise": args.compile_elementwise, "attention": args.attention,
        "elementwise_kernels": args.elementwise_kernels if args.compile_elementwise else "eager",
        "confidence": args.confidence, "blas": args.blas, "look_ahead": args.look_ahead,
        "residual_norms": args.residual_norms,
        "split_k": None if split_plan is None else {"table": {f"{m}x{n}x{k}": v for (m, n, k), v in split_plan.table.items()},
                                                    "times_s": {f"{m}x{n}x{k}": v for (m, n, k), v in
                                                                getattr(model, "split_k_times", {}).items()}},
        "sdpa_backends": attention_backends() or "torch's choice",
        "graph_sdpa_backends": graph_attention_backends() or "same",
        "shape": (f"{'Dream-v0-7B' if args.model == 'dream' else 'LLaDA-8B'} random bf16"
                  + (", fused projections" if args.fuse else "")) if not args.smoke else f"tiny {args.model} fp32 (smoke)",
        "prompt": args.prompt, "gen": args.gen, "block": args.block, "tokens_per_step": args.tokens_per_step,
        "batches": batches, "matmul_n": n, "matmul_tflops": flops_per_s / 1e12, "copy_GBps": bytes_per_s / 1e9,
        "weight_bytes": costs.weight_bytes, "weight_floor_ms": 1e3 * costs.weight_bytes / bytes_per_s,
        "blocks_timed": BLOCKS, "throughput": {},
    }
    log(f"rates: matmul {flops_per_s / 1e12:.1f} TFLOP/s, copy {bytes_per_s / 1e9:.0f} GB/s, "
        f"floor {res['weight_floor_ms']:.2f} ms ({time.perf_counter() - t_start:.0f} s)")
    if "check" not in skip:
        res["graph_vs_eager"] = gve = graph_vs_eager(graphed, model, make_prompt, args, device)
        log("  graphs vs eager tokens: " + ", ".join(f"{c} {r['equal']}" for c, r in gve.items()))
        save(res, partial=True)
    if "throughput" not in skip:
        for batch in batches:
            for cache in CACHES:
                if over_budget():
                    res["throughput"][f"{batch}/{cache}"] = {"error": "skipped: --budget-s reached"}
                    continue
                try:
                    r = throughput(graphed, make_prompt, batch, cache, args, costs, rates, device)
                except Exception as exc:  # keep the run's other figures
                    r = {"error": repr(exc)[:500]}
                    log(f"  batch {batch} {cache}: failed {exc!r}"[:300])
                else:
                    log(f"  batch {batch:2d} {cache:10s} {r['tokens_per_s']:9.1f} tok/s  limit "
                        f"{r['limit_tokens_per_s']:9.1f}  x{r['x_limit']:.2f}  ({time.perf_counter() - t_start:.0f} s)")
                res["throughput"][f"{batch}/{cache}"] = r
                save(res, partial=True)  # a run cut short still leaves what it measured
            graphed.release()  # this batch's buffers and graphs: memory for the next batch
            if device == "cuda":
                torch.cuda.empty_cache()
    if "fast-dllm" not in skip:
        if args.model != "llada":
            reason = "skipped: Fast-dLLM's llada/ loops run LLaDA only"
            log(f"  Fast-dLLM rows {reason}")
            res["fast_dllm"] = {"error": reason}
        elif not args.fast_dllm_dir:
            reason = "skipped: no --fast-dllm-dir (a checkout of NVlabs/Fast-dLLM's llada/)"
            log(f"  Fast-dLLM rows {reason}")
            res["fast_dllm"] = {"error": reason}
        elif over_budget():
            res["fast_dllm"] = {"error": "skipped: --budget-s reached"}
        else:
            res["fast_dllm"] = fast_dllm_rows(model, make_prompt, batches, args, device, res["throughput"], t_start,
                                              lambda work: limit_seconds(work, costs, *rates))
        save(res, partial=True)
    if "long" not in skip and not over_budget():
        res["mean_vs_median"] = mean_vs_median(graphed, make_prompt, args, device)
        m = res["mean_vs_median"]
        log(f"  dual P{m['prompt']}/G{m['gen']}: mean {1e3 * m['mean_step_s']:.2f} ms, median "
            f"{1e3 * m['median_step_s']:.2f} ms ({m['mean_over_median']:.2f}x)  ({time.perf_counter() - t_start:.0f} s)")
        graphed.release()
        save(res, partial=True)
    if "sampler" not in skip and not over_budget():
        res["sampler_share"] = sampler_share(graphed, make_prompt, args, device)
    save(res, partial=False)
    differ = [c for c, r in res.get("fast_dllm", {}).get("same_tokens", {}).items() if not r["equal"]]
    if differ:
        sys.exit(f"error: Fast-dLLM's loops and ours gave different tokens ({', '.join(differ)}) on the same "
                 "weights: their speed rows would not measure the same work.")
    return res


def _smoke_graphs(model: LLaDAModel) -> CUDAGraphModel:
    """CPU stand-in: 'captures' record the body and re-run it on replay against the static
    inputs (:mod:`paradecode.models.graph_standins`), so ``--smoke`` walks the replay paths."""
    from paradecode.models.graph_standins import ReplayedGraphs

    return ReplayedGraphs(model, max_graphs=256, capture_after=0)


if __name__ == "__main__":
    main()
