"""``paradecode speculative``: speculative decoding of a causal LM from the command line.

``paradecode sample`` serves diffusion LMs; a causal LM pair needs two checkpoints, which
``-o`` cannot carry. This command loads the target and the draft (``AutoModelForCausalLM``
directories or hub ids; ``spec-pair``: the shipped pair), tokenizes the prompt, decodes with
the ``speculative`` strategy and prints the text; the trace, the drafts accepted per step and,
with ``--compare``, the target alone's time and whether both gave the same tokens go to stderr
as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

SHIPPED_PAIR = "spec-pair"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "speculative", help="speculative decoding of a causal LM with a draft model or prompt lookup",
        description="Decode a prompt with a target causal LM and a draft (or prompt lookup): draft k tokens, "
                    "verify them in one target forward, keep what the target agrees with (lossless).",
    )
    p.add_argument("--target", default=SHIPPED_PAIR,
                   help=f"target checkpoint: a directory, a hub id, or {SHIPPED_PAIR!r} (the shipped pair)")
    p.add_argument("--draft", default=None,
                   help=f"draft checkpoint sharing the target's tokenizer (default with --target {SHIPPED_PAIR}: its draft)")
    p.add_argument("--drafter", default="model", choices=["model", "prompt-lookup"],
                   help="prompt-lookup drafts from the text itself and needs no --draft")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text (or a JSON list of token ids)")
    source.add_argument("--prompts-file", default=None,
                        help="one prompt per line, decoded --batch-size rows at a time with continuous batching "
                             "(a finished row takes the next prompt); one output per line, in order")
    p.add_argument("--batch-size", type=int, default=8, help="--prompts-file: rows decoded at once")
    p.add_argument("--min-refill", type=int, default=1,
                   help="--prompts-file: finished rows wait until this many can take new prompts together "
                        "(measured best on an H200 at 8B/1B: 1 at batch 4, 4 at batch 16 and 32)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--vocabtrim", default=None, help="a VocabTrim file (VocabTrim.save) for the draft's head")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="bf16, fp16, fp32 (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--compare", action="store_true",
                   help="also time the target alone (greedy, as many tokens) and check the tokens agree; both run "
                        "once untimed first (setup, graph capture)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy option (repeatable), e.g. -o num_draft_tokens=4 -o do_sample=true "
                        "(`paradecode strategies speculative` lists them)")
    p.set_defaults(func=run)


def _load_causal_lm(name: str, device: str, dtype: Optional[torch.dtype]) -> tuple[Any, Any]:
    """(model, tokenizer or None) of a causal LM directory or hub id."""
    from transformers import AutoModelForCausalLM

    from ..models.loading import _HUB_ID, resolve_checkpoint

    path = Path(name)
    if not path.is_dir():
        if path.exists() or not _HUB_ID.match(name):
            raise ValueError(f"{name!r} is not a checkpoint directory nor a hub id (org/name); give a directory "
                             f"with config.json and weights (AutoModelForCausalLM), or {SHIPPED_PAIR!r}.")
        path = resolve_checkpoint(name)
    if not (path / "config.json").exists():
        raise ValueError(f"{path} has no config.json: not a transformers checkpoint directory.")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    except ValueError as err:  # e.g. a masked (diffusion) LM's config
        raise ValueError(f"{path}: not a causal LM that AutoModelForCausalLM builds ({str(err)[:160]}); "
                         f"diffusion LMs decode with `paradecode sample`.") from None
    tokenizer = None
    if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def load_models(args: argparse.Namespace) -> tuple[Any, Optional[Any], Any]:
    """(target, draft or None, codec): ``codec`` turns the prompt into ids and ids into text."""
    from transformers.utils import logging as hf_logging

    from ..models.loading import parse_dtype

    hf_logging.disable_progress_bar()  # stderr carries the one JSON line
    dtype = parse_dtype(args.dtype)
    if args.drafter == "prompt-lookup" and args.draft is not None:
        raise ValueError("--drafter prompt-lookup drafts from the text itself: leave --draft out.")
    if args.target == SHIPPED_PAIR:
        from .pair import load_pair

        target, draft = load_pair(dtype=dtype or torch.float32, device=args.device)
        if args.draft is not None:
            draft, _ = _load_causal_lm(args.draft, args.device, dtype)
        return target, draft if args.drafter == "model" else None, _PairCodec()
    target, tokenizer = _load_causal_lm(args.target, args.device, dtype)
    draft = None
    if args.drafter == "model":
        if args.draft is None:
            raise ValueError("--draft is needed with --drafter model (a smaller causal LM with the target's "
                             "tokenizer), or pass --drafter prompt-lookup.")
        draft, _ = _load_causal_lm(args.draft, args.device, dtype)
    return target, draft, _TokenizerCodec(tokenizer)


class _PairCodec:
    """The shipped pair's characters; its prompts start with BOS, as in training."""

    def encode(self, text: str) -> list[int]:
        from .pair import BOS, encode

        return [BOS] + encode(text)

    def decode(self, ids: list[int]) -> str:
        from .pair import decode

        return decode(ids)


