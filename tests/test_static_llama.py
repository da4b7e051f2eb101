"""Our Llama forward on a static per-row-length cache equals transformers' Llama; prompt lookup."""

import contextlib

import pytest
import torch

import paradecode
from paradecode.caches.static_kv import StaticKVCache
from paradecode.models.graph_standins import NoHostReads
from paradecode.models.llama import LlamaLM
from paradecode.speculative import greedy_decode
from paradecode.speculative.causal_lm import CausalLM
from paradecode.speculative.drafting import prompt_lookup

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def llama(rope=None, vocab=64, seed=0, bias=False, dtype=torch.float32):
    torch.manual_seed(seed)
    kw = dict(rope_parameters=rope) if rope else {}
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      attention_bias=bias, pad_token_id=0, bos_token_id=None, eos_token_id=None, **kw)
    m = LlamaForCausalLM(cfg).eval().to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4.0)
    return m


class ReplayedClosure:
    """A CUDA graph's stand-in on a CPU: a replay re-runs the captured closure into the captured
    output, so it reads lengths and inputs when it runs, as a real replay does. ``check``: the
    closure runs under :class:`NoHostReads`, as a capture would refuse its reads."""

    def __init__(self, fn, check=True):
        self.fn, self.check = fn, check
        with self.reads_checked():
            self.out = fn()

    def reads_checked(self):
        return NoHostReads() if self.check else contextlib.nullcontext()

    def replay(self):
        with self.reads_checked():
            self.out.copy_(self.fn())


class ReplayedStep:
    """A recorded speculative step's stand-in on a CPU: recording runs nothing (as a CUDA graph
    capture executes nothing), each replay reruns the recorded closure, which reads only what
    it closed over, as a graph reads only the addresses it recorded (under :class:`NoHostReads`)."""

    def __init__(self, fn, models, buffers):
        from paradecode.speculative.step_graph import InlineCall

        self.fn, self.call, self.replays = fn, lambda: InlineCall(models), 0

    def replay(self):
        call = self.call()
        with NoHostReads():
            out = self.fn(call)
        self.roles, self.replays = tuple(call.roles), self.replays + 1
        return out


def fake_cuda_graphs(monkeypatch, check_reads: bool = True) -> None:
    """Make CausalLM capture and replay on a CPU through :class:`ReplayedClosure`, and the
    strategy record whole steps through :class:`ReplayedStep`. ``check_reads=False`` for a
    ``torch.compile``d forward, which dynamo will not trace under a dispatch mode."""
    from paradecode.speculative import causal_lm, step_graph

    monkeypatch.setattr(causal_lm, "_capture",
                        lambda fn, pool: (lambda g: (g, g.out))(ReplayedClosure(fn, check_reads)))
    monkeypatch.setattr(causal_lm.CausalLM, "_graphable", lambda self, ids: self.graphs and self.graph_error is None)
    monkeypatch.setattr(step_graph, "record_step", ReplayedStep)


