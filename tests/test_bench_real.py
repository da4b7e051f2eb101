"""``paradecode bench`` on real tasks (gsm8k, humaneval, mbpp) with a checkpoint directory: the
command end to end on the fixtures in tests/data, the scoring of known completions, the cache
option reaching ``sample``, left-padded batches, model routing by ``model_type`` and errors."""

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from paradecode.bench import runner
from paradecode.bench.cli import bench_from_args, parse_data
from paradecode.bench.real.adapter import cut_at_stop_ids, prepare_task, stop_token_ids
from paradecode.cli import build_parser, main
from paradecode.models import loading
from paradecode.models.llada import LLaDAConfig, LLaDAModel

DATA = Path(__file__).parent / "data"
# LLaDA-8B-Instruct's chat layout (its special-token names), written here
TEMPLATE = ("<|startoftext|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
            "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
            "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|startoftext|>", "<|mdm_mask|>", "<|eot_id|>", "<|start_header_id|>",
           "<|end_header_id|>", "<unk>"]
CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


def make_tokenizer(chat: bool = True):
    """One token per character plus LLaDA's special tokens; its chat template when ``chat``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, newlines too
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|startoftext|>", mask_token="<|mdm_mask|>", unk_token="<unk>",
                                   chat_template=TEMPLATE if chat else None)


def tiny_config(tok) -> LLaDAConfig:
    n = len(tok)
    return LLaDAConfig(d_model=32, n_heads=2, n_kv_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=n,
                       embedding_size=n, max_sequence_length=4096, rope_theta=10000.0,
                       mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny LLaDAModel and its chat tokenizer saved as a checkpoint directory."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny-llada-instruct"
    tok = make_tokenizer()
    torch.manual_seed(0)
    LLaDAModel(tiny_config(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The fixtures laid out as a data directory: test sets, and exemplar splits taken from the
    first rows of the fixtures (the test sets are the remaining rows)."""
    root = tmp_path_factory.mktemp("data")
    rows = (DATA / "gsm8k_tiny.jsonl").read_text().splitlines()
    (root / "gsm8k").mkdir()
    (root / "gsm8k" / "train.jsonl").write_text("\n".join(rows[:2]) + "\n")
    (root / "gsm8k" / "test.jsonl").write_text("\n".join(rows[2:]) + "\n")
    shutil.copy(DATA / "humaneval_tiny.jsonl", root / "HumanEval.jsonl")
    mbpp = (DATA / "mbpp_tiny.jsonl").read_text().splitlines()
    (root / "mbpp").mkdir()
    (root / "mbpp" / "prompt.jsonl").write_text(mbpp[0] + "\n")
    (root / "mbpp" / "test.jsonl").write_text("\n".join(mbpp[1:]) + "\n")
    return root


def bench_args(*extra):
    return build_parser().parse_args(["bench", "--quiet", *extra])


class Oracle(nn.Module):
    """A 'model' that writes ``text`` into every generated canvas: the logits of each answer
    column favour the token of ``text`` at that column (then end-of-text)."""

    supports_cache = False

    def __init__(self, tok, text: str, gen_length: int) -> None:
        super().__init__()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids = (ids + [tok.convert_tokens_to_ids("<|eot_id|>")] + [tok.eos_token_id] * gen_length)[:gen_length]
        self.target = torch.tensor(ids)
        self.vocab = len(tok)
        self.config = types.SimpleNamespace(vocab_size=self.vocab, mask_token_id=tok.mask_token_id,
                                            pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, positions=None, cache=None, attention_mask=None, logits_range=None):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.vocab)
        gen = self.target.shape[0]
        logits[:, T - gen :].scatter_(-1, self.target.expand(B, gen)[..., None], 10.0)
        return logits if logits_range is None else logits[:, logits_range[0] : logits_range[1]]


# ---- the command end to end ---------------------------------------------------------------------


