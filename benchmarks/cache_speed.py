"""Per-step time of the dLLM cache policies at real size, all measured in one run.

An LLaDA-8B-shaped model with random bf16 weights (time per step does not depend on the
weights), batch 1, block 32, the LLaDA top-k sampler with a fixed number of tokens per step
(random weights give meaningless confidences, so a threshold rule would not be a fixed
workload). For each (prompt, generation) setting it reports:

* one-forward times (CUDA events, median of repeats) of a full step (eager and CUDA graphs),
  a prefix-cache step (block 0: block + whole suffix fed) and a dual-cache step, eager and
  with CUDA graphs;
* whole generations through ``paradecode.sample`` with no cache, ``prefix``, ``dual`` and
  ``dkv-decode``, each through :class:`CUDAGraphModel` and (``-eager``) the plain model:
  mean time per step (sampler included), tokens per second, the ratio to the eager no-cache
  run, and whether graphs gave the eager run's tokens;
* the weight-bandwidth floor: bytes of weights a step must read / measured copy bandwidth;
* with ``--profile``, CPU vs GPU time and the top CUDA kernels of chosen generations.

``--fuse`` compiles RMSNorm/RoPE (``compile_elementwise``), ``--fuse-proj`` joins the q/k/v
and SwiGLU input matmuls (``LLaDAModel.fuse_projections``).

    python benchmarks/cache_speed.py --out results.json            # GPU, 8B shape
    python benchmarks/cache_speed.py --tiny                          # CPU smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

import paradecode
from paradecode.caches.canvas import CanvasKVCache
from paradecode.loop import synchronize as sync
from paradecode.models import LLaDAConfig, LLaDAModel, ModelWrapper
from paradecode.models.graphs import CUDAGraphModel
from paradecode.models import llada
from paradecode.models.llada import compile_elementwise
from paradecode.registry import build_config, get_cache_class, get_strategy_class


def make_model(tiny: bool, device: str) -> LLaDAModel:
    if tiny:
        config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128,
                             vocab_size=256, embedding_size=256, mask_token_id=250, eos_token_id=251, pad_token_id=251)
        return LLaDAModel(config).to(device).eval()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LLaDAModel(LLaDAConfig())  # LLaDA-8B shape, random weights
    torch.set_default_dtype(torch.float32)
    return model.eval()


@contextlib.contextmanager
def plain_elementwise():
    """Eager runs use LLaDA's plain elementwise kernels even with ``--fuse``: compiled functions
    called eagerly pay guard checks on every call (~130 per forward), which only graphs hide."""
    saved = dict(llada._KERNELS)
    llada._KERNELS.update(llada.EAGER_KERNELS)
    try:
        yield
    finally:
        llada._KERNELS.update(saved)


def plain(fn):
    def run(*a, **k):
        with plain_elementwise():
            return fn(*a, **k)
    return run


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a large device copy (read + write), the practical HBM bandwidth."""
    if not device.startswith("cuda"):
        return float("nan")
    a = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    sync(device)
    return 2 * a.numel() * 10 / (time.perf_counter() - t)


def weight_bytes(model: LLaDAModel) -> int:
    """Weights a step reads: everything but the embedding table (only T rows are gathered)."""
    emb = model.model.transformer["wte"].weight
    return sum(p.numel() * p.element_size() for p in model.parameters()) - emb.numel() * emb.element_size()


def policy(name: str) -> CanvasKVCache:
    cls = get_cache_class(name)
    return cls(build_config(cls.Config, name, {}))


def time_forwards(model, graphed, prompt, gen, block, device, repeats):
    """Median one-forward times: full step, prefix step at block 0, dual step."""
    cls = get_strategy_class("lowconf")
    strat = cls(build_config(cls.Config, "lowconf", dict(gen_length=gen, block_length=block, steps=gen)))
    models, ctx = strat.setup(model)
    out = {}

    def measure(fn):
        for _ in range(3):
            fn()
        sync(device)
        times = []
        for _ in range(repeats):
            if device.startswith("cuda"):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return statistics.median(times)

    with torch.inference_mode():
        state = strat.start(prompt, **ctx)
        _, req = strat.request(state)
        out["full"] = measure(plain(lambda: model(req.inputs, **req.kwargs)))
        out["full_graphs"] = measure(lambda: graphed(req.inputs, **req.kwargs))
        for name in ("prefix", "dual"):
            for label, m in (("eager", plain(model)), ("graphs", graphed)):
                pol = policy(name)
                st = strat.start(prompt, **ctx)
                r = pol.prepare(strat.request(st)[1])  # full forward fills the cache
                pol.restore(m(r.inputs, **r.kwargs), r)
                st.step_in_block[:] = 1  # the canvas is unchanged: later steps are cached ones
                r = pol.prepare(strat.request(st)[1])

                try:
                    out[f"{name}_{label}"] = measure(lambda r=r, m=m: m(r.inputs, **r.kwargs))
                except Exception as exc:  # keep the run's other figures
                    out[f"{name}_{label}"] = float("nan")
                    out[f"{name}_{label}_error"] = repr(exc)
                out[f"{name}_fed"] = int(r.inputs.shape[1])
    return out


