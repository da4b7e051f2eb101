"""How sure a model is when it commits: the confidences of the tokens LLaDA's baseline commits.

Threshold rules (Fast-dLLM, LocalLeap's relaxed band, Credit's fused score) only differ from
one another where confidences lie between "unsure" and "sure"; a model whose committed
confidences are all near 1 gives them nothing to tell apart. :func:`decode_with_confidences`
decodes with ``lowconf`` at full steps (one token per step), scores each row with the
task's verifier and records the confidence of every committed token;
:func:`confidence_summary` turns them into the share in a band and a histogram.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..api import sample
from ..samplers.lowconf import LowConfConfig, LowConfidence
from .tasks import Task

__all__ = ["decode_with_confidences", "confidence_summary", "model_confidences", "BINS"]

BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99, 1.0)


class _RecordingLowConf(LowConfidence):
    """``lowconf`` that keeps (confidence, token) of each token it commits."""

    def __init__(self, config: LowConfConfig) -> None:
        super().__init__(config)
        self.records: list[tuple[torch.Tensor, torch.Tensor]] = []

    def select(self, view, state) -> torch.Tensor:
        chosen = super().select(view, state)
        self.records.append((view.confidence[chosen].float().cpu(), view.x0[chosen].cpu()))
        return chosen


@torch.no_grad()
def decode_with_confidences(model: Any, tokenizer: Any, task: Task, examples: Sequence[Any],
                            batch_size: int = 256, gen_length: int | None = None,
                            block_length: int | None = None) -> dict[str, Any]:
    """``{"correct": [bool], "texts": [str], "confidence": (n,) tensor, "token": (n,) tensor}``
    of ``lowconf`` at full steps (steps = gen_length) on ``examples`` of ``task``."""
    gen = gen_length or task.gen_length
    block = block_length or task.block_length
    correct, texts, confs, toks = [], [], [], []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        strat = _RecordingLowConf(LowConfConfig(gen_length=gen, block_length=block, steps=gen))
        out = sample(model, [tokenizer.encode(e.prompt) for e in chunk], strat, timing=False)
        batch_texts = tokenizer.batch_decode(out.generated.tolist(), skip_special_tokens=True)
        texts += batch_texts
        correct += [task.verify(e, t) for e, t in zip(chunk, batch_texts)]
        confs += [c for c, _ in strat.records]
        toks += [t for _, t in strat.records]
    return {"correct": correct, "texts": texts,
            "confidence": torch.cat(confs) if confs else torch.zeros(0),
            "token": torch.cat(toks) if toks else torch.zeros(0, dtype=torch.long)}


def confidence_summary(confidence: torch.Tensor, token: torch.Tensor | None = None, eos_id: int | None = None,
                       band: tuple[float, float] = (0.5, 0.9)) -> dict[str, Any]:
    """Share of confidences in ``band`` (all committed tokens, and without ``<eos>`` when
    ``token``/``eos_id`` are given) and a histogram over :data:`BINS`."""
    def share(c: torch.Tensor) -> float:
        return float(((c >= band[0]) & (c < band[1])).float().mean()) if c.numel() else float("nan")

    hist = torch.histogram(confidence.float().clamp(0, 1), bins=torch.tensor(BINS)).hist
    out = {"band": list(band), "n": int(confidence.numel()), "share_in_band": share(confidence),
           "bins": list(BINS), "histogram": (hist / max(1, confidence.numel())).tolist()}
    if token is not None and eos_id is not None:
        keep = token != eos_id
        out["share_in_band_without_eos"] = share(confidence[keep])
        out["n_without_eos"] = int(keep.sum())
    return out


def model_confidences(name: str, n: int, seed: int, device: str = "cpu", batch_size: int = 256) -> dict[str, Any]:
    """:func:`confidence_summary` of a shipped model (zoo name) on each of its own tasks, all
    committed tokens pooled, plus the accuracy per task (``n`` problems each, ``seed``)."""
    from .. import zoo
    from .tasks import get_task

    model, tok = zoo.load(name, device=device)
    info = zoo.info(name)
    confs, toks, acc = [], [], {}
    for t in info["tasks"]:
        task = get_task(t)
        res = decode_with_confidences(model, tok, task, task.examples(n, seed=seed), batch_size=batch_size,
                                      gen_length=info["task_gen_length"][t], block_length=info["task_block_length"][t])
        confs.append(res["confidence"])
        toks.append(res["token"])
        acc[t] = sum(res["correct"]) / n
    summary = confidence_summary(torch.cat(confs), torch.cat(toks), tok.eos_token_id)
    return {"model": name, "n_per_task": n, "seed": seed, "accuracy": acc, **summary}
