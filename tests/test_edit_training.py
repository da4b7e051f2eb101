"""LLaDA2.1's token-to-token training stream (``paradecode/bench/edit_training.py``, ``edit_noise`` of
``diffusion_loss`` in ``scripts/train_dllm.py``, ``--edit-noise`` of ``scripts/train_cot.py``): off it is
today's loss bit for bit; on, only visible canvas positions are corrupted, never into special
tokens, at the asked rate, the loss counts them, and a tiny model learns to repair them."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from paradecode.bench.edit_training import corrupt_visible, noise_vocabulary, visible_loss
from paradecode.models import LLaDAModel

from .conftest import MASK, load_script, tiny_config

EOS, PAD, UNK = 61, 62, 63  # tiny_config's eos / pad; 63 plays <unk>
V = 64
P, G = 6, 10


def _script(name: str):
    return load_script(f"scripts/{name}.py")


@pytest.fixture(scope="module")
def train_dllm():
    return _script("train_dllm")


def _batch(B: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of random words; canvas = the prompt's words then <eos> to the end."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 50, (B, P), generator=g)
    canvas = torch.cat([prompt, torch.full((B, G - P), EOS)], 1)
    return torch.cat([prompt, canvas], 1), torch.ones(B, P + G, dtype=torch.long)


class Spy(torch.nn.Module):
    """Records its input; logits are a free parameter table, so every position's gradient shows."""

    def __init__(self, B: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(B, G, V, generator=torch.Generator().manual_seed(3)))
        self.seen = None

    def forward(self, x, attention_mask=None, logits_range=None):
        assert logits_range == (P, P + G)
        self.seen = x.clone()
        return self.table


def _todays_loss(model, tokens, am, P, mask_id, eps=1e-3, label_smoothing=0.0):
    """scripts/train_dllm.py's diffusion_loss before edit_noise existed (restated)."""
    B, T = tokens.shape
    G = T - P
    t = torch.rand(B, 1)
    p = (1 - eps) * t + eps
    masked = torch.rand(B, G) < p
    x = tokens.clone()
    x[:, P:] = torch.where(masked, mask_id, tokens[:, P:])
    logits = model(x, attention_mask=am, logits_range=(P, T)).float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, P:].reshape(-1), reduction="none",
                         label_smoothing=label_smoothing)
    ce = ce.view(B, G) * masked / p
    return ce.sum(1).div(G).mean()


# ---- off: today's loss ------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.02])
def test_edit_noise_zero_is_todays_loss_bit_for_bit(train_dllm, smoothing):
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config()).eval()
    tokens, am = _batch(8)
    vocab = noise_vocabulary(V, (PAD, MASK, UNK))
    torch.manual_seed(5)
    want = _todays_loss(model, tokens, am, P, MASK, label_smoothing=smoothing)
    after_want = torch.rand(3)
    for kw in ({}, {"edit_noise": 0.0, "edit_vocab": vocab, "edit_weight": 3.0}):
        torch.manual_seed(5)
        got = train_dllm.diffusion_loss(model, tokens, am, P, MASK, label_smoothing=smoothing, **kw)
        assert torch.equal(got, want)
        assert torch.equal(torch.rand(3), after_want)  # no extra random numbers drawn: the data order is kept too


# ---- on: where, what, how often, counted ------------------------------------------------------

def test_only_visible_canvas_positions_are_corrupted_never_into_specials_at_the_asked_rate(train_dllm):
    B, rate = 4000, 0.3
    tokens, am = _batch(B, seed=1)
    spy = Spy(B)
    torch.manual_seed(11)
    vocab = noise_vocabulary(V, (PAD, MASK, UNK))
    train_dllm.diffusion_loss(spy, tokens, am, P, MASK, edit_noise=rate, edit_vocab=vocab)
    x = spy.seen
    assert torch.equal(x[:, :P], tokens[:, :P])  # the prompt is never touched
    canvas, clean = x[:, P:], tokens[:, P:]
    masked = canvas == MASK
    corrupted = canvas != clean
    changed = corrupted & ~masked
    assert changed.any() and masked.any()
    drawn = canvas[changed]
    assert not torch.isin(drawn, torch.tensor([PAD, MASK, UNK])).any()
    assert (drawn == EOS).any()  # <eos> is a real committed token: it is drawn as noise, and its tail corrupted
    assert (changed & (clean == EOS)).any()
    visible = (~masked).sum().item()
    share = changed.sum().item() / visible
    assert abs(share - rate) < 4 * math.sqrt(rate * (1 - rate) / visible)


