"""Speculative decoding benchmark: one run, batch 1, every method on the same models and prompts.

Methods (greedy, EOS as the model defines it):
  * ``hf_target``     : ``target.generate(...)``: transformers' eager greedy decoding (the reference output)
  * ``target``        : our target alone: ``paradecode.speculative.greedy_decode`` (our Llama forward,
                        static cache, one CUDA graph per token on a GPU)
  * ``ours``          : ``paradecode.sample(target, ..., "speculative", draft_model=draft)`` (k drafts)
  * ``ours_trim``     : the same with VocabTrim (calibrated on prompts disjoint from the test prompts)
  * ``prompt_lookup`` : ``drafter="prompt-lookup"`` (no draft model; ``--lookup-k`` tokens, transformers' 10)
  * ``ours_eager``    : ``ours`` with ``cuda_graphs=False`` (GPU only: what the graphs buy)
  * ``*_per_forward`` : ``ours``, ``ours_trim`` and ``prompt_lookup`` with ``capture_step=False``: one CUDA
                        graph per forward instead of one per step (GPU only: what recording whole steps buys)
  * ``*_sync``        : ``ours`` and ``ours_trim`` with ``launch_ahead=False``: each recorded step launched after
                        the previous one's read (GPU only: what queueing the next step first buys)
  * ``hf_assisted``   : ``target.generate(..., assistant_model=draft)``, same draft length, constant schedule
Reported: seconds, speedups, accepted drafts per target forward, outputs equal to the target's greedy
output, the draft's share of a step and VocabTrim's draft time per draft forward (``record_draft_time``),
the target's time per token against its weight-read floor (weight bytes / the device's copy rate,
measured in the same run as 2 x bytes / seconds of a large ``copy_``), the issue-15 targets as
pass/fail, and which path ran (CUDA graphs captured / replayed, or eager).

Pairs:
  --pair DIR        the trained pair (default: paradecode/zoo/spec-pair)
  --random SHAPE    random weights at real shapes: ``8b-1b`` (Llama-3.1-8B / Llama-3.2-1B shapes, vocab
                    128256, Llama-3 RoPE scaling) or ``tiny``. Random weights give no acceptance, so the
                    layers' output projections are zeroed and the LM heads are set so that both models
                    follow a fixed next-token map into a set of 4096 "frequent" tokens; the draft's map
                    agrees with the target's on a fraction ``--agree`` of tokens. Compute and memory
                    traffic per forward are those of the real shapes.
  --smoke           CPU check of the whole script at tiny shapes (seconds).

``--batches 1,4,16``: instead of that table, the target alone, ours and ours + VocabTrim on batches
of random prompts of one length (random pairs only), tokens per second and every row checked
against the target alone's row in its batch -> ``speculative_batched_<date>_<machine>_<tag>``.

``--sampled T``: instead of that table, sampling at temperature T, batch 1: ours, ours + VocabTrim and
prompt lookup, each with whole steps recorded (their random numbers drawn before each replay) and
with one graph per forward, beside the target alone (greedy); each prompt's seed is the same for
every method, so the two paths' tokens are checked equal, and once against steps run without
graphs -> ``speculative_sampled_<date>_<machine>_<tag>``.

``--continuous 4,16``: instead of that table, ``--prompts`` random prompts through ours at each
batch size, in fixed batches (each waits for its slowest row) and with continuous batching
(``generate_continuous``: a finished row takes the next prompt); a set of ``--eos-tokens`` of the
pair's frequent tokens ends rows early, as real text does. Every prompt's tokens are checked equal
between the two -> ``speculative_continuous_<date>_<machine>_<tag>``.

Results go to ``<out-dir>/speculative_<date>_<machine>_<tag>.{json,txt}``.

    python benchmarks/speculative.py --smoke --out-dir /tmp
    python benchmarks/speculative.py --random 8b-1b --device cuda --dtype bfloat16

``--fuse-projections`` runs every paradecode method (the target alone included) with joined q/k/v
and gate/up matmuls, one RoPE call and copy-free GQA (``paradecode.models.llama.LlamaLM``); the
default tag then ends in ``-fuse``. ``--attention triton`` (with ``--fuse-projections``) does each
layer's RoPE, cache write and attention in one kernel (``paradecode.models.decode_attention``); the
tag then ends in ``-triton``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import sys

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import paradecode  # noqa: E402
from paradecode.loop import synchronize as sync  # noqa: E402
from paradecode.speculative import CausalLM, VocabTrim, calibrate, generate_continuous, greedy_decode  # noqa: E402
from paradecode.speculative.causal_lm import COMPILE_MODES  # noqa: E402

SHAPES = {
    # name: (target kwargs, draft kwargs)
    "8b-1b": (
        dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=128256,
             rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_position_embeddings=8192)),
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, head_dim=64, vocab_size=128256,
             rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_position_embeddings=8192)),
    ),
    "tiny": (
        dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=8192),
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1, vocab_size=8192),
    ),
}


# ---- models and prompts ----------------------------------------------------------------------
def next_token_maps(vocab: int, agree: float, seed: int = 0, frequent: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The random pair's greedy next-token maps (target, draft): any token -> one of ``frequent``
    tokens, a permutation inside that set for the target; the draft's agrees on a fraction ``agree``."""
    g = torch.Generator().manual_seed(seed)
    freq = torch.randperm(vocab, generator=g)[:frequent]  # the "frequent" tokens
    target_map = freq[torch.randint(frequent, (vocab,), generator=g)]  # any token -> a frequent one
    target_map[freq] = freq[torch.randperm(frequent, generator=g)]  # a permutation inside the set
    draft_map = target_map.clone()
    differ = torch.rand(vocab, generator=g) >= agree
    draft_map[differ] = freq[torch.randint(frequent, (int(differ.sum()),), generator=g)]
    return target_map, draft_map


