"""What a sampler step costs outside the model forward, counted on CPU as a proxy for the GPU.

For every registered diffusion-LM rule, with no cache and with the dual cache, on a tiny
random ``LLaDAModel``, this counts per step (the first ``--steps`` steps of a generation, as
``dllm_throughput.py``'s sampler share times them):

* **launches**: aten ops outside the model forward that would run a kernel on the device
  (ops that read or write a device tensor, views and allocations left out);
* **host ops**: aten ops on host-only tensors (the CPU bookkeeping: no kernel, some time);
* **syncs**: operations that would make the host wait for the device: device->host reads
  (``.item()``, ``bool()``, ``.tolist()``, ``.cpu()``, ``torch.equal``), data-dependent shapes
  (``nonzero``, boolean indexing) and host->device copies (``.to(device)`` of a host tensor,
  ``torch.tensor(..., device=)``, indexing a device tensor with a host index), which PyTorch
  issues as ``cudaMemcpyAsync`` followed by a stream synchronize (``paradecode.interfaces``'s
  kept copies, ``to_device`` and ``block_columns``, copy from pinned memory on CUDA without that
  wait; counted here all the same, once per value they keep);
* **CPU ms**: CPU time of this thread per step minus the forward's (run without the counters;
  thread time, so that other processes on a shared machine do not count).
* **read->fwd ms**: for a rule that reads the step's flags every step, the host's CPU time from
  that read to the next forward's call (median). On a GPU the device idles along this path: the
  read waited for every queued kernel, and nothing is queued until the next forward. ``-``: no
  flags read (lowconf).

Which tensors would live on the device is tracked from their origin: the canvas, the model's
outputs and everything made with an explicit ``device=`` (or ``.to(device)``) are device
tensors, and what is computed from them; the rest (rows, block indices) is host bookkeeping.
``sites`` lists where each sync happens (file:line).

    PYTHONPATH=. python benchmarks/sampler_ops.py [--out ops.json]
    PYTHONPATH=. python benchmarks/sampler_ops.py --cuda-syncs   # on a GPU: the syncs as CUDA sees them
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import sys
import time
import traceback
import warnings
import weakref
from pathlib import Path
from typing import Any, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dllm_throughput import driver as throughput_driver  # noqa: E402
from step_overhead import build_model  # noqa: E402

import paradecode.samplers.block as block_module  # noqa: E402
from paradecode.models import ModelWrapper  # noqa: E402
from paradecode.registry import get_strategy_class, strategies  # noqa: E402

DEBUG = False
# The device of a device tensor, as the code reads it (``x.device``): one object, so that a
# factory or ``.to()`` given it is known to make a device tensor (on CPU every device is equal).
DEVICE = torch.device("cpu")
_DEVICE_PROPERTY = torch._C.TensorBase.device
FACTORIES = {"zeros", "ones", "full", "empty", "arange", "rand", "randn", "randint", "tensor", "as_tensor",
             "linspace", "eye", "zeros_like", "ones_like", "full_like", "empty_like", "rand_like"}
READS = {"cpu", "tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy", "equal"}
NO_KERNEL = {"empty", "empty_like", "empty_strided", "_local_scalar_dense", "lift_fresh", "detach", "detach_", "alias",
             "set_", "resize_"}


class Taint:
    """Which live tensors would be on the device (by object identity)."""

    def __init__(self) -> None:
        self.ids: dict[int, Any] = {}

    def add(self, t: Any) -> None:
        if isinstance(t, torch.Tensor) and id(t) not in self.ids:
            i = id(t)
            self.ids[i] = weakref.finalize(t, self.ids.pop, i, None)

    def discard(self, t: Any) -> None:
        f = self.ids.pop(id(t), None)
        if f is not None:
            f.detach()

    def has(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.ids

    def any(self, args: Any) -> bool:
        return any(self.has(a) for a in _flat(args))


def _flat(x: Any):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _flat(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _flat(y)


def _site() -> str:
    """file:line of the innermost paradecode frame calling into torch."""
    for f in reversed(traceback.extract_stack()[:-3]):
        if "/paradecode/" in f.filename:
            return f"{f.filename.split('/paradecode/')[-1]}:{f.lineno}"
    return "?"


class Counter(TorchFunctionMode):
    def __init__(self, taint: Taint) -> None:
        super().__init__()
        self.taint = taint
        self.in_forward = False
        self.paused = False  # the counter's own work
        self.factory = False  # inside a factory that makes a device tensor
        self.reset()

    def reset(self) -> None:
        self.launches = 0
        self.host_ops = 0
        self.syncs = collections.Counter()
        self.sites = collections.Counter()

    def sync(self, kind: str) -> None:
        if not self.in_forward:
            self.syncs[kind] += 1
            self.sites[f"{kind} {_site()}"] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "__get__" and getattr(func, "__self__", None) is _DEVICE_PROPERTY:
            return DEVICE if self.taint.has(args[0]) else func(*args, **kwargs)
        tainted = self.taint.any(args) or self.taint.any(kwargs)
        if name in READS and tainted:
            self.sync("d2h")
            out = func(*args, **kwargs)
            if name == "cpu":
                self.paused = True
                out = out.clone()  # a host copy: not the device tensor itself
                self.paused = False
                self.taint.discard(out)
            return out
        if name in ("nonzero", "masked_select", "unique") or (name == "where" and len(args) == 1):
            if tainted:
                self.sync("shape")
            out = func(*args, **kwargs)
            if tainted:
                for t in _flat(out):
                    self.taint.add(t)
            return out
        if name in ("__getitem__", "__setitem__") and args and self.taint.has(args[0]):
            idx = args[1]
            idx = idx if isinstance(idx, tuple) else (idx,)
            for i in idx:
                if isinstance(i, torch.Tensor) and i.dim() > 0:
                    if i.dtype == torch.bool and self.taint.has(i) and name == "__getitem__":
                        self.sync("shape")
                    elif not self.taint.has(i):
                        self.sync("h2d")
            if name == "__setitem__" and isinstance(args[2], torch.Tensor) and args[2].dim() > 0 \
                    and not self.taint.has(args[2]):
                self.sync("h2d")
        to_device = (name in ("to", "cuda") and not (args and self.taint.has(args[0]))
                     and any(a is DEVICE or self.taint.has(a) for a in list(args[1:]) + list(kwargs.values())))
        if to_device:
            self.sync("h2d")
            out = func(*args, **kwargs)
            self.paused = True  # our copy (on CPU ``.to`` returns the host tensor itself)
            try:
                return self._taint_out(out.clone())
            finally:
                self.paused = False
        factory = name in FACTORIES and kwargs.get("device") is DEVICE
        self.factory = factory
        try:
            out = func(*args, **kwargs)
        finally:
            self.factory = False
        if factory:
            if name in ("tensor", "as_tensor"):
                self.sync("h2d")
            self._taint_out(out)
        return out

    def _taint_out(self, out):
        for t in _flat(out):
            self.taint.add(t)
        return out


class Propagate(TorchDispatchMode):
    """Outputs of an op on device tensors are device tensors; counts the ops."""

    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        c = self.counter
        tainted = c.taint.any(args) or c.taint.any(kwargs)
        if tainted:
            for t in _flat(out):
                c.taint.add(t)
        if not (c.in_forward or c.paused):
            base = func._schema.name.split("::")[-1]
            if base == "_local_scalar_dense" and tainted:
                pass  # counted at the Python read (item / bool / tolist)
            elif func.is_view or base in NO_KERNEL:
                pass
            elif tainted or c.factory or c.taint.any(out):
                c.launches += 1
                if DEBUG:
                    print("   launch", func, _site())
            else:
                c.host_ops += 1
                if DEBUG:
                    print("   host", func, _site())
        return out


class Forward(ModelWrapper):
    """The model, with the counters paused and its time taken."""

    def __init__(self, inner: torch.nn.Module, counter: Optional[Counter] = None, clock: Optional[Any] = None) -> None:
        super().__init__(inner)
        self.counter, self.clock = counter, clock
        self.seconds = 0.0

    def forward(self, input_ids, **kw):
        if self.clock is not None:
            self.clock.forward_called()
        if self.counter is not None:
            self.counter.in_forward = True
        t = time.thread_time()
        try:
            return self.model(input_ids, **kw)
        finally:
            self.seconds += time.thread_time() - t
            if self.counter is not None:
                self.counter.in_forward = False


def block_rules() -> list[str]:
    """The block rules a canvas cache serves (WINO's forward is its own and needs the model's
    per-query mask, which the counting wrapper hides)."""
    return [n for n in strategies()
            if getattr(get_strategy_class(n), "family", None) == "dllm" and get_strategy_class(n).cacheable]


def driver(model, prompt, rule: str, cache: str, gen: int, block: int, tps: int):
    """dllm_throughput's driver, quiet: learn2pd warns that a random model has no filter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return throughput_driver(model, prompt, rule, cache, gen, block, tps)