@pytest.mark.parametrize("rope, bias", [(None, False), (LLAMA3_ROPE, True)])
def test_static_cache_logits_equal_transformers_llama(rope, bias):
    """Chunked feeds (prefill, a 3-token verify, a 1-token step), left padding, rows at
    different lengths after a rollback: every logit equals transformers' full forward."""
    m = llama(rope, bias=bias)
    ours = LlamaLM(m)
    g = torch.Generator().manual_seed(1)
    a = torch.randint(1, 64, (20,), generator=g).tolist()
    b = torch.randint(1, 64, (20,), generator=g).tolist()
    cache = StaticKVCache.for_model(ours, 2, 64)
    cache.start.copy_(torch.tensor([0, 3]))  # row 1 has 3 padding columns
    with torch.no_grad():
        prompt = torch.tensor([a[:8], [0, 0, 0] + b[:5]])
        got0 = ours(prompt, cache.positions(8), cache, num_logits=8)
        cache.advance(8)
        # 3 tokens; row 0 then keeps 1 of them, row 1 all 3 (a rollback by length)
        feed = torch.tensor([[a[8], 7, 7], b[5:8]])
        ours(feed, cache.positions(3), cache, num_logits=3)
        cache.advance(torch.tensor([1, 3]))
        feed = torch.tensor([a[9:12], b[8:11]])
        got1 = ours(feed, cache.positions(3), cache, num_logits=3)
        ref_a = m(torch.tensor([a[:12]])).logits[0]
        ref_b = m(torch.tensor([b[:11]])).logits[0]
    torch.testing.assert_close(got0[0], ref_a[:8], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got0[1, 3:], ref_b[:5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got1[0], ref_a[9:12], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got1[1], ref_b[8:11], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(got0).all()  # padding queries attend to themselves: no NaN anywhere


def test_unsupported_models_are_refused_clearly():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="Llama-architecture"):
        paradecode.sample(gpt2, [[1, 2]], "speculative", draft_model=gpt2, max_new_tokens=4)


def test_greedy_decode_equals_transformers_generate():
    m = llama(LLAMA3_ROPE).double()
    prompt = torch.tensor([[5, 9, 2, 31, 7], [1, 2, 3, 4, 5]])
    ref = m.generate(prompt, max_new_tokens=12, do_sample=False)[:, 5:]
    assert torch.equal(greedy_decode(CausalLM(m), prompt, 12), ref)


def test_prompt_lookup_finds_the_first_longest_match():
    # text: 1 2 3 9 | 5 2 3 4 6 | 2 3  -> the bigram "2 3" first occurs at 1, continuation 9 5 2 ...
    row = [1, 2, 3, 9, 5, 2, 3, 4, 6, 2, 3]
    pad = 0
    tokens = torch.tensor([[pad] * 2 + row + [pad] * 6, [pad] * 2 + [7, 8, 9] + [pad] * 14])
    length = torch.tensor([2 + len(row), 5])
    start = torch.tensor([2, 2])
    drafts, lengths = prompt_lookup(tokens, length, start, k=4, max_ngram=2)
    assert drafts[0].tolist() == [9, 5, 2, 3] and lengths.tolist() == [4, 0]  # row 1: no repeat
    # a unigram match when the bigram has none: "... 4 6 2 3 8" -> "8" never seen before; "3 9"? no:
    row2 = [4, 6, 2, 3, 5, 1, 6]  # last bigram "5 1"... unseen; last unigram "6" at 1 -> 2 3 5 1
    t2 = torch.tensor([row2 + [pad] * 4])
    d2, l2 = prompt_lookup(t2, torch.tensor([7]), torch.tensor([0]), k=3, max_ngram=2)
    assert d2[0].tolist() == [2, 3, 5] and l2.tolist() == [3]
    # the continuation is cut by the text's end and before an EOS
    d3, l3 = prompt_lookup(t2, torch.tensor([7]), torch.tensor([0]), k=10, max_ngram=2, eos_ids=torch.tensor([5]))
    assert l3.tolist() == [2] and d3[0, :2].tolist() == [2, 3]


@pytest.mark.parametrize("opts", [dict(), dict(do_sample=True, seed=3)])
def test_prompt_lookup_drafter_is_lossless(opts):
    """A target that repeats itself: prompt lookup drafts get accepted, the output is the
    target's greedy one, with fewer target forwards than tokens; sampling runs and is seeded."""
    m = llama(vocab=16, seed=4).double()
    with torch.no_grad():  # a repetitive greedy continuation: a strong bias towards tokens 1..5
        m.lm_head.weight.mul_(0.05)
        m.lm_head.weight[1:6] += 40 * torch.roll(m.model.embed_tokens.weight[1:6], 1, 0)
    rows = [[1, 2, 3, 4, 5, 1, 2], [3, 4]]
    out = paradecode.sample(m, rows, "speculative", drafter="prompt-lookup", max_new_tokens=20,
                            num_draft_tokens=4, **opts)
    if not opts:
        for i, r in enumerate(rows):
            ids = torch.tensor([r])
            ref = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False)[0, len(r):]
            assert torch.equal(out.generated[i], ref)
        assert out.trace.nfe_by_role == {"target": out.trace.steps} and out.trace.steps < 20
        assert int(torch.stack(out.trace.extra("accepted")).sum()) > 0
    with pytest.raises(ValueError, match="leave draft_model and vocabtrim out"):
        paradecode.sample(m, rows, "speculative", drafter="prompt-lookup", draft_model=m, max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt_lookup_max_ngram has no effect"):
        paradecode.sample(m, rows, "speculative", draft_model=m, prompt_lookup_max_ngram=3, max_new_tokens=4)


def test_one_model_as_target_and_draft_keeps_two_caches():
    """The same model in both roles: every draft is accepted and the output is its greedy one."""
    m = llama(LLAMA3_ROPE, seed=2).double()
    prompt = torch.tensor([[5, 9, 2, 31, 7]])
    out = paradecode.sample(m, prompt, "speculative", draft_model=m, num_draft_tokens=4, max_new_tokens=15)
    assert torch.equal(out.generated[0], greedy_decode(CausalLM(m), prompt, 15)[0])
    assert out.trace.nfe_by_role["target"] == 3  # 5 tokens per step


def test_graph_replays_read_lengths_and_inputs_at_replay_time(monkeypatch):
    """The CUDA-graph bookkeeping on a CPU (one graph per forward: ``capture_step=False``): a
    stand-in 'graph' re-runs the captured closure into the captured output, as a replay does. Replays must read the rows' lengths and the fed
    tokens when they run, not when they were captured: outputs equal the eager path's."""
    target = llama(LLAMA3_ROPE, seed=5).double()
    draft = llama(LLAMA3_ROPE, seed=5).double()
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = [[5, 9, 2, 31, 7, 8], [3, 4], [12, 13, 14, 15]]
    eager = paradecode.sample(target, rows, "speculative", draft_model=draft, max_new_tokens=24, cuda_graphs=False)
    fake_cuda_graphs(monkeypatch)
    graphed = paradecode.sample(target, rows, "speculative", draft_model=draft, max_new_tokens=24, capture_step=False)
    assert torch.equal(graphed.sequences, eager.sequences)
    acc = torch.stack(graphed.trace.extra("accepted"))
    assert (acc != acc[:, :1]).any()  # rows accepted different numbers of drafts in one step
    lm_t, lm_d = CausalLM.of(target), CausalLM.of(draft)
    assert lm_t.captures >= 1 and lm_t.replays >= 1 and lm_d.captures >= 2 and lm_d.replays >= 1
    prompt = torch.tensor([[5, 9, 2, 31, 7]])
    assert torch.equal(greedy_decode(lm_t, prompt, 10), greedy_decode(lm_t, prompt, 10, cuda_graphs=False))


def step_graphs(target) -> list:
    """The steps recorded on ``target``'s wrapper (kept buffers -> graphs), in recording order."""
    return [g for ws in CausalLM.of(target)._workspaces.values() for g in ws.graphs.values()]


@pytest.mark.parametrize("drafter", ["model", "prompt-lookup"])
def test_recorded_steps_decode_the_same_and_are_kept_across_generations(monkeypatch, drafter):
    """capture_step: once every forward of a step has its own graph, the whole step (drafts,
    verify, acceptance, canvas write, rollback) is recorded once and replayed, here through an
    eager stand-in that reruns only what the recording closed over. Tokens and forward counts
    equal the per-forward path's; a second generation of another prompt length in the same
    64-column bucket records nothing new, and the first generation's output is not overwritten."""
    target = llama(LLAMA3_ROPE, seed=5).double()
    draft = llama(LLAMA3_ROPE, seed=5).double()
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.02 * torch.randn_like(p))
    opts = dict(draft_model=draft) if drafter == "model" else dict(drafter="prompt-lookup")
    rows_a = [[5, 9, 2, 31, 7, 8], [3, 4], [12, 13, 14, 15]]
    rows_b = [[7, 7, 1, 2], [6, 5, 4, 3, 2, 1, 9], [8, 8]]
    ref = {name: paradecode.sample(target, rows, "speculative", max_new_tokens=24, cuda_graphs=False, **opts)
           for name, rows in (("a", rows_a), ("b", rows_b))}
    fake_cuda_graphs(monkeypatch)
    per_forward = paradecode.sample(target, rows_a, "speculative", max_new_tokens=24, capture_step=False, **opts)
    assert step_graphs(target) == []
    got_a = paradecode.sample(target, rows_a, "speculative", max_new_tokens=24, **opts)
    (graph,) = step_graphs(target)
    assert graph.replays >= 2
    state_a = {name: getattr(got_a.state, name).clone() for name in ("tokens", "length", "finished_device")}
    got_b = paradecode.sample(target, rows_b, "speculative", max_new_tokens=24, **opts)
    for name, value in state_a.items():  # the returned state holds copies of the kept buffers
        assert torch.equal(getattr(got_a.state, name), value), name
    assert step_graphs(target) == [graph] and graph.replays >= 4
    for got, name in ((per_forward, "a"), (got_a, "a"), (got_b, "b")):
        assert torch.equal(got.sequences, ref[name].sequences)
        assert got.trace.nfe_by_role == ref[name].trace.nfe_by_role
        assert torch.equal(torch.stack(got.trace.extra("accepted")), torch.stack(ref[name].trace.extra("accepted")))
    expected = ("draft", "draft", "draft", "draft", "draft", "target") if drafter == "model" else ("target",)
    assert graph.roles == expected
    if drafter == "prompt-lookup":  # the n-gram length is part of what a step records
        paradecode.sample(target, rows_a, "speculative", max_new_tokens=24, prompt_lookup_max_ngram=3, **opts)
        assert len(step_graphs(target)) == 2


