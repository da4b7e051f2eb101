"""Train a small LLaDA-architecture diffusion LM on the paradecode task suite.

Objective (LLaDA SFT, Nie et al. 2025): for each sample a mask ratio t ~ U(0, 1)
(p = (1 - eps) t + eps); every position of the answer canvas (the answer, then <eos> up to
the task's gen_length) is masked with probability p; the loss is the cross-entropy on the
masked canvas positions weighted by 1 / p, summed and divided by the canvas length; the
prompt is never masked. Prompts are left-padded (with an attention mask) exactly as
``paradecode.sample`` pads a batch, so training and decoding see the same positions.

Writes a Hugging Face-style directory: config.json, model.safetensors (bf16),
tokenizer.json (+ tokenizer_config.json) and info.json (tasks, gen_length, the command,
held-out accuracy of the baseline at full steps). Example (the shipped model):

    python scripts/train_dllm.py --out paradecode/zoo/tasks-6m --minutes 7
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paradecode  # noqa: E402
from paradecode.bench.edit_training import corrupt_visible, visible_loss  # noqa: E402
from paradecode.bench.tasks import get_task  # noqa: E402
from paradecode.bench.tokenizer import build_tokenizer, char_ids  # noqa: E402
from paradecode.models import LLaDAConfig, LLaDAModel  # noqa: E402

DEFAULT_MIX = "words:3,lists:3,add:2,sort:1,distinct:1,perm:1"


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, w = part.partition(":")
        get_task(name)
        mix[name] = float(w or 1)
    return mix


class Batches(torch.utils.data.IterableDataset):
    """Endless training batches: (tokens (B, P+G), attention mask, G). One canvas length G
    per batch (tasks are grouped by their gen_length); fresh seeded problems every batch."""

    def __init__(self, mix: dict[str, float], batch_size: int, prompt_len: int, seed: int,
                 pad: int, eos: int) -> None:
        self.mix, self.batch_size, self.prompt_len, self.seed = mix, batch_size, prompt_len, seed
        self.pad, self.eos, self.ids = pad, eos, char_ids()
        self.groups: dict[int, list[str]] = {}
        for name in mix:
            self.groups.setdefault(get_task(name).gen_length, []).append(name)

    def encode(self, text: str) -> list[int]:
        return [self.ids[c] for c in text]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"train/{self.seed}/{info.id if info else 0}")
        glens = sorted(self.groups)
        gweights = [sum(self.mix[t] for t in self.groups[g]) for g in glens]
        while True:
            G = rng.choices(glens, gweights)[0]
            names = self.groups[G]
            tasks = [get_task(n) for n in names]
            weights = [self.mix[n] for n in names]
            P = self.prompt_len
            rows, masks = [], []
            for _ in range(self.batch_size):
                ex = rng.choices(tasks, weights)[0].make(rng)
                p, a = self.encode(ex.prompt), self.encode(ex.answer)
                if len(p) > P or len(a) > G:
                    raise ValueError(f"example too long for prompt_len {P} / gen_length {G}: {ex}")
                rows.append([self.pad] * (P - len(p)) + p + a + [self.eos] * (G - len(a)))
                masks.append([0] * (P - len(p)) + [1] * (len(p) + G))
            tokens, am = torch.tensor(rows), torch.tensor(masks)
            yield tokens, am, G


def diffusion_loss(model, tokens, am, P, mask_id, eps=1e-3, label_smoothing=0.0, edit_noise=0.0,
                   edit_vocab=None, edit_weight=1.0):
    """LLaDA's masked-diffusion SFT loss on the canvas (columns P:) of a batch
    (``label_smoothing`` > 0 caps the target probability: scripts/train_cot.py uses it).

    ``edit_noise`` > 0 adds LLaDA2.1's token-to-token stream (paradecode/bench/edit_training.py):
    that share of the visible canvas tokens is replaced by random tokens of ``edit_vocab`` and the
    loss also covers every visible canvas position, weighted by ``edit_weight``. At 0 nothing
    changes, not even the random numbers drawn."""
    B, T = tokens.shape
    G = T - P
    t = torch.rand(B, 1, device=tokens.device)
    p = (1 - eps) * t + eps
    masked = torch.rand(B, G, device=tokens.device) < p
    x = tokens.clone()
    x[:, P:] = torch.where(masked, mask_id, tokens[:, P:])
    if edit_noise > 0:
        if edit_vocab is None:
            raise ValueError("edit_noise > 0 needs edit_vocab (paradecode.bench.edit_training.noise_vocabulary)")
        x[:, P:], _ = corrupt_visible(x[:, P:], ~masked, edit_noise, edit_vocab)
    logits = model(x, attention_mask=am, logits_range=(P, T)).float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, P:].reshape(-1), reduction="none",
                         label_smoothing=label_smoothing).view(B, G)
    loss = (ce * masked / p).sum(1).div(G).mean()
    if edit_noise > 0:
        loss = loss + visible_loss(ce, ~masked, edit_weight)
    return loss


@torch.no_grad()
def evaluate(model, tok, names, n, seed, device, batch=512) -> dict[str, float]:
    """Held-out accuracy of the LLaDA baseline at full steps (one token per step)."""
    out = {}
    model.eval()
    for name in names:
        task = get_task(name)
        exs = task.examples(n, seed=seed)
        ok = 0
        for s in range(0, n, batch):
            chunk = exs[s : s + batch]
            gen = paradecode.sample(model, [tok.encode(e.prompt) for e in chunk], "lowconf",
                                    gen_length=task.gen_length, block_length=task.block_length,
                                    steps=task.gen_length, timing=False)
            texts = tok.batch_decode(gen.generated.tolist(), skip_special_tokens=True)
            ok += sum(task.verify(e, t) for e, t in zip(chunk, texts))
        out[name] = ok / n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--mix", default=DEFAULT_MIX, help="task:weight,... (first task = the model's main task)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--mlp", type=int, default=640)
    ap.add_argument("--prompt-len", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (or use --minutes)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="wall-time budget: the step count is set from the speed of steps 20-120")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--init", default=None, help="start from this model directory (continued training)")
    ap.add_argument("--name", default=None, help="model name in info.json (default: the directory name)")
    args = ap.parse_args()
    if (args.steps is None) == (args.minutes is None):
        raise SystemExit("give exactly one of --steps and --minutes")

    torch.manual_seed(args.seed)
    init_train = json.loads((Path(args.init) / "info.json").read_text()).get("train") if args.init else None
    device = torch.device(args.device)
    tok = build_tokenizer()
    mix = parse_mix(args.mix)
    vocab = len(tok)
    config = LLaDAConfig(
        d_model=args.d_model, n_heads=args.heads, n_kv_heads=args.heads, n_layers=args.layers,
        mlp_hidden_size=args.mlp, mlp_ratio=4, vocab_size=vocab, embedding_size=(vocab + 15) // 16 * 16,
        max_sequence_length=512, rope_theta=10000.0, mask_token_id=tok.mask_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    if args.init:
        model = LLaDAModel.from_pretrained(args.init, torch_dtype=torch.float32, device=device).train()
        for key in ("d_model", "n_layers", "vocab_size", "mask_token_id"):
            if getattr(model.config, key) != getattr(config, key):
                raise SystemExit(f"--init {args.init}: {key} is {getattr(model.config, key)}, expected {getattr(config, key)}")
        config = model.config
    else:
        model = LLaDAModel(config).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, tasks {mix}", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    data = Batches(mix, args.batch_size, args.prompt_len, args.seed, tok.pad_token_id, tok.eos_token_id)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", prefetch_factor=8 if args.workers else None)
    total = args.steps or 10**9
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    t_start = time.perf_counter()
    ema = None
    step = 0
    for tokens, am, G in loader:
        if step >= total:
            break
        if args.minutes is not None and step == 20:
            t20 = time.perf_counter()
        if args.minutes is not None and step == 120:
            per_step = (time.perf_counter() - t20) / 100
            total = 120 + int((args.minutes * 60 - (time.perf_counter() - t_start)) / per_step)
            print(f"{per_step * 1000:.1f} ms/step -> {total} steps", flush=True)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if args.minutes is None or step >= 120:
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
        for g in opt.param_groups:
            g["lr"] = lr
        tokens, am = tokens.to(device, non_blocking=True), am.to(device, non_blocking=True)
        with autocast:
            loss = diffusion_loss(model, tokens, am, args.prompt_len, tok.mask_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0 or step == 1:
            value = loss.item()
            ema = value if ema is None else 0.9 * ema + 0.1 * value
            print(f"step {step}/{total} loss {value:.4f} (ema {ema:.4f}) lr {lr:.2e} "
                  f"{time.perf_counter() - t_start:.0f}s", flush=True)
    train_seconds = time.perf_counter() - t_start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(torch.bfloat16).save_pretrained(out)  # shipped in bf16: half the bytes
    tok.save_pretrained(out)
    # Evaluate what is shipped: the bf16 weights loaded back in float32.
    shipped = LLaDAModel.from_pretrained(out, torch_dtype=torch.float32, device=device)
    names = list(mix)
    acc = evaluate(shipped, tok, names, args.eval_n, seed=10_000, device=device)
    print("held-out accuracy, lowconf at full steps:", json.dumps(acc), flush=True)
    first = get_task(names[0])
    info = {
        "name": args.name or out.name,
        "description": f"{n_params / 1e6:.1f}M-parameter LLaDA-architecture masked-diffusion LM, "
                       f"character-level, trained on {', '.join(names)}",
        "tasks": names,
        "gen_length": first.gen_length,
        "block_length": first.block_length,
        "task_gen_length": {n: get_task(n).gen_length for n in names},
        "task_block_length": {n: get_task(n).block_length for n in names},
        "parameters": n_params,
        "train": {"command": "python scripts/train_dllm.py " + " ".join(sys.argv[1:]), "steps": step,
                  "seconds": round(train_seconds, 1), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  "mix": mix, "batch_size": args.batch_size, "lr": args.lr,
                  "init": args.init, "init_train": init_train},
        "eval": {"strategy": "lowconf, steps = gen_length", "n": args.eval_n, "seed": 10_000, "accuracy": acc},
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"saved {out} ({step} steps, {train_seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
