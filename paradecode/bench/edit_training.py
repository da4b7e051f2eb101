"""LLaDA2.1's token-to-token (T2T) "editing stream" for training (Bie et al., 2026, arXiv 2602.08676,
§3.1 "Training Alignment for Draft-and-Edit"): besides the mask-to-token (M2T) loss on masked
positions, the model "learns to recover original tokens from random noise perturbations", in
continued pre-training and SFT alike, so that at decoding time its prediction at a *visible*
position is trained and ``editing`` (LLaDA2.1's draft-and-edit rule) can rewrite a wrong committed
token. A plain masked-diffusion model is never trained there: its argmax at a visible position is
arbitrary (``benchmarks/visible_token_probe.py``).

The report states the objective but no rates, weights or code (dFactory, the released training
framework, has no T2T stream; see docs/dev-notes/issue-18-edit-training.md), so the choices here
are ours:

- **Noise**: each visible (unmasked) canvas position is replaced, independently with probability
  ``rate``, by a token drawn uniformly from the *noise vocabulary* minus the original token (a
  draw equal to the original would be no perturbation, and the asked rate would not be the
  realised one). The noise vocabulary is every real token id except ``<pad>`` (never on a canvas),
  ``<mask>`` (that is the M2T noise; a mask at a visible position is no edit) and ``<unk>``
  (no task emits it). ``<eos>`` stays in: a premature ``<eos>`` committed inside an answer, and a
  word committed in the ``<eos>`` tail, are the errors a decoder makes on our canvases, so the
  editor must learn to overwrite both.
- **Loss**: cross-entropy to the clean token at *every* visible canvas position, corrupted or not.
  The model cannot tell which visible tokens are noise (that is the skill); a loss on the
  corrupted positions alone would only ever say "the answer is not the token you see" and teach
  the model to edit every visible token. Per sequence it is summed and divided by the canvas
  length (like the M2T term, which is an unbiased per-position estimate), then weighted by
  ``weight`` (1: the report mixes the two streams with no stated weight).
"""

from __future__ import annotations

from typing import Collection, Optional

import torch

__all__ = ["noise_vocabulary", "corrupt_visible", "visible_loss"]


def noise_vocabulary(vocab_size: int, exclude: Collection[int]) -> torch.Tensor:
    """Sorted token ids ``[0, vocab_size)`` without ``exclude`` (the special tokens that are never
    a committed token: pad, mask, unk). Raises when fewer than two remain (no replacement exists)."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    drop = torch.tensor(sorted({int(i) for i in exclude if i is not None}), dtype=torch.long)
    ids = torch.arange(vocab_size)
    ids = ids[~torch.isin(ids, drop)]
    if ids.numel() < 2:
        raise ValueError(f"the noise vocabulary has {ids.numel()} token(s) after excluding {drop.tolist()}; "
                         f"edit noise needs at least two real tokens")
    return ids


def corrupt_visible(canvas: torch.Tensor, visible: torch.Tensor, rate: float, vocabulary: torch.Tensor,
                    generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noised canvas, corrupted)``: each ``visible`` position of ``canvas`` (B, G) is, with
    probability ``rate``, replaced by a uniform draw from ``vocabulary`` (from :func:`noise_vocabulary`)
    other than its own token; ``corrupted`` marks the replaced positions. Other positions are
    returned unchanged. Random numbers come from ``generator`` (default: torch's global one)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"edit noise rate must lie in [0, 1], got {rate}")
    if canvas.shape != visible.shape:
        raise ValueError(f"canvas {tuple(canvas.shape)} and visible {tuple(visible.shape)} differ in shape")
    device = canvas.device
    vocab = vocabulary.to(device)
    n = vocab.numel()
    corrupted = visible & (torch.rand(canvas.shape, device=device, generator=generator) < rate)
    # Uniform over the vocabulary minus the original: draw among n - 1 slots (n when the original is
    # not in the vocabulary) and step over the original's slot.
    slot = torch.searchsorted(vocab, canvas.clamp(min=0))
    inside = (slot < n) & (vocab[slot.clamp(max=n - 1)] == canvas)
    k = (torch.rand(canvas.shape, device=device, generator=generator) * (n - inside.long())).long()
    k = k.clamp(max=n - 1 - inside.long())
    k = k + (inside & (k >= slot)).long()
    return torch.where(corrupted, vocab[k], canvas), corrupted


def visible_loss(ce: torch.Tensor, visible: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """The T2T stream's loss of a batch: per-position cross-entropy ``ce`` (B, G) to the clean
    tokens, summed over the ``visible`` positions of each sequence, divided by the canvas length G,
    averaged over the batch, times ``weight``."""
    return (ce * visible).sum(1).div(ce.shape[1]).mean() * weight
