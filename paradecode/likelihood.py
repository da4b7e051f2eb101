"""Log-likelihood of a continuation under a masked-diffusion LM, as LLaDA's evaluation scores it.

A diffusion LM has no left-to-right factorisation, so ``log p(target | prefix)`` is estimated
by its evidence lower bound (LLaDA, eq. 6 / ``eval_llada.py``): mask ``t`` of the ``T``
target tokens, predict them in one forward, and weight the cross-entropy by ``T / t``. Monte
Carlo over the masks gives :func:`mc_loglikelihood`; the draws are LLaDA's: one ``t`` per
forward row, spread over ``[1, T]`` by a random offset plus ``T / batch`` strides, and a random
permutation per row to pick which tokens are masked. ``cfg`` is LLaDA's unsupervised
classifier-free guidance: a second forward with the prefix masked,
``uncond + (cfg + 1) * (cond - uncond)``.

:func:`greedy_suffix_matches` is LLaDA's ``is_greedy`` check (``suffix_greedy_prediction``):
unmask the target one token per forward, most confident first, and compare with the target.

Differences from the reference, none of which changes the estimator: the cross-entropy is
taken in float32 (the reference uses the model's dtype, bf16 for LLaDA-8B); only the target
columns go through the LM head; the draws come from ``generator`` (the reference uses the
global torch RNG), on the CPU, so a seed gives the same masks on every device.

:func:`dream_mc_loglikelihood` is the estimate of Dream's evaluation (``eval/eval.py`` in
DreamLM/Dream; Fast-dLLM's ``dream/eval.py`` is the same code), which differs from LLaDA's in
what it scores and how it draws the masks, so a Dream model gets its own:

* the continuation is scored with an end-of-text token appended that stays visible (Dream's
  ``_encode_pair`` adds ``eos`` and its ``_forward_process`` never masks the sequence's first
  and last columns): roughly ``log p(target | prefix, target ends here)``;
* each row draws a noise level ``t`` (a uniform offset plus ``i / batch`` strides, mod 1;
  ``p = (1 - eps) t + eps``) and masks every target token independently with probability
  ``p`` (Bernoulli, so a row may mask none), and the cross-entropy is divided by ``p``, not by
  the masked fraction. The logits are Dream's, read one column to the right, which paradecode's
  :class:`~paradecode.models.dream.DreamModel` returns already.

Both estimate the same evidence lower bound (as ``eps -> 0``) of different token sequences.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_arguments
from .inputs import model_device
from .models.hf import HFDiffusionAdapter

__all__ = ["mc_loglikelihood", "dream_mc_loglikelihood", "greedy_suffix_matches", "masked_draws", "bernoulli_draws",
           "diffusion_model"]

TokensLike = Union[torch.Tensor, Sequence[int]]


def diffusion_model(model: Any, mask_token_id: Optional[int] = None) -> Any:
    """``model`` as paradecode calls it, ``model(tokens, logits_range=...) -> logits``: our
    models as they are, any other module through :class:`HFDiffusionAdapter` (as the strategies
    wrap it)."""
    if isinstance(model, nn.Module) and not hasattr(model, "supports_cache"):
        return HFDiffusionAdapter(model, mask_token_id=mask_token_id)
    return model


def masked_draws(batch: int, target_len: int, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward's masks, drawn as LLaDA's ``_forward_process``: ``(is_mask (batch, T) bool,
    count (batch,))`` where row ``i`` masks ``count[i]`` of the ``T`` target tokens. The counts
    are ``k, k + T/batch, ...`` (rounded, wrapped into ``[1, T]``) from one uniform ``k``, so
    a forward covers the noise levels evenly; each row's masked positions are a random
    permutation's first ``count[i]``. On the CPU."""
    k = torch.randint(1, target_len + 1, (), generator=generator)
    count = torch.round(torch.linspace(float(k), float(k) + (batch - 1) * (target_len / batch), steps=batch)).long()
    count = (count - 1) % target_len + 1
    first = torch.arange(target_len)[None, :] < count[:, None]
    is_mask = torch.stack([first[i][torch.randperm(target_len, generator=generator)] for i in range(batch)])
    return is_mask, count


