"""VocabTrim (Goel et al. 2025): a draft LM head restricted to the target's frequent tokens.

Drafting is memory-bound, and for large vocabularies the LM head is a large share of the
draft's weights. VocabTrim keeps only the rows of the draft's head for the tokens the
*target* samples most often on calibration text, so each draft token reads K x d head
weights instead of V x d. The target still scores the full vocabulary: the draft's q is
zero outside the kept set, and the acceptance rule stays exact (a token outside the set is
simply never proposed; it can still come from the residual or bonus draw).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch

__all__ = ["VocabTrim", "count_tokens", "calibrate"]


def count_tokens(sequences: Iterable[Sequence[int]], vocab_size: int) -> torch.Tensor:
    """(vocab_size,) occurrence counts of token ids over ``sequences``."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for seq in sequences:
        ids = torch.as_tensor(list(seq) if not isinstance(seq, torch.Tensor) else seq, dtype=torch.long).flatten()
        if ids.numel():
            counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size]
    return counts


@dataclass
class VocabTrim:
    """The draft's kept token ids (sorted), and where they came from."""

    keep_ids: torch.Tensor
    vocab_size: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keep_ids = torch.as_tensor(self.keep_ids, dtype=torch.long).flatten().sort().values
        self.check_ids(self.keep_ids, self.vocab_size)

    @staticmethod
    def check_ids(ids: torch.Tensor, vocab_size: int) -> None:
        ids = torch.as_tensor(ids)
        if ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"vocabtrim needs a non-empty 1-D list of token ids, got shape {tuple(ids.shape)}.")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(f"vocabtrim token ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}].")
        if torch.unique(ids).numel() != ids.numel():
            raise ValueError("vocabtrim token ids must be distinct.")

    @property
    def size(self) -> int:
        return int(self.keep_ids.numel())

    @classmethod
    def from_counts(
        cls, counts: torch.Tensor, size: int, always_keep: Sequence[int] = (), meta: Optional[dict] = None
    ) -> "VocabTrim":
        """The ``size`` most frequent ids (``always_keep`` first, e.g. EOS); ties by lower id."""
        counts = torch.as_tensor(counts, dtype=torch.long)
        V = counts.numel()
        if not 0 < size <= V:
            raise ValueError(f"vocabtrim size must be in [1, {V}], got {size}.")
        forced = [int(i) for i in dict.fromkeys(always_keep) if 0 <= int(i) < V][:size]
        score = counts.double().clone()
        score[forced] = float("inf")
        # stable descending sort: equal counts keep ascending id order
        order = torch.sort(score, descending=True, stable=True).indices[:size]
        info = dict(meta or {})
        info.update(calibration_tokens=int(counts.sum()), coverage=float(counts[order].sum()) / max(1, int(counts.sum())))
        return cls(order, V, info)

    @classmethod
    def full(cls, vocab_size: int) -> "VocabTrim":
        """Every token kept: identical to no trimming (a check, and a baseline)."""
        return cls(torch.arange(vocab_size), vocab_size, {"full": True})

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps({"vocab_size": self.vocab_size, "keep_ids": self.keep_ids.tolist(), "meta": self.meta}))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "VocabTrim":
        d = json.loads(Path(path).read_text())
        return cls(torch.tensor(d["keep_ids"]), int(d["vocab_size"]), d.get("meta", {}))


def calibrate(
    target: Any,
    prompts: Sequence[Sequence[int]],
    size: int,
    max_new_tokens: int = 64,
    do_sample: bool = True,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    always_keep: Optional[Sequence[int]] = None,
) -> VocabTrim:
    """Sample from ``target`` on calibration ``prompts``; keep its ``size`` most generated tokens.

    Generation here is plain target sampling through transformers' ``generate`` (left-padded
    batches), a one-off preprocessing step outside the decoding loop. Only generated tokens
    are counted: they are what the draft has to propose. ``always_keep`` defaults to EOS.
    """
    from ..inputs import prepare_prompts
    from .causal_lm import vocab_size

    V = vocab_size(target)
    dev = next(target.parameters()).device
    eos = getattr(target.generation_config, "eos_token_id", None)
    if always_keep is None:
        always_keep = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    pad = target.generation_config.pad_token_id
    pad = pad if pad is not None else (target.config.pad_token_id or 0)
    torch.manual_seed(seed)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            ids, mask = prepare_prompts([list(p) for p in prompts[i : i + batch_size]], None, pad, dev)
            if mask is None:
                mask = torch.ones_like(ids)
            kw = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=pad)
            if do_sample:
                kw.update(temperature=temperature, top_k=0, top_p=1.0)
            out = target.generate(ids, attention_mask=mask, **kw)[:, ids.shape[1]:].cpu()
            for row in out:  # stop counting at the first EOS (the rest is padding)
                row = row.tolist()
                if eos is not None:
                    stops = [eos] if isinstance(eos, int) else list(eos)
                    cut = next((j for j, t in enumerate(row) if t in stops), None)
                    row = row if cut is None else row[: cut + 1]
                outs.append(row)
    counts = count_tokens(outs, V)
    return VocabTrim.from_counts(
        counts, size, always_keep, meta={"prompts": len(prompts), "max_new_tokens": max_new_tokens, "do_sample": do_sample}
    )
