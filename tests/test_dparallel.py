"""dParallel: its decoding rule (``dparallel``, an entropy threshold) against a restated reference rule, and
the certainty-forcing distillation (``paradecode/bench/dparallel_training.py``,
``scripts/train_dparallel.py``): block-wise masking, the entropy term's defining behaviour,
seeded trajectories, and the script's ``--smoke`` run end to end."""

import json
import math

import pytest
import torch

import paradecode
from paradecode.bench.dparallel_training import (certainty_forcing_entropy, dparallel_loss,
                                                 masked_cross_entropy, semi_ar_masks, teacher_trajectories)
from paradecode.bench.tasks import get_task
from paradecode.bench.tokenizer import build_tokenizer
from paradecode.models import LLaDAConfig, LLaDAModel
from paradecode.registry import get_strategy_class
from paradecode.samplers.base import BlockView
from paradecode.samplers.eb import token_entropy
from paradecode.samplers.dparallel import EntropyThreshold, entropy_threshold_mask

from .conftest import MASK, load_script, make_tiny_model

GEO = dict(gen_length=16, block_length=8)


# ---- the decoding rule ----------------------------------------------------------------------

def reference_select(entropy: list, masked: list, threshold: float) -> list:
    """LLaDA/generate.py's get_transfer_index_entropy for one row, as a plain loop: rank the
    masked positions by entropy, take the first, drop any later one above the threshold."""
    ranked = sorted((entropy[j], j) for j in range(len(entropy)) if masked[j])
    if not ranked:
        return []
    return sorted([ranked[0][1]] + [j for h, j in ranked[1:] if not h > threshold])


def _rows(mask: torch.Tensor) -> list:
    return [torch.nonzero(r).flatten().tolist() for r in mask]


def test_rule_matches_reference_on_handmade_and_random_entropies():
    h = torch.tensor([[0.75, 0.5, 0.125, 2.0], [3.0, 2.0, 1.0, 4.0], [0.0, 0.5, 0.25, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    assert _rows(entropy_threshold_mask(h, mask, 0.5)) == [[1, 2], [2], [1, 2, 3]]  # 0.5 <= 0.5 is taken
    assert _rows(entropy_threshold_mask(h, mask, 0.0)) == [[2], [2], [3]]  # col 0 of row 2 is not masked
    g = torch.Generator().manual_seed(0)
    for thr in (0.0, 0.1, 0.45, 0.5, 2.0):
        h = torch.rand(64, 16, generator=g) * 2
        mask = torch.rand(64, 16, generator=g) < 0.6
        mask[:3] = False
        got = _rows(entropy_threshold_mask(h, mask, thr))
        assert got == [reference_select(h[r].tolist(), mask[r].tolist(), thr) for r in range(64)]


def test_select_reads_the_entropy_of_the_step_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 8, 64, generator=g) * 3
    mask = torch.rand(3, 8, generator=g) < 0.7
    mask[:, 0] = True
    strat = EntropyThreshold(EntropyThreshold.Config(gen_length=8, block_length=8, threshold=1.0))
    state = strat.start(torch.zeros(3, 1, dtype=torch.long), mask_id=MASK).rule
    zeros = torch.zeros(3, dtype=torch.long)
    view = BlockView(torch.arange(3), logits, torch.where(mask, MASK, 0), mask, zeros, zeros)
    h = token_entropy(logits, MASK)
    assert _rows(strat.select(view, state)) == [reference_select(h[r].tolist(), mask[r].tolist(), 1.0) for r in range(3)]


def test_default_and_bad_threshold():
    cls = get_strategy_class("dparallel")
    assert cls.Config().threshold == 0.5  # the reference's evaluation (LLaDA: GSM8K, MATH, HumanEval)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            cls.Config(threshold=bad)


def test_threshold_limits_on_a_model():
    model = make_tiny_model()
    prompts = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    one = paradecode.sample(model, prompts, "dparallel", threshold=0.0, **GEO)
    assert one.trace.row_nfe.tolist() == [16, 16, 16]  # nothing is certain: one token per step
    allin = paradecode.sample(model, prompts, "dparallel", threshold=1e9, **GEO)
    assert allin.trace.row_nfe.tolist() == [2, 2, 2]
    first = paradecode.sample(model, prompts, "threshold", threshold=0.0, **GEO)  # whole block at its first step
    assert torch.equal(allin.sequences, first.sequences)
    nfe = [paradecode.sample(model, prompts, "dparallel", threshold=t, **GEO).trace.nfe for t in (0.0, 0.5, 1.5, 3.0)]
    assert nfe == sorted(nfe, reverse=True) and nfe[0] > nfe[-1]


# ---- the objective --------------------------------------------------------------------------

def test_semi_ar_masks_are_one_block_split_in_two_with_a_masked_tail():
    g = torch.Generator().manual_seed(0)
    masked, rev, tail = semi_ar_masks(400, 32, 8, g)
    assert not (masked & rev).any() and not ((masked | rev) & tail).any()
    block = masked | rev
    assert (block.sum(-1) == 8).all()  # exactly one whole block per row
    first = block.float().argmax(-1)
    assert (first % 8 == 0).all()
    col = torch.arange(32)[None, :]
    assert torch.equal(tail, col >= first[:, None] + 8)  # everything after the block, nothing before
    assert set(first.tolist()) == {0, 8, 16, 24}  # every block gets picked
    ratio = masked.sum() / block.sum()
    assert abs(float(ratio) - 0.5) < 0.05  # the reference's fixed ratio (1 - eps) * 0.5 + eps
    again = semi_ar_masks(400, 32, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((masked, rev, tail), again))
    with pytest.raises(ValueError, match="multiple"):
        semi_ar_masks(2, 30, 8)


def test_entropy_term_touches_only_masked_positions_predicted_right():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 6, 10, generator=g) * 2).requires_grad_()
    pred = logits.detach().argmax(-1)
    targets = pred.clone()
    targets[:, 1] = (pred[:, 1] + 1) % 10  # wrong at column 1
    masked = torch.ones(2, 6, dtype=torch.bool)
    masked[:, 4] = False  # not masked at column 4
    h = certainty_forcing_entropy(logits, targets, masked, temperature=0.5)
    logp = torch.log_softmax(logits.detach() / 0.5, -1)
    ent = -(logp.exp() * logp).sum(-1)
    keep = [0, 2, 3, 5]
    assert torch.allclose(h, ent[:, keep].mean(-1), atol=1e-6)
    h.sum().backward()
    gnorm = logits.grad.norm(dim=-1)
    assert (gnorm[:, [1, 4]] == 0).all()  # wrong or unmasked: no gradient at all
    assert (gnorm[:, keep] > 0).all()
    # a row with nothing right adds exactly 0
    none = certainty_forcing_entropy(logits.detach(), (pred + 1) % 10, masked)
    assert torch.equal(none, torch.zeros(2))


