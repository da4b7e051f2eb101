"""Tiny random VQ-VAE / VAR models shared by the vision tests (CPU, milliseconds)."""

import torch

from paradecode.vision import VAR, VARConfig, VQVAE, VQVAEConfig

PATCH_NUMS = (1, 2, 3, 4, 6, 8)


def tiny_vae(patch_nums=PATCH_NUMS, seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    cfg = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, v_patch_nums=patch_nums)
    return VQVAE(cfg).eval()


def tiny_var(vae: VQVAE, depth: int = 3, seed: int = 1, attn_l2_norm: bool = True, **over) -> VAR:
    torch.manual_seed(seed)
    cfg = VARConfig(
        num_classes=5, depth=depth, embed_dim=64, num_heads=4, patch_nums=vae.config.v_patch_nums,
        vocab_size=vae.V, Cvae=vae.Cvae, attn_l2_norm=attn_l2_norm, cond_drop_rate=0.0, **over,
    )
    var = VAR(cfg, vae=vae).eval()
    # Gates and head at full strength (the training init makes them ~0): varied, peaked logits.
    var.init_weights(init_adaln=1.0, init_adaln_gamma=1.0, init_head=1.0, init_std=0.2)
    return var
