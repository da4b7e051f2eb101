"""Speculative decoding benchmark: target alone vs paradecode vs transformers' assisted generation.

In one run, on the same models and prompts (batch 1, greedy, EOS as the model defines it):
  * ``target``      : ``target.generate(...)`` (transformers, greedy)
  * ``ours``        : ``paradecode.sample(target, ..., strategy="speculative", draft_model=draft)``
  * ``ours_trim``   : the same with VocabTrim (draft head restricted to the target's most
                      frequently sampled tokens on calibration prompts, disjoint from the test prompts)
  * ``hf_assisted`` : ``target.generate(..., assistant_model=draft)`` with the same draft length
                      (``num_assistant_tokens=k``, constant schedule, no confidence stop)
and reports wall time, speedups and ratios, mean accepted drafts per target forward,
whether each output equals the target's greedy output, and VocabTrim's draft time per
draft forward (``record_draft_time``). Our batched decoding (batch B) is reported too.

Pairs:
  --pair DIR        the trained pair (default: paradecode/zoo/spec-pair)
  --random SHAPE    random weights at real shapes: ``8b-1b`` (Llama-3.1-8B / Llama-3.2-1B shapes,
                    vocab 128256) or ``tiny`` (a CPU check). Random weights give no acceptance, so
                    the layers' output projections are zeroed and the LM heads are set so that both
                    models follow a fixed next-token map into a set of 4096 "frequent" tokens; the
                    draft's map agrees with the target's on a fraction ``--agree`` of tokens. Compute
                    and memory traffic per forward are those of the real shapes.

    python benchmarks/speculative.py --device cuda --json out/spec_pair.json
    python benchmarks/speculative.py --random 8b-1b --device cuda --dtype bfloat16 --json out/spec_random.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import paradecode
from paradecode.speculative import VocabTrim, calibrate

SHAPES = {
    # name: (target kwargs, draft kwargs)
    "8b-1b": (
        dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, head_dim=64, vocab_size=128256, rope_theta=500000.0),
    ),
    "tiny": (
        dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=8192),
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1, vocab_size=8192),
    ),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- models and prompts ----------------------------------------------------------------------
def random_pair(shape: str, agree: float, device: str, dtype: torch.dtype, seed: int = 0, frequent: int = 4096):
    """Random-weight Llama pair whose greedy outputs follow known next-token maps (see module doc)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tkw, dkw = SHAPES[shape]
    V = tkw["vocab_size"]
    g = torch.Generator().manual_seed(seed)
    freq = torch.randperm(V, generator=g)[:frequent]  # the "frequent" tokens
    target_map = freq[torch.randint(frequent, (V,), generator=g)]  # any token -> a frequent one
    target_map[freq] = freq[torch.randperm(frequent, generator=g)]  # a permutation inside the set
    draft_map = target_map.clone()
    differ = torch.rand(V, generator=g) >= agree
    draft_map[differ] = freq[torch.randint(frequent, (int(differ.sum()),), generator=g)]
    models = []
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        for kw, nxt in ((tkw, target_map), (dkw, draft_map)):
            cfg = LlamaConfig(max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=0,
                              bos_token_id=None, eos_token_id=None, **kw)
            with torch.device(device):
                m = LlamaForCausalLM(cfg).eval()
            with torch.no_grad():
                for layer in m.model.layers:  # the layers still run, but add nothing to the residual
                    layer.self_attn.o_proj.weight.zero_()
                    layer.mlp.down_proj.weight.zero_()
                emb = m.model.embed_tokens.weight.float()
                unit = emb / emb.norm(dim=1, keepdim=True).clamp(min=1e-6)  # the pad row is zero
                head = torch.zeros_like(unit).index_add_(0, nxt.to(unit.device), unit)
                scale = 20.0 / cfg.hidden_size ** 0.5  # top logit ~20: peaked, as a trained LM's greedy pick
                m.lm_head.weight.copy_((head * scale).to(dtype))
            m.generation_config.pad_token_id = 0
            m.generation_config.eos_token_id = None
            models.append(m)
    finally:
        torch.set_default_dtype(old)
    return models[0], models[1], {"agree": agree, "frequent_tokens": frequent, "vocab": V}


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (n, length), generator=g).tolist()


def pair_prompts(n: int, seed: int) -> list[list[int]]:
    from paradecode.speculative.pair import BOS, encode, make_example

    rng = random.Random(seed)
    return [[BOS] + encode(make_example(rng)[0]) for _ in range(n)]


