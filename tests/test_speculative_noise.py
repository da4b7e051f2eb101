"""A sampled step's random numbers: drawn as torch.multinomial draws, kept in the order a step
run as it is draws them, refused when a recorded step's buffers have another shape."""

import pytest
import torch

from paradecode.speculative.noise import DrawnNoise, KeptNoise, sample_categorical


def test_sample_categorical_draws_what_multinomial_draws():
    probs = torch.rand(4, 50).softmax(-1)
    probs[:, ::3] = 0  # a warped distribution: top-k / top-p zeros
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        ours = sample_categorical(probs, DrawnNoise(g).final(probs))
        theirs = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)
        assert torch.equal(ours, theirs)
        assert (probs.gather(1, ours[:, None]) > 0).all()


def test_sample_categorical_follows_the_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_categorical(probs, DrawnNoise(g).final(probs)), minlength=4).double() / 20000
    assert counts[3] == 0
    torch.testing.assert_close(counts[:3], torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.015, rtol=0)


@pytest.mark.parametrize("draft_vocab", [7, None])
def test_kept_noise_holds_the_numbers_drawn_noise_draws_in_its_order(draft_vocab):
    rows, k, vocab = 3, 4, 11
    kept = KeptNoise(rows, k, draft_vocab, vocab, torch.device("cpu"))
    kept.fill(torch.Generator().manual_seed(5))
    drawn = DrawnNoise(torch.Generator().manual_seed(5))
    if draft_vocab is not None:
        q = torch.empty(rows, draft_vocab)
        for i in range(k):
            assert torch.equal(kept.draft(i, q), drawn.draft(i, q))
    u = torch.empty(rows, k)
    assert torch.equal(kept.accept(u), drawn.accept(u))
    p = torch.empty(rows, vocab)
    assert torch.equal(kept.final(p), drawn.final(p))
    assert (kept.accept(u) >= 0).all() and (kept.accept(u) < 1).all() and (kept.final(p) > 0).all()
    address, before = kept.final(p).data_ptr(), kept.final(p).clone()
    kept.fill(None)  # the next step's numbers, in the same buffers
    assert kept.final(p).data_ptr() == address and not torch.equal(kept.final(p), before)


def test_kept_noise_of_another_shape_is_a_clear_error():
    kept = KeptNoise(2, 3, None, 10, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="kept noise for the final token is \\(2, 10\\), the step needs \\(2, 12\\)"):
        kept.final(torch.empty(2, 12))
    with pytest.raises(RuntimeError, match="draft token 0 is None"):
        kept.draft(0, torch.empty(2, 10))
