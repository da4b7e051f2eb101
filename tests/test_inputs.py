"""Prompts, masks and seeds are checked at the door (paradecode.inputs)."""

import numpy as np
import pytest
import torch

import paradecode.api
from paradecode.inputs import make_generator, model_device, prepare_prompts

PAD = 62


def prep(prompt, mask=None, vocab_size=None, device=None):
    return prepare_prompts(prompt, mask, PAD, device, vocab_size=vocab_size)


def test_api_re_exports_the_moved_names():
    assert paradecode.api.prepare_prompts is prepare_prompts
    assert paradecode.api.make_generator is make_generator and paradecode.api.model_device is model_device


@pytest.mark.parametrize(
    "prompt",
    [
        torch.tensor([[5, 6, 7], [8, 9, 10]]),
        torch.tensor([[5, 6, 7], [8, 9, 10]], dtype=torch.uint8),
        np.array([[5, 6, 7], [8, 9, 10]]),
        np.array([[5, 6, 7], [8, 9, 10]], dtype=np.uint64),
        [[5, 6, 7], [8, 9, 10]],
        [np.array([5, 6, 7]), (8, 9, 10)],
        [[np.int64(5), np.int32(6), 7], [8, 9, np.uint8(10)]],
    ],
)
def test_equal_rows_in_any_form(prompt):
    ids, mask = prep(prompt, vocab_size=64)
    assert ids.dtype == torch.long and mask is None
    assert ids.tolist() == [[5, 6, 7], [8, 9, 10]]


@pytest.mark.parametrize("prompt", [torch.tensor([5, 6]), np.array([5, 6]), [5, 6], [np.int16(5), np.int64(6)]])
def test_one_prompt(prompt):
    ids, mask = prep(prompt)
    assert ids.tolist() == [[5, 6]] and mask is None