def test_the_loss_counts_corrupted_and_clean_visible_positions(train_dllm):
    B = 16
    tokens, am = _batch(B, seed=2)
    vocab = noise_vocabulary(V, (PAD, MASK, UNK))
    grads = {}
    for rate in (0.0, 0.5):
        spy = Spy(B)
        torch.manual_seed(4)
        loss = train_dllm.diffusion_loss(spy, tokens, am, P, MASK, edit_noise=rate, edit_vocab=vocab)
        loss.backward()
        grads[rate] = (spy.table.grad.abs().sum(-1) > 0, spy.seen[:, P:])
    g0, x0 = grads[0.0]
    assert torch.equal(g0, x0 == MASK)  # today: masked positions only
    g1, x1 = grads[0.5]
    corrupted = (x1 != tokens[:, P:]) & (x1 != MASK)
    assert corrupted.any() and g1[corrupted].all()
    assert g1.all()  # every canvas position: masked (M2T), corrupted and clean visible (T2T)


def test_edit_weight_scales_the_visible_term(train_dllm):
    B = 8
    tokens, am = _batch(B, seed=3)
    vocab = noise_vocabulary(V, (PAD, MASK, UNK))
    spy = Spy(B)
    vals = {}
    for w in (0.0, 1.0, 2.0):
        torch.manual_seed(9)
        vals[w] = train_dllm.diffusion_loss(spy, tokens, am, P, MASK, edit_noise=0.2, edit_vocab=vocab,
                                            edit_weight=w).item()
    assert vals[1.0] > vals[0.0]
    assert vals[2.0] - vals[0.0] == pytest.approx(2 * (vals[1.0] - vals[0.0]), rel=1e-5)


def test_missing_vocabulary_is_a_clear_error(train_dllm):
    tokens, am = _batch(2)
    with pytest.raises(ValueError, match="edit_vocab"):
        train_dllm.diffusion_loss(Spy(2), tokens, am, P, MASK, edit_noise=0.1)


# ---- the helpers ------------------------------------------------------------------------------

def test_noise_vocabulary_and_bad_input():
    ids = noise_vocabulary(8, (0, 2, 3, None))
    assert ids.tolist() == [1, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="at least two"):
        noise_vocabulary(3, (0, 1))
    canvas = torch.zeros(2, 3, dtype=torch.long)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            corrupt_visible(canvas, torch.ones_like(canvas, dtype=torch.bool), bad, ids)


def test_replacements_are_uniform_over_the_other_tokens_and_seeded():
    vocab = noise_vocabulary(8, (0, 2))  # [1, 3, 4, 5, 6, 7]
    canvas = torch.full((200, 100), 4)
    visible = torch.ones_like(canvas, dtype=torch.bool)
    x, corrupted = corrupt_visible(canvas, visible, 1.0, vocab, generator=torch.Generator().manual_seed(0))
    assert corrupted.all() and not (x == 4).any()
    counts = torch.bincount(x.flatten(), minlength=8)
    assert counts[[0, 2, 4]].sum() == 0
    expected = canvas.numel() / 5
    assert ((counts[[1, 3, 5, 6, 7]] - expected).abs() < 5 * math.sqrt(expected)).all()
    # an original outside the vocabulary (here 0) may become any vocabulary token
    y, _ = corrupt_visible(torch.zeros(100, 100, dtype=torch.long), visible[:100], 1.0, vocab,
                           generator=torch.Generator().manual_seed(1))
    assert set(y.unique().tolist()) == set(vocab.tolist())
    again, _ = corrupt_visible(canvas, visible, 1.0, vocab, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    half = visible.clone()
    half[:, 50:] = False
    z, c = corrupt_visible(canvas, half, 1.0, vocab)
    assert torch.equal(z[:, 50:], canvas[:, 50:]) and not c[:, 50:].any()


def test_visible_loss_is_a_per_canvas_position_mean():
    ce = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 4.0, 4.0, 4.0]])
    vis = torch.tensor([[True, False, True, False], [True, True, True, True]])
    assert visible_loss(ce, vis).item() == pytest.approx(((1 + 3) / 4 + 16 / 4) / 2)
    assert visible_loss(ce, vis, 0.5).item() == pytest.approx(0.5 * ((1 + 3) / 4 + 16 / 4) / 2)


