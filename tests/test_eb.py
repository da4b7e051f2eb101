"""EB-Sampler (``eb``): the rule against a restated reference rule, its limits (gamma = 0,
a huge gamma), caches, the diffusers scheduler, and diffusers' ``EntropyBoundScheduler``."""

import math

import pytest
import torch

import paradecode
from paradecode.registry import get_strategy_class
from paradecode.samplers.base import BlockView
from paradecode.samplers.eb import EntropyBounded, entropy_bound_mask, token_entropy
from paradecode.models import LLaDAModel

from .conftest import MASK, make_tiny_model, tiny_config

GEO = dict(gen_length=16, block_length=8)


def reference_eb_select(entropy: list, masked: list, gamma: float) -> list:
    """The references' rule for one row, as a plain loop: rank the masked positions by entropy
    (ties: lower column first), always reveal the first, then keep revealing while the
    entropies of the positions already revealed sum to at most gamma."""
    ranked = sorted((entropy[j], j) for j in range(len(entropy)) if masked[j])
    if not ranked:
        return []
    take, budget = [ranked[0][1]], ranked[0][0]
    for h, j in ranked[1:]:
        if budget > gamma:
            break
        take.append(j)
        budget += h
    return sorted(take)


def _rows(mask: torch.Tensor) -> list:
    return [torch.nonzero(r).flatten().tolist() for r in mask]


# ---- the rule on entropies ----------------------------------------------------------------------

def test_rule_on_handmade_entropies():
    h = torch.tensor([
        [0.25, 0.5, 0.125, 1.0, 3.0],    # sorted 0.125, 0.25, 0.5, 1.0: sums before = 0, .125, .375, .875
        [0.25, 0.5, 0.125, 1.0, 3.0],
        [2.0, 9.0, 0.0, 0.0, 5.0],       # gamma 0: both zero-entropy positions and one more
        [0.75, 0.125, 0.25, 0.0625, 0.375],  # a masked-out low entropy (col 3) must not spend budget
    ])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 1]], dtype=torch.bool)
    # inclusive bound: 0.375 <= 0.375 takes the third; the candidate's own entropy is not counted
    assert _rows(entropy_bound_mask(h[:2], mask[:2], 0.375)) == [[0, 1, 2], [0, 1, 2]]
    assert _rows(entropy_bound_mask(h[:2], mask[:2], 0.37)) == [[0, 2], [0, 2]]
    assert _rows(entropy_bound_mask(h[2:3], mask[2:3], 0.0)) == [[0, 2, 3]]
    assert _rows(entropy_bound_mask(h[3:4], mask[3:4], 0.125)) == [[1, 2]]  # .125 <= .125, then .375 > .125
    assert _rows(entropy_bound_mask(h[3:4], mask[3:4], 0.0)) == [[1]]
    for gamma in (0.0, 0.125, 0.375, 1.0, 4.0, math.inf):
        got = _rows(entropy_bound_mask(h, mask, gamma))
        assert got == [reference_eb_select(h[r].tolist(), mask[r].tolist(), gamma) for r in range(4)]
    # no mask: nothing; one mask: it, whatever its entropy
    none = entropy_bound_mask(h[:1], torch.zeros(1, 5, dtype=torch.bool), 1.0)
    one = entropy_bound_mask(h[:1], torch.tensor([[0, 0, 0, 0, 1]], dtype=torch.bool), 0.0)
    assert _rows(none) == [[]] and _rows(one) == [[4]]


def test_rule_matches_reference_on_random_entropies():
    g = torch.Generator().manual_seed(0)
    for gamma in (0.0, 0.05, 0.15, 0.7, 3.0):
        h = torch.rand(64, 32, generator=g) * torch.rand(64, 1, generator=g) * 2
        mask = torch.rand(64, 32, generator=g) < 0.6
        mask[:4] = False  # rows with no mask left
        got = _rows(entropy_bound_mask(h, mask, gamma))
        assert got == [reference_eb_select(h[r].tolist(), mask[r].tolist(), gamma) for r in range(64)]


def test_token_entropy_excludes_the_mask_token_and_minus_inf():
    logits = torch.tensor([[0.0, 0.0, float("-inf"), 5.0]])
    assert torch.allclose(token_entropy(logits, mask_id=3), torch.tensor([math.log(2)]))
    assert torch.isfinite(token_entropy(logits)).all()
    p = torch.softmax(torch.tensor([1.0, 2.0, 3.0]), -1)
    assert torch.allclose(token_entropy(torch.tensor([1.0, 2.0, 3.0])), -(p * p.log()).sum())


