"""``VQVAE.load_official`` is frozen like the official ``test_mode=True`` build."""

import dataclasses

import pytest
import torch

from paradecode.vision import VQVAE, generate

from ._vision_tiny import tiny_vae, tiny_var


@pytest.fixture
def official(tmp_path):
    """A tiny tokenizer with dropout (so eval mode matters) saved as an official ``.pth``."""
    config = dataclasses.replace(tiny_vae().config, dropout=0.5)
    torch.manual_seed(3)
    state = {k: torch.randn_like(v) * 0.2 for k, v in VQVAE(config).state_dict().items()}
    torch.save(state, tmp_path / "vae.pth")
    return VQVAE.load_official(tmp_path / "vae.pth", config)


def test_loaded_tokenizer_is_in_eval_mode_with_frozen_parameters(official):
    assert not any(m.training for m in official.modules())
    assert not any(p.requires_grad for p in official.parameters())
    # Only the loader freezes: a tokenizer built to be trained (scripts/train_var.py) is not.
    assert all(p.requires_grad for p in VQVAE(official.config).parameters())


def test_tokenizer_builds_no_autograd_graph_with_grad_enabled(official):
    q = official.quantize
    size = official.config.image_size
    with torch.enable_grad():
        img = torch.rand(2, 3, size, size) * 2 - 1
        ids = official.img_to_idxBl(img)
        assert not official.idxBl_to_img(ids).requires_grad
        # more_smooth's soft code mix: probabilities times the codebook, then the accumulation.
        f_hat = torch.zeros(2, q.Cvae, size // official.downsample, size // official.downsample)
        for si, pn in enumerate(q.v_patch_nums):
            probs = torch.randn(2, pn * pn, q.vocab_size).softmax(-1)
            h = (probs @ q.embedding.weight.unsqueeze(0)).transpose(1, 2).reshape(2, q.Cvae, pn, pn)
            f_hat, _ = q.get_next_autoregressive_input(si, q.num_scales, f_hat, h)
        assert not f_hat.requires_grad and f_hat.grad_fn is None
        assert not official.fhat_to_img(f_hat).requires_grad


def test_more_smooth_generation_is_bit_identical_run_to_run(official):
    var = tiny_var(official)
    runs = [generate(var, [0, 3], seed=5, more_smooth=True, cfg=2.0, top_k=20) for _ in range(2)]
    assert torch.equal(runs[0].f_hat, runs[1].f_hat)
    assert torch.equal(runs[0].images, runs[1].images)
    assert not runs[0].images.requires_grad
    # The same tokens decode to the same image outside the loop too (dropout is off).
    with torch.enable_grad():
        again = official.fhat_to_img(runs[0].f_hat).add(1).mul(0.5)
    assert torch.equal(again, runs[0].images)
