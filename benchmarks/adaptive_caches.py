"""Time per step and work recomputed of the layer-adaptive caches beside no cache and ``dual``.

An LLaDA-8B-shaped model with random bf16 weights (time per step does not depend on the
weights), batch 1, block 32, LLaDA's top-k sampler (``lowconf``) with a fixed number of tokens
per step (random weights give meaningless confidences, so a threshold rule would not be a fixed
workload). For each (prompt, generation) setting and each cache (none, ``dual``, ``elastic``,
``dllm-cache``, at their defaults) one whole generation through ``paradecode.sample``:

* ``ms_per_step``: mean wall time of a step (forward + sampler, synchronised);
* ``recompute``: the share of layer x canvas-column work the forwards recomputed (1 without a
  cache; ``1 - reuse_rate`` for the block caches, which recompute every layer of the rows they
  feed; the caches' own ``recompute_fraction`` for the layer-adaptive ones);
* ``speedup``: no-cache ms/step over this cache's.

With random weights the attention patterns are not a trained model's, so Elastic-Cache's drift
trigger fires at rates that say nothing about a real model: its ``recompute`` here is this
workload's, not the paper's. dLLM-Cache's schedule does not depend on the weights.

    python benchmarks/adaptive_caches.py --out results.json      # GPU, 8B shape, ~2 min
    python benchmarks/adaptive_caches.py --smoke                   # CPU, tiny model
    python benchmarks/adaptive_caches.py --model dream --out dream.json   # Dream-v0-7B shape

``--model dream`` times the same on a Dream-v0-7B-shaped ``DreamModel`` (random bf16 weights;
shifted logits: the block caches feed each window column's predecessor, Elastic-Cache feeds
the window masks' predecessors, as its Dream path).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import paradecode
from paradecode.models import DreamConfig, DreamModel, LLaDAConfig, LLaDAModel

CACHES = [None, "dual", "elastic", "dllm-cache"]


def make_model(smoke: bool, device: str, kind: str = "llada") -> LLaDAModel | DreamModel:
    if kind == "dream":
        if smoke:
            config = DreamConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                 num_attention_heads=4, num_key_value_heads=2, mask_token_id=250,
                                 eos_token_id=251, pad_token_id=251, bos_token_id=251)
            torch.manual_seed(0)
            return DreamModel(config).to(device).eval()
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            model = DreamModel(DreamConfig())  # Dream-v0-7B shape, random weights
        torch.set_default_dtype(torch.float32)
        return model.eval()
    if smoke:
        config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=128,
                             vocab_size=256, embedding_size=256, mask_token_id=250, eos_token_id=251, pad_token_id=251)
        torch.manual_seed(0)
        return LLaDAModel(config).to(device).eval()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LLaDAModel(LLaDAConfig())  # LLaDA-8B shape, random weights
    torch.set_default_dtype(torch.float32)
    return model.eval()


def recompute_share(trace) -> float:
    """Mean over forwards of the layer x column work recomputed."""
    fr = trace.extra("recompute_fraction")
    if fr:
        return sum(fr) / len(fr)
    reuse = trace.extra("reuse_rate")
    return 1.0 - sum(reuse) / len(reuse) if reuse else 1.0


def run_one(model, prompt, gen: int, block: int, per_step: int, cache) -> dict:
    steps = gen // per_step
    t0 = time.perf_counter()
    out = paradecode.sample(model, prompt, "lowconf", gen_length=gen, block_length=block, steps=steps, cache=cache)
    wall = time.perf_counter() - t0
    return {"cache": cache or "none", "steps": out.trace.steps, "ms_per_step": 1e3 * out.trace.seconds / out.trace.steps,
            "wall_s": wall, "recompute": recompute_share(out.trace)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU (checks the script runs)")
    ap.add_argument("--settings", default=None,
                    help="comma list of prompt:gen:tokens_per_step (default 512:256:2,512:1024:4; smoke 16:64:2)")
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--model", choices=("llada", "dream"), default="llada",
                    help="LLaDA-8B shape (default) or Dream-v0-7B shape")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.smoke:
        raise SystemExit("no CUDA device: the 8B shape needs a GPU; use --smoke for a CPU check")
    settings = args.settings or ("16:64:2" if args.smoke else "512:256:2,512:1024:4")
    model = make_model(args.smoke, device, args.model)
    vocab = model.config.vocab_size
    rows = []
    with torch.inference_mode():
        for item in settings.split(","):
            P, G, k = (int(v) for v in item.split(":"))
            prompt = torch.randint(0, min(vocab, 1000), (1, P), generator=torch.Generator().manual_seed(0)).to(device)
            run_one(model, prompt, min(G, 2 * args.block), args.block, k, None)  # warm-up (kernels, allocator)
            base = None
            for cache in CACHES:
                r = run_one(model, prompt, G, args.block, k, cache)
                r.update(model=args.model, prompt=P, gen=G, tokens_per_step=k, device=torch.cuda.get_device_name() if device == "cuda" else "cpu")
                base = base or r["ms_per_step"]
                r["speedup"] = base / r["ms_per_step"]
                rows.append(r)
                print(f"P{P} G{G} k{k} {r['cache']:>10}: {r['ms_per_step']:8.2f} ms/step  x{r['speedup']:.2f}  "
                      f"recompute {r['recompute']:.3f}  ({r['steps']} steps, {r['wall_s']:.1f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
