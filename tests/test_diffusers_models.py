"""Hugging Face dLLM conventions through HFDiffusionAdapter: Dream's shifted logits and masks."""

import pytest
import torch
from torch import nn
from types import SimpleNamespace

import paradecode
from paradecode.models import HFDiffusionAdapter
from paradecode.models.hf import dream_attention

MASK, PAD, V = 60, 62, 64


class DreamConventionToy(nn.Module):
    """Dream's conventions: the logits at position i predict token i + 1, and the forward takes
    ``attention_mask`` ("full" or a (B, 1, L, L) bool mask) and ``position_ids``.

    The rule it knows: the token after t is t + 1 (mod 50). Position i is confident about
    token i + 1 only when token i is known; over a mask it is uniform.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(mask_token_id=MASK, pad_token_id=PAD)
        self.seen: list[tuple] = []

    def forward(self, input_ids, attention_mask="full", position_ids=None):
        self.seen.append((attention_mask, position_ids))
        B, L = input_ids.shape
        logits = torch.zeros(B, L, V) + self.w
        known = (input_ids != MASK) & (input_ids < 50)
        nxt = (input_ids + 1) % 50
        logits[known] = logits[known].scatter(-1, nxt[known][:, None], 12.0)
        return SimpleNamespace(logits=logits)


def counting(start: int, n: int) -> list[int]:
    return [(start + 1 + j) % 50 for j in range(n)]


@pytest.mark.parametrize("strategy, opts", [("threshold", {"threshold": 0.9}), ("lowconf", {"steps": 16})])
def test_dream_shift_decodes_the_rule(strategy, opts):
    toy = DreamConventionToy()
    prompt = torch.tensor([[3, 4, 5, 6]])
    out = paradecode.sample(HFDiffusionAdapter.dream(toy), prompt, strategy, gen_length=16, block_length=8, **opts)
    assert out.generated[0].tolist() == counting(6, 16)
    # Without the shift the same model's outputs are misread (position i gets i + 1's prediction).
    plain = paradecode.sample(HFDiffusionAdapter(toy), prompt, strategy, gen_length=16, block_length=8, **opts)
    assert plain.generated[0].tolist() != counting(6, 16)


def test_shift_moves_logits_right_by_one():
    toy = DreamConventionToy()
    x = torch.tensor([[7, 8, MASK, MASK]])
    raw = toy(x).logits
    shifted = HFDiffusionAdapter.dream(toy)(x)
    assert torch.equal(shifted[:, 1:], raw[:, :-1]) and torch.equal(shifted[:, 0], raw[:, 0])
    assert int(shifted[0, 2].argmax()) == 9  # position 2 is predicted from position 1 (token 8)


def test_dream_padding_masks_and_positions():
    toy = DreamConventionToy()
    rows = [[3, 4, 5], [20, 21, 22, 23, 24]]
    out = paradecode.sample(HFDiffusionAdapter.dream(toy), rows, "threshold", threshold=0.9, gen_length=8, block_length=8)
    assert out.generated[0].tolist() == counting(5, 8) and out.generated[1].tolist() == counting(24, 8)
    am, pos = toy.seen[0]
    assert am.shape == (2, 1, 13, 13) and am.dtype == torch.bool
    assert pos[0].tolist() == [1, 1, 0, 1, 2] + list(range(3, 11))  # padding gets 1, real tokens count from 0
    assert not am[0, 0, 0].any() and am[0, 0, 2, 2:].all() and not am[0, 0, 2, :2].any()
    single = paradecode.sample(HFDiffusionAdapter.dream(toy), [[3, 4, 5]], "threshold", threshold=0.9, gen_length=8,
                               block_length=8)
    assert toy.seen[-1] == ("full", None)  # no padding: Dream's "full" attention, default positions
    assert torch.equal(single.generated[0], out.generated[0])


def test_dream_attention_helper():
    assert dream_attention(None) == {"attention_mask": "full"}
    assert dream_attention(torch.ones(2, 3, dtype=torch.long)) == {"attention_mask": "full"}
    got = dream_attention(torch.tensor([[0, 1, 1]]))
    assert got["position_ids"].tolist() == [[1, 0, 1]]
    expected = torch.tensor([[False, False, False], [False, True, True], [False, True, True]])
    assert torch.equal(got["attention_mask"][0, 0], expected)


def test_adapter_errors_and_all_ones_mask():
    class NoMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            return torch.zeros(*input_ids.shape, V) + self.w

    a = HFDiffusionAdapter(NoMask(), mask_token_id=MASK)
    x = torch.tensor([[1, 2, MASK]])
    assert a(x, attention_mask=torch.ones_like(x)).shape == (1, 3, V)  # all ones: nothing to hide
    with pytest.raises(ValueError, match="takes no attention_mask"):
        a(x, attention_mask=torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match="attention_format"):
        HFDiffusionAdapter(NoMask(), mask_token_id=MASK, attention_format="4d")
