"""Same seed, same tokens as LLaDA's ``generate``: the random draws of a step cover the whole
canvas, in LLaDA's order (Gumbel uniforms for every row, column and vocabulary entry, then
the ``random`` remasking uniforms), from one generator seeded like ``torch.manual_seed``.

The reference below restates LLaDA's published algorithm (semi-autoregressive blocks, fixed
tokens per step, Gumbel-max in float64, low-confidence or random remasking) with torch's
global RNG; the only change is that the mask token is never a prediction (paradecode's rule,
see ``samplers/common.forbid_token``)."""

import pytest
import torch

import paradecode

from .conftest import MASK


def llada_reference(model, prompt, steps, gen_length, block_length, temperature, remasking, seed):
    torch.manual_seed(seed)
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), MASK, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    P = prompt.shape[1]
    per_block = steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        start, end = P + b * block_length, P + (b + 1) * block_length
        n_mask = int((x[0, start:end] == MASK).sum())
        counts = [n_mask // per_block + (1 if i < n_mask % per_block else 0) for i in range(per_block)]
        for i in range(per_block):
            mask_index = x == MASK
            logits = model(x).double()
            logits[..., MASK] = float("-inf")
            if temperature:  # LLaDA draws Gumbel uniforms only at temperature > 0
                u = torch.rand(logits.shape, dtype=torch.float64)
                x0 = (logits - temperature * torch.log(-torch.log(u))).argmax(-1)
            else:
                x0 = logits.argmax(-1)
            if remasking == "low_confidence":
                conf = torch.softmax(logits, -1).gather(-1, x0[..., None])[..., 0]
            else:
                conf = torch.rand(x0.shape).double()
            conf[:, end:] = float("-inf")
            conf = torch.where(mask_index, conf, torch.full_like(conf, float("-inf")))
            x0 = torch.where(mask_index, x0, x)
            for r in range(x.shape[0]):
                take = torch.topk(conf[r], counts[i]).indices
                x[r, take] = x0[r, take]
    return x


@pytest.mark.parametrize("temperature, remasking", [(0.7, "low_confidence"), (1.0, "random"), (0.0, "random")])
def test_same_seed_gives_llada_tokens(tiny_model, prompts, temperature, remasking):
    ref = llada_reference(tiny_model, prompts, 8, 16, 8, temperature, remasking, seed=11)
    out = paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=8,
                            temperature=temperature, remasking=remasking, seed=11)
    assert torch.equal(out.sequences, ref)


def test_sampling_leaves_the_global_rng_alone(tiny_model, prompts):
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    paradecode.sample(tiny_model, prompts, "lowconf", gen_length=16, block_length=8, steps=8, temperature=1.0, seed=5)
    assert torch.equal(torch.rand(3), before)
