"""Mechanics every diffusion-LM strategy shares: noise, confidence, schedules, selection.

Each function states the reference behaviour it reproduces (LLaDA ``generate.py``,
Fast-dLLM ``generate.py``); strategies import these instead of re-implementing them.
All work on the current block window: (batch, block_length[, vocab]) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .confidence_kernel import top1_confidence
from .topk_kernel import threshold_rank_mask, topk_rank_mask

NEG_INF = float("-inf")


def add_gumbel_noise(
    logits: torch.Tensor,
    temperature: float,
    generator: Optional[torch.Generator] = None,
    uniform: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Gumbel-max scores whose argmax samples from softmax(logits / temperature).

    LLaDA computes ``exp(logits) / (-log u) ** temperature`` in float64; we return its log,
    ``logits - temperature * log(-log u)``, from the same uniforms (one float64 draw per
    element), so the argmax and the generator's consumption are LLaDA's wherever its form is
    finite. The exp form divides 0 by 0 for a -inf logit (the excluded mask token) once the
    power overflows (temperature ~1000) and ``argmax`` then picks the NaN; here -inf stays
    -inf at every temperature, and ``inf`` is the limit (uniform over finite logits).
    Temperature 0 returns the logits unchanged (greedy). ``uniform`` gives the draws (shaped
    like ``logits``) instead of drawing them here (:class:`StepNoise`).
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    u = uniform if uniform is not None else torch.rand(
        logits.shape, dtype=torch.float64, device=logits.device, generator=generator
    )
    neg_gumbel = torch.log(-torch.log(u))
    scores = -neg_gumbel if temperature == float("inf") else logits - temperature * neg_gumbel
    # -inf - (-inf) is NaN when temperature * log(-log u) overflows; an excluded token stays out.
    return torch.where(logits == NEG_INF, NEG_INF, scores)


def forbid_token(logits: torch.Tensor, token_id: Optional[int]) -> torch.Tensor:
    """Logits with ``token_id`` (the mask token) at -inf: a prediction can never be a mask.

    The references leave it in; a trained model gives it ~0 probability, so this changes
    nothing there, but keeps an untrained or sampled model from "committing" a mask.
    """
    if token_id is None or token_id >= logits.shape[-1]:
        return logits
    logits = logits.clone()
    logits[..., token_id] = NEG_INF
    return logits


@dataclass
class StepNoise:
    """One step's random draws over the visible canvas, made as LLaDA's ``generate`` makes them:
    first the Gumbel uniforms of every (row, column, vocabulary entry) in float64 (temperature
    > 0), then one uniform per (row, column) for ``random`` remasking. Drawing them for the whole
    canvas (not only the block) is what makes the same seed give LLaDA's tokens; a rule then
    reads the block's part (:meth:`at`) or all of it (full-canvas predictions)."""

    gumbel: Optional[torch.Tensor]  # (n, C, V) float64
    remask: Optional[torch.Tensor]  # (n, C) float32

    @classmethod
    def draw(
        cls, rows: int, width: int, vocab: int, temperature: float, remasking: str,
        generator: Optional[torch.Generator], device: torch.device,
    ) -> Optional["StepNoise"]:
        if temperature == 0 and remasking != "random":
            return None
        gumbel = None
        if temperature != 0:
            gumbel = torch.rand((rows, width, vocab), dtype=torch.float64, device=device, generator=generator)
        remask = torch.rand((rows, width), device=device, generator=generator) if remasking == "random" else None
        return cls(gumbel, remask)

    def at(self, columns: torch.Tensor) -> "StepNoise":
        """The draws at (n, W) canvas columns."""
        idx = torch.arange(columns.shape[0], device=columns.device)[:, None]
        return StepNoise(
            None if self.gumbel is None else self.gumbel[idx, columns],
            None if self.remask is None else self.remask[idx, columns],
        )


_fused_confidence = True