class TimedForward(ModelWrapper):
    """Wraps a model to measure the forward alone inside a generation (syncs around it)."""

    def __init__(self, model, device):
        super().__init__(model)
        self.device_name = device
        self.seconds: list[float] = []

    def forward(self, *args, **kwargs):
        sync(self.device_name)
        t = time.perf_counter()
        out = self.model(*args, **kwargs)
        sync(self.device_name)
        self.seconds.append(time.perf_counter() - t)
        return out


def time_generation(model, prompt, gen, block, steps, cache, device):
    timed = TimedForward(model, device)
    out = paradecode.sample(timed, prompt, "lowconf", gen_length=gen, block_length=block, steps=steps, cache=cache)
    sync(device)
    per_step = [r.seconds for r in out.trace.records]
    forward = timed.seconds
    t = time.perf_counter()
    again = paradecode.sample(model, prompt, "lowconf", gen_length=gen, block_length=block, steps=steps, cache=cache,
                              timing=False)
    sync(device)
    wall = time.perf_counter() - t
    reuse = out.trace.extra("reuse_rate")
    held = out.trace.extra("cache_bytes")
    return {
        "mean_step_s": statistics.mean(per_step),
        "median_step_s": statistics.median(per_step),
        "mean_forward_s": statistics.mean(forward),
        "median_forward_s": statistics.median(forward),
        "tokens_per_s": gen / wall,
        "wall_s": wall,
        "steps": out.trace.steps,
        "mean_reuse_rate": statistics.mean(reuse) if reuse else 0.0,
        "cache_bytes": max(held) if held else 0,
        "sequences": again.sequences,
    }