def random_pair(shape: str, agree: float, device: str, dtype: torch.dtype, seed: int = 0, frequent: int = 4096):
    """Random-weight Llama pair whose greedy outputs follow known next-token maps (see module doc)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tkw, dkw = SHAPES[shape]
    V = tkw["vocab_size"]
    target_map, draft_map = next_token_maps(V, agree, seed, frequent)
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


def copy_rate(device: torch.device, nbytes: int) -> float:
    """Bytes moved per second by a device-to-device ``copy_`` (read + write), best of 5."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        _, dt = timed(lambda: dst.copy_(src), device)
        best = min(best, dt)
    return 2 * nbytes / best  # the buffers are freed on return


def wrapper(model, args, role: str = "target") -> CausalLM:
    """The CausalLM the strategy uses for ``model`` in ``role`` (no VocabTrim) under this run's
    options: the role picks the compile mode, which is part of the wrapper's key."""
    return CausalLM.of(model, fuse_projections=args.fuse_projections, compile_mode=compile_modes(args).get(role),
                       attention=args.attention)


def compile_modes(args) -> dict:
    """``--compile-forward MODE`` for the roles in ``--compile-roles`` (the strategy's compile_mode)."""
    if args.compile_forward is None:
        return {}
    return {role: args.compile_forward for role in args.compile_roles.split(",") if role}


def strategy_options(args) -> dict:
    """The ``speculative`` strategy's options every paradecode method of a run shares (the
    drafter and its draft length come on top)."""
    return dict(max_new_tokens=args.max_new_tokens, cuda_graphs=not args.eager, fuse_projections=args.fuse_projections,
                compile_mode=compile_modes(args) or None, attention=args.attention)


def shared_options(args) -> dict:
    """``paradecode.sample`` options of those methods: the strategy's, untimed steps."""
    return dict(strategy="speculative", timing=False, **strategy_options(args))


def lookup_variant(args) -> dict:
    """``prompt_lookup``: no draft model, ``--lookup-k`` tokens from the text."""
    return dict(shared_options(args), drafter="prompt-lookup", num_draft_tokens=args.lookup_k)


def draft_variants(args, draft, trim: VocabTrim | None) -> dict:
    """``ours`` (the draft model, k drafts) and ``ours_trim`` (the same with VocabTrim)."""
    spec = dict(shared_options(args), draft_model=draft, num_draft_tokens=args.k)
    return {"ours": spec, "ours_trim": dict(spec, vocabtrim=trim)}


def graph_counts(model, args, role: str) -> dict:
    lm = wrapper(model, args, role)
    return {"captures": lm.captures, "replays": lm.replays, "error": lm.graph_error}