def one_step(strat, state, call) -> None:
    """What ``run_loop`` does per step (timing off): the step, its extras, the cache figures."""
    committed = strat.step(state, call)
    extras = getattr(state, "extras", None)
    record = dict(extras) if extras else {}
    record.update(call.step_stats())
    call.trace.add(committed, 0.0, None, record)
    if extras:
        extras.clear()


def count(model, prompt, rule, cache, args) -> dict[str, Any]:
    from paradecode import interfaces

    getattr(interfaces, "_DEVICE_COPIES", {}).clear()  # kept device copies: made (and counted) anew
    taint = Taint()
    counter = Counter(taint)
    fwd = Forward(model, counter)
    for p in model.parameters():
        taint.add(p)
    taint.add(prompt)
    per_step = []
    sites: collections.Counter = collections.Counter()
    with torch.inference_mode(), counter, Propagate(counter):
        strat, state, call = driver(fwd, prompt, rule, cache, args.gen, args.block, args.tokens_per_step)
        for _ in range(args.steps):
            if strat.done(state):
                break
            counter.reset()
            one_step(strat, state, call)
            per_step.append((counter.launches, counter.host_ops, dict(counter.syncs)))
            sites.update(counter.sites)
    n = len(per_step)
    blocks = min(int(state.block.max()) + 1, state.num_blocks)  # blocks the counted steps entered
    syncs = collections.Counter()
    for _, _, s in per_step:
        syncs.update(s)
    return {"steps": n, "blocks": blocks, "launches": sum(p[0] for p in per_step) / n, "host_ops": sum(p[1] for p in per_step) / n,
            "syncs": sum(syncs.values()) / n, "syncs_by_kind": {k: v / n for k, v in sorted(syncs.items())},
            "sites": {k: v / n for k, v in sites.most_common()}}


