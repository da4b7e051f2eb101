"""Speculative decoding: greedy == target greedy, sampled outputs follow the target, caches
roll back exactly, VocabTrim with the full vocabulary changes nothing, clear errors."""

import copy
import itertools

import pytest
import torch

import paradecode
from paradecode.speculative import VocabTrim
from paradecode.speculative.acceptance import warp_probs

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def tiny_llama(vocab=40, layers=2, hidden=32, seed=0, scale=8.0, eos=None):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=None, eos_token_id=eos,
    )
    m = LlamaForCausalLM(cfg).eval().double()  # float64: argmax ties cannot flip between layouts
    with torch.no_grad():  # larger weights than the init: peaked, varied distributions
        for p in m.parameters():
            p.mul_(scale)
    return m


def perturbed(model, noise, seed=1):
    d = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(noise * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return d


@pytest.fixture(scope="module")
def pair():
    target = tiny_llama()
    return target, perturbed(target, 0.01)


def greedy_reference(target, rows, n):
    return [target.generate(torch.tensor([r]), max_new_tokens=n, do_sample=False)[0, len(r):] for r in rows]


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_equals_target_greedy(pair, k):
    target, draft = pair
    prompt = torch.tensor([[5, 9, 2, 31, 7]])
    ref = target.generate(prompt, max_new_tokens=24, do_sample=False)
    out = paradecode.sample(target, prompt, "speculative", draft_model=draft, num_draft_tokens=k, max_new_tokens=24)
    assert torch.equal(out.sequences, ref)
    accepted = torch.stack(out.trace.extra("accepted")).sum()
    assert accepted > 0  # the draft is close to the target: drafts do get accepted
    assert out.trace.steps < 24  # ... so fewer target forwards than tokens
    assert out.trace.nfe_by_role["target"] == out.trace.steps


@pytest.mark.parametrize(
    "opts",
    [dict(num_draft_tokens=3), dict(num_draft_tokens=2, draft_length_schedule="heuristic"),
     dict(num_draft_tokens=8, draft_confidence_threshold=0.6)],
)
def test_batched_rows_accept_on_their_own(pair, opts):
    target, draft = pair
    rows = [[3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15], [5]]
    refs = greedy_reference(target, rows, 20)
    out = paradecode.sample(target, rows, "speculative", draft_model=draft, max_new_tokens=20, **opts)
    for i, ref in enumerate(refs):
        assert torch.equal(out.generated[i], ref), i
    acc = torch.stack(out.trace.extra("accepted"))
    assert (acc.sum(0) > 0).all()
    assert (acc != acc[:, :1]).any()  # rows did accept different numbers in the same step


def test_eos_stops_a_row_and_pads(pair):
    target, draft = pair
    prompt = [[5, 9, 2, 31, 7], [3, 3, 8]]
    free = paradecode.sample(target, prompt, "speculative", draft_model=draft, max_new_tokens=16)
    eos = int(free.generated[0, 6])  # a token the first row emits
    t2, d2 = copy.deepcopy(target), copy.deepcopy(draft)
    t2.generation_config.eos_token_id = eos
    out = paradecode.sample(t2, prompt, "speculative", draft_model=d2, max_new_tokens=16)
    for i, row in enumerate(prompt):
        ref = t2.generate(torch.tensor([row]), max_new_tokens=16, do_sample=False, pad_token_id=0)[0, len(row):]
        got = out.generated[i, : ref.numel()]
        assert torch.equal(got, ref)
        assert (out.generated[i, ref.numel():] == 0).all()
    assert int(out.trace.tokens_committed[0]) <= 7


@pytest.mark.parametrize("rows", [[[3, 4, 5, 6, 7, 8, 9]], [[3, 4, 5, 6, 7, 8, 9], [10, 11, 30]]])
def test_rollback_leaves_caches_consistent(pair, rows):
    """After steps with rejections (rows of different lengths, left padding), each static cache
    at its rolled-back length plus the tokens it has not seen gives the logits of a fresh
    forward of the committed text: a rollback is a length update, stale slots never leak."""
    target, draft = pair
    draft = perturbed(target, 0.05, seed=3)  # more rejections
    strat = paradecode.registry.get_strategy_class("speculative")(
        paradecode.registry.build_config(
            paradecode.speculative.SpeculativeConfig, "speculative", dict(num_draft_tokens=4, max_new_tokens=40)
        )
    )
    models, ctx = strat.setup(target, draft_model=draft)
    ids, am = paradecode.api.prepare_prompts(rows, None, ctx["pad_id"], None)
    state = strat.start(ids, attention_mask=am, **ctx)
    call = paradecode.ModelCaller(models, {}, paradecode.Trace(len(rows)))
    rejected, lengths = 0, []
    with torch.inference_mode():
        for _ in range(5):
            strat.step(state, call)
            rejected += int((state.extras["drafted"] > state.extras["accepted"]).sum())
            lengths.append(state.length.tolist())
            state.extras.clear()
        assert rejected > 0
        if len(rows) > 1:
            assert any(len(set(step)) > 1 for step in lengths)  # rows at different lengths
        texts = [
            row + state.tokens[b, ids.shape[1]: ids.shape[1] + int(state.n_gen[b])].tolist() for b, row in enumerate(rows)
        ]
        for role, lm, unseen in (("target", target, 1), ("draft", draft, 2)):
            cache = state.target_cache if role == "target" else state.draft_cache
            assert torch.equal(cache.length, state.length - unseen)
            tail = state.tokens.gather(1, state.length[:, None] - unseen + torch.arange(unseen))
            logits = models[role](tail, cache=cache, num_logits=1)[:, -1]
            for b, text in enumerate(texts):
                fresh = lm(torch.tensor([text])).logits[0, -1]
                torch.testing.assert_close(logits[b], fresh, rtol=0, atol=1e-9)


def test_vocabtrim_full_vocabulary_equals_no_trimming(pair):
    target, draft = pair
    rows = [[3, 4, 5, 6], [10, 11]]
    for sample_opts in (dict(), dict(do_sample=True, temperature=0.8, seed=4)):
        plain = paradecode.sample(target, rows, "speculative", draft_model=draft, max_new_tokens=16, **sample_opts)
        full = paradecode.sample(
            target, rows, "speculative", draft_model=draft, max_new_tokens=16, vocabtrim=VocabTrim.full(40), **sample_opts
        )
        assert torch.equal(plain.sequences, full.sequences)
        assert [a.tolist() for a in plain.trace.extra("accepted")] == [a.tolist() for a in full.trace.extra("accepted")]


def test_vocabtrim_stays_lossless_and_never_drafts_outside(pair):
    target, draft = pair
    prompt = [[5, 9, 2, 31, 7]]
    ref = greedy_reference(target, prompt, 20)[0]
    keep = VocabTrim.from_counts(torch.bincount(ref, minlength=40), size=6)
    out = paradecode.sample(target, prompt, "speculative", draft_model=draft, max_new_tokens=20, vocabtrim=keep)
    assert torch.equal(out.generated[0], ref)  # tokens outside the kept set still come from the target
    strat_state = out.state
    assert strat_state.keep_ids.numel() == 6


def _exact_sequence_probs(target, prompt, vocab, n, temperature, top_k):
    """p(x_1..x_n | prompt) under the (warped) target, for every sequence, by enumeration."""
    seqs = list(itertools.product(range(vocab), repeat=n))
    x = torch.tensor([prompt + list(s) for s in seqs])
    with torch.no_grad():
        logits = target(x).logits[:, len(prompt) - 1: -1]
    probs = warp_probs(logits, temperature, top_k).double()
    picked = probs.gather(2, x[:, len(prompt):, None]).squeeze(2).prod(1)
    return seqs, picked / picked.sum()  # warp_probs works in float32


@pytest.mark.parametrize("opts", [dict(temperature=1.0), dict(temperature=0.7, top_k=3)])
def test_sampled_outputs_follow_the_target_distribution(opts):
    """Chi-square goodness of fit of 3-token continuations against the exact target law."""
    scipy_stats = pytest.importorskip("scipy.stats")
    V, n, N = 5, 3, 6000
    target = tiny_llama(vocab=V, seed=11, scale=4.0)
    draft = tiny_llama(vocab=V, seed=12, scale=4.0)  # unrelated: many rejections, residual draws matter
    prompt = [1, 4, 2]
    seqs, p = _exact_sequence_probs(target, prompt, V, n, opts["temperature"], opts.get("top_k", 0))
    out = paradecode.sample(
        target, torch.tensor([prompt] * N), "speculative", draft_model=draft, num_draft_tokens=2,
        max_new_tokens=n, do_sample=True, seed=123, **opts,
    )
    rejected = (torch.stack(out.trace.extra("drafted")) - torch.stack(out.trace.extra("accepted"))).sum()
    assert rejected > N // 4  # the residual distribution was exercised
    index = {s: i for i, s in enumerate(seqs)}
    counts = torch.zeros(len(seqs), dtype=torch.float64)
    for row in out.generated.tolist():
        counts[index[tuple(row)]] += 1
    expected = p * N
    # Pool outcomes with small expectation so the chi-square approximation holds.
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
        assert counts[~big].sum() == 0
    stat, pval = scipy_stats.chisquare(obs.numpy(), exp.numpy())
    assert pval > 1e-3, (stat, pval)
    tv = 0.5 * (counts / N - p).abs().sum()
    assert tv < 0.06, tv
    # The same test has power: the draft's own law is rejected.
    _, q = _exact_sequence_probs(draft, prompt, V, n, opts["temperature"], opts.get("top_k", 0))
    assert 0.5 * (counts / N - q).abs().sum() > 2 * tv


def test_sampling_is_reproducible_with_seed(pair):
    target, draft = pair
    a = paradecode.sample(target, [[1, 2, 3]], "speculative", draft_model=draft, max_new_tokens=12, do_sample=True, seed=7)
    b = paradecode.sample(target, [[1, 2, 3]], "speculative", draft_model=draft, max_new_tokens=12, do_sample=True, seed=7)
    assert torch.equal(a.sequences, b.sequences)


def test_trace_counts_draft_and_target_forwards(pair):
    target, draft = pair
    out = paradecode.sample(target, [[1, 2, 3]], "speculative", draft_model=draft, num_draft_tokens=3,
                            max_new_tokens=15, record_draft_time=True)
    by_role = out.trace.nfe_by_role
    drafted = sum(out.trace.extra("draft_tokens"))
    assert by_role["draft"] == drafted and by_role["target"] == out.trace.steps
    assert int(out.trace.tokens_committed.sum()) == 15
    assert sum(int(a.sum()) for a in out.trace.extra("accepted")) == 15 - out.trace.steps
    secs = out.trace.extra("draft_seconds")
    assert len(secs) == out.trace.steps and all(0 <= s <= r.seconds for s, r in zip(secs, out.trace.records))


def test_clear_errors(pair):
    target, draft = pair
    with pytest.raises(ValueError, match="needs a draft model"):
        paradecode.sample(target, [[1, 2]], "speculative", max_new_tokens=4)
    other = tiny_llama(vocab=48)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=other, max_new_tokens=4)
    with pytest.raises(ValueError, match="Hugging Face causal LM"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=lambda x: x, max_new_tokens=4)
    with pytest.raises(ValueError, match="num_draft_tokens"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, num_draft_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, top_p=0.0)
    with pytest.raises(ValueError, match="draft_length_schedule"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, draft_length_schedule="fast")
    with pytest.raises(ValueError, match=r"vocabtrim token ids must lie in \[0, 40\)"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, vocabtrim=[1, 2, 99])
    with pytest.raises(ValueError, match="valid options"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, gen_length=8)
    assert "speculative" in paradecode.strategies()


