"""Learn2PD: the filter, its training data, the strategy and End-of-Text Prediction."""

import pytest
import torch

import paradecode
from paradecode.bench.learn2pd_training import collect_trajectories, train_filter
from paradecode.models import ModelWrapper
from paradecode.samplers.learn2pd_filter import FILTER_DIRNAME, Learn2PDFilter

from .conftest import MASK

KW = dict(gen_length=16, block_length=8, steps=16)
EOS = 61


def _const_filter(logit: float, block_length: int = 8) -> Learn2PDFilter:
    """A filter that answers ``logit`` everywhere (accept all or nothing)."""
    f = Learn2PDFilter(block_length)
    with torch.no_grad():
        f.net[0].weight.zero_()
        f.net[0].bias.fill_(logit)
    return f


def test_filter_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    f = Learn2PDFilter(8, hidden_sizes=(5,))
    f.save_pretrained(tmp_path / "flt", trained_on="tiny")
    g = Learn2PDFilter.from_pretrained(tmp_path / "flt")
    x = torch.rand(4, 8)
    torch.testing.assert_close(f(x), g(x))
    assert g.metadata == {"trained_on": "tiny"}
    with pytest.raises(ValueError, match="train one"):
        Learn2PDFilter.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match="blocks of 8"):
        f(torch.rand(2, 4))


def test_steps_default_to_gen_length():
    cfg = paradecode.registry.get_strategy_class("learn2pd").Config(gen_length=64, block_length=32)
    assert cfg.steps == 64 and cfg.accept_threshold == 0.96 and cfg.eot
    assert paradecode.registry.get_strategy_class("learn2pd").Config().gen_length == 256


def test_accepting_nothing_is_the_lowconf_baseline(tiny_model, prompts):
    base = paradecode.sample(tiny_model, prompts, "lowconf", **KW)
    out = paradecode.sample(tiny_model, prompts, "learn2pd", filter=_const_filter(-30.0), eot=False, **KW)
    assert torch.equal(base.sequences, out.sequences) and out.trace.nfe == base.trace.nfe


def test_accepting_everything_takes_one_step_per_block(tiny_model, prompts):
    out = paradecode.sample(tiny_model, prompts, "learn2pd", filter=_const_filter(30.0), eot=False, **KW)
    assert out.trace.nfe == 2 and not (out.generated == MASK).any()


def test_oracle_trajectories_label_final_tokens(tiny_model, prompts):
    X, Y = collect_trajectories(tiny_model, prompts, **KW)
    assert X.shape == Y.shape and X.shape[1] == 8
    assert ((X >= 0) & (X <= 1)).all() and set(Y.unique().tolist()) <= {0.0, 1.0}
    # the greedy oracle needs no more steps than the baseline's 16 for 3 rows, and some
    # predictions are already final before they are committed
    assert 3 * 2 <= X.shape[0] <= 3 * 16 and 0 < Y.mean() < 1


def test_trained_filter_separates_final_predictions():
    # Synthetic trajectories: a prediction is final iff its confidence is high.
    g = torch.Generator().manual_seed(0)
    X = torch.rand(2000, 8, generator=g)
    Y = (X > 0.7).float()
    f, stats = train_filter(X, Y, epochs=1500, lr=3e-2, threshold=0.9)
    assert stats["val_precision"] > 0.95 and stats["val_recall"] > 0.3


