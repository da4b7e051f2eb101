"""How much of each test prompt's greedy output a VocabTrim kept set holds, for the random pair.

``speculative.py --random`` builds models whose greedy output follows a fixed next-token map, a
permutation of 4,096 "frequent" tokens after the first step. VocabTrim keeps the tokens that the
target generates on calibration prompts. A test prompt whose output runs through a cycle of that
permutation that no calibration output visited gets drafts from outside its path, and few are
accepted. This script needs no model: it follows the maps on the CPU. Calibration outputs are
taken as greedy (sampling at temperature 1 leaves the map's token rarely: its logit is ~20 above
the rest). The kept set is ``VocabTrim.from_counts``'s: tokens never generated fill it by lower
id. Prompts are ``speculative.py``'s: test prompts seed 1, calibration prompts seed 2.

    PYTHONPATH=. python benchmarks/trim_coverage.py --prompt-lengths 96,3900 [--prompts 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speculative import SHAPES, next_token_maps, random_prompts  # noqa: E402

from paradecode.speculative.vocabtrim import VocabTrim, count_tokens  # noqa: E402


def greedy_chain(next_token: torch.Tensor, last: int, n: int) -> list[int]:
    """The ``n`` tokens a model following ``next_token`` generates after a prompt ending in ``last``."""
    table = next_token.tolist()
    out, t = [], last
    for _ in range(n):
        t = table[t]
        out.append(t)
    return out


def kept_set(next_token: torch.Tensor, calib: list[list[int]], tokens: int, size: int) -> set[int]:
    """The ids VocabTrim keeps from the calibration outputs (``VocabTrim.from_counts``: the most
    generated first, unseen ids by lower id)."""
    outputs = [greedy_chain(next_token, p[-1], tokens) for p in calib]
    return set(VocabTrim.from_counts(count_tokens(outputs, next_token.numel()), size).keep_ids.tolist())


def coverage(shape: str, prompt_length: int, prompts: int, calib_prompts: int, calib_tokens: int,
             new_tokens: int, trim: int, agree: float = 0.8) -> list[float]:
    """Per test prompt, the fraction of its ``new_tokens`` greedy tokens inside the kept set."""
    vocab = SHAPES[shape][0]["vocab_size"]
    target_map, _ = next_token_maps(vocab, agree)
    keep = kept_set(target_map, random_prompts(calib_prompts, prompt_length, vocab, seed=2), calib_tokens, trim)
    tests = random_prompts(prompts, prompt_length, vocab, seed=1)
    return [sum(t in keep for t in greedy_chain(target_map, p[-1], new_tokens)) / new_tokens for p in tests]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="8b-1b", choices=sorted(SHAPES))
    ap.add_argument("--prompt-lengths", default="96,3900")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--calib-prompts", type=int, default=256)
    ap.add_argument("--calib-tokens", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--trim", type=int, default=None, help="kept rows (default: a quarter of the vocabulary)")
    args = ap.parse_args()
    trim = args.trim or SHAPES[args.shape][0]["vocab_size"] // 4
    for length in (int(x) for x in args.prompt_lengths.split(",")):
        cov = coverage(args.shape, length, args.prompts, args.calib_prompts, args.calib_tokens,
                       args.max_new_tokens, trim)
        print(f"prompt length {length}: share of each test prompt's greedy tokens kept "
              f"({trim} rows, {args.calib_prompts} calibration prompts): {[round(c, 2) for c in cov]}")


if __name__ == "__main__":
    main()