@pytest.mark.parametrize("n", [255, 2**62, 2**63 - 1])
def test_max_new_tokens_beyond_the_targets_positions(pair, n):
    target, draft = pair  # max_position_embeddings=256
    with pytest.raises(ValueError, match=rf"max_new_tokens={n} .* at most 256 \(its config's max_position_embeddings\); use max_new_tokens <= 254"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, max_new_tokens=n)


def test_prompt_ids_beyond_the_vocabulary_and_a_mask_id_are_refused(pair):
    target, draft = pair
    with pytest.raises(ValueError, match=r"prompt_ids must hold token ids in \[0, 39\]"):
        paradecode.sample(target, [[45]], "speculative", draft_model=draft, max_new_tokens=4)
    with pytest.raises(ValueError, match="mask_token_id applies to diffusion-LM strategies"):
        paradecode.sample(target, [[1, 2]], "speculative", draft_model=draft, max_new_tokens=4, mask_token_id=3)


@pytest.mark.parametrize(
    "opts, names",
    [
        (dict(temperature=0.3), ("temperature", "do_sample=False")),
        (dict(top_k=5), ("top_k", "do_sample=False")),
        (dict(top_p=0.9), ("top_p", "do_sample=False")),
        (dict(max_draft_tokens=8), ("max_draft_tokens", "draft_length_schedule='constant'")),
    ],
)
def test_options_without_effect_are_refused(opts, names):
    """transformers' GenerationConfig.validate: an option the combination never reads is an error."""
    from paradecode.config import build_config
    from paradecode.speculative import SpeculativeConfig

    with pytest.raises(ValueError, match="has no effect") as err:
        build_config(SpeculativeConfig, "strategy 'speculative'", opts)
    assert all(n in str(err.value) for n in names)


