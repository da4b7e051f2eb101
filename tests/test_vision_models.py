"""VQ-VAE and VAR transformer: official names and shapes, checkpoints, cached == teacher forcing."""

import pytest
import torch

from paradecode.vision import VAR, VARConfig, VQVAE, sample_top_k_top_p
from paradecode.caches.var_kv import VARKVCache
from paradecode.vision.quant import _phi_ticks, phi_index

from ._vision_tiny import PATCH_NUMS, tiny_vae, tiny_var


def test_vqvae_pyramid_shapes_and_decode():
    vae = tiny_vae()
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ids = vae.img_to_idxBl(img)
        assert [tuple(i.shape) for i in ids] == [(2, p * p) for p in PATCH_NUMS]
        assert all(int(i.max()) < vae.V for i in ids)
        rec = vae.idxBl_to_img(ids)
        assert rec.shape == img.shape and float(rec.abs().max()) <= 1
        # Encoding's accumulated f_hat equals re-embedding the ids (the decode path).
        f = vae.quant_conv(vae.encoder(img))
        fhat_enc = vae.quantize.f_to_idxBl_or_fhat(f, to_fhat=True)[-1]
        hs = [vae.quantize.embedding(i).transpose(1, 2).reshape(2, vae.Cvae, p, p) for i, p in zip(ids, PATCH_NUMS)]
        torch.testing.assert_close(vae.quantize.embed_to_fhat(hs, last_one=True), fhat_enc, atol=1e-5, rtol=1e-5)
        # Teacher-forcing inputs: f_hat after scale k area-downsampled to scale k+1's size.
        x = vae.quantize.idxBl_to_var_input(ids)
        assert x.shape == (2, sum(p * p for p in PATCH_NUMS[1:]), vae.Cvae)
    with pytest.raises(ValueError, match="16, 16"):
        vae.img_to_idxBl(torch.zeros(1, 3, 32, 32))


