"""dParallel's certainty-forcing distillation (Chen et al., 2025, arXiv 2509.26488; reference:
github czg1225/dParallel, ``LLaDA/llada_train.py``): the teacher's own answers, then the
masked-diffusion loss plus entropy minimisation on the positions the model already gets right.

What the reference does, and what this module does the same way:

- **Data** (the dataset card of ``Zigeng/dParallel_LLaDA_Distill_Data``): the model answers
  training prompts itself with LLaDA's semi-autoregressive decoding (sequence 256, block 32:
  the full-step baseline), answers with a wrong result are filtered out, and the kept
  responses (+ ``<eos>`` padding) are the targets. :func:`teacher_trajectories` decodes with
  ``lowconf`` at one token per step and keeps only answers the task's verifier accepts.
- **Noised inputs** (``forward_process_semi_ar``): per sequence one block of the response is
  picked uniformly; the blocks before it stay clean, every block after it is fully masked,
  and inside it each position is masked with probability ``(1 - eps) * 0.5 + eps`` (the mask
  ratio is fixed at 0.5, not drawn). A second, complementary input masks exactly the block
  positions the first leaves clean (same prefix, same masked tail). The loss is read only on
  the masked positions of the picked block, never on the masked tail.
- **Loss** (``DLMTrainer.compute_loss``): ``ce + ce_rev + w * (H + H_rev)``. ``ce`` is the mean
  cross-entropy over the block's masked positions (no ``1 / p`` weight); ``H`` is the mean
  entropy of ``softmax(logits / T)`` over the masked positions whose argmax already equals
  the target, with ``T = 0.5`` and ``w = 2`` (LLaDA; the Dream script uses ``w = 1``).
  Gradients flow through the entropy; which positions count is not differentiated. The
  reference trains one sequence per device with gradient accumulation, so each mean is taken
  per sequence and then averaged over sequences; we do the same within a batch.

Where ours differs (the canvas is block-aligned here): the reference pads every response to
384 tokens, so its uniform pick ``randint(0, response_len // 32)`` also lands on a short
remainder segment of ``<eos>`` padding (and on a zero-length one when the response length is
a multiple of 32, a step that trains nothing); our canvas is exactly the task's
``gen_length``, so the pick is uniform over its ``gen_length / block_length`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from ..api import sample
from .tasks import get_task

__all__ = ["Trajectories", "teacher_trajectories", "semi_ar_masks", "certainty_forcing_entropy",
           "masked_cross_entropy", "dparallel_loss"]


# ---- data: the teacher's own answers ---------------------------------------------------------
@dataclass
class Trajectories:
    """Kept teacher answers, grouped by canvas length: ``groups[G] = (tokens, attention_mask)``,
    each (N, prompt_len + G) long, prompts left-padded to ``prompt_len``; ``stats[task]`` =
    distinct prompts decoded, answers kept."""

    prompt_len: int
    groups: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(t.shape[0] for t, _ in self.groups.values())


@torch.no_grad()
def teacher_trajectories(model: Any, tok: Any, tasks: Sequence[str], n: int, seed: int, *,
                         prompt_len: int = 40, batch_size: int = 512,
                         exclude: Optional[Mapping[str, Collection[str]]] = None,
                         keep: str = "correct") -> Trajectories:
    """Draw ``n`` prompts per task with ``seed``, drop repeats (the reference's data has each
    question once; the teacher's answer to a prompt is deterministic) and the prompts in
    ``exclude[task]`` (held-out problems; not replaced), decode them with the LLaDA baseline
    at full steps, and keep the verified answers (``keep="correct"``, the reference's filter;
    ``"all"`` keeps every answer).

    The target canvas is the teacher's generation with everything after its first ``<eos>``
    set to ``<eos>`` (the reference appends ``<eos>`` to the decoded response and pads with it).
    Deterministic: ``lowconf`` at temperature 0 and seeded prompts."""
    if keep not in ("correct", "all"):
        raise ValueError(f"keep must be 'correct' (the reference's filter) or 'all', got {keep!r}.")
    eos, pad = tok.eos_token_id, tok.pad_token_id
    out = Trajectories(prompt_len)
    parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    model.eval()
    for name in tasks:
        task = get_task(name)
        G, blk = task.gen_length, task.block_length
        skip = set((exclude or {}).get(name, ()))
        seen: set[str] = set()
        exs = []
        for e in task.examples(n, seed=seed):
            if e.prompt not in skip and e.prompt not in seen:
                seen.add(e.prompt)
                exs.append(e)
        kept = 0
        for s in range(0, len(exs), batch_size):
            chunk = exs[s : s + batch_size]
            ids = [tok.encode(e.prompt) for e in chunk]
            if max(len(p) for p in ids) > prompt_len:
                raise ValueError(f"task {name}: a prompt is longer than prompt_len={prompt_len}; raise --prompt-len.")
            gen = sample(model, ids, "lowconf", gen_length=G, block_length=blk, steps=G, timing=False).generated.cpu()
            texts = tok.batch_decode(gen.tolist(), skip_special_tokens=True)
            ok = torch.tensor([task.verify(e, t) or keep == "all" for e, t in zip(chunk, texts)])
            after_eos = (gen == eos).long().cumsum(-1) > 0
            canvas = torch.where(after_eos, torch.full_like(gen, eos), gen)
            rows = torch.tensor([[pad] * (prompt_len - len(p)) + p for p in ids])
            am = torch.tensor([[0] * (prompt_len - len(p)) + [1] * (len(p) + G) for p in ids])
            toks = torch.cat([rows, canvas], dim=1)
            parts.setdefault(G, []).append((toks[ok], am[ok]))
            kept += int(ok.sum())
        out.stats[name] = {"prompts": len(exs), "kept": kept}
    for G, chunks in parts.items():
        out.groups[G] = (torch.cat([t for t, _ in chunks]), torch.cat([a for _, a in chunks]))
    return out


# ---- the objective ---------------------------------------------------------------------------
def semi_ar_masks(batch: int, gen_length: int, block_length: int, generator: Optional[torch.Generator] = None,
                  device: Any = "cpu", mask_ratio: float = 0.5, eps: float = 1e-3):
    """The reference's block-wise noising of a (batch, gen_length) canvas.

    Returns ``(masked, masked_rev, tail)``, each (batch, gen_length) bool: ``masked`` the picked
    block's positions masked with probability ``(1 - eps) * mask_ratio + eps``, ``masked_rev``
    the block's other positions, ``tail`` every column after the block (masked in both
    inputs, never in the loss)."""
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}).")
    if not 0 <= mask_ratio <= 1:
        raise ValueError(f"mask_ratio must lie in [0, 1] (the reference fixes it at 0.5), got {mask_ratio}.")
    n_blocks = gen_length // block_length
    block = torch.randint(0, n_blocks, (batch, 1), generator=generator, device=device)
    col = torch.arange(gen_length, device=device)[None, :]
    start = block * block_length
    in_block = (col >= start) & (col < start + block_length)
    p = (1 - eps) * mask_ratio + eps
    draw = torch.rand(batch, gen_length, generator=generator, device=device) < p
    return in_block & draw, in_block & ~draw, col >= start + block_length


def _row_mean(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(B, G) values -> (B,) mean over ``where`` per row; 0 for a row with nothing selected
    (the reference's ``0.0 * logits.sum()``: such a sequence adds nothing but still counts)."""
    w = where.to(values.dtype)
    return (values * w).sum(-1) / w.sum(-1).clamp_min(1.0)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """(B, G, V), (B, G), (B, G) -> (B,) mean cross-entropy over each row's masked positions."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return _row_mean(ce, masked)


def certainty_forcing_entropy(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor,
                              temperature: float = 0.5) -> torch.Tensor:
    """(B,) the certainty-forcing term: per row, the mean entropy of ``softmax(logits / T)`` over
    the masked positions whose argmax already equals the target (0 where there are none).
    Positions predicted wrongly contribute nothing, not even gradient."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive (the reference uses 0.5), got {temperature}.")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    right = masked & (logits.argmax(-1) == targets)
    return _row_mean(entropy, right)