class _ReadClock:
    """Thread CPU time of the host path from a step's device read to the next forward's call:
    on a GPU the device idles along it (every queued kernel has run by the read)."""

    def __init__(self) -> None:
        self.read_at: Optional[float] = None
        self.gaps: list[float] = []

    @contextlib.contextmanager
    def watching(self):
        original = block_module._read_flags

        def read_flags(*a, **kw):
            self.read_at = time.thread_time()  # its first act is the read (``tolist``): the host path starts there
            return original(*a, **kw)

        block_module._read_flags = read_flags
        try:
            yield self
        finally:
            block_module._read_flags = original

    def forward_called(self) -> None:
        if self.read_at is not None:
            self.gaps.append(time.thread_time() - self.read_at)
            self.read_at = None


def cpu_time(model, prompt, rule, cache, args) -> dict[str, Any]:
    """Per step: thread CPU ms of the step, of its forward, and their difference (the sampler's),
    best of --repeats; and the median ms from a step's read to the next forward's call (None for
    a rule that does not read every step)."""
    best = None
    for _ in range(args.repeats):
        clock = _ReadClock()
        fwd = Forward(model, clock=clock)
        with torch.inference_mode(), clock.watching():
            strat, state, call = driver(fwd, prompt, rule, cache, args.gen, args.block, args.tokens_per_step)
            n, t0 = 0, time.thread_time()
            while n < args.steps and not strat.done(state):
                one_step(strat, state, call)
                n += 1
            wall = time.thread_time() - t0
        row = {"step_ms": 1e3 * wall / n, "forward_ms": 1e3 * fwd.seconds / n, "sampler_ms": 1e3 * (wall - fwd.seconds) / n,
               "read_to_forward_ms": 1e3 * statistics.median(clock.gaps) if clock.gaps else None}
        if best is None or row["sampler_ms"] < best["sampler_ms"]:
            best = row
    return best


