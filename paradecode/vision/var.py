"""The VAR transformer (next-scale prediction), with the official parameter names.

A class-conditional GPT-style transformer over the concatenated token maps of all scales:
AdaLN blocks conditioned on the class embedding (which is also the first token), learned
absolute positions plus a per-scale level embedding, block-causal attention (a scale sees
itself and every coarser scale). Generation runs one scale per forward with a KV cache;
:meth:`VAR.step` is that forward, and the step loop (:mod:`paradecode.vision.generate`)
drives it. Names follow FoundationVision/VAR ``models/var.py`` / ``basic_var.py``, so the
official ``var_d16.pth`` ... ``var_d30.pth`` load with :meth:`VAR.load_official`
(``VARConfig.official(depth)``: width 64*depth, heads = depth, ``attn_l2_norm=True``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoints import ConfigDict
from .vqvae import VQVAE

__all__ = ["VARConfig", "VAR", "OFFICIAL_VAR_FILES"]

# https://huggingface.co/FoundationVision/var (256x256 unless noted; d36 is 512x512 with shared AdaLN)
OFFICIAL_VAR_FILES = {16: "var_d16.pth", 20: "var_d20.pth", 24: "var_d24.pth", 30: "var_d30.pth", 36: "var_d36.pth"}
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


@dataclass
class VARConfig(ConfigDict):
    """VAR hyper-parameters; ``VARConfig.official(depth)`` gives the released models'."""

    num_classes: int = 1000
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    shared_aln: bool = False
    cond_drop_rate: float = 0.1
    attn_l2_norm: bool = False
    patch_nums: Tuple[int, ...] = PATCH_NUMS_256
    vocab_size: int = 4096
    Cvae: int = 32
    drop_path_rate: float = 0.0  # stochastic depth, training only

    def __post_init__(self) -> None:
        self.patch_nums = tuple(self.patch_nums)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads}).")
        if list(self.patch_nums) != sorted(set(self.patch_nums)) or len(self.patch_nums) < 2:
            raise ValueError(f"patch_nums must be at least 2 strictly increasing sizes, got {self.patch_nums}.")

    @classmethod
    def official(cls, depth: int, **over: Any) -> "VARConfig":
        """The released configuration for ``var_d{depth}.pth`` (``build_vae_var`` in the reference)."""
        kw: dict[str, Any] = dict(
            depth=depth, embed_dim=depth * 64, num_heads=depth, attn_l2_norm=True,
            drop_path_rate=0.1 * depth / 24, shared_aln=depth == 36,
            patch_nums=PATCH_NUMS_512 if depth == 36 else PATCH_NUMS_256,
        )
        kw.update(over)
        return cls(**kw)

    @property
    def L(self) -> int:
        return sum(p * p for p in self.patch_nums)