def test_select_reads_the_entropy_of_the_step_logits():
    """select == the rule on the entropies of view.logits (mask token excluded)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 8, 64, generator=g) * 3
    mask = torch.rand(3, 8, generator=g) < 0.7
    mask[:, 0] = True
    strat = EntropyBounded(EntropyBounded.Config(gen_length=8, block_length=8, gamma=1.0))
    state = strat.start(torch.zeros(3, 1, dtype=torch.long), mask_id=MASK).rule
    zeros = torch.zeros(3, dtype=torch.long)
    view = BlockView(torch.arange(3), logits, torch.where(mask, MASK, 0), mask, zeros, zeros)
    got = strat.select(view, state)
    h = token_entropy(logits, MASK)
    assert _rows(got) == [reference_eb_select(h[r].tolist(), mask[r].tolist(), 1.0) for r in range(3)]


def test_bad_gamma_raises():
    cls = get_strategy_class("eb")
    assert cls.Config().gamma == 0.15  # SGLang's EBSampling default
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            cls.Config(gamma=bad)


# ---- its limits on a model ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model(), torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))


def test_gamma_zero_commits_one_token_per_step(tiny):
    model, prompts = tiny
    out = paradecode.sample(model, prompts, "eb", gamma=0.0, **GEO)
    assert out.trace.row_nfe.tolist() == [16, 16, 16]
    assert not (out.generated == MASK).any()


def test_huge_gamma_commits_each_block_in_one_step(tiny):
    model, prompts = tiny
    out = paradecode.sample(model, prompts, "eb", gamma=1e9, **GEO)
    assert out.trace.row_nfe.tolist() == [2, 2, 2]  # two blocks
    # the whole block takes the first step's argmax (mask token excluded)
    first = paradecode.sample(model, prompts, "threshold", threshold=0.0, **GEO)
    assert torch.equal(out.sequences, first.sequences)
    with pytest.raises(ValueError, match="finite"):  # options are finite floats (paradecode.config)
        paradecode.sample(model, prompts, "eb", gamma=math.inf, **GEO)


def test_larger_gamma_takes_fewer_steps(tiny):
    model, prompts = tiny
    nfe = [paradecode.sample(model, prompts, "eb", gamma=g, **GEO).trace.nfe for g in (0.0, 0.5, 1.0, 2.0, 1e9)]
    assert nfe == sorted(nfe, reverse=True) and nfe[0] > nfe[2] > nfe[-1]


class TwoOutcomeLLaDA(LLaDAModel):
    """Every position's distribution has two outcomes (tokens 3 and 7): there, entropy falls
    as the top probability rises, so the lowest-entropy position is the most confident one."""

    def forward(self, input_ids, positions=None, cache=None, attention_mask=None, logits_range=None):
        logits = super().forward(input_ids, positions, cache, attention_mask, logits_range)
        out = torch.full_like(logits, float("-inf"))
        out[..., [3, 7]] = logits[..., [3, 7]] * 0.05  # moderate gaps: no entropy rounds to 0
        return out


def test_gamma_zero_vs_lowconf_at_full_steps(tiny):
    """gamma = 0 is one-at-a-time decoding in entropy order; lowconf at steps = gen_length is
    one-at-a-time in confidence order. They give the same tokens where the two orders agree
    (two outcomes per position), and not in general (the tiny model's 64-token vocabulary)."""
    model, prompts = tiny
    eb = paradecode.sample(model, prompts, "eb", gamma=0.0, **GEO)
    low = paradecode.sample(model, prompts, "lowconf", steps=16, **GEO)
    assert not torch.equal(eb.sequences, low.sequences)

    torch.manual_seed(0)
    two = TwoOutcomeLLaDA(tiny_config()).eval()
    two.load_state_dict(model.state_dict())
    eb = paradecode.sample(two, prompts, "eb", gamma=0.0, **GEO)
    low = paradecode.sample(two, prompts, "lowconf", steps=16, **GEO)
    assert eb.trace.row_nfe.tolist() == [16, 16, 16]
    assert torch.equal(eb.sequences, low.sequences)
    assert set(eb.generated.unique().tolist()) == {3, 7}


def test_handmade_step_where_lowest_entropy_is_not_most_confident():
    """Position 0: top probability 0.6, the rest spread over 1000 tokens (entropy ~3.4);
    position 1: 0.5 / 0.5 (entropy ln 2). lowconf takes 0, eb takes 1."""
    V = 1002
    p0 = torch.full((V,), 0.4 / 1000)
    p0[0], p0[1] = 0.6, 0.0
    p1 = torch.zeros(V)
    p1[0] = p1[1] = 0.5
    logits = torch.stack([p0, p1]).log()[None]
    h = token_entropy(logits)
    assert h[0, 1] < h[0, 0]
    assert _rows(entropy_bound_mask(h, torch.ones(1, 2, dtype=torch.bool), 0.0)) == [[1]]


def reference_eb_generate(model, prompt: torch.Tensor, gamma: float, gen_length: int, block_length: int):
    """SGLang's ``EBSampling`` restated for one row, greedy, with its block layout (blocks at
    multiples of ``block_length``, the model seeing the canvas up to the current block's end),
    every forward recomputed: suppress the mask token, rank the block's masked positions by the
    entropy of the clean softmax, reveal the first and each next one while the entropies before
    it sum to <= gamma, write the argmax. Prompt and generation must fill whole blocks here."""
    P = prompt.shape[1]
    assert P % block_length == 0 and gen_length % block_length == 0
    x = torch.cat([prompt, torch.full((1, gen_length), MASK)], dim=1)
    for start in range(P, P + gen_length, block_length):
        end = start + block_length
        while (x[0, start:end] == MASK).any():
            with torch.no_grad():
                logits = model(x[:, :end], positions=torch.arange(end)[None],
                               attention_mask=torch.ones(1, end, dtype=torch.long))[0, start:end]
            logits[:, MASK] = torch.finfo(logits.dtype).min
            pred = logits.argmax(-1)
            masked = torch.nonzero(x[0, start:end] == MASK).flatten().tolist()
            logp = torch.log_softmax(logits[masked], -1)
            h = (-(logp.exp() * logp).sum(-1)).tolist()
            ranked = sorted(range(len(masked)), key=lambda i: h[i])
            reveal, spent = [ranked[0]], 0.0
            for prev, i in zip(ranked, ranked[1:]):
                spent += h[prev]
                if spent > gamma:
                    break
                reveal.append(i)
            for i in reveal:
                x[0, start + masked[i]] = pred[masked[i]]
    return x


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_token_identical_to_restated_sglang_loop(tiny, gamma):
    model, _ = tiny
    prompts = torch.randint(0, 50, (4, 8), generator=torch.Generator().manual_seed(5))
    out = paradecode.sample(model, prompts, "eb", gamma=gamma, gen_length=16, block_length=8, layout="llada2",
                            mask_token_id=MASK)
    for r in range(prompts.shape[0]):
        ref = reference_eb_generate(model, prompts[r : r + 1], gamma, 16, 8)
        assert torch.equal(out.sequences[r], ref[0]), r


# ---- caches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cache", ["prefix", "dual", "dkv-decode", "dkv-greedy"])
def test_runs_with_approximate_caches(tiny, cache):
    """With each canvas cache at its defaults (approximate) the generation completes; exactness
    under ``exact_options`` is tests/test_contract.py's RUNS row."""
    model, prompts = tiny
    out = paradecode.sample(model, prompts, "eb", gamma=1.0, cache=cache, **GEO)
    assert not (out.generated == MASK).any()
    assert out.trace.nfe <= 16


# ---- diffusers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_pipeline_with_eb_scheduler_equals_sample(gamma):
    pytest.importorskip("diffusers")
    import paradecode.integrations.diffusers as pd

    from .test_diffusers_schedulers import TinyLLaDA2, run_pipe, sample_options

    model = TinyLLaDA2()
    ids = torch.randint(0, 50, (3, 5), generator=torch.Generator().manual_seed(3))
    scheduler = pd.EBScheduler(block_length=8, gamma=gamma)
    assert pd.scheduler("eb", block_length=8, gamma=gamma).config.gamma == gamma
    seqs, calls = run_pipe(model, scheduler, ids)
    out = paradecode.sample(model, ids, "eb", **sample_options("eb", scheduler))
    assert torch.equal(seqs, out.generated)
    assert calls == out.trace.nfe
    if gamma == 0.0:
        # one token per step: 16 generated + 3 in the hidden tail of the last block (blocks at
        # 0, 8, 16; the 5-token prompt fills part of the first)
        assert calls == 3 * 8 - 5
    if gamma == 2.0:
        assert calls < 16


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 2.0, 10.0])
def test_one_step_equals_diffusers_entropy_bound_scheduler_on_a_masked_block(gamma):
    """Where the rules coincide: a fully masked block (diffusers ranks every position, we rank
    the masked ones) and sampling temperature 1 (t_max = t_min = 1: diffusers' logits are not
    rescaled), greedy on our side. The accepted positions must be the same."""
    diffusers = pytest.importorskip("diffusers")
    EntropyBoundScheduler = getattr(diffusers, "EntropyBoundScheduler", None)
    if EntropyBoundScheduler is None:
        pytest.skip("this diffusers has no EntropyBoundScheduler")
    import paradecode.integrations.diffusers as pd

    g = torch.Generator().manual_seed(int(gamma * 10))
    B, W, V = 6, 16, 64
    logits = torch.randn(B, W, V, generator=g) * torch.rand(B, W, 1, generator=g) * 6
    logits[..., MASK] = -1e4  # a trained model never predicts the mask token; we exclude it
    sample = torch.full((B, W), MASK)
    theirs = EntropyBoundScheduler(entropy_bound=gamma, t_max=1.0, t_min=1.0, num_inference_steps=W)
    theirs.set_timesteps(W)
    ref = theirs.step(logits, 0, sample, generator=torch.Generator().manual_seed(0))
    ours = pd.EBScheduler(block_length=W, gamma=gamma)
    ours.set_timesteps(W)
    out = ours.step(logits, 0, sample, mask_token_id=MASK)
    assert torch.equal(out.transfer_index, ref.accepted_index)
    assert torch.equal(out.prev_sample[out.transfer_index], logits.argmax(-1)[out.transfer_index])
    if gamma == 0.0:
        assert out.transfer_index.sum(-1).tolist() == [1] * B
