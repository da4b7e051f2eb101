"""Can a step's next forward be queued before the host reads whether the block goes on?

Every dLLM rule that reads the device once per step (threshold, credit, EB, Prophet, ...)
leaves the device idle ~0.45 ms per step at batch 1: the host's Python after the read, then
``cudaGraphLaunch`` of the forward's graph (``benchmarks/step_profile.py``). A CUDA graph
*conditional node* (CUDA 12.4; PyTorch's ``CUDAGraph.begin_capture_to_if_node``) runs its body
only when a device flag is set, so the next forward could be launched before the read, guarded
by the step's own "the block has masks left" flag, and skipped on the device when it has none.

This probe measures that pattern on a stand-in for LLaDA-8B's partial forward (32 layers of
bf16 matmuls at its shapes on 32 rows, plus elementwise kernels between them, ~12 graph nodes
per layer) and a stand-in sampler (a few small kernels that make the flag), batch 1:

* ``read_then_launch``: today's order: replay, sampler, read the flag, then the next replay;
* ``launch_then_read``: sampler, flag copied to pinned memory, next replay queued inside the
  IF node, then the read (the forward runs while the host reads and does its bookkeeping);
* the IF graph's replay with the flag set and clear (what a skipped forward costs).

    PYTHONPATH=. python benchmarks/conditional_graph_probe.py --out-dir OUT      # GPU, ~30 s

Writes ``conditional_graph_probe_<date>_<machine>.json`` and ``.txt``; no CPU mode (the
conditional nodes are a CUDA feature).
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any, Optional

import torch

from paradecode.bench.results_file import write_results


def stand_in_forward(weights: list[list[torch.Tensor]], x: torch.Tensor, out: torch.Tensor) -> None:
    """32 layers of LLaDA-8B's matmuls on ``x``'s rows, elementwise kernels between them."""
    h = x
    for qkv, o, gate_up, down in weights:
        n = h * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(h.dtype)
        a = (n @ qkv)[:, : o.shape[0]]
        h = h + a @ o
        n = h * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(h.dtype)
        g, u = (n @ gate_up).chunk(2, -1)
        h = h + (torch.nn.functional.silu(g) * u) @ down
    out.copy_(h)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--machine", default="h200")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: conditional graph nodes are a CUDA feature; this probe needs a GPU.")
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
                           "torch": torch.__version__, "cuda": torch.version.cuda,
                           "if_node_api": hasattr(torch.cuda.CUDAGraph, "begin_capture_to_if_node")}
    if not res["if_node_api"]:
        return finish(res, args)
    dev, dt = "cuda", torch.bfloat16
    d, inter, rows = 4096, 12288, 32
    g = torch.Generator(device=dev).manual_seed(0)

    def w(k: int, n: int) -> torch.Tensor:
        return (torch.randn(k, n, device=dev, generator=g) / k ** 0.5).to(dt)

    weights = [[w(d, 3 * d), w(d, d), w(d, 2 * inter), w(inter, d)] for _ in range(args.layers)]
    x = torch.randn(rows, d, device=dev, generator=g).to(dt)
    out = torch.empty_like(x)
    flag = torch.ones((), dtype=torch.bool, device=dev)
    pinned = torch.empty((), dtype=torch.bool).pin_memory()

    def sampler() -> None:  # a handful of small kernels that end in the step's flag
        score = out.float().softmax(-1).amax(-1)
        flag.copy_((score > 0).any())

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            stand_in_forward(weights, x, out)
            sampler()
    torch.cuda.current_stream().wait_stream(stream)
    plain = torch.cuda.CUDAGraph()
    with torch.cuda.graph(plain):
        stand_in_forward(weights, x, out)
    guarded = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):  # capture on a side stream, as torch.cuda.graph does
        guarded.capture_begin(pool=plain.pool())
        try:
            guarded.begin_capture_to_if_node(flag)
            stand_in_forward(weights, x, out)
            guarded.end_capture_to_conditional_node()
        finally:
            guarded.capture_end()
    torch.cuda.synchronize()
    res["graph_nodes_per_layer_approx"] = 12

    def timed(fn, n: int) -> float:
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1e3 / n

    def replay(graph: torch.cuda.CUDAGraph, value: bool) -> float:
        flag.fill_(value)
        return timed(graph.replay, args.steps)

    res["replay_ms"] = {"plain": replay(plain, True), "if_set": replay(guarded, True), "if_clear": replay(guarded, False)}
    flag.fill_(True)

    def read_then_launch() -> None:
        plain.replay()
        sampler()
        if not bool(flag):  # the step's read (a sync), then the host decides
            raise RuntimeError("the stand-in flag is always set")

    def launch_then_read() -> None:
        sampler()
        pinned.copy_(flag, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        guarded.replay()  # the next forward, run only if the flag says the block goes on
        done.synchronize()
        if not bool(pinned):
            raise RuntimeError("the stand-in flag is always set")

    res["step_ms"] = {"read_then_launch": timed(read_then_launch, args.steps),
                      "launch_then_read": timed(launch_then_read, args.steps)}
    torch.cuda.synchronize()
    return finish(res, args)


def finish(res: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    text = report(res)
    print(text)
    if args.out_dir:
        write_results(args.out_dir, f"conditional_graph_probe_{res['date']}_{args.machine}", res, text)
    return res


def report(res: dict[str, Any]) -> str:
    lines = [f"conditional_graph_probe {res['date']} on {res['device']} (torch {res['torch']}, CUDA {res['cuda']}): "
             f"CUDAGraph.begin_capture_to_if_node {'present' if res['if_node_api'] else 'absent'}"]
    if "replay_ms" in res:
        r, s = res["replay_ms"], res["step_ms"]
        lines += [f"stand-in forward replay: plain {r['plain']:.3f} ms, inside an IF node with the flag set "
                  f"{r['if_set']:.3f} ms, flag clear (skipped) {r['if_clear']:.3f} ms",
                  f"step (forward + stand-in sampler + the host's read): read then launch {s['read_then_launch']:.3f} ms, "
                  f"launch (guarded) then read {s['launch_then_read']:.3f} ms, "
                  f"{s['read_then_launch'] - s['launch_then_read']:.3f} ms less per step"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
