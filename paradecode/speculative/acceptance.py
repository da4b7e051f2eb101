"""The acceptance rule of speculative sampling (Leviathan et al. 2023, Chen et al. 2023).

Draft tokens d_1..d_k come from q, the target scores them: p_1..p_{k+1}. Token i is accepted
with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection one token is drawn from
norm(max(0, p_i - q_i)); if every draft is accepted a bonus token is drawn from p_{k+1}. The
result is distributed exactly as sampling from p alone. Greedy: accept while d_i equals the
target's argmax, then append the target's argmax. Rows of a batch are independent and may
have drafted different lengths (an adaptive draft stops early).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .noise import DrawnNoise, sample_categorical

__all__ = ["warp_probs", "accept_greedy", "accept_sampled", "leading_true", "first_eos"]


def warp_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Sampling distribution from logits (float32): temperature, then top-k, then top-p.

    The same warping is applied to the draft's and the target's logits (as transformers'
    assisted generation applies its logits processors to both); losslessness is with respect
    to the warped target distribution.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits.softmax(-1)


def first_eos(tokens: torch.Tensor, eos_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) column of each row's first EOS among its first ``lengths`` tokens of ``tokens`` (B, n);
    n where there is none. A broadcast compare, not ``torch.isin``: isin sorts with ``unique``
    (a read of the device) once the id set is larger than about 10 n^0.145, and a recorded step
    cannot hold a read (40 EOS ids over a 6-token step broke the recording on a GPU)."""
    n = tokens.shape[1]
    j = torch.arange(n, device=tokens.device)
    hit = (tokens[..., None] == eos_ids).any(-1) & (j[None, :] < lengths[:, None])
    return torch.where(hit, j[None, :], n).min(1).values


def leading_true(ok: torch.Tensor) -> torch.Tensor:
    """(rows, k) bool -> (rows,) length of each row's leading run of True."""
    return ok.long().cumprod(dim=1).sum(dim=1)


def _limit(draft_len: Optional[torch.Tensor], k: int, like: torch.Tensor) -> torch.Tensor:
    j = torch.arange(k, device=like.device)
    if draft_len is None:
        return torch.ones(like.shape[0], k, dtype=torch.bool, device=like.device)
    return j[None, :] < draft_len[:, None]


def accept_greedy(
    drafts: torch.Tensor, target_logits: torch.Tensor, draft_len: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification.

    Args:
        drafts: (rows, k) drafted token ids.
        target_logits: (rows, k + 1, V) target logits at the positions that predict
            d_1..d_k and the token after d_k.
        draft_len: (rows,) how many drafts each row proposes (<= k); None = all k.
    Returns:
        (accepted (rows,), next_token (rows,)): the number of drafts kept and the target's
        token that follows them.
    """
    k = drafts.shape[1]
    best = target_logits.argmax(-1)  # (rows, k + 1)
    n = leading_true((drafts == best[:, :k]) & _limit(draft_len, k, drafts))
    return n, best.gather(1, n[:, None]).squeeze(1)


def accept_sampled(
    drafts: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    draft_len: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    noise: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lossless speculative sampling.

    Args:
        drafts: (rows, k) draft tokens, d_i ~ q_i.
        draft_probs: (rows, k, V) q_i over the target's vocabulary (zero outside a trimmed
            draft vocabulary).
        target_probs: (rows, k + 1, V) p_1..p_{k+1}.
        draft_len: (rows,) drafts each row proposes (<= k); None = all k.
        generator: for the uniform draws and the final token.
        noise: where those numbers come from instead (:mod:`.noise`: a recorded step's
            :class:`~.noise.KeptNoise`); None: drawn from ``generator``.
    Returns:
        (accepted (rows,), next_token (rows,)).
    """
    rows, k = drafts.shape
    idx = drafts[..., None]
    p_d = target_probs[:, :k].gather(2, idx).squeeze(2)
    q_d = draft_probs.gather(2, idx).squeeze(2)
    noise = noise if noise is not None else DrawnNoise(generator)
    u = noise.accept(p_d)
    # u < p/q written without a division (q_d > 0: d was sampled from q).
    ok = (u * q_d < p_d) & _limit(draft_len, k, drafts)
    n = leading_true(ok)
    r = torch.arange(rows, device=drafts.device)
    p_next = target_probs[r, n]  # (rows, V)
    limit = torch.full_like(n, k) if draft_len is None else draft_len
    rejected = n < limit
    if k > 0:
        q_next = draft_probs[r, n.clamp(max=k - 1)]
        residual = (p_next - q_next).clamp(min=0)
        mass = residual.sum(-1, keepdim=True)
        # A rejection implies p < q somewhere, hence mass > 0; guard against round-off anyway.
        residual = torch.where(mass > 0, residual / mass.clamp(min=torch.finfo(mass.dtype).tiny), p_next)
        p_next = torch.where(rejected[:, None], residual, p_next)
    return n, sample_categorical(p_next, noise.final(p_next))
