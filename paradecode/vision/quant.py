"""VAR's multi-scale residual quantizer (``VectorQuantizer2`` in FoundationVision/VAR).

An image feature map f (C, H, W) becomes a pyramid of token maps r_1..r_K of growing side
``v_patch_nums``: at scale k the residual ``f - f_hat`` is area-downsampled to (p_k, p_k) and
each position takes its nearest code; the codes are bicubic-upsampled back to (H, W), passed
through a small conv ``Phi`` and added to ``f_hat``. Generation runs the same accumulation from
sampled tokens (:meth:`VectorQuantizer2.get_next_autoregressive_input`).

Attribute names match the official module, so its state dict loads unchanged
(``embedding.weight``, ``quant_resi.qresi_ls.{i}.weight``, the ``ema_vocab_hit_SV`` buffer).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Phi", "PhiShared", "PhiPartiallyShared", "PhiNonShared", "VectorQuantizer2", "phi_index"]


def _phi_ticks(count: int) -> np.ndarray:
    # The official tick layout; with 4 shared convs the ticks sit at 1/12, 1/3+1/12 ...
    if count == 4:
        return np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
    return np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)


def phi_index(ticks: np.ndarray, at: float) -> int:
    """Index of the conv used at relative depth ``at`` = si / (S - 1): the nearest tick.

    Computed in float64 numpy like the reference, because two of the 10 official scales
    (si = 3 and si = 6 with 4 ticks) are exact ties that float64 rounding settles.
    """
    return int(np.argmin(np.abs(ticks - at)))


class Phi(nn.Conv2d):
    """The residual refinement ``h -> (1 - r) h + r conv3x3(h)`` applied to each upsampled scale."""

    def __init__(self, embed_dim: int, quant_resi: float) -> None:
        super().__init__(embed_dim, embed_dim, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return h * (1 - self.resi_ratio) + super().forward(h) * self.resi_ratio


class PhiShared(nn.Module):
    """One Phi for every scale (``share_quant_resi == 1``)."""

    def __init__(self, qresi: nn.Module) -> None:
        super().__init__()
        self.qresi = qresi

    def __getitem__(self, at: float) -> nn.Module:
        return self.qresi


class PhiPartiallyShared(nn.Module):
    """K Phis shared across scales by nearest tick (the official default, K = 4)."""

    def __init__(self, qresi_ls: nn.ModuleList) -> None:
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = _phi_ticks(len(qresi_ls))

    def __getitem__(self, at: float) -> nn.Module:
        return self.qresi_ls[phi_index(self.ticks, at)]


class PhiNonShared(nn.ModuleList):
    """One Phi per scale (``share_quant_resi == 0``)."""

    def __init__(self, qresi: List[nn.Module]) -> None:
        super().__init__(qresi)
        self.ticks = _phi_ticks(len(qresi))

    def __getitem__(self, at: float) -> nn.Module:  # type: ignore[override]
        return super().__getitem__(phi_index(self.ticks, at))


class VectorQuantizer2(nn.Module):
    """Multi-scale residual vector quantizer with the official parameter names."""

    def __init__(
        self,
        vocab_size: int,
        Cvae: int,
        using_znorm: bool = False,
        beta: float = 0.25,
        default_qresi_counts: int = 0,
        v_patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
    ) -> None:
        super().__init__()
        self.vocab_size, self.Cvae = vocab_size, Cvae
        self.using_znorm, self.beta = using_znorm, beta
        self.v_patch_nums: Tuple[int, ...] = tuple(v_patch_nums)
        self.quant_resi_ratio = quant_resi

        def make() -> nn.Module:
            return Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity()

        if share_quant_resi == 0:
            self.quant_resi = PhiNonShared([make() for _ in range(default_qresi_counts or len(self.v_patch_nums))])
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(make())
        else:
            self.quant_resi = PhiPartiallyShared(nn.ModuleList([make() for _ in range(share_quant_resi)]))
        # Usage statistics of codes per scale, kept by the official training; part of its state dict.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.v_patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, Cvae)

    @property
    def num_scales(self) -> int:
        return len(self.v_patch_nums)

    def phi(self, si: int, num_scales: Optional[int] = None) -> nn.Module:
        SN = num_scales or self.num_scales
        return self.quant_resi[si / (SN - 1)]

    # ---- nearest codes ---------------------------------------------------------------------
    def _nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        w = self.embedding.weight.detach()
        if self.using_znorm:
            return torch.argmax(F.normalize(z_NC, dim=-1) @ F.normalize(w.T, dim=0), dim=1)
        d = z_NC.square().sum(1, keepdim=True) + w.square().sum(1)[None, :] - 2 * z_NC @ w.T
        return torch.argmin(d, dim=1)

    def walk(self, f: torch.Tensor, patch_nums: Optional[Sequence[int]] = None):
        """Yield ``(si, pn, z_NC, idx, h)`` per scale, coarse to fine: the residual at the scale's
        size (N, C), its nearest codes, and their Phi-refined contribution ``h`` at full size
        (differentiable w.r.t. the codebook and Phi). The residual is updated after each yield."""
        B, C, H, W = f.shape
        pns = tuple(patch_nums or self.v_patch_nums)
        if pns[-1] != H or pns[-1] != W:
            raise ValueError(f"the last patch number {pns[-1]} must equal the feature map size ({H}x{W}).")
        SN = len(pns)
        f_rest = f.detach().float().clone()
        for si, pn in enumerate(pns):
            z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != SN - 1 else f_rest
            z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
            idx = self._nearest(z_NC)
            h = self.embedding(idx.view(B, pn, pn)).permute(0, 3, 1, 2)
            if si != SN - 1:
                h = F.interpolate(h, size=(H, W), mode="bicubic")
            h = self.phi(si, SN)(h.contiguous())
            yield si, pn, z_NC, idx, h
            f_rest = f_rest - h.detach()

    def forward(self, f: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training pass: straight-through f_hat and the VQ loss averaged over scales."""
        f = f.float()
        f_no_grad = f.detach()
        f_hat = torch.zeros_like(f_no_grad)
        loss = f.new_zeros(())
        for _, _, _, _, h in self.walk(f):
            f_hat = f_hat + h
            # commitment (to the encoder) + codebook/Phi term, as in the reference
            loss = loss + F.mse_loss(f_hat.detach(), f) * self.beta + F.mse_loss(f_hat, f_no_grad)
        loss = loss / self.num_scales
        return (f_hat.detach() - f_no_grad) + f, loss  # straight-through estimator

    # ---- tokenizer API ---------------------------------------------------------------------
    def f_to_idxBl_or_fhat(
        self, f: torch.Tensor, to_fhat: bool, v_patch_nums: Optional[Sequence[int]] = None
    ) -> List[torch.Tensor]:
        """Per scale: token ids (B, p*p), or the accumulated f_hat when ``to_fhat``."""
        B = f.shape[0]
        f_hat = torch.zeros_like(f, dtype=torch.float32)
        out = []
        for _, pn, _, idx, h in self.walk(f, v_patch_nums):
            f_hat = f_hat + h
            out.append(f_hat if to_fhat else idx.view(B, pn * pn))
        return out

    def embed_to_fhat(self, ms_h_BChw: List[torch.Tensor], last_one: bool = False):
        """Sum of the upsampled, Phi-refined code maps (all scales brought to the last size)."""
        B = ms_h_BChw[0].shape[0]
        H = W = self.v_patch_nums[-1]
        SN = self.num_scales
        f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, H, W, dtype=torch.float32)
        out = []
        for si in range(SN):
            h = ms_h_BChw[si]
            if si < SN - 1:
                h = F.interpolate(h, size=(H, W), mode="bicubic")
            f_hat = f_hat + self.phi(si)(h)
            out.append(f_hat)
        return f_hat if last_one else out

    def idxBl_to_var_input(self, gt_ms_idx_Bl: List[torch.Tensor]) -> Optional[torch.Tensor]:
        """Teacher-forcing inputs of VAR: area-downsampled f_hat after each scale but the last,
        concatenated over scales 1..K-1 -> (B, L - first_l, Cvae)."""
        B = gt_ms_idx_Bl[0].shape[0]
        H = W = self.v_patch_nums[-1]
        SN = self.num_scales
        f_hat = torch.zeros(B, self.Cvae, H, W, device=gt_ms_idx_Bl[0].device)
        nxt = []
        for si in range(SN - 1):
            pn = self.v_patch_nums[si]
            h = self.embedding(gt_ms_idx_Bl[si]).transpose(1, 2).reshape(B, self.Cvae, pn, pn)
            f_hat = f_hat + self.phi(si)(F.interpolate(h, size=(H, W), mode="bicubic"))
            pn_next = self.v_patch_nums[si + 1]
            nxt.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, self.Cvae, -1).transpose(1, 2))
        return torch.cat(nxt, dim=1) if nxt else None

    def get_next_autoregressive_input(
        self, si: int, SN: int, f_hat: torch.Tensor, h_BChw: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Add scale ``si``'s codes to ``f_hat`` (in place) and return the next scale's input
        (f_hat area-downsampled to the next patch size; f_hat itself after the last scale)."""
        HW = self.v_patch_nums[-1]
        if si != SN - 1:
            f_hat.add_(self.phi(si, SN)(F.interpolate(h_BChw, size=(HW, HW), mode="bicubic")))
            pn = self.v_patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area")
        f_hat.add_(self.phi(si, SN)(h_BChw))
        return f_hat, f_hat