def fused_confidence(enable: bool = True) -> None:
    """Whether greedy low-confidence steps on a GPU take the argmax and its float64 softmax
    probability from one Triton pass (the default) or from PyTorch's softmax array (for an A/B,
    ``benchmarks/confidence_kernel.py``). The rules' own kernels follow the same switch:
    CreditDecoding's update (``credit_kernel.py``), Prophet's answer-window gap
    (``prophet_kernel.py``), EB's and dParallel's entropy. Process-wide. The greedy confidence is
    the same either way; the rules' values agree to float32 rounding, so a decision could differ
    only where a value sits that close to its threshold (tokens were equal in every test and GPU
    check)."""
    global _fused_confidence
    _fused_confidence = bool(enable)


def sampler_kernels_run(logits: torch.Tensor) -> bool:
    """Whether the samplers' Triton kernels run (:func:`predict`'s and the rules' own): on a GPU
    (tests force them under the interpreter)."""
    return _fused_confidence and logits.is_cuda


_selection_kernels = False


def selection_kernels(enable: bool = True) -> None:
    """Whether the selection kernels replace PyTorch on a GPU: the ranking of each row's k most
    confident positions and Fast-dLLM's threshold rule (:mod:`~paradecode.samplers.topk_kernel`),
    and Learn2PD's filter verdict (:func:`~paradecode.samplers.learn2pd_kernel.filter_accept`).
    Off by default until a GPU run has measured them (``benchmarks/select_kernels.py``) and
    checked whole generations against PyTorch's (``benchmarks/kernel_tokens.py``); the tests run
    them under Triton's interpreter. Among equally confident positions the ranking keeps the
    smaller column (a per-row ``torch.topk(k)``'s set on a GPU), where PyTorch's path keeps what
    a ``topk`` of the whole block orders first. Process-wide; ``fused_confidence(False)`` turns
    them off too."""
    global _selection_kernels
    _selection_kernels = bool(enable)


def selection_kernels_run(t: torch.Tensor) -> bool:
    """Whether :func:`selection_kernels` replace PyTorch for the step's tensor ``t``."""
    return _selection_kernels and sampler_kernels_run(t)


def greedy_kernel_runs(temperature: float, remasking: str, logits: torch.Tensor) -> bool:
    """Whether a step's predictions of ``logits`` come from the greedy confidence kernels
    (:func:`predict`'s one pass, the end-of-text ranking): greedy low-confidence steps on a GPU."""
    return temperature == 0 and remasking == "low_confidence" and sampler_kernels_run(logits)


def predict(
    logits: torch.Tensor,
    temperature: float,
    remasking: str,
    generator: Optional[torch.Generator] = None,
    mask_id: Optional[int] = None,
    noise: Optional[StepNoise] = None,
    confidence: bool = True,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Predicted tokens and their confidence, as LLaDA / Fast-dLLM compute them.

    x0 is the argmax of the (Gumbel-noised) logits; confidence is the float64 softmax
    probability of x0 under the clean logits (``low_confidence``) or uniform noise
    (``random``). ``mask_id`` is excluded from predictions (see :func:`forbid_token`).
    ``noise`` gives the step's draws for these positions (else they are drawn here).
    Greedy low-confidence steps on a GPU take both from one Triton pass over the logits
    (:func:`~paradecode.samplers.confidence_kernel.top1_confidence`), not a float64 softmax array.
    ``confidence=False``: the tokens alone (confidence None), where the softmax would be made
    only to be dropped (the kernel then reads the logits once and makes no float64 sums).
    """
    if greedy_kernel_runs(temperature, remasking, logits):
        fused = top1_confidence(logits, mask_id, confidence)
        if fused is not None:
            return fused
    logits = forbid_token(logits, mask_id)
    gumbel = noise.gumbel if noise is not None else None
    x0 = add_gumbel_noise(logits, temperature, generator, gumbel).argmax(dim=-1)
    if not confidence and (remasking == "low_confidence" or (noise is not None and noise.remask is not None)):
        return x0, None  # (a "random" confidence drawn here is drawn still: the generator's stream stays)
    if remasking == "low_confidence":
        p = torch.softmax(logits.to(torch.float64), dim=-1)
        conf = p.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    elif remasking == "random":
        if noise is not None and noise.remask is not None:
            conf = noise.remask
        else:
            conf = torch.rand(x0.shape, device=x0.device, generator=generator)
    else:  # configs validate this; kept for direct callers
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    return x0, conf


def demote_tokens(confidence: torch.Tensor, x0: torch.Tensor, token_ids: tuple) -> torch.Tensor:
    """LLaDA's ``confidence_eos_eot_inf``: positions predicting one of ``token_ids`` (EOS,
    EOT) are committed after every other masked position of the block.

    LLaDA sets them to -inf, which ties with already-committed positions, so top-k can pick a
    committed one instead and leave a mask behind (and its code demotes EOS only through the
    noisy logits). We use -1, below every probability yet above -inf: the intent, not the tie.
    """
    demoted = torch.zeros_like(x0, dtype=torch.bool)
    for tid in token_ids:
        if tid is not None:
            demoted |= x0 == tid
    return torch.where(demoted, torch.full_like(confidence, -1.0), confidence)


def num_transfer_schedule(mask_count: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's per-step token counts: ``mask_count`` spread evenly over ``steps``,
    remainder to the first steps. (batch,) -> (batch, steps)."""
    base = mask_count // steps
    rem = mask_count % steps
    idx = torch.arange(steps, device=mask_count.device)
    return base[:, None] + (idx[None, :] < rem[:, None]).long()