def test_filter_is_found_next_to_the_model(tiny_model, prompts, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    model = paradecode.models.LLaDAModel.from_pretrained(tmp_path / "m")
    with pytest.warns(UserWarning, match="accepts nothing"):  # no filter for blocks of 8 anywhere
        out = paradecode.sample(model, prompts, "learn2pd", eot=False, **KW)
    assert torch.equal(out.sequences, paradecode.sample(model, prompts, "lowconf", **KW).sequences)
    _const_filter(30.0).save_pretrained(tmp_path / "m" / FILTER_DIRNAME)
    out = paradecode.sample(model, prompts, "learn2pd", eot=False, **KW)
    assert out.trace.nfe == 2
    with pytest.raises(ValueError, match="trained for blocks of 8"):
        paradecode.sample(model, prompts, "learn2pd", gen_length=16, block_length=16, steps=16)


class _EndsAt(ModelWrapper):
    """The tiny model, but every position from column ``end`` on predicts EOS confidently."""

    def __init__(self, model, end):
        super().__init__(model)
        self.end = end

    def forward(self, input_ids, positions=None, cache=None, attention_mask=None, logits_range=None):
        logits = self.model(input_ids, positions=positions, cache=cache, attention_mask=attention_mask)
        cols = positions if positions is not None else torch.arange(input_ids.shape[1]).expand_as(input_ids)
        logits[..., EOS] = torch.where(cols >= self.end, 1e4, -1e4).to(logits.dtype)
        if logits_range is not None:
            logits = logits[:, logits_range[0] : logits_range[1]]
        return logits


@pytest.mark.parametrize("cache, truncate", [(None, False), (None, True), ("dual", False), ("dkv-decode", True)])
def test_end_of_text_prediction_stops_early(tiny_model, prompts, cache, truncate):
    model = _EndsAt(tiny_model, end=6 + 5)  # the answer is 5 tokens, then end-of-text
    kw = dict(gen_length=32, block_length=8, steps=32, filter=_const_filter(-30.0), cache=cache)
    plain = paradecode.sample(model, prompts, "learn2pd", eot=False, **kw)
    eot = paradecode.sample(model, prompts, "learn2pd", eot=True, eot_truncate=truncate, **kw)
    am = eot.state.attention_mask
    assert (am is not None and not am[:, 6 + 6 :].any()) if truncate else am is None
    assert (plain.generated[:, 5:] == EOS).all() and (eot.generated[:, 5:] == EOS).all()
    assert plain.trace.nfe == 32
    # the canvas is cut after the first end-of-text at step 0: the 5 answer tokens and that
    # end-of-text take a step each (+1: step 0's top-1 may be a tail EOS that the cut removes)
    assert eot.trace.nfe <= 7
    assert not (eot.generated == MASK).any()
    assert eot.trace.tokens_committed.tolist() == [32, 32, 32]  # end-of-text fills count as commits


def test_end_of_text_accepted_by_the_filter_is_committed_and_ends_the_row(tiny_model, prompts):
    model = _EndsAt(tiny_model, end=6 + 3)
    out = paradecode.sample(model, prompts, "learn2pd", filter=_const_filter(30.0), eot=True,
                            gen_length=32, block_length=8, steps=32)
    assert out.trace.nfe == 1 and (out.generated[:, 3:] == EOS).all() and not (out.generated == MASK).any()


def test_the_filter_runs_once_per_step_with_end_of_text_prediction(tiny_model, prompts, monkeypatch):
    """select and end_of_text share the step's verdict: one filter run per step, the same tokens."""
    torch.manual_seed(0)
    flt = Learn2PDFilter(8, hidden_sizes=(5,))
    model = _EndsAt(tiny_model, end=6 + 12)
    kw = dict(gen_length=32, block_length=8, steps=32, filter=flt, eot=True)
    runs = []
    real = Learn2PDFilter.accept

    def counting(self, confidence, threshold):
        runs.append(confidence.shape)
        return real(self, confidence, threshold)

    monkeypatch.setattr(Learn2PDFilter, "accept", counting)
    out = paradecode.sample(model, prompts, "learn2pd", **kw)
    assert len(runs) == out.trace.steps
    # against the verdict computed twice (what a state without the kept verdict does)
    from paradecode.samplers.learn2pd import Learn2PDState

    monkeypatch.setattr(Learn2PDState, "accepted", property(lambda self: None, lambda self, value: None))
    again = paradecode.sample(model, prompts, "learn2pd", **kw)
    assert torch.equal(out.sequences, again.sequences) and again.trace.nfe == out.trace.nfe
    assert len(runs) == out.trace.steps + 2 * again.trace.steps


@pytest.mark.parametrize("cache", ["prefix", "dual", "dkv-decode", "dkv-greedy"])
def test_learn2pd_runs_with_every_cache_on_ragged_batches(tiny_model, cache):
    rows = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    f = _const_filter(0.0)  # sigmoid(0) = 0.5: accepts all with threshold 0.4
    kw = dict(filter=f, accept_threshold=0.4, eot=True, **KW)
    ref = paradecode.sample(tiny_model, rows, "learn2pd", **kw)
    out = paradecode.sample(tiny_model, rows, "learn2pd", cache=cache, **kw)
    assert not (out.generated == MASK).any()
    assert out.trace.nfe == ref.trace.nfe == 2


@pytest.fixture(scope="module")
def shipped():
    from paradecode import zoo

    return zoo.load(zoo.available()[0])


@pytest.mark.slow
def test_shipped_filter_speeds_up_the_shipped_model_without_losing_accuracy(shipped):
    """The shipped filter (trained by scripts/train_learn2pd.py) is found next to the shipped
    model; learn2pd + EoTP at the paper's accept threshold (0.96) needs far fewer forwards than
    the baseline at the same accuracy on `perm` (H100, N=500: 8.2 vs 32 forwards, 99.0% both;
    README, Learn2PD figures)."""
    from paradecode.bench.tasks import get_task

    model, tok = shipped

    task = get_task("perm")
    examples = task.examples(24, seed=777)
    prompts = [tok.encode(e.prompt) for e in examples]

    def run(strategy, **kw):
        out = paradecode.sample(model, prompts, strategy, gen_length=32, block_length=32, **kw)
        texts = tok.batch_decode(out.generated.tolist(), skip_special_tokens=True)
        return sum(task.verify(e, t) for e, t in zip(examples, texts)) / len(examples), float(out.trace.row_nfe.float().mean())

    base_acc, base_nfe = run("lowconf", steps=32)
    acc, nfe = run("learn2pd")
    assert base_nfe == 32 and nfe < base_nfe / 2
    assert acc >= base_acc - 1 / len(examples)


class _EndsAtTwo(_EndsAt):
    """The tiny model, but end-of-text wins at two columns: ``end`` by a small margin and
    ``end + 4`` by a large one. End-of-text prediction cuts at the more confident one."""

    def forward(self, input_ids, positions=None, cache=None, attention_mask=None, logits_range=None):
        logits = self.model(input_ids, positions=positions, cache=cache, attention_mask=attention_mask)
        cols = positions if positions is not None else torch.arange(input_ids.shape[1]).expand_as(input_ids)
        lead = logits.amax(-1) + torch.where(cols == self.end, 0.3, 3.0)
        logits[..., EOS] = torch.where((cols == self.end) | (cols == self.end + 4), lead, logits[..., EOS]).to(logits.dtype)
        if logits_range is not None:
            logits = logits[:, logits_range[0] : logits_range[1]]
        return logits


@pytest.mark.parametrize("cache", [None, "dual"])
def test_end_of_text_with_the_samplers_kernels_cuts_where_pytorch_does(tiny_model, prompts, cache, monkeypatch):
    """The end-of-text ranking from ``confidence_kernel.token_confidence`` (forced, as on a GPU:
    float64 sums only where the argmax is end-of-text) and the cut from
    ``learn2pd_kernel.end_of_text_cut`` give PyTorch's cuts, step by step, and its tokens."""
    from paradecode.samplers import block, common, learn2pd
    from paradecode.samplers.learn2pd import Learn2PD

    end = 6 + 9
    model = _EndsAtTwo(tiny_model, end=end)
    kw = dict(gen_length=32, block_length=8, steps=32, filter=_const_filter(-30.0), eot=True, cache=cache)
    cuts = []
    real_cut = Learn2PD.end_of_text
    monkeypatch.setattr(Learn2PD, "end_of_text", lambda *a: (lambda c: cuts.append(c.tolist()) or c)(real_cut(*a)))
    eager = paradecode.sample(model, prompts, "learn2pd", **kw)
    eager_cuts, cuts[:] = list(cuts), []
    calls, cut_calls = [], []
    real, real_kernel = block.token_confidence, learn2pd.end_of_text_cut
    monkeypatch.setattr(common, "sampler_kernels_run", lambda t: True)
    monkeypatch.setattr(block, "token_confidence", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(learn2pd, "end_of_text_cut", lambda *a: cut_calls.append(1) or real_kernel(*a))
    fused = paradecode.sample(model, prompts, "learn2pd", **kw)
    assert len(calls) == len(cut_calls) == fused.trace.nfe
    assert cuts == eager_cuts
    assert torch.equal(fused.sequences, eager.sequences) and fused.trace.nfe == eager.trace.nfe
    # the first step cuts after the more confident end-of-text (end + 4), not the first (end)
    assert eager_cuts[0] == [end + 4] * 3 and eager.trace.nfe < 32


def _torch_cut(eot_conf, accepted, x0, cols, eos, lo, length, kept, rows):
    """Learn2PD's cut as its PyTorch path makes it (the kernel's reference)."""
    first = torch.where(accepted & (x0 == eos), cols, length).min(-1).values
    best_conf, best = eot_conf.max(-1)
    cut = torch.minimum(torch.where(first < length, first, torch.where(best_conf >= 0, best + lo, length)), kept[rows])
    kept[rows] = cut
    return cut


def test_the_cut_kernel_makes_pytorchs_cuts():
    """``learn2pd_kernel.end_of_text_cut`` under the interpreter against the PyTorch path: a hit
    in the block wins (the first by column), else the first of the most confident ranked
    positions (past the kernel's 1,024-position span too), no ranking cut where nothing is ranked
    or a NaN is, each kept as the smaller of it and the cut so far, for a subset of the rows."""
    from paradecode.samplers.learn2pd_kernel import end_of_text_cut

    n, W, P, lo, L = 5, 8, 2500, 40, 3000
    g = torch.Generator().manual_seed(0)
    eot_conf = torch.where(torch.rand(n, P, generator=g) < 0.01, 0.5 * torch.rand(n, P, generator=g, dtype=torch.float64),
                           torch.tensor(-1.0, dtype=torch.float64))
    eot_conf[1, [3, 9]] = 0.99  # a tie: the first
    eot_conf[2] = -1.0  # nothing ranked
    eot_conf[3, 7] = float("nan")
    eot_conf[4, [1100, 2124]] = 0.999  # past one span, and a tie within one lane of the kernel
    accepted = torch.zeros(n, W, dtype=torch.bool)
    x0 = torch.randint(0, 50, (n, W), generator=g)
    accepted[0, [5, 7]] = True
    x0[0, [5, 7]] = 61
    accepted[1, 2] = True  # accepted but not end-of-text
    x0[1, 1] = 61  # end-of-text but not accepted
    cols = lo + torch.arange(W).expand(n, W) + 8 * torch.arange(n)[:, None]
    rows = torch.tensor([0, 2, 3, 5, 1])
    kept = torch.tensor([L, L, L, 35, L, 2200])
    kept_torch = kept.clone()
    got = end_of_text_cut(eot_conf, accepted, x0, cols, 61, lo, L, kept, rows)
    want = _torch_cut(eot_conf, accepted, x0, cols, 61, lo, L, kept_torch, rows)
    assert got.tolist() == want.tolist() and torch.equal(kept, kept_torch)
    assert got.tolist() == [lo + 5, lo + 3, 35, 2200, lo + 1100]


def test_the_filter_kernel_gives_the_modules_verdict():
    """``learn2pd_kernel.filter_accept`` under the interpreter against the filter module: the
    same verdict wherever the probability is not within float32 rounding of the threshold; rows
    of a wider tensor (a strided confidence); unmasked positions never accepted."""
    from paradecode.samplers.learn2pd_kernel import filter_accept

    g = torch.Generator().manual_seed(7)
    flt = Learn2PDFilter(32)
    with torch.no_grad():
        flt.net[0].weight.copy_(torch.randn(32, 32, generator=g) * 3)
        flt.net[0].bias.copy_(torch.randn(32, generator=g))
    wide = torch.rand(6, 40, dtype=torch.float64, generator=g)
    conf, mask = wide[:, 4:36], torch.rand(6, 32, generator=g) < 0.7
    layer = flt.linear
    for threshold in (0.5, 0.96):
        got = filter_accept(conf, layer.weight, layer.bias, threshold, mask)
        want = flt.accept(conf, threshold) & mask
        near = (torch.sigmoid(flt(conf)) - threshold).abs() < 1e-5
        assert torch.equal(got | near, want | near) and 0 < int(want.sum()) < int(mask.sum())
    assert Learn2PDFilter(32, hidden_sizes=(4,)).linear is None
    assert filter_accept(conf, layer.weight.double(), layer.bias, 0.5, mask) is None


def test_learn2pd_with_the_filter_kernel_forced_decodes_as_without(tiny_model, prompts, monkeypatch):
    """A filter that accepts some positions and rejects others (confidence above ~0.51): the
    tokens and forwards of the module's verdict with the kernel forced, one kernel run a step."""
    from paradecode.samplers import common, learn2pd

    flt = Learn2PDFilter(8)
    with torch.no_grad():
        flt.net[0].weight.copy_(20 * torch.eye(8))
        flt.net[0].bias.fill_(-7.0)
    kw = dict(gen_length=32, block_length=8, steps=32, filter=flt, eot=False, cache="dual")
    eager = paradecode.sample(tiny_model, prompts, "learn2pd", **kw)
    calls, real = [], learn2pd.filter_accept
    monkeypatch.setattr(common, "sampler_kernels_run", lambda t: True)
    monkeypatch.setattr(common, "_selection_kernels", True)
    monkeypatch.setattr(learn2pd, "filter_accept", lambda *a: calls.append(1) or real(*a))
    fused = paradecode.sample(tiny_model, prompts, "learn2pd", **kw)
    assert len(calls) == fused.trace.steps
    assert torch.equal(fused.sequences, eager.sequences) and fused.trace.nfe == eager.trace.nfe
    assert 8 < eager.trace.nfe < 32  # the filter accepted some positions beyond the schedule's one a step, not all