# ---- methods ---------------------------------------------------------------------------------
def hf_generate(target, ids, max_new, assistant=None, k=5):
    kw: dict[str, Any] = dict(do_sample=False, max_new_tokens=max_new, pad_token_id=target.generation_config.pad_token_id or 0)
    if assistant is not None:
        gc = assistant.generation_config
        gc.num_assistant_tokens, gc.num_assistant_tokens_schedule, gc.assistant_confidence_threshold = k, "constant", 0.0
        kw["assistant_model"] = assistant
    return target.generate(ids, attention_mask=torch.ones_like(ids), **kw)


class ForwardCounter:
    """Counts forward calls of a module (for transformers' tokens per target forward)."""

    def __init__(self, module):
        self.n = 0
        self.h = module.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))

    def close(self):
        self.h.remove()


def same(out: torch.Tensor, ref: torch.Tensor, pad: int) -> bool:
    """Equal generations; after an EOS, ours pads to max_new_tokens where generate() stops."""
    n = min(out.numel(), ref.numel())
    return torch.equal(out[:n], ref[:n]) and bool((out[n:] == pad).all()) and bool((ref[n:] == pad).all())


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def bench(target, draft, prompts, args, device, trim: VocabTrim | None) -> dict:
    k, N = args.k, args.max_new_tokens
    methods = ["target", "ours", "hf_assisted"] + (["ours_trim"] if trim is not None else [])
    spec = dict(strategy="speculative", draft_model=draft, num_draft_tokens=k, max_new_tokens=N, timing=False)

    def run(method, ids):
        if method == "target":
            return hf_generate(target, ids, N)[0, ids.shape[1]:]
        if method == "hf_assisted":
            return hf_generate(target, ids, N, assistant=draft, k=k)[0, ids.shape[1]:]
        opts = dict(spec, vocabtrim=trim) if method == "ours_trim" else spec
        out = paradecode.sample(target, ids, **opts)
        run.trace = out.trace
        return out.generated[0]

    # warm-up (kernels, allocator) on the first prompt
    ids0 = torch.tensor([prompts[0]], device=device)
    for m in methods:
        run(m, ids0)
    seconds = {m: 0.0 for m in methods}
    pad = target.generation_config.pad_token_id or 0
    equal = {m: 0 for m in methods}
    forwards = {"ours": [0, 0], "ours_trim": [0, 0]}  # [tokens, target forwards]
    draft_time: dict[str, list] = {"ours": [], "ours_trim": []}
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], device=device)
        ref = None
        times = {}
        for m in methods:
            out, dt = timed(lambda: run(m, ids), device)
            if m == "target":
                ref = out
            equal[m] += int(same(out, ref, pad))
            seconds[m] += dt
            times[m] = round(dt, 3)
            if m in forwards:
                forwards[m][0] += int(run.trace.tokens_committed.sum())
                forwards[m][1] += run.trace.nfe_by_role["target"]
        print(f"prompt {i}: seconds {times}", flush=True)
    # accepted tokens per target forward for transformers (counted in an untimed pass)
    counter = ForwardCounter(target)
    hf_steps, hf_new = 0, 0
    for p in prompts:
        ids = torch.tensor([p], device=device)
        before = counter.n
        out = hf_generate(target, ids, N, assistant=draft, k=k)
        hf_steps += counter.n - before
        hf_new += out.shape[1] - ids.shape[1]
    counter.close()
    # draft time per draft forward (synchronised at the end of drafting; a separate pass)
    for m in ("ours", "ours_trim"):
        if m not in methods:
            continue
        for p in prompts[: max(1, len(prompts) // 2)]:
            ids = torch.tensor([p], device=device)
            tr = paradecode.sample(target, ids, **dict(spec, record_draft_time=True, vocabtrim=trim if m == "ours_trim" else None)).trace
            secs, fwd = sum(tr.extra("draft_seconds")), tr.nfe_by_role.get("draft", 0)
            if fwd:
                draft_time[m].append(secs / fwd)
    res: dict[str, Any] = {
        "prompts": len(prompts), "max_new_tokens": N, "num_draft_tokens": k,
        "seconds": {m: round(s, 4) for m, s in seconds.items()},
        "outputs_equal_target_greedy": {m: f"{equal[m]}/{len(prompts)}" for m in methods},
        "speedup_vs_target": {m: round(seconds["target"] / seconds[m], 3) for m in methods},
        "ours_over_hf_assisted_time": round(seconds["ours"] / seconds["hf_assisted"], 3),
        # one definition for both: (generated tokens - target forwards) / target forwards
        "target_forwards": {"ours": forwards["ours"][1], "hf_assisted": hf_steps},
        "mean_accepted_drafts_per_step": {
            "ours": round((forwards["ours"][0] - forwards["ours"][1]) / forwards["ours"][1], 3),
            "hf_assisted": round((hf_new - hf_steps) / max(1, hf_steps), 3),
        },
    }
    if trim is not None:
        tk, fw = forwards["ours_trim"]
        res["mean_accepted_drafts_per_step"]["ours_trim"] = round((tk - fw) / fw, 3)
        res["target_forwards"]["ours_trim"] = fw
        res["ours_trim_over_ours_time"] = round(seconds["ours_trim"] / seconds["ours"], 3)
        full, tr_ = statistics.mean(draft_time["ours"]), statistics.mean(draft_time["ours_trim"])
        res["draft_seconds_per_forward"] = {"full": round(full, 6), "trim": round(tr_, 6)}
        res["vocabtrim_draft_time_saving"] = round(1 - tr_ / full, 3)
        res["vocabtrim"] = {"size": trim.size, "vocab": trim.vocab_size, **{k_: v for k_, v in trim.meta.items()}}
    return res


def bench_batched(target, draft, prompts, args, device) -> dict:
    """Batch B: ours (rows accept on their own) vs the target's batched greedy generate."""
    from paradecode.api import prepare_prompts

    B = min(args.batch, len(prompts))
    rows = prompts[:B]
    ids, mask = prepare_prompts(rows, None, target.generation_config.pad_token_id or 0, device)
    mask = torch.ones_like(ids) if mask is None else mask
    N = args.max_new_tokens
    gen = lambda: target.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=N,  # noqa: E731
                                  pad_token_id=target.generation_config.pad_token_id or 0)
    ours = lambda: paradecode.sample(target, rows, "speculative", draft_model=draft,  # noqa: E731
                                     num_draft_tokens=args.k, max_new_tokens=N, timing=False)
    gen(), ours()
    ref, t_ref = timed(gen, device)
    out, t_ours = timed(ours, device)
    ref = ref[:, ids.shape[1]:]
    pad = target.generation_config.pad_token_id or 0
    equal = sum(int(same(out.generated[i], ref[i], pad)) for i in range(B))
    return {"batch": B, "seconds": {"target": round(t_ref, 4), "ours": round(t_ours, 4)},
            "speedup_vs_target": round(t_ref / t_ours, 3), "rows_equal_target_greedy": f"{equal}/{B}",
            "target_forwards": out.trace.nfe_by_role.get("target", 0), "draft_forwards": out.trace.nfe_by_role.get("draft", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=None, help="trained pair directory (default: the shipped one)")
    ap.add_argument("--random", default=None, choices=sorted(SHAPES))
    ap.add_argument("--agree", type=float, default=0.8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--prompt-length", type=int, default=32, help="random pair only")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("-k", type=int, default=5, help="draft tokens per step (both implementations)")
    ap.add_argument("--trim", type=int, default=None, help="VocabTrim size (default: vocab/4)")
    ap.add_argument("--calib-prompts", type=int, default=64)
    ap.add_argument("--calib-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    t0 = time.time()
    if args.random:
        target, draft, info = random_pair(args.random, args.agree, args.device, dtype)
        V = info["vocab"]
        prompts = random_prompts(args.prompts, args.prompt_length, V, seed=1)
        calib = random_prompts(args.calib_prompts, args.prompt_length, V, seed=2)
        info["pair"] = f"random {args.random}"
    else:
        from paradecode.speculative.pair import load_pair

        target, draft = load_pair(args.pair, dtype=dtype, device=args.device)
        V = target.config.vocab_size
        prompts, calib = pair_prompts(args.prompts, seed=1), pair_prompts(args.calib_prompts, seed=2)
        info = {"pair": str(args.pair or "paradecode/zoo/spec-pair")}
    info.update(device=str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"), dtype=args.dtype,
                target_params=sum(p.numel() for p in target.parameters()),
                draft_params=sum(p.numel() for p in draft.parameters()))
    print(info, flush=True)
    trim = calibrate(target, calib, args.trim or V // 4, max_new_tokens=args.calib_tokens, do_sample=True)
    print("vocabtrim", trim.size, trim.meta, f"{time.time() - t0:.1f}s", flush=True)
    result = {"info": info, "args": vars(args)}

    def save() -> None:  # after each stage, so a run cut short still leaves its results
        result["wall_seconds"] = round(time.time() - t0, 1)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))

    result["batch1"] = bench(target, draft, prompts, args, device, trim)
    print(json.dumps(result["batch1"], indent=1), flush=True)
    save()
    result["batched"] = bench_batched(target, draft, prompts, args, device)
    print(json.dumps(result["batched"], indent=1), flush=True)
    save()


if __name__ == "__main__":
    main()