def test_masked_cross_entropy_is_a_per_row_mean():
    logits = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2, 3], [4, 3, 2, 1]])
    masked = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(2, 4)
    assert torch.allclose(masked_cross_entropy(logits, targets, masked), torch.stack([ce[0, :2].mean(), ce[1, 3]]))


class Recorder(torch.nn.Module):
    """Wraps a model and keeps the inputs it was called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x, **kw):
        self.inputs.append(x.clone())
        return self.model(x, **kw)


def test_loss_is_ce_on_both_masks_plus_weighted_entropy_and_never_masks_the_prompt():
    torch.manual_seed(0)
    model = Recorder(make_tiny_model())
    P, G = 5, 16
    tokens = torch.randint(0, 50, (4, P + G), generator=torch.Generator().manual_seed(2))
    loss, parts = dparallel_loss(model, tokens, None, P, 8, MASK, torch.Generator().manual_seed(3), entropy_weight=2.0)
    x = model.inputs[0]
    assert x.shape[0] == 8 and torch.equal(x[:, :P], tokens.repeat(2, 1)[:, :P])
    noisy, rev = x[:4, P:] == MASK, x[4:, P:] == MASK
    both = noisy & rev  # the shared masked tail
    assert not (both & ~(noisy | rev)).any() and ((noisy ^ rev).sum(-1) == 8).all()
    expected = parts["ce"] + parts["ce_rev"] + 2.0 * (parts["entropy"] + parts["entropy_rev"])
    assert torch.allclose(loss.detach(), expected)
    loss0, parts0 = dparallel_loss(model, tokens, None, P, 8, MASK, torch.Generator().manual_seed(3), entropy_weight=0.0)
    assert torch.allclose(loss0.detach(), parts0["ce"] + parts0["ce_rev"])


class TableModel(torch.nn.Module):
    """A toy 'model': one learnable row of logits per column, whatever the input."""

    def __init__(self, columns, vocab, seed):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(columns, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x, attention_mask=None, logits_range=None):
        a, b = logits_range
        return self.table[a:b].expand(x.shape[0], -1, -1)


def test_certainty_forcing_lowers_entropy_more_than_the_ce_alone():
    """A few SGD steps on a toy, from the same start: with the entropy term the positions the
    toy already predicts right end up more certain than with the cross-entropy alone."""
    P, G, V = 2, 16, 12
    start = TableModel(P + G, V, seed=0)
    targets = start.table.detach()[P:].argmax(-1)
    targets[::3] = (targets[::3] + 1) % V  # a third of the columns are predicted wrongly
    tokens = torch.cat([torch.zeros(8, P, dtype=torch.long), targets.expand(8, -1)], dim=1)
    right = start.table.detach()[P:].argmax(-1) == targets

    def entropy_after(weight):
        toy = TableModel(P + G, V, seed=0)
        for step in range(10):  # plain SGD, lr 0.5
            loss, _ = dparallel_loss(toy, tokens, None, P, 8, 59, torch.Generator().manual_seed(step),
                                     entropy_weight=weight)
            toy.table.grad = None
            loss.backward()
            with torch.no_grad():
                toy.table -= 0.5 * toy.table.grad
        logp = torch.log_softmax(toy.table.detach()[P:], -1)
        return -(logp.exp() * logp).sum(-1)

    plain, forced = entropy_after(0.0), entropy_after(2.0)
    assert forced[right].mean() < 0.8 * plain[right].mean()


# ---- trajectories ---------------------------------------------------------------------------

def char_model(seed=0):
    tok = build_tokenizer()
    V = len(tok)
    torch.manual_seed(seed)
    cfg = LLaDAConfig(d_model=32, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=48, vocab_size=V,
                      embedding_size=(V + 15) // 16 * 16, max_sequence_length=128, rope_theta=10000.0,
                      mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LLaDAModel(cfg).eval(), tok


def test_trajectories_are_seeded_and_eos_padded():
    model, tok = char_model()
    a = teacher_trajectories(model, tok, ["perm"], 4, seed=3, prompt_len=16, keep="all")
    b = teacher_trajectories(model, tok, ["perm"], 4, seed=3, prompt_len=16, keep="all")
    c = teacher_trajectories(model, tok, ["perm"], 4, seed=4, prompt_len=16, keep="all")
    ta, am = a.groups[32]
    assert ta.shape == (4, 48) and a.stats == {"perm": {"prompts": 4, "kept": 4}}
    assert torch.equal(ta, b.groups[32][0]) and torch.equal(am, b.groups[32][1])
    assert not torch.equal(ta[:, :16], c.groups[32][0][:, :16])  # other seed, other prompts
    canvas = ta[:, 16:]
    after = (canvas == tok.eos_token_id).long().cumsum(-1) > 0
    assert (canvas[after] == tok.eos_token_id).all()
    assert (am[:, 16:] == 1).all() and torch.equal(am[:, :16] == 0, ta[:, :16] == tok.pad_token_id)
    # the reference's filter: an untrained model's answers are wrong, so none is kept
    task = get_task("perm")
    kept = teacher_trajectories(model, tok, ["perm"], 4, seed=3, prompt_len=16)
    texts = tok.batch_decode(ta[:, 16:].tolist(), skip_special_tokens=True)
    assert len(kept) == sum(task.verify(e, t) for e, t in zip(task.examples(4, seed=3), texts))
    # held-out prompts are skipped
    first = task.examples(4, seed=3)[0].prompt
    held = teacher_trajectories(model, tok, ["perm"], 4, seed=3, prompt_len=16, keep="all", exclude={"perm": {first}})
    assert held.stats["perm"]["prompts"] == 3
    with pytest.raises(ValueError, match="prompt_len"):
        teacher_trajectories(model, tok, ["perm"], 2, seed=3, prompt_len=4)


# ---- the script -----------------------------------------------------------------------------

def _script():
    return load_script("scripts/train_dparallel.py")


@pytest.mark.slow
def test_smoke_run_writes_a_loadable_model(tmp_path):
    out = tmp_path / "student"
    _script().main(["--out", str(out), "--smoke"])
    for f in ("config.json", "model.safetensors", "tokenizer.json", "info.json"):
        assert (out / f).is_file()
    info = json.loads((out / "info.json").read_text())
    assert info["decoding"] == {"strategy": "dparallel", "threshold": 0.5}
    assert info["train"]["steps"] > 0 and info["train"]["trajectories"]["per_task"]["add"]["kept"] > 0
    for who in ("teacher", "student"):
        for task in ("words", "add"):
            r = info["eval"][who][task]
            assert 0 <= r["dparallel"]["accuracy"] <= 1 and 1 <= r["dparallel"]["mean_nfe"] <= 32
            assert r["lowconf_full"]["mean_nfe"] == 32
    from transformers import PreTrainedTokenizerFast

    model = LLaDAModel.from_pretrained(out, torch_dtype=torch.float32)
    assert next(iter(model.state_dict().values())).dtype == torch.float32
    tok = PreTrainedTokenizerFast.from_pretrained(str(out))
    gen = paradecode.sample(model, [tok.encode("1+2=")], "dparallel", gen_length=32, block_length=32)
    assert gen.generated.shape == (1, 32) and not (gen.generated == tok.mask_token_id).any()
    assert math.isfinite(info["train"]["log"][-1]["loss"])


@pytest.mark.slow
def test_training_prompts_can_come_from_another_task_than_the_evaluation(tmp_path):
    """--train-tasks: the teacher answers only those prompts (cot-8m's 'cot' draws held-out prompts
    only, so its student trains on 'cot-train'), while the evaluation stays on --tasks."""
    out = tmp_path / "student"
    _script().main(["--out", str(out), "--smoke", "--tasks", "words", "--train-tasks", "add"])
    info = json.loads((out / "info.json").read_text())
    assert info["train"]["train_tasks"] == ["add"] and info["tasks"] == ["words"]
    assert set(info["train"]["trajectories"]["per_task"]) == {"add"}
    assert set(info["eval"]["student"]) == {"words"}
