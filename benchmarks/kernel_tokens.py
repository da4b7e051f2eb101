"""Whole generations with the samplers' Triton kernels on and off, on a GPU: the same tokens?

The tests run the kernels under Triton's interpreter on CPU against the PyTorch paths; this runs
them where they are used. For each diffusion rule and cache, ``paradecode.sample`` twice on the
same prompts, once with the samplers' kernels (the default on a GPU, plus the selection kernels,
``selection_kernels(True)``, off by default until this check and ``select_kernels.py`` have run)
and once with ``fused_confidence(False)`` (PyTorch's way), and counts the rows whose tokens differ
and the forwards of each. Two models: the tests' tiny LLaDA with weights scaled x20 (peaked confidences,
many of them exactly 1.0 in float64, so the selection's ties are exercised) and the shipped
``tasks-6m`` (trained) on its own prompts.

    PYTHONPATH=. python benchmarks/kernel_tokens.py --out-dir OUT      # GPU, ~1 min
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/kernel_tokens.py --smoke   # CPU check (kernels interpreted)

Writes ``kernel_tokens_<date>_<machine>.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Optional

import torch

import paradecode
from benchmarks.elementwise_kernels import KernelRun
from paradecode import zoo
from paradecode.models import LLaDAConfig, LLaDAModel
from paradecode.samplers import common

RULES = {"lowconf": {}, "threshold": {"threshold": 0.9}, "editing": {"threshold": 0.7}, "localleap": {},
         "dparallel": {"threshold": 0.5}, "learn2pd": {}, "prophet": {}, "credit": {"threshold": 0.9},
         "eb": {}}
PROMPTS = ["12+35=", "reverse: abcdef =", "sort: 5 3 9 1 =", "copy: hello world =", "7*8=", "max: 4 17 9 ="]


def tiny(device: str) -> tuple[LLaDAModel, list[list[int]], dict[str, Any]]:
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96, vocab_size=64,
                      embedding_size=64, max_sequence_length=256, rope_theta=10000.0, mask_token_id=60,
                      eos_token_id=61, pad_token_id=62)
    model = LLaDAModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(20.0)
    g = torch.Generator().manual_seed(1)
    lengths = (6, 3, 9, 5, 7, 4, 8, 6) if device != "cpu" else (6, 3)  # the CPU check: the interpreter is slow
    prompts = [torch.randint(0, 50, (n,), generator=g).tolist() for n in lengths]
    return model.to(device), prompts, dict(gen_length=32 if device != "cpu" else 16, block_length=8)


def trained(device: str) -> tuple[Any, list[list[int]], dict[str, Any]]:
    model, tok = zoo.load("tasks-6m")
    return model.to(device), [tok.encode(p) for p in PROMPTS], dict(gen_length=32, block_length=32)


def compare(model: Any, prompts: list[list[int]], setting: dict[str, Any], rule: str, cache: Optional[str]) -> dict:
    kw = dict(setting, **RULES[rule], cache=cache)
    if rule == "learn2pd" and setting["block_length"] != 32:
        kw["steps"] = kw["gen_length"]
    try:
        common.selection_kernels(True)
        fused = paradecode.sample(model, prompts, rule, **kw)
        common.fused_confidence(False)
        plain = paradecode.sample(model, prompts, rule, **kw)
    finally:
        common.fused_confidence(True)
        common.selection_kernels(False)
    rows_differ = int((fused.sequences != plain.sequences).any(-1).sum())
    return {"rows": len(prompts), "rows_differ": rows_differ, "nfe": [fused.trace.nfe, plain.trace.nfe]}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, kernels under the interpreter: two rules, the dual cache, two prompts of the tiny model")
    ap.add_argument("--machine", default="h200")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run = KernelRun.from_args(args)
    cuda, device = run.cuda, run.device
    if not cuda:  # the interpreter runs the kernels where sampler_kernels_run would say no
        common.sampler_kernels_run = lambda t: common._fused_confidence  # type: ignore[assignment]
    rules = list(RULES) if cuda else ["lowconf", "threshold"]
    res: dict[str, Any] = {**run.header(), "models": {}}
    for name, build in (("tiny-x20", tiny), ("tasks-6m", trained)) if cuda else (("tiny-x20", tiny),):
        model, prompts, setting = build(device)
        res["models"][name] = {f"{rule}/{cache or 'none'}": compare(model, prompts, setting, rule, cache)
                               for rule in rules for cache in ((None, "dual") if cuda else ("dual",))}
    res["wall_s"] = time.perf_counter() - t0
    lines = [f"kernel_tokens {res['date']} on {res['device']} (torch {res['torch']}): whole generations with the "
             "samplers' kernels on / off"]
    for name, cells in res["models"].items():
        differ = {k: v for k, v in cells.items() if v["rows_differ"] or v["nfe"][0] != v["nfe"][1]}
        lines.append(f"{name}: {len(cells) - len(differ)} of {len(cells)} rule/cache pairs give the same tokens and "
                     f"forwards" + (f"; differ: {differ}" if differ else ""))
    run.finish("kernel_tokens", res, "\n".join(lines), args.out_dir)
    return res


if __name__ == "__main__":
    main()