def test_phi_ticks_settle_the_official_ties_like_float64_numpy():
    # 4 shared Phis over 10 scales: si = 2 and si = 7 sit exactly between two ticks.
    t = _phi_ticks(4)
    assert [phi_index(t, si / 9) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_vqvae_official_names_and_pth_loading(tmp_path):
    vae = tiny_vae()
    keys = set(vae.state_dict())
    for k in (
        "encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
        "encoder.down.1.attn.0.qkv.weight", "encoder.mid.attn_1.proj_out.weight", "decoder.up.1.upsample.conv.weight",
        "decoder.up.0.block.1.conv2.bias", "quant_conv.weight", "post_quant_conv.weight",
        "quantize.embedding.weight", "quantize.quant_resi.qresi_ls.3.weight", "quantize.ema_vocab_hit_SV",
    ):
        assert k in keys, k
    state = {k: torch.randn_like(v) for k, v in vae.state_dict().items()}
    state["quantize.ema_vocab_hit_SV"] = torch.zeros(10, vae.V)  # recorded for 10 scales: accepted
    torch.save(state, tmp_path / "vae.pth")
    loaded = VQVAE.load_official(tmp_path / "vae.pth", vae.config)
    torch.testing.assert_close(loaded.quantize.embedding.weight, state["quantize.embedding.weight"])
    loaded.save_pretrained(tmp_path / "dir")
    again = VQVAE.from_pretrained(tmp_path / "dir")
    torch.testing.assert_close(again.encoder.conv_in.weight, loaded.encoder.conv_in.weight)


def test_official_var_configs_have_the_published_sizes():
    published = {16: 310e6, 20: 600e6, 24: 1.0e9, 30: 2.0e9}  # README of FoundationVision/VAR
    for depth, n in published.items():
        with torch.device("meta"):
            model = VAR(VARConfig.official(depth))
        count = sum(p.numel() for p in model.parameters())
        assert abs(count - n) / n < 0.04, (depth, count)
    with torch.device("meta"):
        assert abs(sum(p.numel() for p in VQVAE().parameters()) - 109e6) / 109e6 < 0.02


def test_var_official_names_and_pth_loading(tmp_path):
    vae = tiny_vae()
    var = tiny_var(vae)
    keys = set(var.state_dict())
    for k in (
        "word_embed.weight", "class_emb.weight", "pos_start", "pos_1LC", "lvl_embed.weight", "lvl_1L",
        "attn_bias_for_masking", "blocks.0.attn.mat_qkv.weight", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias",
        "blocks.0.attn.zero_k_bias", "blocks.0.attn.scale_mul_1H11", "blocks.0.attn.proj.weight",
        "blocks.2.ffn.fc1.weight", "blocks.2.ffn.fc2.bias", "blocks.1.ada_lin.1.weight", "head_nm.ada_lin.1.weight",
        "head.weight",
    ):
        assert k in keys, k
    torch.save(var.state_dict(), tmp_path / "var_d3.pth")
    over = dict(num_classes=5, embed_dim=64, num_heads=4, patch_nums=PATCH_NUMS, vocab_size=64, Cvae=8, drop_path_rate=0.0)
    loaded = VAR.load_official(tmp_path / "var_d3.pth", depth=3, vae=vae, **over)
    torch.testing.assert_close(loaded.head.weight, var.head.weight)
    bad = dict(var.state_dict())
    bad["blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="unexpected.*blocks.0.attn.extra"):
        VAR.load_official(tmp_path / "bad.pth", depth=3, **over)
    var.save_pretrained(tmp_path / "hf", dtype=torch.float16)
    half = VAR.from_pretrained(tmp_path / "hf", vae=vae)
    torch.testing.assert_close(half.head.weight, var.head.weight.half().float())


@pytest.mark.parametrize("attn_l2_norm, shared_aln", [(True, False), (False, False), (True, True)])
def test_cached_scale_steps_equal_teacher_forcing(attn_l2_norm, shared_aln):
    """Scale-by-scale logits with the KV cache equal one block-causal teacher-forcing pass."""
    vae = tiny_vae()
    var = tiny_var(vae, attn_l2_norm=attn_l2_norm, shared_aln=shared_aln)
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        ids = vae.img_to_idxBl(img)
        x = vae.quantize.idxBl_to_var_input(ids)
        full = var(labels, x)  # cond_drop_rate = 0 in the tiny config
        cache, cols = VARKVCache(), 0
        for si, pn in enumerate(PATCH_NUMS):
            bg, ed = var.begin_ends[si]
            inp = None if si == 0 else x[:, bg - 1 : ed - 1]
            step = var.step(si, labels, inp, cache=cache, cfg_batch=False)
            torch.testing.assert_close(step, full[:, bg:ed], atol=1e-4, rtol=1e-4)
            prefix = var.step(si, labels, None if si == 0 else x[:, : ed - 1], prefix=True, cfg_batch=False)
            torch.testing.assert_close(prefix, full[:, bg:ed], atol=1e-4, rtol=1e-4)
        assert cache.length(0) == var.L


def test_top_k_keeps_ties_and_top_p_keeps_the_head():
    logits = torch.tensor([[[3.0, 3.0, 1.0, 0.0]]]).expand(1, 4000, 4).contiguous()
    g = torch.Generator().manual_seed(0)
    ids = sample_top_k_top_p(logits, top_k=1, generator=g)
    assert set(ids.unique().tolist()) == {0, 1}  # the tie at the k-th value survives
    ids = sample_top_k_top_p(torch.tensor([[[5.0, 0.0, -1.0, -9.0]]]).expand(1, 4000, 4), top_p=0.5, generator=g)
    assert set(ids.unique().tolist()) == {0}
    ids = sample_top_k_top_p(torch.zeros(1, 4000, 4), top_k=0, top_p=0.0, generator=g)
    assert set(ids.unique().tolist()) == {0, 1, 2, 3}