@pytest.mark.parametrize("drafter, trim", [("model", False), ("model", True), ("prompt-lookup", False)])
def test_recorded_sampled_steps_draw_the_tokens_of_steps_run_as_they_are(monkeypatch, drafter, trim):
    """A sampled step is recorded too: it reads its random numbers from kept buffers filled from
    the call's generator before each replay, in the order a step run as it is draws them, so for
    one seed the tokens equal those of eager steps and of one graph per forward. The sampling
    settings are part of what a step records: another temperature or top-k records a new step,
    never replays one recorded with other settings."""
    target = llama(LLAMA3_ROPE, seed=5).double()
    draft = llama(LLAMA3_ROPE, seed=6).double()  # far from the target: rejections and residual draws
    opts = dict(draft_model=draft) if drafter == "model" else dict(drafter="prompt-lookup")
    if trim:
        opts["vocabtrim"] = list(range(0, 64, 2))
    rows = [[5, 9, 2, 31, 7, 8], [3, 4], [5, 9, 2, 5, 9]]
    settings = [dict(seed=11), dict(seed=12), dict(seed=11, temperature=0.7, top_k=5), dict(seed=12, top_p=0.8)]
    ref = [paradecode.sample(target, rows, "speculative", max_new_tokens=24, do_sample=True, cuda_graphs=False,
                             **opts, **s) for s in settings]
    fake_cuda_graphs(monkeypatch)
    per_forward = paradecode.sample(target, rows, "speculative", max_new_tokens=24, do_sample=True,
                                    capture_step=False, **opts, **settings[0])
    assert step_graphs(target) == []
    got = [paradecode.sample(target, rows, "speculative", max_new_tokens=24, do_sample=True, **opts, **s)
           for s in settings]
    graphs = step_graphs(target)
    # three settings, three steps: another seed alone records nothing new
    assert len(graphs) == 3 and all(g.replays >= 2 and g.noise is not None for g in graphs)
    for out, expected in zip([per_forward] + got, ref[:1] + ref):
        assert torch.equal(out.sequences, expected.sequences)
        assert torch.equal(torch.stack(out.trace.extra("accepted")), torch.stack(expected.trace.extra("accepted")))
    drafted = torch.stack(ref[0].trace.extra("drafted")).sum()
    assert torch.stack(ref[0].trace.extra("accepted")).sum() < drafted  # rejections happened


