"""What the device waits for after a dLLM step's read, and how much of it goes.

A rule that reads the device once per step (threshold, credit, EB, ...) leaves the device idle
from that read until the next forward's first kernel. The step profile
(``results/step_profile_2026-12-03_h200_host-gaps.txt``) put ~0.25 ms of it on
``cudaGraphLaunch``. This script measures the parts, through the CUDA driver API (``libcuda``,
via ctypes; nothing is compiled):

* **graph launches**, synthetic (N tiny kernels, N = 16 .. 1024) and real (``--model``: the
  graphs ``CUDAGraphModel`` captures for LLaDA-8B's shape with random weights, fused
  projections, compiled elementwise kernels and the Triton attention kernel, dual cache, batch
  1): the host time of a launch on an idle device by PyTorch's ``replay()``, by ``cuGraphLaunch``
  of PyTorch's executable, and by executables instantiated from the same graph with other flags;
  the wall time of launch + sync minus the graph's device time (the idle device's wait for its
  first kernel); the node census (kernels, memsets, roots: a straight line or not);
* **the host path from the read to the next launch** (``--model``), per rule, as medians of
  marks taken in the step: the rest of ``apply``, ``request()``, the cache's feed plan, the graph
  wrapper's input copies, the launch; with the next step planned after the read and during it
  (``paradecode.samplers.base.look_ahead``); and, from CUDA events, the device's idle time from
  the end of a step's work (before the read's copy) to the next launch;
* **the look-ahead A/B** (``--model``): whole generations of every rule, planned after the read
  and during it, alternated ``--ab-reps`` times, ms per step and tokens compared;
* ``--relaunch``: the first block's steps with each graph relaunched through another executable.

    PYTHONPATH=. python benchmarks/read_gap.py --model --out-dir OUT      # GPU, ~2 min

Writes ``read_gap_<date>_<machine>.json`` and ``.txt``; no CPU mode (CUDA graphs).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paradecode.bench.results_file import write_results  # noqa: E402

NODE_TYPES = {0: "kernel", 1: "memcpy", 2: "memset", 3: "host", 4: "child graph", 5: "empty", 6: "event wait",
              7: "event record", 8: "semaphore signal", 9: "semaphore wait", 10: "mem alloc", 11: "mem free",
              12: "batch mem op", 13: "conditional"}
FLAGS = {"none": 0, "auto_free": 1, "upload": 2, "device_launch": 4}


class Driver:
    """The few CUDA driver calls the probe needs (handles are the runtime's: cudaGraph_t is a CUgraph)."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        self.lib.cuGraphGetNodes.argtypes = [vp, ctypes.POINTER(vp), ctypes.POINTER(sz)]
        self.lib.cuGraphGetRootNodes.argtypes = [vp, ctypes.POINTER(vp), ctypes.POINTER(sz)]
        self.lib.cuGraphNodeGetType.argtypes = [vp, ctypes.POINTER(ctypes.c_int)]
        self.lib.cuGraphInstantiateWithFlags.argtypes = [ctypes.POINTER(vp), vp, ctypes.c_ulonglong]
        self.lib.cuGraphLaunch.argtypes = [vp, vp]
        self.lib.cuGraphUpload.argtypes = [vp, vp]
        self.lib.cuGraphExecDestroy.argtypes = [vp]

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{what} failed with CUresult {rc}")

    def census(self, graph: int) -> dict[str, Any]:
        n = ctypes.c_size_t(0)
        self.check(self.lib.cuGraphGetNodes(ctypes.c_void_p(graph), None, ctypes.byref(n)), "cuGraphGetNodes")
        nodes = (ctypes.c_void_p * n.value)()
        self.check(self.lib.cuGraphGetNodes(ctypes.c_void_p(graph), nodes, ctypes.byref(n)), "cuGraphGetNodes")
        kinds: dict[str, int] = {}
        for node in nodes:
            t = ctypes.c_int(-1)
            self.check(self.lib.cuGraphNodeGetType(node, ctypes.byref(t)), "cuGraphNodeGetType")
            name = NODE_TYPES.get(t.value, str(t.value))
            kinds[name] = kinds.get(name, 0) + 1
        roots = ctypes.c_size_t(0)
        self.check(self.lib.cuGraphGetRootNodes(ctypes.c_void_p(graph), None, ctypes.byref(roots)), "cuGraphGetRootNodes")
        return {"nodes": n.value, "roots": roots.value, "types": kinds}

    def instantiate(self, graph: int, flags: int) -> Optional[int]:
        exe = ctypes.c_void_p()
        rc = self.lib.cuGraphInstantiateWithFlags(ctypes.byref(exe), ctypes.c_void_p(graph), flags)
        return exe.value if rc == 0 else None

    def upload(self, exe: int, stream: int) -> None:
        self.check(self.lib.cuGraphUpload(ctypes.c_void_p(exe), ctypes.c_void_p(stream)), "cuGraphUpload")

    def launch(self, exe: int, stream: int) -> None:
        self.check(self.lib.cuGraphLaunch(ctypes.c_void_p(exe), ctypes.c_void_p(stream)), "cuGraphLaunch")

    def destroy(self, exe: int) -> None:
        self.lib.cuGraphExecDestroy(ctypes.c_void_p(exe))


class Relaunched:
    """Stands in for a ``torch.cuda.CUDAGraph`` in ``CUDAGraphModel``: ``replay()`` launches another
    executable of the same graph (its kernels read and write the same addresses)."""

    def __init__(self, graph: torch.cuda.CUDAGraph, exe: int, drv: Driver) -> None:
        self.graph, self.exe, self.drv = graph, exe, drv

    def replay(self) -> None:
        self.drv.launch(self.exe, torch.cuda.current_stream().cuda_stream)


def launch_timings(launch, reps: int) -> dict[str, float]:
    """Host ms of one launch on an idle device; wall ms of launch + sync on an idle device; device
    ms per launch back to back (events); the idle device's wait for the graph's work = wall - device."""
    stream = torch.cuda.current_stream()
    for _ in range(3):
        launch()
    torch.cuda.synchronize()
    host, wall = [], []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        launch()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        host.append(t1 - t0)
        wall.append(t2 - t0)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(20_000_000)  # keep the device busy while the launches are queued
    a.record(stream)
    for _ in range(reps):
        launch()
    b.record(stream)
    torch.cuda.synchronize()
    device = a.elapsed_time(b) / reps
    med = lambda xs: 1e3 * statistics.median(xs)  # noqa: E731
    return {"host_ms": med(host), "wall_ms": med(wall), "device_ms": device, "idle_wait_ms": med(wall) - device}


def variants(graph: torch.cuda.CUDAGraph, drv: Driver, reps: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Launch timings of PyTorch's replay, of its executable through the driver, and of other flags."""
    stream = torch.cuda.current_stream().cuda_stream
    out: dict[str, Any] = {"torch_replay": launch_timings(graph.replay, reps)}
    mine = graph.raw_cuda_graph_exec()
    out["torch_exec_via_driver"] = launch_timings(lambda: drv.launch(mine, stream), reps)
    execs: dict[str, int] = {}
    for name, flags in FLAGS.items():
        exe = drv.instantiate(graph.raw_cuda_graph(), flags)
        if exe is None:
            out[name] = {"error": "instantiation refused"}
            continue
        drv.upload(exe, stream)
        execs[name] = exe
        try:
            out[name] = launch_timings(lambda: drv.launch(exe, stream), reps)
        except RuntimeError as exc:
            out[name] = {"error": str(exc)}
    return out, execs


_CUDAGraph = torch.cuda.CUDAGraph


def kept_graph() -> torch.cuda.CUDAGraph:
    return _CUDAGraph(keep_graph=True)


def synthetic(drv: Driver, sizes: list[int], reps: int) -> dict[str, Any]:
    res = {}
    buf = torch.zeros(1, device="cuda")
    for n in sizes:
        g = kept_graph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            buf.add_(1)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(g):
            for _ in range(n):
                buf.add_(1)
        g.instantiate()
        timings, execs = variants(g, drv, reps)
        res[n] = {"census": drv.census(g.raw_cuda_graph()), "launch": timings}
        for exe in execs.values():
            drv.destroy(exe)
        log(f"synthetic {n:5d} kernels: " + fmt_launch(timings))
    return res


def read_methods(reps: int) -> dict[str, Any]:
    """The device's idle time across a small read (a step's flags: 6 x 1 longs) after queued
    work, by three ways of reading: ``tolist()`` (a copy to pageable memory and a stream sync,
    what the step does), a non-blocking copy into pinned memory then an event's sync, and the
    same then a stream sync. Idle is from an event after the flags' kernel to one recorded
    after the read, before a tiny kernel; host is the read call's wall time."""
    flags_src = torch.zeros(6, 1, dtype=torch.long, device="cuda")
    pinned = torch.empty(6, 1, dtype=torch.long, pin_memory=True)
    done = torch.cuda.Event()
    out = {}

    def pageable():
        return flags_src.tolist()

    def pinned_event():
        pinned.copy_(flags_src, non_blocking=True)
        done.record()
        done.synchronize()
        return pinned.tolist()

    def pinned_stream():
        pinned.copy_(flags_src, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return pinned.tolist()

    for name, read in (("tolist", pageable), ("pinned+event", pinned_event), ("pinned+stream", pinned_stream)):
        idle, host = [], []
        for i in range(reps + 5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(200_000)  # ~0.1 ms of queued work: the read waits for it
            flags_src.add_(1)
            a.record()
            t0 = time.perf_counter()
            read()
            host.append((time.perf_counter() - t0) * 1e3)
            b.record()
            flags_src.add_(1)
            torch.cuda.synchronize()
            if i >= 5:
                idle.append(a.elapsed_time(b))
        out[name] = {"idle_ms": statistics.median(idle), "host_ms": statistics.median(host)}
        log(f"read {name}: idle {out[name]['idle_ms']:.4f} ms, host {out[name]['host_ms']:.4f} ms")
    return out


def fmt_launch(t: dict[str, Any]) -> str:
    return "; ".join(f"{k} host {v['host_ms']:.3f} idle-wait {v['idle_wait_ms']:.3f} device {v['device_ms']:.3f} ms"
                     if "host_ms" in v else f"{k} {v['error']}" for k, v in t.items())


def real_model(drv: Driver, args) -> dict[str, Any]:
    import paradecode.models.graphs as graphs_mod
    from dllm_throughput import build_model, run_steps
    from paradecode.models.graphs import CUDAGraphModel
    from paradecode.models.llada import compile_elementwise
    from paradecode.samplers.base import look_ahead

    model = build_model("cuda", False)
    model.fuse_projections()
    model.use_attention_kernel("triton")
    compile_elementwise(triton_kernels=True)
    graphs_mod.torch.cuda.CUDAGraph = kept_graph  # the module's capture_graph builds it: keep the graph
    try:
        graphed = CUDAGraphModel(model, max_graphs=256, capture_after=0)
        prompt = torch.randint(0, 100_000, (1, args.prompt), generator=torch.Generator().manual_seed(0)).cuda()
        for rule in args.rules:
            for _ in range(2):
                run_steps(graphed, prompt, args.gen, args.block, args.tokens_per_step, rule, "dual", None, "cuda")
    finally:
        graphs_mod.torch.cuda.CUDAGraph = _CUDAGraph
    out: dict[str, Any] = {"graphs": {}}
    best: dict[str, list[int]] = {}
    for i, (key, entry) in enumerate(graphed._graphs.items()):
        g = entry.graph
        census = drv.census(g.raw_cuda_graph())
        timings, execs = variants(g, drv, args.reps)
        name = f"graph{i} fed {tuple(entry.ids.shape)} {'full' if key[0] == 'full' else 'cached'}"
        out["graphs"][name] = {"census": census, "launch": timings}
        log(f"{name}: {census}\n    " + fmt_launch(timings))
        for flag, exe in execs.items():
            best.setdefault(flag, []).append(exe)
    readers = [r for r in args.rules if r != "lowconf"]
    out["host_path"] = {}
    for setting in (False, True):
        look_ahead(setting)
        out["host_path"]["look_ahead" if setting else "after_read"] = host_path(graphed, prompt, readers, args)
    look_ahead(None)
    out["look_ahead_ab"] = look_ahead_ab(graphed, prompt, args)
    if args.relaunch:
        out["steps"] = relaunch_ab(graphed, prompt, drv, out, best, args)
    return out


def look_ahead_ab(graphed, prompt, args) -> dict[str, Any]:
    """Whole generations, dual cache, batch 1: each rule's steps planned after their read and
    planned during it, alternated ``--ab-reps`` times (the median counts), tokens compared."""
    from dllm_throughput import driver
    from paradecode.samplers.base import look_ahead

    def generate(rule: str) -> tuple[float, int, torch.Tensor]:
        strat, state, call = driver(graphed, prompt, rule, "dual", args.gen, args.block, args.tokens_per_step)
        with torch.inference_mode():
            torch.cuda.synchronize()
            t = time.perf_counter()
            steps = 0
            while not strat.done(state):
                strat.step(state, call)
                steps += 1
            torch.cuda.synchronize()
            return time.perf_counter() - t, steps, state.x.clone()

    out = {}
    for rule in args.rules:
        times: dict[bool, list[float]] = {False: [], True: []}
        seqs, steps = {}, {}
        for _ in range(args.ab_reps):
            for setting in (False, True):
                look_ahead(setting)
                sec, n, x = generate(rule)
                times[setting].append(sec)
                seqs[setting], steps[setting] = x, n
        look_ahead(None)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[rule] = {"steps": steps[True], "after_read_ms_per_step": 1e3 * med[False] / steps[False],
                     "look_ahead_ms_per_step": 1e3 * med[True] / steps[True], "speedup": med[False] / med[True],
                     "same_tokens": bool(torch.equal(seqs[False], seqs[True])), "reps": args.ab_reps}
        log(f"look-ahead A/B {rule}/dual: {out[rule]}")
    return out


def relaunch_ab(graphed, prompt, drv: Driver, out: dict[str, Any], best: dict[str, list[int]], args) -> dict[str, Any]:
    """The first block's steps with PyTorch's executables, then with each graph relaunched through
    the executable variant of the least host time (same graphs, same tokens)."""
    from dllm_throughput import driver, run_steps

    hosts = {k: statistics.mean(v["launch"][k]["host_ms"] for v in out["graphs"].values()
                                if "host_ms" in v["launch"].get(k, {}))
             for k in FLAGS if all("host_ms" in v["launch"].get(k, {}) for v in out["graphs"].values())}
    pick = min(hosts, key=hosts.get) if hosts else None
    out["relaunch_flags"] = pick
    entries = list(graphed._graphs.values())
    originals = [e.graph for e in entries]

    def steps_ms(rule: str) -> tuple[float, torch.Tensor]:
        times = []
        for _ in range(args.runs):
            t = run_steps(graphed, prompt, args.gen, args.block, args.tokens_per_step, rule, "dual",
                          args.block // args.tokens_per_step, "cuda", sync_each=False)
            times.append(1e3 * sum(t) / len(t))
        strat, state, call = driver(graphed, prompt, rule, "dual", args.gen, args.block, args.tokens_per_step)
        with torch.inference_mode():
            for _ in range(args.block // args.tokens_per_step):
                if strat.done(state):
                    break
                strat.step(state, call)
        return min(times), state.x.clone()

    res: dict[str, Any] = {}
    for rule in args.rules:
        base, tok_a = steps_ms(rule)
        row: dict[str, Any] = {"torch_ms": base}
        if pick is not None:
            for e, exe in zip(entries, best[pick]):
                e.graph = Relaunched(e.graph, exe, drv)
            try:
                alt, tok_b = steps_ms(rule)
            finally:
                for e, g in zip(entries, originals):
                    e.graph = g
            row.update({f"{pick}_ms": alt, "saved_ms": base - alt, "same_tokens": bool(torch.equal(tok_a, tok_b))})
        res[rule] = row
        log(f"steps {rule}/dual: {row}")
    return res


class HostClock:
    """Host timestamps of a step's parts after its one read: the read's return (``finish_step``),
    the rest of ``apply``, the loop, ``request()``, the cache's planning, the graph wrapper's input
    copies and the launch itself (``replay()``)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        self.marks.append((name, time.perf_counter()))

    def segments(self) -> dict[str, float]:
        """Median ms from a step's read to each later mark (first of each after the read), over the
        reads followed by a launch; ``read->replay_start`` is the whole path."""
        order = ["read", "step_end", "request_start", "request_end", "forward_start", "replay_start", "replay_end"]
        spans: dict[str, list[float]] = {}
        seen: Optional[dict[str, float]] = None
        for name, t in self.marks:
            if name == "read":
                seen = {"read": t}
                continue
            if seen is None:
                continue
            seen.setdefault(name, t)
            if name == "replay_end":
                names = [n for n in order if n in seen]
                for a, b in zip(names, names[1:]):
                    spans.setdefault(f"{a}->{b}", []).append(1e3 * (seen[b] - seen[a]))
                spans.setdefault("read->replay_start", []).append(1e3 * (seen["replay_start"] - seen["read"]))
                seen = None
        return {k: statistics.median(v) for k, v in spans.items()}


def host_path(graphed, prompt, rules: list[str], args) -> dict[str, Any]:
    """Where the host's time goes from a step's read to the next graph launch (threshold-like rules)."""
    import paradecode.samplers.base as base_mod
    from dllm_throughput import driver

    out = {}
    for rule in rules:
        clock = HostClock()
        strat, state, call = driver(graphed, prompt, rule, "dual", args.gen, args.block, args.tokens_per_step)
        real_finish, real_request, real_forward = base_mod.finish_step, strat.request, graphed.forward

        events: list[list[Any]] = []  # per read: [step's work queued, next launch] CUDA events

        def finish(o, _f=real_finish):
            if o.reads:
                e = torch.cuda.Event(enable_timing=True)
                e.record()  # after the step's device work (and any planned input copies), before the read's copy
                events.append([e])
            r = _f(o)
            clock.mark("read")
            return r

        def request(st, _r=real_request):
            clock.mark("request_start")
            r = _r(st)
            clock.mark("request_end")
            return r

        def forward(*a, _f=real_forward, **k):
            clock.mark("forward_start")
            return _f(*a, **k)

        class Timed:
            def __init__(self, g):
                self.g = g

            def replay(self):
                clock.mark("replay_start")
                if events and len(events[-1]) == 1:
                    e = torch.cuda.Event(enable_timing=True)
                    e.record()  # on an idle device: when the host launches
                    events[-1].append(e)
                self.g.replay()
                clock.mark("replay_end")

        entries = list(graphed._graphs.values())
        originals = [e.graph for e in entries]
        base_mod.finish_step, strat.request, graphed.forward = finish, request, forward
        for e in entries:
            e.graph = Timed(e.graph)
        try:
            with torch.inference_mode():
                torch.cuda.synchronize()
                for _ in range(args.block // args.tokens_per_step):
                    if strat.done(state):
                        break
                    strat.step(state, call)
                    clock.mark("step_end")
                torch.cuda.synchronize()
        finally:
            base_mod.finish_step = real_finish
            del graphed.forward
            for e, g in zip(entries, originals):
                e.graph = g
        out[rule] = clock.segments()
        idle = [a.elapsed_time(b) for a, b in (p for p in events if len(p) == 2)]
        if idle:  # the device's wait from the end of a step's work to the next launch, no profiler
            out[rule]["device_idle_read_to_launch"] = statistics.median(idle)
        log(f"host path {rule}/dual (median ms): {out[rule]}")
    return out


def log(msg: str) -> None:
    print(msg, flush=True)


def report(res: dict[str, Any]) -> str:
    lines = [f"read_gap {res['date']} on {res['device']} (torch {res['torch']}, CUDA {res['cuda']}, "
             f"driver {res['driver']}): host ms of one launch on an idle device; idle-wait = wall of launch + sync minus "
             "the graph's device time (back to back)"]
    lines.append("| graph | nodes (types) | roots | " + " | ".join(["torch_replay", "torch_exec_via_driver", *FLAGS]) + " |")
    lines.append("|---|---|---|" + "---|" * (2 + len(FLAGS)))

    def row(name: str, r: dict[str, Any]) -> str:
        c = r["census"]
        cells = []
        for k in ["torch_replay", "torch_exec_via_driver", *FLAGS]:
            v = r["launch"].get(k, {})
            cells.append(f"{v['host_ms']:.3f} / {v['idle_wait_ms']:.3f}" if "host_ms" in v else v.get("error", "-"))
        types = ", ".join(f"{n} {t}" for t, n in sorted(c["types"].items(), key=lambda kv: -kv[1]))
        return f"| {name} | {c['nodes']} ({types}) | {c['roots']} | " + " | ".join(cells) + " |"

    for n, r in res.get("synthetic", {}).items():
        lines.append(row(f"{n} x add_", r))
    for name, r in res.get("model", {}).get("graphs", {}).items():
        lines.append(row(name, r))
    lines.append("cells: host ms / idle-wait ms")
    if res.get("read_methods"):
        lines.append("a step's flags read after queued work, device idle / host ms (median): " + ", ".join(
            f"{k} {v['idle_ms']:.4f} / {v['host_ms']:.4f}" for k, v in res["read_methods"].items()))
    for setting, rules in res.get("model", {}).get("host_path", {}).items():
        for rule, r in rules.items():
            lines.append(f"{rule}/dual host path from the read, next step planned {setting.replace('_', ' ')} "
                         "(median ms): " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    for rule, r in res.get("model", {}).get("look_ahead_ab", {}).items():
        lines.append(f"{rule}/dual whole generation ({r['steps']} steps, median of {r['reps']}): "
                     f"{r['after_read_ms_per_step']:.3f} ms/step planned after the read, {r['look_ahead_ms_per_step']:.3f} "
                     f"planned during it, {r['speedup']:.3f}x, same tokens {r['same_tokens']}")
    for rule, r in res.get("model", {}).get("steps", {}).items():
        lines.append(f"{rule}/dual unsynced step: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in r.items()))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,128,512,1024", help="kernels per synthetic graph")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--model", action="store_true", help="also LLaDA-8B's dual-cache graphs and steps")
    ap.add_argument("--rules", default="threshold,credit,eb,editing,localleap,dparallel,learn2pd,prophet,lowconf")
    ap.add_argument("--runs", type=int, default=3, help="--relaunch: timed runs of each rule's steps (the fastest counts)")
    ap.add_argument("--ab-reps", type=int, default=5, help="whole generations per rule and setting in the look-ahead A/B")
    ap.add_argument("--relaunch", action="store_true",
                    help="also time the first block's steps with each graph relaunched through another executable")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--machine", default="h200")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    args.rules = args.rules.split(",")
    if not torch.cuda.is_available():
        raise SystemExit("error: this probe times CUDA graph launches; it needs a GPU.")
    drv = Driver()
    version = ctypes.c_int(0)
    drv.lib.cuDriverGetVersion(ctypes.byref(version))
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
                           "torch": torch.__version__, "cuda": torch.version.cuda, "driver": version.value}
    res["synthetic"] = synthetic(drv, [int(s) for s in args.sizes.split(",")], args.reps)
    res["read_methods"] = read_methods(args.reps)
    if args.model:
        res["model"] = real_model(drv, args)
    text = report(res)
    print(text)
    if args.out_dir:
        write_results(args.out_dir, f"read_gap_{res['date']}_{args.machine}", res, text)
    return res


if __name__ == "__main__":
    main()
