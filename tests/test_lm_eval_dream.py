"""The lm-eval model ``paradecode`` on a Dream checkpoint (``model_type: "Dream"``): a tiny
random ``DreamModel`` and a character tokenizer with Dream's special-token names, saved to a
temporary directory.

Each number lm-eval gets is checked against a computation written here: generations against
``paradecode.sample`` with the dual cache, cut as Dream's evaluation cuts (at EOS, then at each
stop); log-likelihoods against Dream's ``_eval_target_nll_mc`` steps (BOS before the context,
EOS after the continuation, Bernoulli masks at noise level ``p``, cross-entropy / ``p``)
computed on transformers' Qwen2 with the same weights, made bidirectional, its logits shifted
here by one column: not paradecode's model, likelihood or draw code. The last test runs
lm-eval's command line end to end, offline.
"""

import json
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

import paradecode
from paradecode.integrations.lm_eval import ParadecodeLM
from paradecode.likelihood import greedy_suffix_matches
from paradecode.models import DreamModel

from .test_dream import qwen2_twin, shift, tiny_dream
from .test_lm_eval import DATA, LAUNCHERS, ROOT, TASKS, docs

SPECIAL = ["<|endoftext|>", "<|beginoftext|>", "<|mask|>", "<unk>"]  # Dream's names for EOS/pad, BOS, mask
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
BOS, EOS = "<|beginoftext|>", "<|endoftext|>"
GEN = dict(strategy="threshold", threshold=0.9, gen_length=16, block_length=8, cache="dual")


