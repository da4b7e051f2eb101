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
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
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
