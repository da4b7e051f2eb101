"""VAR's multi-scale VQ-VAE tokenizer: image <-> token pyramid.

The encoder/decoder are the latent-diffusion VQ-f16 convolutional pair (ResNet blocks,
GroupNorm(32), self-attention at the lowest resolution) and the quantizer is
:class:`~paradecode.vision.quant.VectorQuantizer2`. Module and parameter names follow
FoundationVision/VAR ``models/vqvae.py`` and ``models/basic_vae.py``, so the official
``vae_ch160v4096z32.pth`` (``VQVAEConfig()`` defaults: ch 160, vocabulary 4096, 32 latent
channels, patch numbers 1..16) loads with :meth:`VQVAE.load_official`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoints import ConfigDict
from .quant import VectorQuantizer2

__all__ = ["VQVAEConfig", "VQVAE", "OFFICIAL_VAE_FILE"]

OFFICIAL_VAE_FILE = "vae_ch160v4096z32.pth"  # https://huggingface.co/FoundationVision/var


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=c, eps=1e-6, affine=True)


class Upsample2x(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample2x(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class ResnetBlock(nn.Module):
    def __init__(self, *, in_channels: int, out_channels: Optional[int] = None, dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused 1x1 qkv conv (official layout)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.C = c
        self.norm = _norm(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * C**-0.5, dim=2)  # (B, HWq, HWk)
        h = torch.bmm(v, w.transpose(1, 2)).view(B, C, H, W)
        return x + self.proj_out(h)


def _attn(c: int, on: bool) -> nn.Module:
    return AttnBlock(c) if on else nn.Identity()


class Encoder(nn.Module):
    def __init__(
        self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, dropout: float, in_channels: int,
        z_channels: int, using_sa: bool = True, using_mid_sa: bool = True,
    ) -> None:
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for i in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout))
                block_in = block_out
                if i == self.num_resolutions - 1 and using_sa:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i != self.num_resolutions - 1:
                down.downsample = Downsample2x(block_in)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, dropout=dropout)
        self.mid.attn_1 = _attn(block_in, using_mid_sa)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, dropout=dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, down in enumerate(self.down):
            for j in range(self.num_res_blocks):
                h = down.block[j](h)
                if len(down.attn):
                    h = down.attn[j](h)
            if i != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(
        self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, dropout: float, in_channels: int,
        z_channels: int, using_sa: bool = True, using_mid_sa: bool = True,
    ) -> None:
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, dropout=dropout)
        self.mid.attn_1 = _attn(block_in, using_mid_sa)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, dropout=dropout)
        self.up = nn.ModuleList()
        for i in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout))
                block_in = block_out
                if i == self.num_resolutions - 1 and using_sa:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i != 0:
                up.upsample = Upsample2x(block_in)
            self.up.insert(0, up)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, in_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(self.num_resolutions)):
            up = self.up[i]
            for j in range(self.num_res_blocks + 1):
                h = up.block[j](h)
                if len(up.attn):
                    h = up.attn[j](h)
            if i != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class VQVAEConfig(ConfigDict):
    """Hyper-parameters of the tokenizer; the defaults are the official ``vae_ch160v4096z32``."""

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    dropout: float = 0.0
    beta: float = 0.25
    using_znorm: bool = False
    quant_conv_ks: int = 3
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    default_qresi_counts: int = 0
    v_patch_nums: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    in_channels: int = 3
    using_sa: bool = True
    using_mid_sa: bool = True

    def __post_init__(self) -> None:
        self.ch_mult, self.v_patch_nums = tuple(self.ch_mult), tuple(self.v_patch_nums)
        for c in {self.ch * m for m in self.ch_mult}:
            if c % 32:
                raise ValueError(f"ch * ch_mult must be multiples of 32 (GroupNorm(32)); got a width of {c}.")
        if list(self.v_patch_nums) != sorted(set(self.v_patch_nums)):
            raise ValueError(f"v_patch_nums must strictly increase, got {self.v_patch_nums}.")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.v_patch_nums[-1] * self.downsample



class VQVAE(nn.Module):
    """Encoder -> quant_conv -> multi-scale quantizer -> post_quant_conv -> decoder.

    Images are in [-1, 1]. ``img_to_idxBl`` gives the token pyramid, ``idxBl_to_img`` and
    ``fhat_to_img`` decode it.
    """

    def __init__(self, config: Optional[VQVAEConfig] = None) -> None:
        super().__init__()
        c = self.config = config or VQVAEConfig()
        self.V, self.Cvae, self.vocab_size = c.vocab_size, c.z_channels, c.vocab_size
        dd = dict(
            ch=c.ch, ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks, dropout=c.dropout,
            in_channels=c.in_channels, z_channels=c.z_channels, using_sa=c.using_sa, using_mid_sa=c.using_mid_sa,
        )
        self.encoder = Encoder(**dd)
        self.decoder = Decoder(**dd)
        self.downsample = c.downsample
        self.quantize = VectorQuantizer2(
            vocab_size=c.vocab_size, Cvae=c.z_channels, using_znorm=c.using_znorm, beta=c.beta,
            default_qresi_counts=c.default_qresi_counts, v_patch_nums=c.v_patch_nums,
            quant_resi=c.quant_resi, share_quant_resi=c.share_quant_resi,
        )
        ks = c.quant_conv_ks
        self.quant_conv = nn.Conv2d(c.z_channels, c.z_channels, ks, 1, ks // 2)
        self.post_quant_conv = nn.Conv2d(c.z_channels, c.z_channels, ks, 1, ks // 2)

    # ---- training ---------------------------------------------------------------------------
    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (straight-through) and VQ loss, for training."""
        f_hat, vq_loss = self.quantize(self.quant_conv(self.encoder(img)))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss

    # ---- tokenizer --------------------------------------------------------------------------
    def _check_image(self, img: torch.Tensor) -> None:
        size = self.config.image_size
        if img.dim() != 4 or img.shape[1] != self.config.in_channels or tuple(img.shape[2:]) != (size, size):
            raise ValueError(
                f"images must be (B, {self.config.in_channels}, {size}, {size}) in [-1, 1] for this VQ-VAE; "
                f"got {tuple(img.shape)}."
            )

    def img_to_idxBl(self, img: torch.Tensor) -> List[torch.Tensor]:
        """Token ids per scale, each (B, p*p)."""
        self._check_image(img)
        return self.quantize.f_to_idxBl_or_fhat(self.quant_conv(self.encoder(img)), to_fhat=False)

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Decode an accumulated f_hat to an image in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def idxBl_to_img(self, ms_idx_Bl: List[torch.Tensor]) -> torch.Tensor:
        """Decode a full token pyramid to an image in [-1, 1]."""
        B = ms_idx_Bl[0].shape[0]
        hs = []
        for idx in ms_idx_Bl:
            pn = round(idx.shape[1] ** 0.5)
            hs.append(self.quantize.embedding(idx).transpose(1, 2).reshape(B, self.Cvae, pn, pn))
        return self.fhat_to_img(self.quantize.embed_to_fhat(hs, last_one=True))

    def img_to_reconstructed_img(self, img: torch.Tensor) -> torch.Tensor:
        return self.idxBl_to_img(self.img_to_idxBl(img))

    # ---- checkpoints ------------------------------------------------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        # The official loader accepts a usage buffer recorded for another number of scales.
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape != self.quantize.ema_vocab_hit_SV.shape:
            state_dict = dict(state_dict)
            state_dict[key] = self.quantize.ema_vocab_hit_SV.clone()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def save_pretrained(self, directory: str | os.PathLike, dtype: Optional[torch.dtype] = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` (optionally cast, e.g. to float16)."""
        from .checkpoints import save_module

        save_module(self, self.config.to_dict(), directory, dtype)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "VQVAE":
        from .checkpoints import load_module

        return load_module(cls, VQVAEConfig, directory, device)

    @classmethod
    def load_official(
        cls, path: str | os.PathLike, config: Optional[VQVAEConfig] = None, device: str | torch.device = "cpu"
    ) -> "VQVAE":
        """Load the official ``vae_ch160v4096z32.pth`` (a plain ``torch.save`` state dict).

        Frozen as the official ``VQVAE(test_mode=True)`` is: eval mode and every parameter with
        ``requires_grad=False``. The VAR tokenizer is never trained downstream, and a trainable
        codebook would make ``more_smooth``'s soft code mix (and any decode run outside
        ``inference_mode``) record an autograd graph the reference never builds.
        """
        from .checkpoints import read_state_dict

        model = cls(config)
        model.load_state_dict(read_state_dict(path), strict=True)
        return model.to(device).eval().requires_grad_(False)
