"""``paradecode bench --tasks gsm8k`` at LLaDA-8B size with random weights: tokens/s and s/sample at
batch 1, 8 and 32 (issue 16, item 5).

What runs is the bench command's own code path (``paradecode.bench.cli.bench_from_args`` on
arguments parsed by the ``paradecode bench`` parser): GSM8K problems read from a data directory,
prompts in the ``chat-fewshot`` format (lm-eval's 5-shot text in one turn of the chat template,
Fast-dLLM's setting for LLaDA-Instruct), tokenised, generated left-padded in batches with the
dual cache and CUDA graphs, decoded, cut at the end-of-turn token and ``Question:``, and scored
by lm-eval's strict and flexible filters. Only the model and tokenizer are built here instead of
read from a checkpoint (nothing is downloaded; 16 GB of random weights are not written to disk):

* the model: ``LLaDAModel(LLaDAConfig())`` (LLaDA-8B's shape: 32 layers, d_model 4096, MLP
  12288, vocabulary 126464) with random weights, bf16, on cuda;
* the tokenizer: a byte-level BPE trained here with the ``tokenizers`` library on local text (the
  Python standard library's sources and this repository's documents), its ids padded to LLaDA's
  126464 with LLaDA's special tokens at LLaDA's ids (``<|mdm_mask|>`` 126336, ``<|endoftext|>``
  126081, ``<|eot_id|>`` 126348 ...), and a LLaDA-Instruct-style chat template;
* the data: without ``--data-dir`` a temporary GSM8K-format directory (``gsm8k/test.jsonl`` and
  ``gsm8k/train.jsonl``) of generated word problems of GSM8K's length; the real test split cannot
  ship with the repository. With random weights accuracy is 0; the figures are speed.

Decoding: ``--strategy lowconf`` with ``steps = gen_length / tokens-per-step`` (default 4 tokens per
forward: a random model never reaches a confidence threshold, so a threshold rule would commit one
token per forward and measure the slowest case); ``--strategy threshold`` is accepted too.

    python benchmarks/gsm8k_realsize.py                   # GPU: 8B shape, batch 1, 8, 32, limit 64
    python benchmarks/gsm8k_realsize.py --smoke           # CPU: tiny shape, a minute

Writes ``gsm8k_realsize_<date>_<device>.json`` (every run's bench result) and ``.txt`` (the
printed tables and the summary) to ``--out`` (default ``$OUT`` when set, else benchmarks/results).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paradecode.bench.cli import bench_from_args  # noqa: E402
from paradecode.cli import build_parser  # noqa: E402
from paradecode.models import LLaDAConfig, LLaDAModel  # noqa: E402

VOCAB = 126464
# LLaDA-8B-Instruct's special tokens at their ids (from its published config and tokenizer)
SPECIAL_IDS = {126080: "<|startoftext|>", 126081: "<|endoftext|>", 126336: "<|mdm_mask|>",
               126346: "<|start_header_id|>", 126347: "<|end_header_id|>", 126348: "<|eot_id|>"}
# The chat layout of LLaDA-8B-Instruct (Llama-3 style headers), written here as a Jinja template.
CHAT_TEMPLATE = ("<|startoftext|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                 "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


# ---- tokenizer --------------------------------------------------------------------------------------


def training_text(max_bytes: int) -> list[str]:
    """Local text to train the BPE on: this repository's documents and Python sources, then the
    standard library's sources, up to ``max_bytes``."""
    files = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "paradecode").rglob("*.py"))
    files += sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    out, size = [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    return out


def build_tokenizer(bpe_vocab: int, vocab: int, max_bytes: int) -> Any:
    """A byte-level BPE of ``bpe_vocab`` entries trained on local text, its id space filled up to
    ``vocab`` with reserved tokens so that LLaDA's special tokens sit at LLaDA's ids (when
    ``vocab`` is LLaDA's) or at the end (a smaller smoke vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(training_text(max_bytes), trainer=trainer)
    if vocab == VOCAB:
        ids = dict(SPECIAL_IDS)
    else:  # smoke: the same tokens at the end of a small id space
        ids = {vocab - len(SPECIAL_IDS) + i: t for i, t in enumerate(SPECIAL_IDS.values())}
    first = min(ids)
    if core.get_vocab_size() > first:
        raise ValueError(f"the BPE has {core.get_vocab_size()} entries, more than the {first} ids before the specials.")
    filler = [f"<|reserved_{i}|>" for i in range(core.get_vocab_size(), first)]
    core.add_tokens(filler)
    core.add_special_tokens([ids.get(i, f"<|reserved_{i}|>") for i in range(first, vocab)])
    for i, t in ids.items():
        assert core.token_to_id(t) == i, (t, core.token_to_id(t), i)
    assert core.get_vocab_size() == vocab
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", mask_token="<|mdm_mask|>", chat_template=CHAT_TEMPLATE)


# ---- data ---------------------------------------------------------------------------------------------

NAMES = ["Mira", "Tomas", "Ines", "Kofi", "Lena", "Ravi", "Sofia", "Jonas", "Amara", "Diego", "Yuki", "Nadia"]
ITEMS = [("apples", "baskets"), ("pencils", "boxes"), ("cookies", "trays"), ("marbles", "bags"), ("books", "shelves")]


def make_problem(rng: random.Random) -> dict[str, str]:
    """A GSM8K-shaped problem (question, worked answer with <<calc>> notes, '#### N'), about as long
    as GSM8K's: written for this benchmark, not a dataset item."""
    name, other = rng.sample(NAMES, 2)
    item, group = rng.choice(ITEMS)
    per, groups, given, bought, price = (rng.randint(3, 24), rng.randint(2, 12), rng.randint(1, 20),
                                         rng.randint(2, 30), rng.randint(2, 9))
    total = per * groups
    left = total - given
    final = left + bought
    cost = bought * price
    question = (f"{name} has {groups} {group} with {per} {item} in each. On Monday {name} gives {given} {item} to "
                f"{other}, and on Tuesday {name} buys {bought} more {item} at the market for ${price} each. "
                f"How many {item} does {name} have at the end of Tuesday?")
    answer = (f"At the start {name} has {groups} * {per} = <<{groups}*{per}={total}>>{total} {item}.\n"
              f"After giving {given} away, {name} has {total} - {given} = <<{total}-{given}={left}>>{left} {item}.\n"
              f"Buying {bought} more costs {bought} * {price} = <<{bought}*{price}={cost}>>{cost} dollars, and "
              f"{name} then has {left} + {bought} = <<{left}+{bought}={final}>>{final} {item}.\n#### {final}")
    return {"question": question, "answer": answer}


def write_data(root: Path, n_test: int, n_train: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (root / "gsm8k").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(make_problem(rng)) + "\n" for _ in range(n)))
    return root