def masked_confidence(conf: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Confidence with committed positions at -inf, so they are never selected again."""
    return torch.where(mask, conf, NEG_INF)


def topk_mask(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of each row's ``k[row]`` most confident positions.

    Ties are resolved by ``torch.topk`` over the row, as in the references (which call
    topk per row). One sort for the whole batch, no host sync. On a GPU one kernel ranks the
    rows instead where :func:`selection_kernels` are on (:func:`~paradecode.samplers.topk_kernel.topk_rank_mask`:
    ties to the smaller column, the set a per-row ``topk(k)`` keeps there). ``k`` may be bool (0 or 1 each).
    """
    if selection_kernels_run(confidence):
        out = topk_rank_mask(confidence, k.to(confidence.device))
        if out is not None:
            return out
    L = confidence.shape[-1]
    k = k.to(confidence.device).long().clamp(max=L)
    order = torch.topk(confidence, L, dim=-1).indices  # descending, topk's tie order
    ranked = torch.arange(L, device=confidence.device)[None, :] < k[:, None]
    return torch.empty_like(ranked).scatter_(-1, order, ranked)  # order is a permutation: every entry written


def threshold_mask(confidence: torch.Tensor, mask: torch.Tensor, threshold: float, strict: bool = False) -> torch.Tensor:
    """Fast-dLLM's threshold rule: every masked position with confidence >= threshold (``strict``:
    > threshold, as LLaDA2.1's editing), and always the single most confident one (so each step
    commits at least one token). The confidence of unmasked positions is not read. With
    :func:`selection_kernels` on, one kernel does it all on a GPU
    (:func:`~paradecode.samplers.topk_kernel.threshold_rank_mask`)."""
    if selection_kernels_run(confidence):
        out = threshold_rank_mask(confidence, mask, threshold, strict)
        if out is not None:
            return out
    confidence = masked_confidence(confidence, mask)
    top1 = topk_mask(confidence, mask.any(-1))
    above = confidence > threshold if strict else confidence >= threshold
    return (top1 | above) & mask


def factor_mask(confidence: torch.Tensor, mask: torch.Tensor, factor: float) -> torch.Tensor:
    """Fast-dLLM's factor rule (``get_transfer_index_dynamic``).

    With masked confidences sorted c_0 >= c_1 >= ..., the i-th (0-based, i >= 1) needs
    c_i >= 1 - factor / (i + 2); commit the leading run that passes. As in the reference,
    when only the last masked position fails, the whole run (all n) is committed.
    """
    n = mask.sum(-1)
    L = confidence.shape[-1]
    sorted_conf = torch.topk(confidence, L, dim=-1).values
    i = torch.arange(L, device=confidence.device, dtype=torch.float64)
    thresholds = 1.0 - factor / (i + 2.0)
    thresholds[0] = -1.0
    fails = (sorted_conf < thresholds[None, :]) & (i[None, :] < n[:, None])
    first_fail = torch.where(fails, i.long()[None, :], torch.full_like(n[:, None], L)).min(-1).values
    k = torch.where(first_fail >= n - 1, n, first_fail)
    return topk_mask(confidence, k) & mask