def bernoulli_draws(batch: int, length: int, sampling_eps: float = 1e-3,
                    generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward's masks, drawn as Dream's ``_forward_process`` over a whole ``length``-token
    sequence: ``(is_mask (batch, length) bool, p_mask (batch,))``. Row ``i``'s noise level is
    ``t_i = (u + i / batch) mod 1`` from one uniform ``u``, ``p_i = (1 - eps) t_i + eps``, and
    each column is masked with probability ``p_i``, except the first and the last (Dream keeps
    BOS and the appended EOS visible). On the CPU, in Dream's draw order (``u``, then the
    ``(batch, length)`` uniforms), so a seed gives Dream's masks."""
    u = torch.rand(1, generator=generator)
    t = (u + torch.arange(batch).float() / batch) % 1
    p_mask = (1 - sampling_eps) * t + sampling_eps
    is_mask = torch.rand((batch, length), generator=generator) < p_mask[:, None]
    is_mask[:, 0] = False
    is_mask[:, -1] = False
    return is_mask, p_mask


def _as_ids(tokens: TokensLike, name: str) -> torch.Tensor:
    ids = torch.as_tensor(tokens if isinstance(tokens, torch.Tensor) else list(tokens), dtype=torch.long)
    if ids.dim() != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {tuple(ids.shape)}.")
    return ids.cpu()


def _guided_logits(model: Any, tokens: torch.Tensor, prefix_len: int, mask_id: int, cfg: float) -> torch.Tensor:
    """Float32 logits of the target columns (``prefix_len`` on), with LLaDA's unsupervised CFG."""
    span = (prefix_len, tokens.shape[1])
    if cfg > 0:
        uncond = tokens.clone()
        uncond[:, :prefix_len] = mask_id
        cond_logits, uncond_logits = model(torch.cat([tokens, uncond]), logits_range=span).float().chunk(2)
        return uncond_logits + (cfg + 1) * (cond_logits - uncond_logits)
    return model(tokens, logits_range=span).float()


def _check(prefix: TokensLike, target: TokensLike, mask_id: int, cfg: float) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg < 0:
        raise ValueError(f"cfg must be >= 0 (0: no guidance; LLaDA uses 0 to 2), got {cfg}.")
    if mask_id < 0:
        raise ValueError(f"mask_id must be a token id (>= 0), got {mask_id}.")
    return _as_ids(prefix, "prefix"), _as_ids(target, "target")


def _check_mc(owner: Any, name: str, **values: Any) -> dict[str, Any]:
    checked = check_arguments(owner, name, **values)
    mc_num, batch_size = checked["mc_num"], checked["batch_size"]
    if batch_size < 1 or mc_num < 1 or mc_num % batch_size:
        raise ValueError(
            f"mc_num ({mc_num}) must be a positive multiple of batch_size ({batch_size}): each forward "
            f"scores batch_size masked copies (LLaDA and Dream: mc_num=128, batch_size=32)."
        )
    return checked