def bench(target, draft, prompts, args, device, trim: VocabTrim | None) -> dict:
    k, N = args.k, args.max_new_tokens
    cuda = device.type == "cuda"
    graphs = not args.eager
    methods = ["hf_target", "target", "ours", "ours_trim", "prompt_lookup"] + (
        ["ours_eager"] if cuda and graphs and not args.skip_eager_row else []) + (
        ["ours_per_forward", "ours_trim_per_forward", "prompt_lookup_per_forward", "ours_sync", "ours_trim_sync"]
        if cuda and graphs else [])
    methods.append("hf_assisted")
    variants = draft_variants(args, draft, trim)
    variants.update(
        prompt_lookup=lookup_variant(args),
        ours_eager=dict(variants["ours"], cuda_graphs=False),
    )
    for m in ("ours", "ours_trim", "prompt_lookup"):
        variants[f"{m}_per_forward"] = dict(variants[m], capture_step=False)
    for m in ("ours", "ours_trim"):
        variants[f"{m}_sync"] = dict(variants[m], launch_ahead=False)
    traces: dict[str, Any] = {}

    def run(method, ids):
        if method == "hf_target":
            return hf_generate(target, ids, N)[0, ids.shape[1]:]
        if method == "hf_assisted":
            return hf_generate(target, ids, N, assistant=draft, k=k)[0, ids.shape[1]:]
        if method == "target":
            return greedy_decode(wrapper(target, args), ids, N, cuda_graphs=graphs)[0]
        out = paradecode.sample(target, ids, **variants[method])
        traces[method] = out.trace
        return out.generated[0]

    # warm-up on the first prompt, twice (the second run captures the repeated shapes' graphs)
    ids0 = torch.tensor([prompts[0]], device=device)
    for m in methods:
        run(m, ids0)
        if m not in ("hf_target", "hf_assisted"):
            run(m, ids0)
    before = {"target": graph_counts(target, args, "target"), "draft": graph_counts(draft, args, "draft")}
    seconds = {m: 0.0 for m in methods}
    pad = target.generation_config.pad_token_id or 0
    equal = {m: 0 for m in methods}
    equal_ours_target = 0
    tokens = {m: [0, 0] for m in variants}  # [tokens, target forwards]
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], device=device)
        outs, times = {}, {}
        for m in methods:
            outs[m], dt = timed(lambda: run(m, ids), device)
            seconds[m] += dt
            times[m] = round(dt, 3)
            equal[m] += int(same(outs[m], outs["hf_target"], pad))
            if m in tokens:
                tokens[m][0] += int(traces[m].tokens_committed.sum())
                tokens[m][1] += traces[m].nfe_by_role["target"]
        equal_ours_target += int(same(outs["target"], outs["hf_target"], pad))
        print(f"prompt {i}: seconds {times}", flush=True)
    after = {"target": graph_counts(target, args, "target"), "draft": graph_counts(draft, args, "draft")}
    paths = {role: {"graph_replays_in_timed_runs": after[role]["replays"] - before[role]["replays"],
                    "graphs_captured": after[role]["captures"], "capture_error": after[role]["error"]}
             for role in after}
    path = "cuda-graphs" if cuda and paths["target"]["graph_replays_in_timed_runs"] > 0 else ("eager-cpu" if not cuda else "eager")
    # accepted tokens per target forward for transformers (counted in an untimed pass)
    counter = ForwardCounter(target)
    hf_steps, hf_new = 0, 0
    for p in prompts:
        ids = torch.tensor([p], device=device)
        before_n = counter.n
        out = hf_generate(target, ids, N, assistant=draft, k=k)
        hf_steps += counter.n - before_n
        hf_new += out.shape[1] - ids.shape[1]
    counter.close()
    # the draft's share of a step and its time per forward (synchronised at the end of drafting)
    draft_stats: dict[str, dict] = {}
    for m in ("ours", "ours_trim"):
        secs = fwd = total = 0.0
        for p in prompts[: max(1, len(prompts) // 2)]:
            ids = torch.tensor([p], device=device)
            tr = paradecode.sample(target, ids, **dict(variants[m], record_draft_time=True, timing=True)).trace
            secs += sum(tr.extra("draft_seconds"))
            fwd += tr.nfe_by_role.get("draft", 0)
            total += tr.seconds
        draft_stats[m] = {"draft_seconds_per_forward": secs / max(1, fwd), "draft_share_of_time": secs / total}
    n_tok = len(prompts) * N
    res: dict[str, Any] = {
        "prompts": len(prompts), "max_new_tokens": N, "num_draft_tokens": k, "prompt_lookup_tokens": args.lookup_k,
        "path": path, "graphs": paths,
        "forward": {role: {"fused_projections": wrapper(m, args, role).lm.fused, "gqa": wrapper(m, args, role).lm.gqa}
                    for role, m in (("target", target), ("draft", draft))},
        "seconds": {m: round(s, 4) for m, s in seconds.items()},
        "ms_per_token": {m: round(1000 * s / n_tok, 3) for m, s in seconds.items()},
        "outputs_equal_target_greedy": {m: f"{equal[m]}/{len(prompts)}" for m in methods},
        "speedup_vs_target": {m: round(seconds["target"] / seconds[m], 3) for m in methods},
        "speedup_vs_hf_assisted": {m: round(seconds["hf_assisted"] / seconds[m], 3) for m in methods},
        "target_forwards": {**{m: t[1] for m, t in tokens.items() if m in methods}, "hf_assisted": hf_steps},
        "mean_accepted_drafts_per_step": {
            **{m: round((t[0] - t[1]) / max(1, t[1]), 3) for m, t in tokens.items() if m in methods},
            "hf_assisted": round((hf_new - hf_steps) / max(1, hf_steps), 3),
        },
        "draft": {m: {k_: round(v, 6) for k_, v in d.items()} for m, d in draft_stats.items()},
        "vocabtrim_draft_time_saving": round(
            1 - draft_stats["ours_trim"]["draft_seconds_per_forward"] / draft_stats["ours"]["draft_seconds_per_forward"], 3),
        "vocabtrim": {"size": trim.size, "vocab": trim.vocab_size, **{k_: v for k_, v in trim.meta.items()}},
    }
    return res


def bench_batched(target, draft, args, device, trim: VocabTrim, vocab: int) -> dict:
    """Throughput as the batch grows: the target alone, ours and ours + VocabTrim on batches of
    ``B`` random prompts of one length, for each ``B`` in ``--batches``. Rows accept on their own;
    one verify forward serves the whole batch (finished rows ride along until the last is done),
    so speculative decoding pays while that forward stays bound by its weight read. Each method runs twice on
    a warm-up batch, then ``--batch-repeats`` timed batches of fresh prompts; lossless = every
    row equal to the target alone's row in the same batch."""
    k, N = args.k, args.max_new_tokens
    graphs = not args.eager
    variants = draft_variants(args, draft, trim)
    methods = ["target", *variants]
    rows: dict[str, Any] = {}

    def run(method, ids):
        if method == "target":
            return greedy_decode(wrapper(target, args), ids, N, cuda_graphs=graphs), None
        out = paradecode.sample(target, ids, **variants[method])
        return out.generated, out.trace

    for B in args.batches:
        warm = torch.tensor(random_prompts(B, args.prompt_length, vocab, seed=100 + B), device=device)
        for m in methods:
            run(m, warm)
            run(m, warm)
        seconds = {m: 0.0 for m in methods}
        equal = {m: 0 for m in methods}
        committed = {m: [0, 0] for m in variants}  # [tokens, target forwards]
        for r in range(args.batch_repeats):
            ids = torch.tensor(random_prompts(B, args.prompt_length, vocab, seed=1000 * B + r), device=device)
            outs = {}
            for m in methods:
                (outs[m], trace), dt = timed(lambda: run(m, ids), device)
                seconds[m] += dt
                if trace is not None:
                    committed[m][0] += int(trace.tokens_committed.sum())
                    committed[m][1] += trace.nfe_by_role["target"]
            for m in methods:
                equal[m] += sum(int(torch.equal(outs[m][i, :N], outs["target"][i])) for i in range(B))
        n_tok = B * N * args.batch_repeats
        rows[str(B)] = {
            "seconds": {m: round(s, 4) for m, s in seconds.items()},
            "tokens_per_second": {m: round(n_tok / s, 1) for m, s in seconds.items()},
            "speedup_vs_target": {m: round(seconds["target"] / s, 3) for m, s in seconds.items()},
            "rows_equal_target": {m: f"{equal[m]}/{B * args.batch_repeats}" for m in methods},
            "target_forwards": {m: t[1] for m, t in committed.items()},
            # tokens per verify and row: accepted drafts + 1 while a row runs, 0 once it has finished
            "tokens_per_forward_and_row": {m: round(t[0] / max(1, t[1]) / B, 3) for m, t in committed.items()},
        }
        print(f"batch {B}: {rows[str(B)]}", flush=True)
    return {"max_new_tokens": N, "num_draft_tokens": k, "prompt_length": args.prompt_length,
            "repeats": args.batch_repeats, "vocabtrim_size": trim.size, "batches": rows}


def bench_sampled(target, draft, prompts, args, device, trim: VocabTrim) -> dict:
    """Sampling at ``--sampled`` T, batch 1: each paradecode method with whole steps recorded and
    with one graph per forward (``capture_step=False``), beside the target alone (greedy: what
    sampling's speedup is read against). Prompt i is sampled with seed 1000 + i by every method,
    so the recorded and per-forward tokens must be equal; the first prompt is also run without
    graphs and checked against them (the eager draws match the kept buffers' draws)."""
    N = args.max_new_tokens
    sampled = dict(do_sample=True, temperature=args.sampled)
    variants = {m: dict(v, **sampled) for m, v in draft_variants(args, draft, trim).items()}
    variants["prompt_lookup"] = dict(lookup_variant(args), **sampled)
    for m in list(variants):
        variants[f"{m}_per_forward"] = dict(variants[m], capture_step=False)
    methods = ["target", *variants]
    traces: dict[str, Any] = {}

    def run(method, ids, seed):
        if method == "target":
            return greedy_decode(wrapper(target, args), ids, N, cuda_graphs=not args.eager)[0]
        out = paradecode.sample(target, ids, seed=seed, **variants[method])
        traces[method] = out.trace
        return out.generated[0]

    ids0 = torch.tensor([prompts[0]], device=device)
    for m in methods:  # warm-up: the second run records the steps
        run(m, ids0, 1000)
        run(m, ids0, 1000)
    recorded = {m: run(m, ids0, 1000) for m in ("ours", "ours_trim")}
    eager = {m: paradecode.sample(target, ids0, seed=1000, **dict(variants[m], cuda_graphs=False)).generated[0]
             for m in recorded}
    seconds = {m: 0.0 for m in methods}
    equal = {m: 0 for m in variants if not m.endswith("_per_forward")}
    committed = {m: [0, 0] for m in variants}  # [tokens, target forwards]
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], device=device)
        outs = {}
        for m in methods:
            outs[m], dt = timed(lambda: run(m, ids, 1000 + i), device)
            seconds[m] += dt
            if m in committed:
                committed[m][0] += int(traces[m].tokens_committed.sum())
                committed[m][1] += traces[m].nfe_by_role["target"]
        for m in equal:
            equal[m] += int(torch.equal(outs[m], outs[f"{m}_per_forward"]))
        print(f"prompt {i}: seconds { {m: round(seconds[m], 3) for m in methods} }", flush=True)
    n_tok = len(prompts) * N
    return {
        "temperature": args.sampled, "prompts": len(prompts), "max_new_tokens": N, "num_draft_tokens": args.k,
        "vocabtrim_size": trim.size,
        "seconds": {m: round(t, 4) for m, t in seconds.items()},
        "tokens_per_second": {m: round(n_tok / t, 1) for m, t in seconds.items()},
        "speedup_vs_target": {m: round(seconds["target"] / t, 3) for m, t in seconds.items()},
        "recorded_equal_per_forward": {m: f"{n}/{len(prompts)}" for m, n in equal.items()},
        "recorded_equal_eager_first_prompt": {m: bool(torch.equal(recorded[m], eager[m])) for m in recorded},
        "mean_accepted_drafts_per_step": {m: round((t[0] - t[1]) / max(1, t[1]), 3) for m, t in committed.items()},
    }