def profile_generation(model, prompt, gen, block, steps, cache, device) -> dict:
    """Where a generation's time goes: CPU vs GPU busy time and the top CUDA kernels."""
    from torch.profiler import ProfilerActivity, profile

    name = cache.replace("-eager", "")
    name = None if name == "none" else name
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    paradecode.sample(model, prompt, "lowconf", gen_length=gen, block_length=block, steps=steps, cache=name)  # warm
    sync(device)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        paradecode.sample(model, prompt, "lowconf", gen_length=gen, block_length=block, steps=steps, cache=name,
                          timing=False)
        sync(device)
    wall = time.perf_counter() - t
    events = prof.key_averages()
    attr = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    kernels = [e for e in events if getattr(e, attr, 0) > 0 and not e.key.startswith("aten::")]
    gpu = sum(getattr(e, attr) for e in kernels) / 1e6
    top = sorted(kernels, key=lambda e: -getattr(e, attr))[:12]
    res = {"wall_s": wall, "gpu_kernel_s": gpu, "kernel_launches": sum(e.count for e in kernels),
           "syncs": sum(e.count for e in events if e.key in ("aten::item", "aten::_local_scalar_dense")),
           "top": [(e.key[:90], e.count, getattr(e, attr) / 1e6) for e in top]}
    print(f"  profile {cache}: wall {wall:.2f}s, GPU kernels {gpu:.2f}s, launches {res['kernel_launches']}, "
          f"syncs {res['syncs']}")
    for key, count, secs in res["top"]:
        print(f"    {secs*1e3:9.1f} ms {count:7d}  {key}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny CPU model, a smoke test of the script")
    ap.add_argument("--settings", default="512x256,1024x1024", help="promptxgen pairs")
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--fuse", action="store_true", help="compile RMSNorm/RoPE into fused kernels (torch.compile)")
    ap.add_argument("--fuse-proj", action="store_true", help="one matmul for q/k/v and one for the SwiGLU inputs")
    ap.add_argument("--caches", default="none-eager,none,prefix,dual,dkv-decode,dkv-decode-eager,dual-eager",
                    help="'-eager' runs the plain model; otherwise CUDA graphs (CUDAGraphModel)")
    ap.add_argument("--profile", default=None, help="comma list of caches to profile (top CUDA kernels)")
    args = ap.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if args.tiny:
        args.settings, args.repeats = "24x32", 3
    if args.fuse:
        compile_elementwise()
    model = make_model(args.tiny, device)
    if args.fuse_proj:
        model.fuse_projections()
    graphed = CUDAGraphModel(model)
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "torch": torch.__version__, "block": args.block, "tokens_per_step": args.tokens_per_step,
               "fused_elementwise": args.fuse, "fused_projections": args.fuse_proj}
    bw = copy_bandwidth(device)
    wb = weight_bytes(model)
    results["weight_bytes"] = wb
    results["copy_bandwidth_Bps"] = bw
    results["floor_s"] = wb / bw
    g = torch.Generator().manual_seed(0)
    for setting in args.settings.split(","):
        P, G = (int(v) for v in setting.split("x"))
        prompt = torch.randint(0, 1000 if not args.tiny else 200, (1, P), generator=g).to(device)
        steps = G // args.tokens_per_step
        row = {"forward": time_forwards(model, graphed, prompt, G, args.block, device, args.repeats)}
        gens = {}
        for cache in args.caches.split(","):
            m = model if cache.endswith("-eager") else graphed
            name = cache.replace("-eager", "")
            name = None if name == "none" else name
            try:
                timer = plain(time_generation) if cache.endswith("-eager") else time_generation
                gens[cache] = timer(m, prompt, G, args.block, steps, name, device)
            except Exception as exc:  # keep the run's other figures
                print(f"  {cache} failed: {exc!r}", flush=True)
                gens[cache] = {"error": repr(exc), "mean_step_s": float("nan"), "tokens_per_s": float("nan"),
                               "mean_reuse_rate": float("nan"), "cache_bytes": 0, "sequences": None}
        base = gens["none-eager"]["mean_step_s"]
        for cache, r in gens.items():
            r["step_speedup_vs_none"] = base / r["mean_step_s"]
        if args.profile:
            row["profile"] = {}
            for c in args.profile.split(","):
                eager = c.endswith("-eager")
                prof = plain(profile_generation) if eager else profile_generation
                row["profile"][c] = prof(model if eager else graphed, prompt, G, args.block, steps, c, device)
        # graphed runs must give the eager run's tokens (same kernels only: with --fuse the eager
        # runs use plain RMSNorm/RoPE, whose rounding differs, and random weights have near-ties)
        row["graphs_equal_eager"] = None if args.fuse else {
            c: bool(torch.equal(gens[c]["sequences"], gens[c + "-eager"]["sequences"]))
            for c in gens if c + "-eager" in gens and gens[c]["sequences"] is not None
            and gens[c + "-eager"]["sequences"] is not None
        }
        for r in gens.values():
            r.pop("sequences", None)
        row["generate"] = gens
        results[setting] = row
        print(f"== prompt {P} / gen {G}, block {args.block}, {args.tokens_per_step} tokens/step ({steps} steps)")
        f = row["forward"]
        print(f"  one forward: full {f['full']*1e3:.1f} ms (graphs {f['full_graphs']*1e3:.1f}) | prefix (fed {f['prefix_fed']}) eager {f['prefix_eager']*1e3:.1f}"
              f" graphs {f['prefix_graphs']*1e3:.1f} ms | dual eager {f['dual_eager']*1e3:.1f} graphs {f['dual_graphs']*1e3:.1f} ms"
              f" | floor {results['floor_s']*1e3:.1f} ms", flush=True)
        for cache, r in gens.items():
            print(f"  {cache:11s} step {r['mean_step_s']*1e3:6.1f} ms (median {r.get('median_step_s', float('nan'))*1e3:5.1f}, "
                  f"forward {r.get('median_forward_s', float('nan'))*1e3:5.1f})  x{r['step_speedup_vs_none']:.2f}  "
                  f"{r['tokens_per_s']:8.1f} tok/s  reuse {r['mean_reuse_rate']:.2f}  cache {r['cache_bytes']/2**20:.0f} MiB")
        print(f"  graphed == eager tokens: {row['graphs_equal_eager']}  (captures {graphed.captures}, replays {graphed.replays})",
              flush=True)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