class _SyncsOff(ModelWrapper):
    """The model with CUDA's sync debug mode off inside its forward (only the sampler's count)."""

    def forward(self, input_ids, **kw):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return self.model(input_ids, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("warn")


def cuda_syncs(model, prompt, rule, cache, args) -> tuple[float, dict[str, float]]:
    """Synchronizing CUDA calls per step outside the forward, as PyTorch's sync debug mode
    reports them on a real device (each one is a warning; the counted steps only), and per step
    the Python line each came from (the warning's caller)."""
    strat, state, call = driver(_SyncsOff(model), prompt, rule, cache, args.gen, args.block, args.tokens_per_step)
    n = total = 0
    sites: dict[str, int] = {}
    with torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while n < args.steps and not strat.done(state):
            del caught[:]
            torch.cuda.set_sync_debug_mode("warn")
            try:
                one_step(strat, state, call)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            for w in caught:
                if "synchroniz" in str(w.message):
                    total += 1
                    site = f"{Path(w.filename).name}:{w.lineno}"
                    sites[site] = sites.get(site, 0) + 1
            n += 1
    return total / n, {k: v / n for k, v in sorted(sites.items(), key=lambda kv: -kv[1])}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="steps counted (dllm_throughput: block / tokens per step)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per setting (the best is kept)")
    ap.add_argument("--rules", default="", help="comma list (default: every registered diffusion-LM rule)")
    ap.add_argument("--caches", default="none,dual")
    ap.add_argument("--sites", action="store_true", help="print where the syncs happen")
    ap.add_argument("--cuda-syncs", action="store_true",
                    help="also count, on a CUDA device, the synchronizing calls per step (PyTorch's sync debug mode)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cuda_syncs and not torch.cuda.is_available():
        sys.exit("error: --cuda-syncs needs a CUDA device; without it the counts are the CPU proxy.")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(2, "cpu", torch.float32, small=True)
    prompt = torch.randint(0, model.config.vocab_size - 200, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    rules = [r for r in args.rules.split(",") if r] or block_rules()
    res: dict[str, Any] = {"prompt": args.prompt, "gen": args.gen, "block": args.block, "steps": args.steps,
                           "torch": torch.__version__, "rows": {}}
    print(f"{'rule/cache':20s} {'launches':>9s} {'host ops':>9s} {'syncs':>6s}  {'CPU sampler ms':>14s}  "
          f"{'read->fwd ms':>12s}  syncs by kind")
    for rule in rules:
        for cache in args.caches.split(","):
            key = f"{rule}/{cache}"
            try:
                row = count(model, prompt, rule, cache, args)
                row.update(cpu_time(model, prompt, rule, cache, args))
                if args.cuda_syncs:
                    row["cuda_syncs"], row["cuda_sync_sites"] = cuda_syncs(model.cuda(), prompt.cuda(), rule, cache, args)
                    model.cpu()
            except Exception as exc:  # e.g. a rule no canvas cache can plan (WINO)
                res["rows"][key] = {"error": repr(exc)[:200]}
                print(f"{key:20s} skipped: {exc!r}"[:160])
                continue
            res["rows"][key] = row
            kinds = " ".join(f"{k} {v:.2f}" for k, v in row["syncs_by_kind"].items())
            cuda = f"  CUDA syncs {row['cuda_syncs']:.2f}" if "cuda_syncs" in row else ""
            gap = "-" if row["read_to_forward_ms"] is None else f"{row['read_to_forward_ms']:.3f}"
            print(f"{key:20s} {row['launches']:9.1f} {row['host_ops']:9.1f} {row['syncs']:6.2f}  "
                  f"{row['sampler_ms']:14.3f}  {gap:>12s}  {kinds}{cuda}")
            if args.sites:
                for site, v in row["sites"].items():
                    print(f"      {v:5.2f}  {site}")
                for site, v in row.get("cuda_sync_sites", {}).items():
                    print(f"      {v:5.2f}  CUDA sync at {site}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