def test_a_step_queued_before_the_read_runs_in_vain_only_after_an_eos(monkeypatch):
    """launch_ahead: the next recorded step is queued before this one's counts are read. Where
    the budget ends the generation the host stops queueing in time; where an EOS ends it, the
    queued step runs in vain: the same tokens, one more step's forwards counted (they ran)."""
    import copy

    target = llama(LLAMA3_ROPE, seed=5).double()
    prompt = [[5, 9, 2, 31]]
    free = paradecode.sample(target, prompt, "speculative", draft_model=target, max_new_tokens=48, cuda_graphs=False)
    gen = free.generated[0].tolist()
    stop = next(i for i in range(24, 48) if gen[i] not in gen[:i])  # a token first generated late
    runs = {}
    for name, eos in (("budget", None), ("eos", gen[stop])):
        m = copy.deepcopy(target)
        m.generation_config.eos_token_id = eos
        monkeypatch.undo()
        ref = paradecode.sample(m, prompt, "speculative", draft_model=m, max_new_tokens=48, cuda_graphs=False)
        fake_cuda_graphs(monkeypatch)
        runs[name] = [ref] + [paradecode.sample(m, prompt, "speculative", draft_model=m, max_new_tokens=48,
                                                launch_ahead=ahead) for ahead in (False, True)]
        assert len(step_graphs(m)) == 1
    for name, (ref, sync, ahead) in runs.items():
        assert torch.equal(sync.sequences, ref.sequences) and torch.equal(ahead.sequences, ref.sequences), name
        assert sync.trace.nfe_by_role == ref.trace.nfe_by_role, name
        vain = {"target": 1, "draft": 5} if name == "eos" else {"target": 0, "draft": 0}
        assert {r: ahead.trace.nfe_by_role[r] - ref.trace.nfe_by_role[r] for r in vain} == vain, name
    assert runs["eos"][0].generated[0, stop].item() == gen[stop] and runs["eos"][0].generated.shape[1] == 48