def with_eos_tokens(target, n: int, seed: int = 3) -> list[int]:
    """Make ``n`` of the random pair's frequent tokens (the rows of its LM head that are not zero)
    end a generation, as real text's EOS does: rows then stop after varied lengths."""
    frequent = torch.nonzero(target.lm_head.weight.abs().sum(1) > 0).flatten().cpu()
    eos = frequent[torch.randperm(len(frequent), generator=torch.Generator().manual_seed(seed))[:n]].tolist()
    target.generation_config.eos_token_id = eos
    return eos


def bench_continuous(target, draft, args, device, vocab: int) -> dict:
    """``--prompts`` random prompts through ours at each ``--continuous`` batch size: fixed batches
    (``paradecode.sample`` on consecutive groups, each running until its slowest row is done) vs
    continuous batching (``generate_continuous``). Rows end on the EOS set of
    :func:`with_eos_tokens` or at ``--max-new-tokens``. Each way runs once untimed, then timed;
    every prompt's tokens must be equal between the two."""
    N = args.max_new_tokens
    eos = with_eos_tokens(target, args.eos_tokens)
    options = dict(strategy_options(args), num_draft_tokens=args.k)
    ours = draft_variants(args, draft, None)["ours"]  # the same options through paradecode.sample
    prompts = random_prompts(args.prompts, args.prompt_length, vocab, seed=1)
    rows: dict[str, Any] = {}

    def fixed(B):
        outs, steps = [], 0
        for i in range(0, len(prompts), B):
            out = paradecode.sample(target, prompts[i : i + B], **ours)
            steps += out.trace.steps
            outs += [g[: int(n)].tolist() for g, n in zip(out.generated, out.trace.tokens_committed)]
        return outs, steps, {}

    def continuous(B, m):
        out = generate_continuous(target, prompts, B, draft_model=draft, min_refill=m, **options)
        return out.generated, out.steps, {"refills": out.refills}

    def measure(fn):
        fn()  # untimed: captures and recordings
        (outs, steps, extra), dt = timed(fn, device)
        return {"seconds": round(dt, 4), "steps": steps, "tokens": sum(len(o) for o in outs),
                "tokens_per_second": round(sum(len(o) for o in outs) / dt, 1), **extra, "outputs": outs}

    min_refills = args.min_refill or [1]
    for B in args.continuous:
        fixed_row = measure(lambda: fixed(B))
        fixed_outs = fixed_row.pop("outputs")
        for m in dict.fromkeys(min(m, B) for m in min_refills):  # clipped to B, each value once
            cont = measure(lambda: continuous(B, m))
            equal = sum(a == b for a, b in zip(fixed_outs, cont.pop("outputs")))
            key = str(B) if len(min_refills) == 1 else f"{B}/min{m}"
            rows[key] = {"fixed": fixed_row, "continuous": cont, "prompts_equal": f"{equal}/{len(prompts)}",
                         "speedup": round(fixed_row["seconds"] / cont["seconds"], 3)}
            print(f"batch {key}: {rows[key]}", flush=True)
    return {"prompts": len(prompts), "max_new_tokens": N, "num_draft_tokens": args.k, "eos_tokens": len(eos),
            "min_refill": min_refills, "batches": rows}