class _TokenizerCodec:
    """A checkpoint's own tokenizer; without one, prompts are JSON lists of ids and outputs ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        from ..cli import prompt_ids

        return prompt_ids(text, self.tokenizer, "the target")

    def decode(self, ids: list[int]) -> Any:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if self.tokenizer is not None else ids


def run(args: argparse.Namespace) -> int:
    import paradecode

    from ..cli import parse_options
    from ..loop import synchronize
    from .causal_lm import CausalLM, greedy_decode
    from .strategy import SpeculativeConfig
    from .vocabtrim import VocabTrim

    options = parse_options(args.option, "-o")
    own = {"draft_model": "--draft", "vocabtrim": "--vocabtrim", "drafter": "--drafter", "max_new_tokens": "--max-new-tokens"}
    for name, flag in own.items():
        if name in options:
            raise ValueError(f"-o {name}=... is set by its own flag here ({flag}); leave it out of -o.")
    if args.prompts_file is not None and args.compare:
        raise ValueError("--compare times one prompt against the target alone; use it with --prompt, not --prompts-file.")
    target, draft, codec = load_models(args)
    extra: dict[str, Any] = {}
    if draft is not None:
        extra["draft_model"] = draft
        if args.vocabtrim is not None:
            extra["vocabtrim"] = VocabTrim.load(args.vocabtrim)
    elif args.vocabtrim is not None:
        raise ValueError("--vocabtrim trims a draft model's head; prompt lookup has none.")
    if args.prompts_file is not None:
        return _run_many(args, target, codec, dict(extra, drafter=args.drafter, seed=args.seed, **options))
    ids = torch.tensor([codec.encode(args.prompt)], device=args.device)
    spec = dict(strategy="speculative", drafter=args.drafter, max_new_tokens=args.max_new_tokens, seed=args.seed,
                **extra, **options)
    if args.compare:
        paradecode.sample(target, ids, **spec)  # untimed: wrappers, caches, graphs
    t0 = time.perf_counter()
    out = paradecode.sample(target, ids, **spec)
    synchronize(args.device)
    seconds = time.perf_counter() - t0
    gen = out.generated[0, : int(out.trace.tokens_committed[0])].tolist()
    print(codec.decode(_without_eos(gen, target)))
    accepted = [int(a.sum()) for a in out.trace.extra("accepted")]
    report: dict[str, Any] = dict(out.trace.summary(), seconds=round(seconds, 4),
                                  accepted_drafts_per_step=round(sum(accepted) / max(1, len(accepted)), 3))
    if args.compare:
        c = SpeculativeConfig(**options)  # the target's forward as speculative decoding ran it
        alone = CausalLM.of(target, fuse_projections=c.fuse_projections, compile_mode=c.compile_mode_of("target"),
                            attention=c.attention)
        # as many tokens as speculative decoding gave (it stops at EOS; the target alone does not)
        greedy_decode(alone, ids, len(gen), cuda_graphs=c.cuda_graphs)  # untimed, as above
        t0 = time.perf_counter()
        ref = greedy_decode(alone, ids, len(gen), cuda_graphs=c.cuda_graphs)
        synchronize(args.device)
        report["target_alone_seconds"] = round(time.perf_counter() - t0, 4)
        report["speedup_vs_target_alone"] = round(report["target_alone_seconds"] / seconds, 3)
        if not c.do_sample:
            report["same_tokens_as_target_alone"] = ref[0, : len(gen)].tolist() == gen
    print(json.dumps(report), file=sys.stderr)
    return 0


def _without_eos(gen: list[int], target: Any) -> list[int]:
    """A generation's tokens without the EOS that ended it (a tokenizer may not mark it special)."""
    from .strategy import eos_token_ids

    return gen[:-1] if gen and gen[-1] in eos_token_ids(target) else gen


def _run_many(args: argparse.Namespace, target: Any, codec: Any, options: dict) -> int:
    """``--prompts-file``: every line's prompt through :func:`.continuous.generate_continuous`."""
    from .continuous import generate_continuous

    lines = [line.rstrip("\n") for line in Path(args.prompts_file).read_text().splitlines()]
    prompts = [codec.encode(line) for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"{args.prompts_file} has no prompt (one per line).")
    out = generate_continuous(target, prompts, args.batch_size, max_new_tokens=args.max_new_tokens,
                              min_refill=min(args.min_refill, args.batch_size), **options)
    for gen in out.generated:
        print(codec.decode(_without_eos(gen, target)))
    print(json.dumps({"prompts": len(prompts), "batch_size": args.batch_size, "tokens": out.tokens,
                      "steps": out.steps, "target_forwards": out.target_forwards,
                      "accepted_drafts": out.accepted_drafts, "refills": out.refills, "seconds": round(out.seconds, 4),
                      "tokens_per_second": round(out.tokens / out.seconds, 1)}), file=sys.stderr)
    return 0