@torch.no_grad()
def mc_loglikelihood(
    model: Any,
    prefix: TokensLike,
    target: TokensLike,
    *,
    mask_id: int,
    mc_num: int = 128,
    batch_size: int = 32,
    cfg: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Monte Carlo estimate of ``log p(target | prefix)`` (LLaDA's ELBO; defaults as
    ``eval_llada.py``): ``mc_num`` masked copies of ``prefix + target``, ``batch_size`` per
    forward (``mc_num`` must be a multiple of it). An empty target has log-likelihood 0.

    ``model`` is called as paradecode calls a diffusion LM (``model(tokens, logits_range=...)``;
    see :func:`diffusion_model`); ``generator`` (a CPU generator) makes the masks reproducible.
    """
    checked = _check_mc(mc_loglikelihood, "mc_loglikelihood()", mask_id=mask_id, mc_num=mc_num,
                        batch_size=batch_size, cfg=cfg)
    mask_id, mc_num, batch_size, cfg = checked["mask_id"], checked["mc_num"], checked["batch_size"], checked["cfg"]
    prefix_ids, target_ids = _check(prefix, target, mask_id, cfg)
    T = len(target_ids)
    if T == 0:
        return 0.0
    device = model_device(model)
    seq = torch.cat([prefix_ids, target_ids]).to(device)
    P = len(prefix_ids)
    target_rows = target_ids.to(device).expand(batch_size, T)
    losses = []
    for _ in range(mc_num // batch_size):
        is_mask, count = masked_draws(batch_size, T, generator)
        is_mask = is_mask.to(seq.device)
        noisy = seq.expand(batch_size, -1).clone()
        noisy[:, P:] = torch.where(is_mask, mask_id, target_rows)
        logits = _guided_logits(model, noisy, P, mask_id, cfg)
        weight = (count.to(seq.device).float() / T)[:, None].expand(batch_size, T)
        ce = F.cross_entropy(logits[is_mask], target_rows[is_mask], reduction="none") / weight[is_mask]
        losses.append(ce.sum().item() / batch_size)
    return -sum(losses) / len(losses)


@torch.no_grad()
def dream_mc_loglikelihood(
    model: Any,
    prefix: TokensLike,
    target: TokensLike,
    *,
    mask_id: int,
    eos_id: int,
    mc_num: int = 128,
    batch_size: int = 32,
    sampling_eps: float = 1e-3,
    cfg: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Monte Carlo estimate of Dream's evaluation (``_eval_target_nll_mc``, its defaults; see the
    module docstring): ``prefix + target + [eos_id]``, ``batch_size`` noised copies per forward
    (:func:`bernoulli_draws`, only the target's draws kept), the masked tokens' cross-entropy
    divided by the row's ``p_mask``, summed, averaged over rows and forwards, negated.

    ``model`` must give Dream's logits already shifted (column i predicts token i), as
    :class:`~paradecode.models.dream.DreamModel` and ``HFDiffusionAdapter.dream`` do. ``cfg``
    masks the prefix for the unconditional pass, as :func:`mc_loglikelihood`; Dream's
    ``classifier_free_guidance`` scale ``w`` is ``cfg + 1``. An empty target scores 0.
    """
    checked = _check_mc(dream_mc_loglikelihood, "dream_mc_loglikelihood()", mask_id=mask_id, eos_id=eos_id,
                        mc_num=mc_num, batch_size=batch_size, sampling_eps=sampling_eps, cfg=cfg)
    mask_id, eos_id, cfg, eps = checked["mask_id"], checked["eos_id"], checked["cfg"], checked["sampling_eps"]
    mc_num, batch_size = checked["mc_num"], checked["batch_size"]
    if not 0 <= eps < 1:
        raise ValueError(f"sampling_eps must be in [0, 1) (Dream: 1e-3, the smallest mask probability), got {eps}.")
    prefix_ids, target_ids = _check(prefix, target, mask_id, cfg)
    if len(target_ids) == 0:
        return 0.0
    device = model_device(model)
    P = len(prefix_ids)
    seq = torch.cat([prefix_ids, target_ids, torch.tensor([eos_id])]).to(device)
    rows = seq[P:].expand(batch_size, -1)
    losses = []
    for _ in range(mc_num // batch_size):
        is_mask, p_mask = bernoulli_draws(batch_size, len(seq), eps, generator)
        is_mask, p_mask = is_mask[:, P:].to(device), p_mask.to(device)
        noisy = seq.expand(batch_size, -1).clone()
        noisy[:, P:] = torch.where(is_mask, mask_id, rows)
        logits = _guided_logits(model, noisy, P, mask_id, cfg)
        weight = p_mask[:, None].expand_as(is_mask)
        ce = F.cross_entropy(logits[is_mask], rows[is_mask], reduction="none") / weight[is_mask]
        losses.append(ce.sum().item() / batch_size)
    return -sum(losses) / len(losses)


@torch.no_grad()
def greedy_suffix_matches(model: Any, prefix: TokensLike, target: TokensLike, *, mask_id: int, cfg: float = 0.0) -> bool:
    """True when decoding the fully masked target one token per forward (the most confident
    masked position takes its argmax, as LLaDA's ``suffix_greedy_prediction``) gives ``target``."""
    checked = check_arguments(greedy_suffix_matches, "greedy_suffix_matches()", mask_id=mask_id, cfg=cfg)
    mask_id, cfg = checked["mask_id"], checked["cfg"]
    prefix_ids, target_ids = _check(prefix, target, mask_id, cfg)
    T, P = len(target_ids), len(prefix_ids)
    if T == 0:
        return True
    device = model_device(model)
    seq = torch.cat([prefix_ids, torch.full((T,), mask_id, dtype=torch.long)])[None].to(device)
    for _ in range(T):
        masked = seq[0, P:] == mask_id
        if not bool(masked.any()):
            break
        logits = _guided_logits(model, seq, P, mask_id, cfg)[0][masked]
        x0 = logits.argmax(-1)
        confidence = torch.softmax(logits, -1).gather(-1, x0[:, None]).squeeze(-1)
        best = int(confidence.argmax())
        columns = torch.nonzero(masked).flatten() + P
        seq[0, columns[best]] = x0[best]
    return bool((seq[0, P:].cpu() == target_ids).all())
