"""How much of a decoding step is the sampler's own work?

Builds an LLaDA-8B-shaped LLaDAModel with random bf16 weights (time per step does not
depend on the weights), then in one run times:
  * the bare model forward on the canvas (all logits, and block logits only),
  * a full `lowconf` and `threshold` generation (time per step = total / NFE),
  * the sampler alone: the same generations against a model stub that returns
    precomputed logits, so the difference is the strategy's work and host syncs.

    python benchmarks/step_overhead.py --device cuda [--prompt 512 --gen 256 --block 32]
Writes a JSON table to --out (default: $OUT/step_overhead.json when $OUT is set).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Optional

import torch

import paradecode
from paradecode.models import LLaDAConfig, LLaDAModel


def build_model(layers: int, device: str, dtype: torch.dtype, small: bool = False) -> LLaDAModel:
    """LLaDA-8B shape (``small``: a toy shape for a CPU smoke run of this script)."""
    sizes = dict(d_model=128, n_heads=4, n_kv_heads=4, mlp_hidden_size=256, vocab_size=1000,
                 embedding_size=1000, mask_token_id=999, eos_token_id=998, pad_token_id=998) if small else {}
    config = LLaDAConfig(n_layers=layers, **sizes)
    with torch.device("meta"):
        model = LLaDAModel(config)
    model = model.to_empty(device=device).to(dtype)
    model.reset_parameters()
    return model.eval()


def timed(fn, device: str, repeats: int) -> float:
    """Mean seconds per call after two warm-up calls."""
    for _ in range(2):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


class LogitsStub(torch.nn.Module):
    """Returns fixed logits of the right shape (the rows and columns fed, or the window asked
    for): isolates the sampler's own cost. ``config`` gives the rules that need one its ids
    (Learn2PD's and Prophet's end-of-text)."""

    supports_cache = False

    def __init__(self, logits: torch.Tensor, mask_token_id: int, config: Optional[Any] = None) -> None:
        super().__init__()
        self.logits = logits  # (rows, L, V)
        self.mask_token_id = mask_token_id
        self.config = config
        self.anchor = torch.nn.Parameter(torch.zeros(1, device=logits.device))

    def forward(self, input_ids, positions=None, cache=None, attention_mask=None, logits_range=None):
        a, b = logits_range if logits_range is not None else (0, input_ids.shape[1])
        return self.logits[: len(input_ids), a:b]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--small", action="store_true", help="toy sizes, for a CPU smoke run")
    args = ap.parse_args()
    dev = args.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    torch.manual_seed(0)
    model = build_model(args.layers, dev, dtype, args.small)
    mask_id = model.config.mask_token_id
    prompt = torch.randint(0, model.config.vocab_size - 200, (1, args.prompt), device=dev)
    canvas = torch.cat([prompt, torch.full((1, args.gen), mask_id, device=dev)], dim=1)
    block = (args.prompt, args.prompt + args.block)
    res: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                 "layers": args.layers, "prompt": args.prompt, "gen": args.gen, "block": args.block}
    with torch.inference_mode():
        res["forward_all_logits_ms"] = 1e3 * timed(lambda: model(canvas), dev, args.repeats)
        res["forward_block_logits_ms"] = 1e3 * timed(lambda: model(canvas, logits_range=block), dev, args.repeats)
        stub = LogitsStub(model(canvas).float().to(dtype), mask_id)
    common = dict(gen_length=args.gen, block_length=args.block, timing=False)
    runs = {"lowconf": dict(steps=args.gen), "threshold": dict(threshold=0.9)}
    for name, opts in runs.items():
        for label, m in (("model", model), ("stub", stub)):
            paradecode.sample(m, prompt, name, **common, **opts)  # warm-up
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = paradecode.sample(m, prompt, name, **common, **opts)
            if dev == "cuda":
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - t0) / out.trace.nfe
            res[f"{name}_{label}_step_ms"] = 1e3 * per_step
            res[f"{name}_{label}_nfe"] = out.trace.nfe
        step = res[f"{name}_model_step_ms"]
        res[f"{name}_overhead_vs_block_forward"] = (step - res["forward_block_logits_ms"]) / step
        res[f"{name}_sampler_only_share"] = res[f"{name}_stub_step_ms"] / step
    print(json.dumps(res, indent=2))
    out = args.out or (os.path.join(os.environ["OUT"], "step_overhead.json") if "OUT" in os.environ else None)
    if out:
        with open(out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