def dparallel_loss(model: Any, tokens: torch.Tensor, am: Optional[torch.Tensor], prompt_len: int,
                   block_length: int, mask_id: int, generator: Optional[torch.Generator] = None, *,
                   entropy_weight: float = 2.0, temperature: float = 0.5, mask_ratio: float = 0.5,
                   eps: float = 1e-3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference's loss on a batch ``tokens`` (B, prompt_len + G) whose canvas (columns
    ``prompt_len:``) holds the targets: ``ce + ce_rev + entropy_weight * (H + H_rev)``, each term
    averaged over the batch. The two noised inputs go through the model as one batch of 2B.
    Returns the loss and its parts (detached 0-d tensors, for the log: no device sync here)."""
    B, T = tokens.shape
    G = T - prompt_len
    masked, masked_rev, tail = semi_ar_masks(B, G, block_length, generator, tokens.device, mask_ratio, eps)
    canvas = tokens[:, prompt_len:]
    both = torch.cat([masked | tail, masked_rev | tail])
    x = tokens.repeat(2, 1)
    x[:, prompt_len:] = torch.where(both, torch.full_like(x[:, prompt_len:], mask_id), x[:, prompt_len:])
    logits = model(x, attention_mask=None if am is None else am.repeat(2, 1), logits_range=(prompt_len, T))
    targets = canvas.repeat(2, 1)
    loss_mask = torch.cat([masked, masked_rev])
    ce = masked_cross_entropy(logits, targets, loss_mask).view(2, B).mean(-1)
    ent = certainty_forcing_entropy(logits, targets, loss_mask, temperature).view(2, B).mean(-1)
    loss = ce.sum() + entropy_weight * ent.sum()
    parts = {"ce": ce[0].detach(), "ce_rev": ce[1].detach(), "entropy": ent[0].detach(), "entropy_rev": ent[1].detach()}
    return loss, parts