def continuous_report(result: dict) -> str:
    r = result["continuous"]
    lines = [f"speculative decoding, fixed batches vs continuous batching: {result['info']}",
             f"{r['prompts']} prompts, up to {r['max_new_tokens']} new tokens (rows end on any of {r['eos_tokens']} "
             f"EOS tokens), k = {r['num_draft_tokens']}",
             f"{'batch':>8} {'fixed tok/s':>12} {'steps':>6} {'continuous tok/s':>17} {'steps':>6} {'refills':>8} "
             f"{'speedup':>8} {'= prompts':>10}"]
    for B, row in r["batches"].items():  # B: the batch, or batch/min<min_refill> when several were run
        f, c = row["fixed"], row["continuous"]
        lines.append(f"{B:>8} {f['tokens_per_second']:>12.1f} {f['steps']:>6} {c['tokens_per_second']:>17.1f} "
                     f"{c['steps']:>6} {c.get('refills', '-'):>8} {row['speedup']:>8.3f} {row['prompts_equal']:>10}")
    return "\n".join(lines) + "\n"


def sampled_report(result: dict) -> str:
    r = result["sampled"]
    lines = [f"speculative sampling at temperature {r['temperature']}, batch 1: {result['info']}",
             f"{r['prompts']} prompts x {r['max_new_tokens']} new tokens, k = {r['num_draft_tokens']}, "
             f"VocabTrim {r['vocabtrim_size']} rows; the target alone is greedy",
             f"{'method':<26} {'tokens/s':>9} {'x target':>9} {'accepted/step':>14}"]
    for m in r["seconds"]:
        lines.append(f"{m:<26} {r['tokens_per_second'][m]:>9.1f} {r['speedup_vs_target'][m]:>9.3f} "
                     f"{str(r['mean_accepted_drafts_per_step'].get(m, '')):>14}")
    lines.append(f"recorded steps' tokens equal one graph per forward's (same seed): {r['recorded_equal_per_forward']}")
    lines.append(f"... and steps without graphs', first prompt: {r['recorded_equal_eager_first_prompt']}")
    return "\n".join(lines) + "\n"