def make_tokenizer():
    """One token per character, plus Dream's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS, bos_token=BOS,
                                   mask_token="<|mask|>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def dream(tok) -> DreamModel:
    ids = dict(mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
               bos_token_id=tok.bos_token_id)
    return tiny_dream(scale=8.0, vocab_size=len(tok), max_position_embeddings=512, **ids)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, dream, tok):
    path = tmp_path_factory.mktemp("ckpt") / "tiny-dream"
    dream.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm(checkpoint):
    return ParadecodeLM(pretrained=str(checkpoint), device="cpu", batch_size=2, mc_num=4, **GEN)


def dream_cut(tok, ids, until):
    """Dream's ``_generate_batch`` / ``generate_until``: decode, keep what precedes the first EOS,
    split at each stop in turn; then without special tokens (paradecode's rule for every model)."""
    text = tok.decode(ids, skip_special_tokens=False).split(EOS)[0]
    for stop in until:
        text = text.split(stop)[0]
    return tok.decode(tok(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True)


def direct_generation(model, tok, prompt, until):
    out = paradecode.sample(model, [tok.encode(BOS + prompt)], "threshold", threshold=0.9, gen_length=16,
                            block_length=8, cache="dual", seed=1234)
    return dream_cut(tok, out.generated[0].tolist(), until)


@torch.no_grad()
def direct_score(twin, tok, context, continuation, mc_num=4, batch_size=2, seed=1234, eps=1e-3, shifted=True):
    """Dream's evaluation, step by step: ``_encode_pair`` (BOS text before the context, EOS id
    after the whole), ``_forward_process`` (a row's noise level p, Bernoulli masks, the first and
    last columns kept) on the target only, cross-entropy of the masked tokens / p."""
    prefix = tok.encode(BOS + context)
    whole = tok.encode(BOS + context + continuation) + [tok.eos_token_id]
    seq = torch.tensor(whole).repeat(batch_size, 1)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(mc_num // batch_size):
        u0 = torch.rand(1, generator=g)
        p = (1 - eps) * ((u0 + torch.arange(batch_size).float() / batch_size) % 1) + eps
        masked = torch.rand(seq.shape, generator=g) < p[:, None]
        masked[:, 0] = masked[:, -1] = False
        masked[:, : len(prefix)] = False  # only the target is noised
        noisy = torch.where(masked, tok.mask_token_id, seq)
        logits = twin(input_ids=noisy).logits
        logits = shift(logits) if shifted else logits
        ce = F.cross_entropy(logits[masked], seq[masked], reduction="none") / p[:, None].expand_as(masked)[masked]
        losses.append(ce.sum().item() / batch_size)
    return -sum(losses) / len(losses)


# ---- the checkpoint is served as Dream ----------------------------------------------------------
def test_a_dream_checkpoint_gets_dreams_model_and_recipe(lm, checkpoint):
    assert json.loads((checkpoint / "config.json").read_text())["model_type"] == "Dream"
    assert isinstance(lm.model, DreamModel) and lm._scorer is lm.model  # no adapter: shifted logits, caches
    assert lm.recipe == "dream" and lm.add_bos_token and not lm.is_check_greedy
    assert lm.sampling_eps == 1e-3 and lm.max_length == 512  # min(Dream's 2048, the config's 512)
    assert lm.tok_encode("ab") == lm.tokenizer.encode(BOS + "ab")
    assert lm.tok_encode(BOS + "ab") == lm.tokenizer.encode(BOS + "ab")  # no second BOS
    assert lm.tok_encode("ab", add_special_tokens=False) == lm.tokenizer.encode("ab")


def test_no_bos_before_a_chat_template_unless_asked(checkpoint):
    """Dream's base evaluation writes BOS (add_bos_token=true); its instruct evaluation applies the
    chat template and writes none."""
    chat = [{"role": "user", "content": "ab"}]
    for asked, bos in [(None, False), (True, True)]:
        lm = ParadecodeLM(pretrained=str(checkpoint), device="cpu", add_bos_token=asked)
        lm.tokenizer.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
        assert lm.add_bos_token
        context = lm.apply_chat_template(chat)
        assert context == "[ab]"
        assert lm.tok_encode(context) == lm.tokenizer.encode((BOS if bos else "") + "[ab]")


def test_recipe_arguments_are_checked(checkpoint):
    with pytest.raises(ValueError, match="recipe must be one of"):
        ParadecodeLM(pretrained=str(checkpoint), recipe="mdlm", device="cpu")
    with pytest.raises(ValueError, match=r"sampling_eps must be in \[0, 1\)"):
        ParadecodeLM(pretrained=str(checkpoint), sampling_eps=1.5, device="cpu")
    with pytest.raises(ValueError, match="sampling_eps belongs to Dream's likelihood"):
        ParadecodeLM(pretrained=str(checkpoint), recipe="llada", sampling_eps=0.01, device="cpu")


# ---- generate_until ------------------------------------------------------------------------------
def test_generate_until_is_sample_with_the_dual_cache_cut_as_dream_cuts(lm, dream, tok):
    prompts = ["12+345=", "sort banana:", "words river:", "ab"]
    whole = [direct_generation(dream, tok, p, []) for p in prompts]
    # stops taken from the text itself, so that the cut is exercised: a character halfway, and two
    # stops of which the later-listed one comes first in the text
    cases = [(prompts[0], ["\n"]), (prompts[1], [whole[1][len(whole[1]) // 2]]),
             (prompts[2], [whole[2][-2], whole[2][3]]), (prompts[3], [])]
    reqs = [Instance("generate_until", {}, (p, {"until": u}), i) for i, (p, u) in enumerate(cases)]
    got = lm.generate_until(reqs, disable_tqdm=True)
    want = [direct_generation(dream, tok, p, u) for p, u in cases]
    assert got == want
    assert len(got[1]) < len(whole[1]) and len(got[2]) <= 3 and got[3] == whole[3] != ""
    assert lm.stats["requests"] == 4 and lm.stats["nfe"] > 0


def test_generation_stops_at_eos_for_dream(lm, tok):
    text = "12" + EOS + "34"
    assert lm.postprocess(text, []) == "12"
    assert lm.postprocess("1;2" + EOS, [";"]) == "1"


# ---- loglikelihood -------------------------------------------------------------------------------
def test_loglikelihood_is_dreams_estimate_on_shifted_logits(lm, dream, tok):
    twin = qwen2_twin(dream)
    pairs = [("12+345=", "357"), ("12+345=", "951"), ("sort lemon:", "elmno"), ("sort river:", "eirrv")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)], disable_tqdm=True)
    want = [direct_score(twin, tok, c, x) for c, x in pairs]
    assert [ll for ll, _ in got] == pytest.approx(want, rel=1e-5)
    assert [g for _, g in got] == [False] * 4  # Dream's evaluation computes no is_greedy
    # the check can fail: without the shift, or with LLaDA's estimate, the numbers differ
    unshifted = [direct_score(twin, tok, c, x, shifted=False) for c, x in pairs]
    assert all(abs(u - w) > 1e-2 * abs(w) for u, w in zip(unshifted, want))
    llada = ParadecodeLM(pretrained=str(lm.pretrained), recipe="llada", device="cpu", batch_size=2, mc_num=4, **GEN)
    assert llada.tok_encode("ab") == tok.encode("ab") and llada.is_check_greedy
    other = llada.loglikelihood([Instance("loglikelihood", {}, pairs[0], 0)], disable_tqdm=True)[0][0]
    assert abs(other - want[0]) > 1e-2 * abs(want[0])


def test_the_greedy_check_on_dream_when_asked(checkpoint, dream, tok):
    lm = ParadecodeLM(pretrained=str(checkpoint), device="cpu", batch_size=2, mc_num=2, is_check_greedy=True, **GEN)
    prefix = tok.encode(BOS + "sort lemon:")
    out = paradecode.sample(dream, [prefix], "lowconf", gen_length=3, block_length=3, steps=3)
    greedy = tok.decode(out.generated[0])
    assert greedy_suffix_matches(dream, prefix, out.generated[0].tolist(), mask_id=tok.mask_token_id)
    flags = [g for _, g in lm.loglikelihood([Instance("loglikelihood", {}, ("sort lemon:", c), i)
                                             for i, c in enumerate([greedy, greedy[::-1] + "q"])], disable_tqdm=True)]
    assert flags == [True, False]


# ---- lm-eval's command line, end to end ----------------------------------------------------------
@pytest.mark.slow
def test_lm_eval_command_line_runs_a_dream_checkpoint_offline(tmp_path, checkpoint, dream, tok):
    for name, text in TASKS.items():
        (tmp_path / name).write_text(text.format(data=DATA))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    model_args = f"pretrained={checkpoint}," + ",".join(f"{k}={v}" for k, v in GEN.items()) + ",mc_num=4"
    cmd = [*LAUNCHERS["one-process"], "paradecode.integrations.lm_eval", "--model", "paradecode", "--model_args",
           model_args, "--tasks", "pd_tiny_gen", "pd_tiny_mc", "--include_path", str(tmp_path), "--device", "cpu",
           "--batch_size", "2", "--output_path", str(tmp_path / "out"), "--log_samples"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    out = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    results = json.loads(next(out.glob("results_*.json")).read_text())["results"]
    samples = {task: [json.loads(line) for line in next(out.glob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
               for task in ("pd_tiny_gen", "pd_tiny_mc")}

    gen = sorted(samples["pd_tiny_gen"], key=lambda s: s["doc_id"])
    want = [direct_generation(dream, tok, d["prompt"], [";", "\n"]) for d in docs()]
    assert [s["resps"][0][0] for s in gen] == want
    assert results["pd_tiny_gen"]["exact_match,none"] == pytest.approx(
        sum(w == d["answer"] for w, d in zip(want, docs())) / len(want))

    twin = qwen2_twin(dream)
    mc = sorted(samples["pd_tiny_mc"], key=lambda s: s["doc_id"])
    correct = 0
    for s, d in zip(mc, docs()):
        scores = [direct_score(twin, tok, d["prompt"], choice) for choice in d["choices"]]
        logged = [r[0] for r in s["resps"]]  # per choice: [loglikelihood, is_greedy], as strings
        assert [float(ll) for ll, _ in logged] == pytest.approx(scores, rel=1e-5)
        assert [str(g) for _, g in logged] == ["False"] * len(scores)
        correct += max(range(len(scores)), key=scores.__getitem__) == d["label"]
    assert results["pd_tiny_mc"]["acc,none"] == pytest.approx(correct / len(mc))