@pytest.mark.parametrize(
    "prompt",
    [[[5, 6, 7], [8]], [np.array([5, 6, 7]), np.array([8])], np.array([np.array([5, 6, 7]), np.array([8])], dtype=object)],
)
def test_ragged_rows_are_left_padded(prompt):
    ids, mask = prep(prompt)
    assert ids.tolist() == [[5, 6, 7], [PAD, PAD, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize(
    "prompt, err, match",
    [
        ("hello", TypeError, "tokenize"),
        (["a", "b"], TypeError, r"integer token ids, got str 'a' at position 0; tokenize"),
        ([1.0, 2.0], TypeError, "got float 1.0 at position 0"),
        ([True, False], TypeError, "got bool"),
        ([[1, 2], [3, 2.5]], TypeError, r"prompt_ids\[1\] must hold integer token ids, got float 2.5 at position 1"),
        (7, TypeError, "got int"),
        (None, TypeError, "got NoneType"),
        ({"input_ids": [1]}, TypeError, "got dict"),
        (torch.zeros(2, 3), ValueError, "integer token ids, got dtype torch.float32"),
        (torch.ones(2, 3, dtype=torch.bool), ValueError, "dtype torch.bool"),
        (np.zeros((2, 3)), ValueError, "dtype float64"),
        (np.array([True]), ValueError, "dtype bool"),
        (np.array(["a", "b"]), ValueError, "dtype <U1"),
        (torch.tensor(3), ValueError, r"got shape \(\)"),
        (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, r"\(batch, length\) or \(length,\), got shape \(1, 2, 3\)"),
        (np.zeros((1, 2, 3), dtype=np.int64), ValueError, r"got shape \(1, 2, 3\)"),
        ([[[1, 2]]], ValueError, "nested too deep"),
        ([1, [2, 3]], ValueError, "mixes token ids and lists"),
        ([], ValueError, "empty"),
        ([[1], []], ValueError, r"prompt_ids\[1\] is empty"),
        (torch.zeros(2, 0, dtype=torch.long), ValueError, "empty"),
        (torch.zeros(0, 3, dtype=torch.long), ValueError, "empty"),
        ([[1, 2], np.zeros((1, 2), dtype=np.int64)], ValueError, r"prompt_ids\[1\] must be a 1-D list"),
        ([[5, -1]], ValueError, r"\[0, 63\] .*, got -1 at row 0, position 1"),
        (torch.tensor([[5, 64]]), ValueError, r"\[0, 63\] \(the model's vocabulary\), got 64 at row 0, position 1"),
        ([[5, 6], [2**40]], ValueError, "got 1099511627776"),
        (np.array([2**64 - 1], dtype=np.uint64), ValueError, "beyond any vocabulary"),
    ],
)
def test_bad_prompts_are_named(prompt, err, match):
    with pytest.raises(err, match=match) as e:
        prep(prompt, vocab_size=64)
    assert "prompt_ids" in str(e.value)


def test_ragged_padding_is_not_bounded_by_vocab():
    ids, _ = prepare_prompts([[1, 2], [3]], None, 999, None, vocab_size=64)  # pad 999 is the model's business
    assert ids[1, 0] == 999


def test_mask_forms_and_normalisation():
    ids = torch.tensor([[PAD, 5, 6], [7, 8, 9]])
    for mask in ([[0, 1, 1], [1, 1, 1]], np.array([[0, 1, 1], [1, 1, 1]]), torch.tensor([[False, True, True], [True] * 3])):
        out_ids, out_mask = prep(ids, mask)
        assert out_mask.dtype == torch.long and out_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert prep(ids, torch.ones(2, 3, dtype=torch.long))[1] is None  # nothing padded
    assert prep([PAD, 5], [0, 1])[1].tolist() == [[0, 1]]  # one row with a 1-D mask
    # padded positions are not bounded by the vocabulary (a pad id may lie outside it)
    assert prep(torch.tensor([[999, 5]]), [[0, 1]], vocab_size=64)[0].tolist() == [[999, 5]]


@pytest.mark.parametrize(
    "mask, match",
    [
        (torch.ones(2, 2, dtype=torch.long), r"attention_mask \(2, 2\) must match prompt_ids \(2, 3\)"),
        (torch.ones(2, 3), "attention_mask must hold 0/1 .*dtype torch.float32"),
        (np.ones((2, 3), dtype=np.float32), "attention_mask must hold 0/1 .*dtype float32"),
        (torch.tensor([[0, 2, 1], [1, 1, 1]]), r"only 0 \(padding\) and 1 \(token\), got values \[0, 1, 2\]"),
        (torch.tensor([[1, 1, 0], [1, 1, 1]]), r"left-padded.*right end \(rows \[0\]\)"),
        (torch.tensor([[1, 0, 1], [1, 1, 1]]), r"rows \[0\] have padding between tokens"),
        (torch.tensor([[0, 0, 0], [1, 1, 1]]), "right end"),
        ([[1, 1], [1]], "attention_mask must be a"),
        ("ones", "attention_mask must be"),
    ],
)
def test_bad_masks_are_named(mask, match):
    with pytest.raises((ValueError, TypeError), match=match):
        prep(torch.tensor([[PAD, 5, 6], [7, 8, 9]]), mask)


def test_mask_with_ragged_rows_is_refused():
    with pytest.raises(ValueError, match="attention_mask was given with prompts of different lengths"):
        prep([[1, 2], [3]], [[1, 1], [0, 1]])


def test_device_mismatch_says_how_to_move():
    with pytest.raises(ValueError, match=r"move them with prompt_ids.to\('meta'\)"):
        prep(torch.tensor([[1, 2]]), device=torch.device("meta"))
    ids, mask = prep([[1, 2], [3]], device=torch.device("meta"))  # lists are built on the model's device
    assert ids.device.type == "meta" and mask.device.type == "meta"
    with pytest.raises(ValueError, match="non-negative"):  # and checked before they get there
        prep([[1, -2]], device=torch.device("meta"))


def test_make_generator_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    g = make_generator(np.int64(5), None)
    a = torch.rand(3, generator=g)
    assert torch.equal(torch.rand(3), expected)  # global stream unchanged
    assert torch.equal(a, torch.rand(3, generator=make_generator(5, torch.device("cpu"))))
    assert make_generator(None, None) is None
    assert make_generator(1, torch.device("meta")).device.type == "cpu"
    assert make_generator(2**64 - 1, None) is not None and make_generator(-1, None) is not None


@pytest.mark.parametrize("seed, err", [("1", TypeError), (1.5, TypeError), (True, TypeError), (2**64, ValueError), (-(2**63) - 1, ValueError)])
def test_bad_seed(seed, err):
    with pytest.raises(err, match="seed must be an int"):
        make_generator(seed, None)


def test_model_device():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) is None
    assert model_device(lambda x: x) is None
