"""The small trained target/draft pair: its character tokenizer, its corpus and its loader.

The corpus is synthetic, structured and verifiable: each line is ``<task> <input> > <answer>``
(sorting digits, adding numbers, reversing a word, counting, repeating a string, listing
words of a category). A small draft learns the format and the easy tokens; the larger target
also learns the harder ones, so acceptance rates are meaningful. The pair is trained by
``scripts/train_spec_pair.py`` and shipped in ``paradecode/zoo/spec-pair/{target,draft}``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Optional, Union

import torch

__all__ = ["CHARS", "SPECIALS", "build_tokenizer", "encode", "decode", "make_example", "verify", "TASKS", "load_pair", "PAIR_DIR"]

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PAD, BOS, EOS, UNK = range(4)
CHARS = list(" abcdefghijklmnopqrstuvwxyz0123456789+=>:,")
STOI = {c: i + len(SPECIALS) for i, c in enumerate(CHARS)}
ITOS = {i: c for c, i in STOI.items()}
VOCAB_SIZE = 64  # 4 specials + 42 characters, padded to a multiple of 8
PAIR_DIR = Path(__file__).resolve().parent.parent / "zoo" / "spec-pair"

CATEGORIES = {
    "fruit": "apple pear plum fig lime kiwi mango peach grape melon lemon date".split(),
    "color": "red blue green pink gray teal cyan black white amber olive navy".split(),
    "animal": "cat dog fox owl bee cow yak eel ant bat hen pig".split(),
    "metal": "iron gold zinc tin lead nickel cobalt copper silver chrome steel brass".split(),
    "tree": "oak ash elm fir pine yew birch maple cedar larch alder aspen".split(),
    "tool": "saw axe drill file rasp vise plane chisel hammer wrench pliers level".split(),
}
WORDS = sorted({w for ws in CATEGORIES.values() for w in ws})


def build_tokenizer():
    """A ``tokenizers`` character tokenizer (saved as tokenizer.json next to the models)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update(STOI)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def encode(text: str) -> list[int]:
    return [STOI.get(c, UNK) for c in text]


def decode(ids) -> str:
    out = []
    for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
        if i == EOS:
            break
        out.append(ITOS.get(int(i), ""))
    return "".join(out)


# ---- tasks: (rng) -> (prompt text ending in "> ", answer text) ------------------------------
def _sort(rng: random.Random) -> tuple[str, str]:
    xs = [rng.randrange(10) for _ in range(rng.randint(4, 10))]
    return f"sort {' '.join(map(str, xs))} > ", " ".join(map(str, sorted(xs)))


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(10 ** rng.randint(1, 4)), rng.randrange(10 ** rng.randint(1, 4))
    return f"add {a}+{b} > ", str(a + b)


def _reverse(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(WORDS) + rng.choice(WORDS)
    return f"rev {w} > ", w[::-1]


def _count(rng: random.Random) -> tuple[str, str]:
    a = rng.randrange(0, 90)
    b = a + rng.randint(3, 9)
    return f"count {a} to {b} > ", " ".join(str(i) for i in range(a, b + 1))


def _repeat(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(WORDS)
    n = rng.randint(2, 4)
    return f"repeat {w} {n} > ", " ".join([w] * n)


def _words(rng: random.Random) -> tuple[str, str]:
    cat = rng.choice(sorted(CATEGORIES))
    n = rng.randint(3, 5)
    return f"list {n} {cat} > ", " ".join(rng.sample(CATEGORIES[cat], n))


TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "sort": _sort, "add": _add, "rev": _reverse, "count": _count, "repeat": _repeat, "list": _words,
}


def make_example(rng: random.Random, task: Optional[str] = None) -> tuple[str, str]:
    """One (prompt, answer) pair of ``task`` (random task if None)."""
    return TASKS[task or rng.choice(sorted(TASKS))](rng)


def verify(prompt: str, answer: str) -> bool:
    """Exact check of an answer (the ``list`` task: n distinct words of the category)."""
    head = prompt.rstrip().rstrip(">").strip()
    task, _, arg = head.partition(" ")
    try:
        if task == "sort":
            return answer == " ".join(sorted(arg.split()))
        if task == "add":
            a, b = arg.split("+")
            return answer == str(int(a) + int(b))
        if task == "rev":
            return answer == arg[::-1]
        if task == "count":
            a, _, b = arg.split()
            return answer == " ".join(str(i) for i in range(int(a), int(b) + 1))
        if task == "repeat":
            w, n = arg.split()
            return answer == " ".join([w] * int(n))
        if task == "list":
            n, cat = arg.split()
            ws = answer.split()
            return len(ws) == int(n) and len(set(ws)) == len(ws) and all(w in CATEGORIES[cat] for w in ws)
    except (ValueError, KeyError):
        return False
    return False


def load_pair(path: Union[str, Path, None] = None, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(target, draft) ``LlamaForCausalLM`` from the shipped pair (or ``path``)."""
    from transformers import LlamaForCausalLM

    root = Path(path) if path is not None else PAIR_DIR
    if not (root / "target" / "config.json").exists():
        raise ValueError(f"no trained pair at {root}; run `python scripts/train_spec_pair.py --out {root}`.")
    models = []
    for name in ("target", "draft"):
        m = LlamaForCausalLM.from_pretrained(root / name, dtype=dtype).to(device).eval()
        models.append(m)
    return models[0], models[1]