class DropPath(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head attention with a fused qkv (q and v biases, no k bias) and optional
    L2-normalised q/k with a learned per-head scale (``attn_l2_norm``)."""

    def __init__(self, block_idx: int, embed_dim: int, num_heads: int, attn_l2_norm: bool) -> None:
        super().__init__()
        self.block_idx, self.num_heads, self.head_dim = block_idx, num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100.0)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor], cache: Any = None) -> torch.Tensor:
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1) * scale_mul
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v, _ = cache.update(self.block_idx, k, v, None)
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        if cache is not None:
            cache.after_attention(self.block_idx, q, self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNSelfAttn(nn.Module):
    """Pre-norm block whose LayerNorms take scale/shift/gate from the class condition."""

    def __init__(self, block_idx: int, config: VARConfig, drop_path: float) -> None:
        super().__init__()
        C = D = config.embed_dim
        self.block_idx, self.C = block_idx, C
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.attn = SelfAttention(block_idx, C, config.num_heads, config.attn_l2_norm)
        self.ffn = FFN(C, round(C * config.mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(C, eps=config.norm_eps, elementwise_affine=False)
        self.shared_aln = config.shared_aln
        if self.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / C**0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 6 * C))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: Optional[torch.Tensor], cache: Any = None) -> torch.Tensor:
        if self.shared_aln:
            ada = self.ada_gss + cond_BD  # cond_BD is already (B, 1, 6, C)
        else:
            ada = self.ada_lin(cond_BD).view(-1, 1, 6, self.C)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada.unbind(2)
        h = self.attn(self.ln_wo_grad(x) * (scale1 + 1) + shift1, attn_bias, cache)
        x = x + self.drop_path(h * gamma1)
        h = self.ffn(self.ln_wo_grad(x) * (scale2 + 1) + shift2)
        return x + self.drop_path(h * gamma2)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, eps: float) -> None:
        super().__init__()
        self.C = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x) * (scale + 1) + shift


class SharedAdaLin(nn.Linear):
    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(cond_BD).view(-1, 1, 6, self.weight.shape[0] // 6)


class VAR(nn.Module):
    """Class-conditional next-scale prediction transformer.

    ``vae`` (optional) is kept outside the module tree, as in the reference, so the state dict
    holds only the transformer; generation needs it to turn sampled tokens into the next
    scale's input.
    """

    def __init__(self, config: Optional[VARConfig] = None, vae: Optional[VQVAE] = None) -> None:
        super().__init__()
        c = self.config = config or VARConfig()
        self.vae_proxy: Tuple[Optional[VQVAE]] = (vae,)
        if vae is not None:
            self._check_vae(vae)
        self.C = self.D = c.embed_dim
        self.V, self.Cvae, self.depth = c.vocab_size, c.Cvae, c.depth
        self.num_classes, self.patch_nums = c.num_classes, c.patch_nums
        self.L, self.first_l = c.L, c.patch_nums[0] ** 2
        self.begin_ends = []
        cur = 0
        for pn in c.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn
        init_std = math.sqrt(1 / self.C / 3)
        self.word_embed = nn.Linear(self.Cvae, self.C)
        self.class_emb = nn.Embedding(self.num_classes + 1, self.C)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, self.C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, self.C))
        self.lvl_embed = nn.Embedding(len(c.patch_nums), self.C)
        for t in (self.class_emb.weight, self.pos_start, self.pos_1LC, self.lvl_embed.weight):
            nn.init.trunc_normal_(t.data, mean=0, std=init_std)
        self.shared_ada_lin = (
            nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(self.D, 6 * self.C)) if c.shared_aln else nn.Identity()
        )
        dpr = [c.drop_path_rate * i / max(1, c.depth - 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList([AdaLNSelfAttn(i, c, dpr[i]) for i in range(c.depth)])
        d = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(c.patch_nums)]).view(1, self.L, 1)
        dT = d.transpose(1, 2)
        self.register_buffer("lvl_1L", dT[:, 0].contiguous())
        self.register_buffer(
            "attn_bias_for_masking", torch.where(d >= dT, 0.0, -torch.inf).reshape(1, 1, self.L, self.L).contiguous()
        )
        self.head_nm = AdaLNBeforeHead(self.C, self.D, c.norm_eps)
        self.head = nn.Linear(self.C, self.V)

    # ---- helpers -----------------------------------------------------------------------------
    @property
    def vae(self) -> Optional[VQVAE]:
        return self.vae_proxy[0]

    def set_vae(self, vae: VQVAE) -> None:
        self._check_vae(vae)
        self.vae_proxy = (vae,)

    def _check_vae(self, vae: VQVAE) -> None:
        c = self.config
        if tuple(vae.config.v_patch_nums) != tuple(c.patch_nums) or vae.V != c.vocab_size or vae.Cvae != c.Cvae:
            raise ValueError(
                f"VQ-VAE (patch nums {vae.config.v_patch_nums}, vocab {vae.V}, Cvae {vae.Cvae}) does not fit this VAR "
                f"(patch nums {c.patch_nums}, vocab {c.vocab_size}, Cvae {c.Cvae})."
            )

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def cum_tokens(self, si: int) -> int:
        """Tokens in scales 0..si."""
        return self.begin_ends[si][1]

    def _cond(self, label_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.class_emb(label_B)
        return cond, self.shared_ada_lin(cond)

    # ---- generation: one scale per call --------------------------------------------------------
    def step(
        self,
        si: int,
        label_B: torch.Tensor,
        x_BlCv: Optional[torch.Tensor],
        cache: Any = None,
        prefix: bool = False,
        cfg_batch: bool = True,
    ) -> torch.Tensor:
        """Logits of scale ``si``: (2B, pn*pn, V) with rows [conditional; unconditional].

        ``x_BlCv`` (B, l, Cvae) are the scale's inputs (the area-downsampled f_hat; None at
        scale 0). With ``prefix`` it holds the inputs of scales 1..si and the whole prefix is
        encoded in one block-causal pass (uncached generation, or CoDe's hand-over, which
        fills ``cache`` with every scale's keys/values). ``cfg_batch=False`` runs only the
        conditional rows (no classifier-free guidance).
        """
        B = label_B.shape[0]
        labels = torch.cat((label_B, torch.full_like(label_B, self.num_classes))) if cfg_batch else label_B
        cond, ada = self._cond(labels)
        rows = labels.shape[0]
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        sos = cond.unsqueeze(1).expand(rows, self.first_l, -1) + self.pos_start.expand(rows, self.first_l, -1)
        bg, ed = self.begin_ends[si]
        if prefix:
            parts = [sos + lvl_pos[:, : self.first_l]]
            if si > 0:
                if x_BlCv is None or x_BlCv.shape[1] != ed - self.first_l:
                    raise ValueError(f"prefix inputs for scale {si} must be (B, {ed - self.first_l}, {self.Cvae}).")
                emb = self.word_embed(x_BlCv.to(self.dtype)) + lvl_pos[:, self.first_l : ed]
                parts.append(emb.repeat(rows // B, 1, 1))
            x = torch.cat(parts, dim=1)
            bias = self.attn_bias_for_masking[:, :, :ed, :ed] if si > 0 else None
        elif si == 0:
            x, bias = sos + lvl_pos[:, : self.first_l], None
        else:
            if x_BlCv is None or x_BlCv.shape[1] != ed - bg:
                raise ValueError(f"inputs for scale {si} must be (B, {ed - bg}, {self.Cvae}).")
            x = (self.word_embed(x_BlCv.to(self.dtype)) + lvl_pos[:, bg:ed]).repeat(rows // B, 1, 1)
            bias = None
        if cache is not None and hasattr(cache, "begin_forward"):
            cache.begin_forward(torch.arange(ed - x.shape[1], ed, device=x.device))
        for b in self.blocks:
            x = b(x, ada, bias, cache)
        if cache is not None and hasattr(cache, "end_forward"):
            cache.end_forward()
        x = x[:, x.shape[1] - (ed - bg) :]
        return self.head(self.head_nm(x, cond)).float()

    # ---- training: teacher forcing ---------------------------------------------------------------
    def forward(self, label_B: torch.LongTensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, V) of every scale from ground-truth inputs (block-causal attention).

        As in the reference, labels are dropped to the unconditional class with probability
        ``cond_drop_rate`` (also in eval mode): this is the training forward.
        """
        B = x_BLCv_wo_first_l.shape[0]
        drop = torch.rand(B, device=label_B.device) < self.config.cond_drop_rate
        label_B = torch.where(drop, torch.full_like(label_B, self.num_classes), label_B)
        cond, ada = self._cond(label_B)
        sos = cond.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.to(self.dtype))), dim=1)
        x = x + self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC
        for b in self.blocks:
            x = b(x, ada, self.attn_bias_for_masking, None)
        return self.head(self.head_nm(x, cond)).float()

    # ---- initialisation and checkpoints -------------------------------------------------------------
    def init_weights(
        self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02, init_std: float = -1.0
    ) -> None:
        """The reference's training initialisation (truncated normal, small AdaLN gates and head)."""
        std = (1 / self.C / 3) ** 0.5 if init_std < 0 else init_std
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        with torch.no_grad():
            self.head.weight.mul_(init_head)
            self.head.bias.zero_()
            self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
            self.head_nm.ada_lin[-1].bias.zero_()
            for b in self.blocks:
                b.attn.proj.weight.div_(math.sqrt(2 * self.depth))
                b.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))
                if hasattr(b, "ada_lin"):
                    w = b.ada_lin[-1].weight
                    w[2 * self.C :].mul_(init_adaln)
                    w[: 2 * self.C].mul_(init_adaln_gamma)
                    b.ada_lin[-1].bias.zero_()
                else:
                    b.ada_gss[:, :, 2:].mul_(init_adaln)
                    b.ada_gss[:, :, :2].mul_(init_adaln_gamma)

    def save_pretrained(self, directory: str | os.PathLike, dtype: Optional[torch.dtype] = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` (optionally cast, e.g. to float16)."""
        from .checkpoints import save_module

        save_module(self, self.config.to_dict(), directory, dtype)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, vae: Optional[VQVAE] = None, device: str | torch.device = "cpu"
    ) -> "VAR":
        from .checkpoints import load_module

        model = load_module(cls, VARConfig, directory, device)
        if vae is not None:
            model.set_vae(vae)
        return model

    @classmethod
    def load_official(
        cls, path: str | os.PathLike, depth: int, vae: Optional[VQVAE] = None,
        device: str | torch.device = "cpu", dtype: Optional[torch.dtype] = None, **config_over: Any,
    ) -> "VAR":
        """Load an official ``var_d{depth}.pth`` (state dict incl. its buffers) unchanged."""
        from .checkpoints import check_keys, read_state_dict

        model = cls(VARConfig.official(depth, **config_over), vae=vae)
        state = read_state_dict(path)
        check_keys(model, state, str(path))
        model.load_state_dict(state, strict=True)
        return model.to(device=device, dtype=dtype).eval()