def test_counts_copies_alternate_and_survive_the_next_step():
    """Two steps in flight: each one's counts land in its own slot, and what ``wait`` returns is
    not overwritten by a later step's copy."""
    from paradecode.speculative.step_graph import CountsCopy

    copies = CountsCopy(2, torch.device("cpu"))
    a = copies.start(torch.tensor([[1, 2], [3, 4], [0, 1], [5, 5]]))
    b = copies.start(torch.tensor([[9, 9], [9, 9], [1, 1]]))  # k = 0: three rows of counts
    assert a != b
    got_a = copies.wait(a)
    assert copies.start(torch.full((4, 2), 7)) == a  # the slot is reused two launches later
    assert got_a.tolist() == [[1, 2], [3, 4], [0, 1], [5, 5]]
    assert copies.wait(b)[:3].tolist() == [[9, 9], [9, 9], [1, 1]]


def test_steps_that_do_not_repeat_are_not_recorded(monkeypatch):
    """The heuristic draft length, the confidence stop and timing the draft change from step to
    step (or read the host), so they keep one graph per forward."""
    fake_cuda_graphs(monkeypatch)
    for opts in (dict(draft_length_schedule="heuristic"),
                 dict(draft_confidence_threshold=0.5), dict(record_draft_time=True), dict()):
        target = llama(LLAMA3_ROPE, seed=5).double()
        paradecode.sample(target, [[5, 9, 2, 31]], "speculative", draft_model=target, max_new_tokens=40, **opts)
        assert len(step_graphs(target)) == (0 if opts else 1), opts  # the defaults: recorded


def test_a_failed_step_recording_falls_back_with_a_warning(monkeypatch):
    """A step that cannot be recorded runs forward by forward, with the same tokens, and is not
    tried again on the same buffers."""
    from paradecode.speculative import step_graph

    target = llama(LLAMA3_ROPE, seed=5).double()
    ref = paradecode.sample(target, [[5, 9, 2, 31]], "speculative", draft_model=target, max_new_tokens=40,
                            cuda_graphs=False)
    fake_cuda_graphs(monkeypatch)
    tries = []

    def refuse(fn, models, buffers):
        tries.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(step_graph, "record_step", refuse)
    with pytest.warns(RuntimeWarning, match="forward by forward"):
        out = paradecode.sample(target, [[5, 9, 2, 31]], "speculative", draft_model=target, max_new_tokens=40)
    assert torch.equal(out.sequences, ref.sequences) and len(tries) == 1