@pytest.mark.slow
def test_cli_runs_the_three_tasks_on_a_checkpoint(checkpoint, data_dir, tmp_path, capsys):
    out, samples, png = tmp_path / "r.json", tmp_path / "s.jsonl", tmp_path / "c.png"
    code = main(["bench", "--model", str(checkpoint), "--tasks", "gsm8k,humaneval,mbpp", "--data-dir", str(data_dir),
                 "--limit", "3", "--num-fewshot", "1", "--strategies", "threshold", "--sweep", "threshold:threshold=0.9",
                 "--gen-length", "16", "--block-length", "8", "--batch-size", "2", "--quiet",
                 "--out", str(out), "--log-samples", str(samples), "--plot", str(png)])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "tok/s" in text and "s/sample" in text and "strict" in text and "Fewest forwards" in text
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["task"], r["strategy"]) for r in rows] == [
        (t, s) for t in ("gsm8k", "humaneval", "mbpp") for s in ("lowconf", "threshold")]
    for r in rows:
        n = {"gsm8k": 3, "humaneval": 3, "mbpp": 2}[r["task"]]  # --limit 3; the mbpp fixture's test part has 2
        assert r["n"] == n and 0 <= r["accuracy"] <= 1
        assert r["tokens_per_second"] == pytest.approx(n * 16 / r["seconds"])
        assert r["seconds_per_sample"] == pytest.approx(r["seconds"] / n)
        assert r["prompt_format"] == {"gsm8k": "chat-fewshot", "humaneval": "chat", "mbpp": "chat-fewshot"}[r["task"]]
    for r in rows:
        if r["task"] == "gsm8k":
            assert {"accuracy_strict", "accuracy_flexible"} <= set(r) and r["metric"] == "flexible-extract"
            assert r["accuracy"] == r["accuracy_flexible"] and r["num_fewshot"] == 1
        else:
            assert "accuracy_strict" not in r and r["metric"] == "pass@1"
    logged = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(logged) == 2 * (3 + 3 + 2)
    first = next(s for s in logged if s["task"] == "gsm8k")
    assert first["prompt"].startswith("<|startoftext|><|start_header_id|>user") and "Question:" in first["prompt"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_gsm8k_on_a_checkpoint_with_dual_cache(checkpoint, data_dir, tmp_path, monkeypatch, capsys):
    """The cache and its options reach every sample() call (warm-up included), and the run works."""
    calls = []
    real_sample = runner.sample

    def spy(*args, **kwargs):
        calls.append({k: kwargs.get(k) for k in ("cache", "cache_options")})
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(runner, "sample", spy)
    out = tmp_path / "r.csv"
    code = main(["bench", "--model", str(checkpoint), "--tasks", "gsm8k", "--data-dir", str(data_dir), "--limit", "2",
                 "--prompt-format", "chat", "--strategies", "lowconf", "--sweep", "lowconf:steps=8",
                 "--gen-length", "8", "--block-length", "4", "--cache", "dual", "--cache-option", "refresh_every=2",
                 "--dtype", "fp32", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert calls and all(c == {"cache": "dual", "cache_options": {"refresh_every": 2}} for c in calls)
    head, *lines = out.read_text().splitlines()
    assert "tokens_per_second" in head and "accuracy_strict" in head and len(lines) == 1  # steps=8 is the baseline


def test_known_completions_are_scored_by_the_task_rules(data_dir):
    """An oracle model writes a fixed answer; the decoded text is cut at the end-of-turn token and the
    stop sequences, then GSM8K's strict and flexible filters score it (test rows: answers 3750, 4, 20, ...)."""
    tok = make_tokenizer()

    def run(text, *extra, tasks="gsm8k", gen=48):
        args = bench_args("--tasks", tasks, "--data-dir", str(data_dir), "--prompt-format", "chat", "--limit", "4",
                          "--strategies", "lowconf", "--no-baseline", "--sweep", f"lowconf:steps={gen}",
                          "--gen-length", str(gen), "--block-length", str(gen), "--batch-size", "3", *extra)
        return bench_from_args(args, model=Oracle(tok, text, gen), tokenizer=tok)["rows"][0]

    # strict needs '#### N'; flexible takes the last number; text after <|eot_id|> never counts
    row = run("so 4 dollars.\n#### 4")
    assert (row["accuracy_strict"], row["accuracy_flexible"]) == (0.25, 0.25)
    # answer tokens: the 20 characters before <|eot_id|>, per sample; every canvas position for tokens/s
    assert row["answer_tokens_per_second"] == pytest.approx(4 * 20 / row["seconds"])
    assert row["tokens_per_second"] == pytest.approx(4 * 48 / row["seconds"])
    row = run("#### 5 ... no, 4")
    assert (row["accuracy_strict"], row["accuracy_flexible"]) == (0.0, 0.25)
    row = run("it is 20")
    assert (row["accuracy_strict"], row["accuracy_flexible"]) == (0.0, 0.25)
    row = run("#### 20\nQuestion: 4")  # cut at the stop sequence 'Question:' before the last number
    assert (row["accuracy_strict"], row["accuracy_flexible"]) == (0.25, 0.25)
    assert row["nfe"] == 48 and row["n"] == 4


def test_known_humaneval_completion_passes(data_dir):
    tok = make_tokenizer(chat=False)
    body = "    return sum(1 for ch in word.lower() if ch in 'aeiou')\n\ndef broken(:\n"  # runs only when cut at the stop "\\ndef"
    args = bench_args("--tasks", "humaneval", "--data-dir", str(data_dir), "--prompt-format", "fewshot",
                      "--limit", "3", "--strategies", "lowconf", "--no-baseline", "--sweep", "lowconf:steps=64",
                      "--gen-length", "64", "--block-length", "64")
    row = bench_from_args(args, model=Oracle(tok, body, 64), tokenizer=tok)["rows"][0]
    assert row["prompt_format"] == "completion" and row["accuracy"] == pytest.approx(1 / 3)  # Tiny/0 only


def test_left_padded_batches_give_the_unbatched_generations(checkpoint, data_dir, tmp_path):
    """Ragged prompts are left-padded with a key mask: batch 3 decodes what batch 1 decodes."""
    texts = {}
    for batch in (1, 3):
        log = tmp_path / f"s{batch}.jsonl"
        runner.run_bench(str(checkpoint), tasks=["gsm8k"], data={"gsm8k": data_dir}, prompt_format="chat", limit=3,
                         strategies=["lowconf"], baseline=False, sweeps={"lowconf": {"steps": [4]}}, gen_length=8,
                         block_length=4, batch_size=batch, progress=False, samples_out=log)
        texts[batch] = [json.loads(line)["text"] for line in log.read_text().splitlines()]
    prompts = prepare_task("gsm8k", make_tokenizer(), data=data_dir, prompt_format="chat", limit=3).prompts
    assert len({len(p) for p in prompts}) == 3  # the batch really is ragged
    assert texts[1] == texts[3] and len(texts[1]) == 3


def test_stop_ids_and_format_mapping():
    tok = make_tokenizer()
    eot, eos = tok.convert_tokens_to_ids("<|eot_id|>"), tok.eos_token_id
    assert set(stop_token_ids(tok)) == {eot, eos}
    assert cut_at_stop_ids([5, 6, eot, 7, eos], stop_token_ids(tok)) == [5, 6]
    assert cut_at_stop_ids([5, 6], [eot]) == [5, 6]
    plain = make_tokenizer(chat=False)
    assert prepare_task("gsm8k", plain, data=DATA / "gsm8k_tiny.jsonl", prompt_format="fewshot", num_fewshot=0,
                        limit=2).prompts[0].startswith("Question: ")
    assert prepare_task("humaneval", plain, data=DATA / "humaneval_tiny.jsonl", prompt_format="auto").fmt == "completion"
    assert prepare_task("humaneval", tok, data=DATA / "humaneval_tiny.jsonl", prompt_format="auto").fmt == "chat"
    assert parse_data(["d", "gsm8k=f.jsonl"]) == {"*": "d", "gsm8k": "f.jsonl"}


@pytest.mark.parametrize("argv, match", [
    (["--tasks", "gsm8k,nope"], "unknown task.*'nope'.*gsm8k"),
    (["--tasks", "gsm8k", "--data-dir", "/no/such/dir"], "does not exist; pass --data-dir"),
    (["--tasks", "gsm8k", "--cache", "dual", "--cache-option", "nope=1"], "unknown option.*nope.*refresh_every"),
    (["--tasks", "gsm8k", "--cache", "nope"], "unknown cache"),
    (["--tasks", "gsm8k", "--cache-option", "refresh_every=2"], "without --cache"),
    (["--tasks", "gsm8k", "--cuda-graphs"], "needs a CUDA device"),
    (["--tasks", "gsm8k", "--data-dir", "gsmk=x.jsonl"], "not a real task; use TASK=PATH"),
    (["--tasks", "gsm8k", "--limit", "0"], "limit must be a positive"),
])
def test_bad_input_is_one_line_that_says_what_to_do(checkpoint, argv, match, capsys):
    assert main(["bench", "--model", str(checkpoint), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import re

    assert re.search(match, err), err


def test_task_errors_name_the_fix(data_dir, tmp_path):
    plain = make_tokenizer(chat=False)
    with pytest.raises(ValueError, match="needs the tokenizer's chat template.*--prompt-format fewshot"):
        prepare_task("gsm8k", plain, data=data_dir, prompt_format="chat")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(data_dir / "gsm8k" / "test.jsonl", lone / "test.jsonl")
    with pytest.raises(ValueError, match="--shots gsm8k=FILE, --num-fewshot 0"):
        prepare_task("gsm8k", plain, data=lone, prompt_format="fewshot")
    with pytest.raises(ValueError, match="holds 2 exemplars, 5 asked"):
        prepare_task("gsm8k", plain, data=data_dir, prompt_format="fewshot")
    with pytest.raises(ValueError, match="none of .*exists.*--data-dir"):
        prepare_task("mbpp", plain, data=lone, prompt_format="fewshot", num_fewshot=0)


# ---- loading: routing by model_type, hub ids -------------------------------------------------------


def test_llada_checkpoint_routes_to_our_model_with_its_chat_tokenizer(checkpoint):
    model, tok = loading.load_model_and_tokenizer(str(checkpoint), dtype="bf16")
    assert type(model) is LLaDAModel and model.dtype == torch.bfloat16
    assert tok.chat_template == TEMPLATE and tok.mask_token_id == model.config.mask_token_id


def test_dream_routes_to_dream_model_by_name(checkpoint, tmp_path, monkeypatch):
    dream = tmp_path / "dream"
    shutil.copytree(checkpoint, dream)
    cfg = json.loads((dream / "config.json").read_text())
    (dream / "config.json").write_text(json.dumps({**cfg, "model_type": "Dream"}))
    monkeypatch.setitem(loading.NATIVE, "dream", ("paradecode_no_such_module", "DreamModel"))
    with pytest.raises(ValueError, match="paradecode_no_such_module.DreamModel.*update paradecode.*HFDiffusionAdapter.dream"):
        loading.load_model_and_tokenizer(str(dream))
    seen = {}

    class FakeDream:
        @classmethod
        def from_pretrained(cls, path, torch_dtype=None, device="cpu"):
            seen.update(path=Path(path), dtype=torch_dtype, device=device)
            return cls()

    monkeypatch.setitem(sys.modules, "fake_dream_module", types.SimpleNamespace(DreamModel=FakeDream))
    monkeypatch.setitem(loading.NATIVE, "dream", ("fake_dream_module", "DreamModel"))
    model, tok = loading.load_model_and_tokenizer(str(dream), dtype="fp16")
    assert isinstance(model, FakeDream) and seen == {"path": dream, "dtype": torch.float16, "device": "cpu"}
    assert tok is not None


@pytest.mark.slow  # transformers' BERT import takes seconds
def test_other_model_types_go_through_the_hf_adapter(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from paradecode.models.hf import HFDiffusionAdapter

    tok = make_tokenizer(chat=False)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, _ = loading.load_model_and_tokenizer(str(tmp_path))
    assert isinstance(model, HFDiffusionAdapter) and model.mask_token_id == tok.mask_token_id
    assert model(torch.tensor([[5, 6, 7]])).shape == (1, 3, len(tok))


def test_hub_id_is_read_from_the_local_cache_offline(checkpoint, tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--org--tiny-llada" / "snapshots" / "0123abcd"
    shutil.copytree(checkpoint, snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = loading.load_model_and_tokenizer("org/tiny-llada")
    assert type(model) is LLaDAModel and tok is not None
    with pytest.raises(ValueError, match="not in the local Hugging Face cache.*huggingface-cli download org/absent"):
        loading.load_model_and_tokenizer("org/absent")


def test_chat_template_inside_tokenizer_config_is_read(tmp_path):
    """LLaDA-8B-Instruct ships its template as tokenizer_config.json's chat_template (older layout)."""
    make_tokenizer().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    jinja = tmp_path / "chat_template.jinja"
    if jinja.exists():
        cfg["chat_template"] = jinja.read_text()
        jinja.unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert loading.load_tokenizer(tmp_path).chat_template == TEMPLATE
    assert loading.load_tokenizer(tmp_path / "nothing") is None


def test_mbpp_release_file_is_cut_to_the_split(tmp_path):
    """sanitized-mbpp.json holds every split; the test split is task ids 11-510, the exemplars 1-10."""
    from paradecode.bench.real import code

    base = json.loads((DATA / "mbpp_tiny.jsonl").read_text().splitlines()[0])
    release = [{**base, "task_id": t} for t in (2, 3, 11, 300, 510, 511, 700)]
    (tmp_path / "sanitized-mbpp.json").write_text(json.dumps(release))
    assert [p.task_id for p in code.load_mbpp(tmp_path)] == ["11", "300", "510"]
    assert [p.task_id for p in code.load_mbpp(tmp_path, split="prompt")] == ["2", "3"]
    one_range = tmp_path / "one.jsonl"  # a file of one split is taken whole
    one_range.write_text("".join(json.dumps({**base, "task_id": t}) + "\n" for t in (901, 902)))
    assert len(code.load_mbpp(one_range)) == 2


def test_mbpp_exemplars_come_from_the_prompt_range_of_a_release_file(tmp_path):
    from paradecode.bench.real import code

    rows = [json.loads(line) for line in (DATA / "mbpp_tiny.jsonl").read_text().splitlines()]
    release = [{**rows[0], "task_id": 2}, {**rows[1], "task_id": 11}, {**rows[2], "task_id": 12}]
    (tmp_path / "sanitized-mbpp.json").write_text(json.dumps(release))
    task = prepare_task("mbpp", make_tokenizer(chat=False), data=tmp_path, prompt_format="fewshot", num_fewshot=1)
    assert [p.task_id for p in task.problems] == ["11", "12"]
    assert task.prompts[0].count("[BEGIN]") == 2 and rows[0]["code"] in task.prompts[0]
    assert code.mbpp_solution(task.problems[0].solution) == rows[1]["code"]


def test_cache_none_means_no_cache(data_dir):
    tok = make_tokenizer()
    args = bench_args("--tasks", "gsm8k", "--data-dir", str(data_dir), "--prompt-format", "chat", "--limit", "1",
                      "--strategies", "lowconf", "--no-baseline", "--sweep", "lowconf:steps=8", "--gen-length", "8",
                      "--block-length", "8", "--cache", "none")
    result = bench_from_args(args, model=Oracle(tok, "#### 1", 8), tokenizer=tok)  # the oracle takes no cache
    assert result["cache"] is None and result["rows"][0]["cache"] is None


def test_without_data_dir_tests_and_exemplars_come_from_the_hub(monkeypatch):
    """No --data-dir: the test split and the exemplar split are read through datasets (a stand-in
    module here: nothing leaves the machine)."""
    rows = [json.loads(line) for line in (DATA / "gsm8k_tiny.jsonl").read_text().splitlines()]
    asked = []

    def load_dataset(name, config, split):
        asked.append((name, config, split))
        return rows[:2] if split == "train" else rows[2:]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = prepare_task("gsm8k", make_tokenizer(chat=False), prompt_format="fewshot", num_fewshot=2, limit=3)
    assert asked == [("openai/gsm8k", "main", "test"), ("openai/gsm8k", "main", "train")]
    assert len(task.problems) == 3 and task.prompts[0].count("Question:") == 3
    assert task.prompts[0].startswith(f"Question: {rows[0]['question']}")