def batched_report(result: dict) -> str:
    r = result["batched"]
    lines = [f"speculative decoding by batch size: {result['info']}",
             f"{r['repeats']} timed batches of {r['max_new_tokens']} new tokens per row, k = {r['num_draft_tokens']}, "
             f"VocabTrim {r['vocabtrim_size']} rows",
             f"{'batch':>5} {'method':<10} {'tokens/s':>10} {'x target':>9} {'tokens/forward/row':>18} {'= target':>9}"]
    for B, row in r["batches"].items():
        for m in row["seconds"]:
            lines.append(f"{B:>5} {m:<10} {row['tokens_per_second'][m]:>10.1f} {row['speedup_vs_target'][m]:>9.3f} "
                         f"{str(row['tokens_per_forward_and_row'].get(m, '')):>18} {row['rows_equal_target'][m]:>9}")
    return "\n".join(lines) + "\n"


SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def profile_ours(target, draft, prompt, args, device) -> dict:
    """Where a speculative step's time goes: one prompt's generation by ``ours`` (as the bench
    runs it, after two warm-up runs) timed alone, then again under ``torch.profiler``. Per target
    step: wall ms (unprofiled), device kernel ms by class, the device's idle ms (wall - kernels),
    graph launches and host<->device waits (CUDA runtime calls that block the host)."""
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kernel_breakdown import device_gaps, time_by_class

    spec = dict(draft_variants(args, draft, None)["ours"], capture_step=not args.per_forward)
    ids = torch.tensor([prompt], device=device)
    for _ in range(2):
        paradecode.sample(target, ids, **spec)
    out, wall = timed(lambda: paradecode.sample(target, ids, **spec), device)
    steps = out.trace.nfe_by_role["target"]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        paradecode.sample(target, ids, **spec)
        sync(device)
    kernels, per_kernel = time_by_class(prof, steps, device.type == "cuda")
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][2])[:args.top]
    runtime = {e.key: [e.count / steps, e.cpu_time_total / 1e3 / steps] for e in prof.key_averages()
               if e.key.startswith("cuda") and e.device_type == torch.autograd.DeviceType.CPU}  # CUDA runtime calls
    wall_ms = 1e3 * wall / steps
    kernel_ms = sum(kernels.values())
    return {"prompt_tokens": len(prompt), "new_tokens": int(out.trace.tokens_committed.sum()), "target_steps": steps,
            "wall_ms_per_step": wall_ms, "kernel_ms_per_step": kernel_ms, "idle_ms_per_step": wall_ms - kernel_ms,
            "kernel_ms_by_class": kernels,
            "host_waits_per_step": {k: v for k, v in runtime.items() if k.startswith(SYNC_CALLS)},
            "graph_launches_per_step": runtime.get("cudaGraphLaunch", [0.0])[0],
            "kernel_launches_per_step": runtime.get("cudaLaunchKernel", [0.0])[0],
            "gaps": device_gaps(prof, steps, device.type == "cuda"),
            "top_kernels": [{"kernel": k, "class": c, "per_step": n, "ms_per_step": ms} for k, (c, n, ms) in top]}


def profile_report(p: dict) -> str:
    from kernel_breakdown import gaps_report  # benchmarks/ sibling (profile_ours put it on sys.path)

    classes = ", ".join(f"{c} {ms:.3f}" for c, ms in sorted(p["kernel_ms_by_class"].items(), key=lambda kv: -kv[1]))
    waits = ", ".join(f"{k} x{n:.2f} ({ms:.3f} ms)" for k, (n, ms) in p["host_waits_per_step"].items()) or "none"
    return (f"ours, one prompt, {p['new_tokens']} tokens in {p['target_steps']} target steps; per step: "
            f"wall {p['wall_ms_per_step']:.3f} ms, device kernels {p['kernel_ms_per_step']:.3f} ms ({classes}), "
            f"device idle {p['idle_ms_per_step']:.3f} ms; graph launches {p['graph_launches_per_step']:.1f}, "
            f"kernel launches {p['kernel_launches_per_step']:.1f}; host waits: {waits}\n"
            + gaps_report(p["gaps"])
            + "".join(f"  {t['ms_per_step']:7.3f} ms x{t['per_step']:6.1f}/step  {t['class']:<9} {t['kernel']}\n"
                      for t in p["top_kernels"]))


def floor_figures(target, device, res: dict, nbytes: int, args) -> dict:
    """The target's time per token against its weight-read floor, both from this run."""
    rate = copy_rate(device, nbytes)
    weight_bytes = wrapper(target, args).lm.weight_bytes()
    floor_ms = 1000 * weight_bytes / rate
    return {"copy_rate_GBps": round(rate / 1e9, 1), "target_weight_bytes": weight_bytes,
            "weight_read_floor_ms_per_token": round(floor_ms, 3),
            "target_ms_per_token": res["ms_per_token"]["target"],
            "target_over_floor": round(res["ms_per_token"]["target"] / floor_ms, 3)}


def targets(res: dict) -> dict:
    """The issue-15 targets as measured (True = met)."""
    sp, sa = res["speedup_vs_target"], res["speedup_vs_hf_assisted"]
    best = max(("ours", "ours_trim"), key=lambda m: sp[m])
    return {
        "speculative_vs_target_alone>=1.8": {"method": best, "value": sp[best], "met": sp[best] >= 1.8},
        "speculative_vs_hf_assisted>=2": {"method": best, "value": sa[best], "met": sa[best] >= 2.0},
        "vocabtrim_draft_time_saving>=0.15": {"value": res["vocabtrim_draft_time_saving"],
                                              "met": res["vocabtrim_draft_time_saving"] >= 0.15},
        "target_within_2x_of_floor": {"value": res["floor"]["target_over_floor"], "met": res["floor"]["target_over_floor"] <= 2.0},
        "lossless": {"met": all(v.split("/")[0] == v.split("/")[1] for v in res["outputs_equal_target_greedy"].values())},
    }