def compiled_decode_case(monkeypatch, fuse: bool) -> tuple:
    """What a whole-forward compile test starts from: a ``torch.compile`` backend that runs each
    traced graph as it is and the list it fills, fake CUDA graphs, a fresh dynamo, the model, a
    prompt and its eager greedy tokens. Returns (backend, graphs, model, prompt, reference)."""
    graphs: list = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    fake_cuda_graphs(monkeypatch, check_reads=False)
    torch._dynamo.reset()
    m = llama(LLAMA3_ROPE, seed=3).double()
    prompt = torch.tensor([[5, 9, 2, 31, 7]])
    ref = greedy_decode(CausalLM(m, fuse_projections=fuse), prompt, 10, cuda_graphs=False)
    return backend, graphs, m, prompt, ref


@pytest.mark.parametrize("fuse", [False, True])
def test_compiled_captured_forward_traces_whole_and_decodes_the_same(monkeypatch, fuse):
    """``compile_mode``: the forward captured as a graph is one ``torch.compile`` graph (fullgraph:
    a break would raise) over the cache's writes and masks, and decoding through it gives the
    eager tokens. A counting backend stands in for Inductor on the CPU."""
    counting_backend, graphs, m, prompt, ref = compiled_decode_case(monkeypatch, fuse)
    lm = CausalLM(m, fuse_projections=fuse, compile_mode="default", compile_backend=counting_backend)
    assert torch.equal(greedy_decode(lm, prompt, 10), ref)
    assert lm.graph_error is None and lm.captures == 1 and lm.replays == 7  # prefill, 1st step eager; capture
    assert len(graphs) == 1  # the captured one-token forward went through the compiler as one graph
    ops = {str(n.target) for n in graphs[0].graph.nodes}
    assert any("index_put" in o for o in ops)  # ... the cache's k/v writes included


def test_compile_mode_refuses_modes_that_capture_graphs_themselves():
    from paradecode.speculative.strategy import SpeculativeConfig

    with pytest.raises(ValueError, match="captures its own CUDA graphs"):
        SpeculativeConfig(compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="compile_mode must be None or one of"):
        CausalLM(llama(), compile_mode="fast")
    with pytest.raises(ValueError, match="cuda_graphs=False captures none"):
        paradecode.sample(llama(seed=1), [[5, 9]], "speculative", draft_model=llama(seed=2), max_new_tokens=4,
                          compile_mode="default", cuda_graphs=False)


def test_compile_mode_per_role():
    """A mapping compiles only the roles it names; other keys are refused."""
    from paradecode.speculative.strategy import SpeculativeConfig

    c = SpeculativeConfig(compile_mode={"draft": "max-autotune-no-cudagraphs"})
    assert c.compile_mode_of("draft") == "max-autotune-no-cudagraphs" and c.compile_mode_of("target") is None
    assert SpeculativeConfig(compile_mode="default").compile_mode_of("target") == "default"
    with pytest.raises(ValueError, match="roles 'target' and 'draft'"):
        SpeculativeConfig(compile_mode={"drafter": "default"})
    with pytest.raises(ValueError, match="compile_mode must be None or one of"):
        SpeculativeConfig(compile_mode={"draft": "reduce-overhead"})
    target, draft = llama(seed=1), llama(seed=2)
    out = paradecode.sample(target, [[5, 9, 2]], "speculative", draft_model=draft, max_new_tokens=6,
                            compile_mode={"draft": "default"})
    from paradecode.speculative.causal_lm import _STASH

    # the wrappers the strategy made (kept on each model, keyed by keep ids, fusion, compile mode)
    assert [key[2] for key in draft.__dict__[_STASH]] == ["default"]
    assert [key[2] for key in target.__dict__[_STASH]] == [None]
    assert out.sequences.shape == (1, 9)