def test_options_with_effect_are_accepted():
    from paradecode.config import build_config
    from paradecode.speculative import SpeculativeConfig

    build_config(SpeculativeConfig, "s", dict(do_sample=True, temperature=0.3, top_k=5, top_p=0.9))
    build_config(SpeculativeConfig, "s", dict(draft_length_schedule="heuristic", max_draft_tokens=8))
    # the heuristic's ceiling binds only the heuristic: a long constant draft needs no max_draft_tokens
    assert build_config(SpeculativeConfig, "s", dict(num_draft_tokens=40)).num_draft_tokens == 40
    with pytest.raises(ValueError, match="max_draft_tokens"):
        build_config(SpeculativeConfig, "s", dict(num_draft_tokens=40, draft_length_schedule="heuristic"))


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.8), (1.3, 7, 0.6)])
def test_warping_matches_transformers_logits_warpers(temperature, top_k, top_p):
    """p and q are warped as transformers' generate warps logits (temperature, top-k, top-p)."""
    from transformers.generation.logits_process import (
        LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
    )

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    procs = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        procs.append(TopPLogitsWarper(top_p))
    ref = procs(None, logits.clone()).softmax(-1)
    torch.testing.assert_close(warp_probs(logits, temperature, top_k, top_p), ref)


def test_device_copy_of_finished_rows_follows_the_host_one(pair, monkeypatch):
    """The step keeps which rows are done on the device too (so it never copies the host's count
    up): after every step, through an EOS stop and a budget stop, both copies agree."""
    from paradecode.speculative.strategy import SpeculativeDecoding as Speculative

    target, draft = pair
    prompt = [[5, 9, 2, 31, 7], [3, 3, 8]]
    free = paradecode.sample(target, prompt, "speculative", draft_model=draft, max_new_tokens=16)
    t2, d2 = copy.deepcopy(target), copy.deepcopy(draft)
    t2.generation_config.eos_token_id = int(free.generated[0, 6])  # row 0 stops early, row 1 at its budget
    seen = []
    account = Speculative._account  # the host's side of a step, after its read

    def checked(self, state, *args):
        out = account(self, state, *args)
        assert torch.equal(state.finished_device.cpu(), state.finished)
        seen.append(state.finished.clone())
        return out

    monkeypatch.setattr(Speculative, "_account", checked)
    paradecode.sample(t2, prompt, "speculative", draft_model=d2, max_new_tokens=16)
    assert any(s.tolist() == [True, False] for s in seen)  # a step where only the EOS row was done
    assert seen[-1].all()