def text_report(result: dict) -> str:
    r = result["batch1"]
    lines = [f"speculative decoding, batch 1: {result['info']}", f"path: {r['path']} {r['graphs']}",
             f"forward: {r['forward']}",
             f"{'method':<25} {'seconds':>9} {'ms/token':>9} {'x target':>9} {'x assisted':>10} {'accepted/step':>13} {'= greedy':>8}"]
    for m in r["seconds"]:
        acc = r["mean_accepted_drafts_per_step"].get(m, "")
        lines.append(f"{m:<25} {r['seconds'][m]:>9.3f} {r['ms_per_token'][m]:>9.3f} {r['speedup_vs_target'][m]:>9.3f} "
                     f"{r['speedup_vs_hf_assisted'][m]:>10.3f} {str(acc):>13} {r['outputs_equal_target_greedy'][m]:>8}")
    lines.append(f"floor: {r['floor']}")
    lines.append(f"draft: {r['draft']}; VocabTrim saves {r['vocabtrim_draft_time_saving']:.1%} of a draft forward")
    lines += [f"target {name}: {v}" for name, v in r["targets"].items()]
    return "\n".join(lines) + "\n"


def run_tag(args) -> str:
    """The results file's suffix: ``--tag``, else the pair and the forward's options."""
    if args.tag:
        return args.tag
    tag = "smoke" if args.smoke else (f"random-{args.random.replace('-', '')}" if args.random else "pair")
    return tag + ("-fuse" if args.fuse_projections else "") + ("-triton" if args.attention == "triton" else "")