# ---- model --------------------------------------------------------------------------------------------


def make_model(smoke: bool, device: str, tok: Any, fuse_proj: bool) -> LLaDAModel:
    """A tiny model (smoke) or LLaDA-8B's shape in bf16, random weights, with the tokenizer's ids."""
    if smoke:
        n = len(tok)
        config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=n,
                             embedding_size=n, max_sequence_length=4096, mask_token_id=tok.mask_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        return LLaDAModel(config).to(device).eval()
    ref = LLaDAConfig()
    assert (tok.mask_token_id, tok.eos_token_id, len(tok)) == (ref.mask_token_id, ref.eos_token_id, ref.vocab_size)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LLaDAModel(ref)  # LLaDA-8B shape, random weights
    torch.set_default_dtype(torch.float32)
    if fuse_proj:
        model.fuse_projections()
    return model.eval()


# ---- main ---------------------------------------------------------------------------------------------


def bench_argv(a: argparse.Namespace, data_dir: str, batch: int, out_json: str) -> list[str]:
    steps = a.gen_length // a.tokens_per_step
    sweep = f"lowconf:steps={steps}" if a.strategy == "lowconf" else f"threshold:threshold={a.threshold}"
    argv = ["bench", "--tasks", "gsm8k", "--limit", str(a.limit), "--data-dir", data_dir,
            "--prompt-format", "chat-fewshot", "--strategies", a.strategy, "--sweep", sweep, "--no-baseline",
            "--gen-length", str(a.gen_length), "--block-length", str(a.block_length), "--batch-size", str(batch),
            "--device", a.device, "--quiet", "--out", out_json]
    if a.cache != "none":
        argv += ["--cache", a.cache]
    if a.device.startswith("cuda") and not a.no_graphs:
        argv.append("--cuda-graphs")
    return argv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny model and tokenizer on CPU, a smoke test of the script")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--limit", type=int, default=None, help="problems (default 64; --smoke 8)")
    ap.add_argument("--data-dir", default=None, help="a directory with gsm8k/test.jsonl and gsm8k/train.jsonl "
                                                     "(default: a generated temporary one)")
    ap.add_argument("--strategy", default="lowconf", choices=("lowconf", "threshold"))
    ap.add_argument("--tokens-per-step", type=int, default=4, help="lowconf: steps = gen_length / this")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--cache", default="dual")
    ap.add_argument("--no-graphs", action="store_true", help="run eagerly (no CUDA graphs)")
    ap.add_argument("--fuse-proj", action="store_true", help="one matmul for q/k/v and for the SwiGLU inputs")
    ap.add_argument("--gen-length", type=int, default=None, help="default 256 (Fast-dLLM's GSM8K); --smoke 32")
    ap.add_argument("--block-length", type=int, default=None, help="default 32; --smoke 8")
    ap.add_argument("--bpe-vocab", type=int, default=None,
                    help="BPE entries trained (default 32000; --smoke 400); the ids are padded to LLaDA's 126464")
    ap.add_argument("--train-bytes", type=int, default=None, help="text the BPE is trained on (default 16 MB)")
    ap.add_argument("--out", default=None, help="output directory (default $OUT, else benchmarks/results)")
    ap.add_argument("--tag", default=None, help="file name suffix (default h200, or cpu with --smoke)")
    a = ap.parse_args()
    a.device = a.device or ("cpu" if a.smoke else "cuda")
    a.limit = a.limit or (8 if a.smoke else 64)
    a.gen_length = a.gen_length or (32 if a.smoke else 256)
    a.block_length = a.block_length or (8 if a.smoke else 32)
    vocab = 1024 if a.smoke else VOCAB
    bpe_vocab = a.bpe_vocab or (400 if a.smoke else 32000)
    train_bytes = a.train_bytes or ((1 << 20) if a.smoke else (16 << 20))
    out_dir = Path(a.out or os.environ.get("OUT") or ROOT / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"gsm8k_realsize_{time.strftime('%Y-%m-%d', time.gmtime())}_{a.tag or ('cpu' if a.smoke else 'h200')}"
    t_start = time.perf_counter()
    log = io.StringIO()

    def say(text: str = "") -> None:
        print(text, flush=True)
        log.write(text + "\n")

    t0 = time.perf_counter()
    tok = build_tokenizer(bpe_vocab, vocab, train_bytes)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = make_model(a.smoke, a.device, tok, a.fuse_proj)
    t_model = time.perf_counter() - t0
    say(f"tokenizer: byte-level BPE {bpe_vocab} trained on {train_bytes >> 20 or train_bytes} "
        f"{'MB' if train_bytes >= 1 << 20 else 'bytes'} of local text in {t_tok:.1f} s, ids padded to {len(tok)}; "
        f"model {'tiny' if a.smoke else 'LLaDA-8B shape'} {model.dtype} on {a.device} built in {t_model:.1f} s")
    if a.device.startswith("cuda"):
        say(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = a.data_dir or str(write_data(Path(tmp), a.limit, 5))
        say(f"data: {data_dir if a.data_dir else 'generated GSM8K-format problems (temporary)'}; "
            f"strategy {a.strategy}, cache {a.cache}, cuda graphs {a.device.startswith('cuda') and not a.no_graphs}, "
            f"gen {a.gen_length}, block {a.block_length}")
        for batch in [int(b) for b in a.batch_sizes.split(",")]:
            argv = bench_argv(a, data_dir, batch, str(Path(tmp) / f"b{batch}.json"))
            say(f"\n$ paradecode {' '.join(argv[:-2])}")
            args = build_parser().parse_args(argv)
            buf = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(buf):
                result = bench_from_args(args, model=model, tokenizer=tok)
            wall = time.perf_counter() - t0
            say(buf.getvalue().rstrip())
            row = result["rows"][0]
            runs.append({"batch_size": batch, "argv": argv[1:-2], "wall_seconds_with_warmup": wall, "result": result})
            if a.device.startswith("cuda"):
                runs[-1]["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
            graphs = (f", CUDA graphs: {row['graph_captures']} captures, {row['graph_replays']} replays"
                      if "graph_captures" in row else "")
            say(f"batch {batch}: {row['tokens_per_second']:.1f} tok/s, {row['seconds_per_sample']:.3f} s/sample, "
                f"NFE {row['nfe']:.1f}, prompt {row['prompt_tokens_mean']:.0f} tokens (mean), wall {wall:.1f} s{graphs}")

    say("\nbatch   tok/s   answer tok/s   s/sample   NFE/sample   tok/fwd   strict   flexible")
    for r in runs:
        row = r["result"]["rows"][0]
        say(f"{r['batch_size']:5d} {row['tokens_per_second']:7.1f} {row['answer_tokens_per_second']:14.1f} "
            f"{row['seconds_per_sample']:10.3f} {row['nfe']:12.1f} "
            f"{row['tokens_per_forward']:9.2f} {row['accuracy_strict']:8.1%} {row['accuracy_flexible']:10.1%}")
    total = time.perf_counter() - t_start
    say(f"\ntotal wall time {total:.1f} s (tokenizer {t_tok:.1f} s, model {t_model:.1f} s)")
    meta = {"smoke": a.smoke, "device": a.device, "strategy": a.strategy, "cache": a.cache,
            "cuda_graphs": a.device.startswith("cuda") and not a.no_graphs, "fuse_proj": a.fuse_proj,
            "gen_length": a.gen_length, "block_length": a.block_length, "limit": a.limit, "bpe_vocab": bpe_vocab,
            "vocab": len(tok), "tokenizer_seconds": t_tok, "model_seconds": t_model, "total_seconds": total,
            "torch": torch.__version__, "command": " ".join(sys.argv)}
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    (out_dir / f"{stem}.txt").write_text(log.getvalue())
    print(f"wrote {out_dir / stem}.json and .txt")


if __name__ == "__main__":
    main()