# ---- wired: a tiny model learns to repair corrupted tokens ------------------------------------

def _corrupted_position_loss(model, vocab) -> float:
    """Cross-entropy at the corrupted positions of a fixed held-out batch: the canvas fully visible,
    30% of it replaced by noise (what the editor sees after a bad draft)."""
    tokens, am = _batch(64, seed=99)
    x, corrupted = corrupt_visible(tokens[:, P:], torch.ones(64, G, dtype=torch.bool), 0.3, vocab,
                                   generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(torch.cat([tokens[:, :P], x], 1), attention_mask=am, logits_range=(P, P + G)).float()
    ce = F.cross_entropy(logits.transpose(1, 2), tokens[:, P:], reduction="none")
    return ce[corrupted].mean().item()


def _train(train_dllm, edit_noise: float, steps: int = 60) -> LLaDAModel:
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config()).train()
    vocab = noise_vocabulary(V, (PAD, MASK, UNK))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        tokens, am = _batch(32, seed=step)
        loss = train_dllm.diffusion_loss(model, tokens, am, P, MASK, edit_noise=edit_noise, edit_vocab=vocab)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.slow  # ~2-5 s on CPU: two 60-step trainings
def test_a_tiny_model_learns_to_repair_corrupted_tokens(train_dllm):
    vocab = noise_vocabulary(V, (PAD, MASK, UNK))
    torch.manual_seed(0)
    before = _corrupted_position_loss(LLaDAModel(tiny_config()), vocab)
    edited = _corrupted_position_loss(_train(train_dllm, 0.3), vocab)
    plain = _corrupted_position_loss(_train(train_dllm, 0.0), vocab)  # same steps, masked positions only
    assert edited < before - 1.0, (before, edited)
    assert edited < plain - 0.5, (plain, edited)  # the fall comes from the T2T stream, not from M2T transfer


# ---- the script's option --------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--edit-noise", "1.0"), ("--edit-noise", "-0.1"), ("--edit-noise", "nan"),
                                        ("--edit-weight", "0"), ("--edit-weight", "inf")])
def test_train_cot_rejects_bad_edit_options(monkeypatch, tmp_path, flag, value):
    mod = _script("train_cot")
    monkeypatch.setattr(sys, "argv", ["train_cot.py", "--out", str(tmp_path / "m"), "--smoke", flag, value])
    with pytest.raises(SystemExit, match=flag):
        mod.main()
    assert not (tmp_path / "m").exists()  # refused before anything is written


@pytest.mark.slow  # ~4-15 s: the script's --smoke run
def test_train_cot_smoke_with_edit_noise_records_it(monkeypatch, tmp_path):
    import json

    out = tmp_path / "m"
    monkeypatch.setattr(sys, "argv", ["train_cot.py", "--out", str(out), "--smoke", "--edit-noise", "0.2",
                                      "--baseline", "", "--eval-n", "2", "--eval-batch", "2"])
    _script("train_cot").main()
    info = json.loads((out / "info.json").read_text())
    assert info["complete"] and info["train"]["edit"] == {"noise": 0.2, "weight": 1.0,
                                                          "excluded": ["<pad>", "<mask>", "<unk>"]}
    assert all(math.isfinite(e["loss"]) for e in info["train"]["log"] if "loss" in e)