def machine_tag(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    return next((t for t in ("h200", "h100", "a100", "l40s") if t in name), "".join(c for c in name if c.isalnum())[:12])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=None, help="trained pair directory (default: the shipped one)")
    ap.add_argument("--random", default=None, choices=sorted(SHAPES))
    ap.add_argument("--smoke", action="store_true", help="tiny random pair on the CPU, few prompts (a check of the script)")
    ap.add_argument("--agree", type=float, default=0.8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--prompt-length", type=int, default=32, help="random pair only")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("-k", type=int, default=5, help="draft tokens per step (both implementations)")
    ap.add_argument("--lookup-k", type=int, default=10, help="prompt-lookup tokens per step (transformers' default)")
    ap.add_argument("--trim", type=int, default=None, help="VocabTrim size (default: vocab/4)")
    ap.add_argument("--calib-prompts", type=int, default=256,
                    help="VocabTrim calibration prompts (64 left some of the random pair's output cycles unvisited)")
    ap.add_argument("--calib-tokens", type=int, default=256)
    ap.add_argument("--eager", action="store_true", help="no CUDA graphs anywhere (the fallback path)")
    ap.add_argument("--compile-norm", action="store_true",
                    help="torch.compile the elementwise kernels: RMSNorm, RoPE, SwiGLU, add + norm, the KV write "
                         "(paradecode.models.llada.compile_elementwise)")
    ap.add_argument("--fuse-projections", action="store_true",
                    help="joined q/k/v and gate/up matmuls, one RoPE call, copy-free GQA (LlamaLM fuse_projections)")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "triton"],
                    help="triton: RoPE, the cache write and attention in one kernel per layer (needs --fuse-projections)")
    ap.add_argument("--compile-forward", default=None, choices=list(COMPILE_MODES),
                    help="torch.compile each forward captured as a CUDA graph, whole (CausalLM compile_mode)")
    ap.add_argument("--compile-roles", default="target,draft",
                    help="the models --compile-forward applies to (e.g. draft: the target keeps cuBLAS, compiles faster)")
    ap.add_argument("--copy-bytes", type=int, default=2 << 30, help="buffer size of the copy-rate measurement")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--tag", default=None, help="file name suffix (default: the pair)")
    ap.add_argument("--skip-eager-row", action="store_true",
                    help="leave out ours_eager (what CUDA graphs buy: ~35 s of a GPU run, no target depends on it)")
    ap.add_argument("--batches", default=None,
                    help="comma list of batch sizes, e.g. 1,4,16: instead of the batch-1 table, the target alone, ours "
                         "and ours + VocabTrim at each batch size (random pair only) -> speculative_batched_*.json/.txt")
    ap.add_argument("--batch-repeats", type=int, default=2, help="--batches: timed batches per size")
    ap.add_argument("--continuous", default=None,
                    help="comma list of batch sizes: instead of the batch-1 table, --prompts random prompts in fixed "
                         "batches vs continuous batching (random pair only) -> speculative_continuous_*.json/.txt")
    ap.add_argument("--min-refill", default=None,
                    help="--continuous: comma list of generate_continuous(min_refill=...) values, each beside the same "
                         "fixed batches (default 1: refill after every step that finishes a row)")
    ap.add_argument("--eos-tokens", type=int, default=40,
                    help="--continuous: frequent tokens that end a row (40 of 4,096: rows of ~100 tokens on average)")
    ap.add_argument("--sampled", type=float, default=None, metavar="T",
                    help="instead of the batch-1 table, sampling at temperature T: recorded steps vs one graph per "
                         "forward, tokens checked equal for one seed -> speculative_sampled_*.json/.txt")
    ap.add_argument("--top", type=int, default=30, help="--profile: kernels listed by device time")
    ap.add_argument("--per-forward", action="store_true",
                    help="--profile: one CUDA graph per forward (capture_step=False) instead of one per step")
    ap.add_argument("--profile", action="store_true",
                    help="no timed bench: profile one prompt's generation by ours (kernel time by class, device "
                         "idle time, host waits per target step) -> speculative_profile_*.json/.txt")
    args = ap.parse_args()
    if args.batches:
        try:
            args.batches = [int(b) for b in args.batches.split(",") if b]
        except ValueError:
            ap.error(f"--batches takes a comma list of batch sizes, e.g. 1,4,16; got {args.batches!r}")
        if not args.random and not args.smoke:
            ap.error("--batches needs --random SHAPE: a batch stacks prompts of one length (the trained pair's vary)")
        if not args.batches or min(args.batches) < 1:
            ap.error("--batches takes positive batch sizes, e.g. 1,4,16")
    if args.continuous:
        try:
            args.continuous = [int(b) for b in args.continuous.split(",") if b]
        except ValueError:
            ap.error(f"--continuous takes a comma list of batch sizes, e.g. 4,16; got {args.continuous!r}")
        if not args.continuous or min(args.continuous) < 1 or not (args.random or args.smoke):
            ap.error("--continuous takes positive batch sizes, e.g. 4,16, and a random pair (--random SHAPE)")
    if args.min_refill:
        try:
            args.min_refill = [int(m) for m in args.min_refill.split(",") if m]
        except ValueError:
            ap.error(f"--min-refill takes a comma list of positive ints, e.g. 1,4; got {args.min_refill!r}")
        if not args.continuous or not args.min_refill or min(args.min_refill) < 1:
            ap.error("--min-refill takes positive ints, e.g. 1,4, with --continuous")
    if args.sampled is not None and (args.sampled <= 0 or args.batches or args.profile):
        ap.error("--sampled takes a temperature > 0 and runs alone (not with --batches or --profile)")
    if args.smoke:
        args.random, args.device, args.dtype = "tiny", "cpu", "float32"
        args.prompts, args.max_new_tokens, args.calib_prompts, args.calib_tokens = 2, 24, 8, 32
        args.copy_bytes = 64 << 20
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.compile_norm:
        from paradecode.models.llada import compile_elementwise

        compile_elementwise()
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
                torch=torch.__version__, target_params=sum(p.numel() for p in target.parameters()),
                draft_params=sum(p.numel() for p in draft.parameters()), batch=args.batches or 1)
    print(info, flush=True)
    if args.profile:
        prof = profile_ours(target, draft, prompts[0], args, device)
        tag = ("smoke" if args.smoke else f"random-{args.random.replace('-', '')}" if args.random else "pair") + (
            "-fuse" if args.fuse_projections else "") + ("-triton" if args.attention == "triton" else "") + (
            "-per-forward" if args.per_forward else "")
        stem = Path(args.out_dir) / f"speculative_profile_{time.strftime('%Y-%m-%d', time.gmtime())}_{machine_tag(device)}_{tag}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps({"info": info, "args": vars(args), "profile": prof}, indent=1))
        stem.with_suffix(".txt").write_text(profile_report(prof))
        print(profile_report(prof) + f"wrote {stem}.json/.txt", flush=True)
        return
    trim = calibrate(target, calib, args.trim or V // 4, max_new_tokens=args.calib_tokens, do_sample=True)
    print("vocabtrim", trim.size, trim.meta, f"{time.time() - t0:.1f}s", flush=True)
    result: dict[str, Any] = {"info": info, "args": vars(args)}
    if args.batches:
        result["batched"] = bench_batched(target, draft, args, device, trim, V)
        save(result, "speculative_batched", batched_report(result), args, device, t0)
        return
    if args.continuous:
        result["continuous"] = bench_continuous(target, draft, args, device, V)
        save(result, "speculative_continuous", continuous_report(result), args, device, t0)
        return
    if args.sampled is not None:
        result["sampled"] = bench_sampled(target, draft, prompts, args, device, trim)
        save(result, "speculative_sampled", sampled_report(result), args, device, t0)
        return
    res = bench(target, draft, prompts, args, device, trim)
    res["floor"] = floor_figures(target, device, res, args.copy_bytes, args)
    res["targets"] = targets(res)
    result["batch1"] = res
    save(result, "speculative", text_report(result), args, device, t0)


def save(result: dict, bench_name: str, report: str, args, device: torch.device, t0: float) -> None:
    """``<out-dir>/<bench_name>_<date>_<machine>_<tag>.{json,txt}``, with the run's wall time."""
    result["wall_seconds"] = round(time.time() - t0, 1)
    stem = Path(args.out_dir) / f"{bench_name}_{time.strftime('%Y-%m-%d', time.gmtime())}_{machine_tag(device)}_{run_tag(args)}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".txt").write_text(report)
    print(report + f"wrote {stem}.json/.txt in {result['wall_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
