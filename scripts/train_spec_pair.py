"""Train the small target/draft Llama pair for speculative decoding on the synthetic task corpus.

    python scripts/train_spec_pair.py --out paradecode/zoo/spec-pair            # CPU, ~minutes
    python scripts/train_spec_pair.py --device cuda --steps 3000 --out /tmp/pair  # GPU

Both models are ``LlamaForCausalLM`` with the character tokenizer of
``paradecode.speculative.pair``; they are trained on the same packed stream of
``<bos>prompt answer<eos>`` lines with the plain next-token loss, then saved as
``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``, ``train_log.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from paradecode.speculative.pair import BOS, EOS, PAD, VOCAB_SIZE, build_tokenizer, decode, encode, make_example, verify

SIZES = {
    # hidden, layers, heads, kv heads, mlp
    "target": (192, 4, 6, 2, 512),
    "draft": (96, 2, 3, 1, 256),
}


def llama(hidden: int, layers: int, heads: int, kv: int, mlp: int, seq: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=mlp, max_position_embeddings=seq, tie_word_embeddings=True,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, rope_theta=10000.0,
    )
    return LlamaForCausalLM(cfg)


def batch(rng: random.Random, rows: int, seq: int) -> torch.Tensor:
    """Rows of packed ``<bos>prompt answer<eos>`` lines (a line cut at the row end is fine)."""
    out = torch.empty(rows, seq, dtype=torch.long)
    for r in range(rows):
        ids: list[int] = []
        while len(ids) < seq:
            p, a = make_example(rng)
            ids += [BOS] + encode(p + a) + [EOS]
        out[r] = torch.tensor(ids[:seq])
    return out


def train(
    model: LlamaForCausalLM, steps: int, lr: float, rows: int, seq: int, device: str, seed: int, name: str,
    budget: float = 0.0,
) -> list:
    """AdamW, linear warm-up then cosine decay. ``budget`` (seconds, 0 = none): after 25 steps
    the step count is lowered to what fits, so the schedule still ends at zero."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    rng = random.Random(seed)
    log, t0 = [], time.time()
    warm = max(1, steps // 20)
    step = 0
    while step < steps:
        if budget and step == 5:
            t5 = time.time()
        if budget and step == 25:  # steps 5..25 time the steady state (no start-up costs)
            per_step = (time.time() - t5) / 20
            steps = max(26, min(steps, int((budget - (t5 - t0)) / per_step)))
            log.append({"steps": steps, "seconds_per_step": round(per_step, 4)})
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = batch(rng, rows, seq).to(device)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - t0, 1)})
            print(name, log[-1], flush=True)
        step += 1
    return log


@torch.no_grad()
def accuracy(model: LlamaForCausalLM, n: int, seed: int, device: str) -> dict:
    """Greedy exact-answer accuracy per task (one left-padded batch of ``n`` prompts per task)."""
    from paradecode.api import prepare_prompts
    from paradecode.speculative.pair import TASKS

    model.eval()
    rng = random.Random(seed)
    acc = {}
    for task in sorted(TASKS):
        examples = [make_example(rng, task) for _ in range(n)]
        ids, mask = prepare_prompts([[BOS] + encode(p) for p, _ in examples], None, PAD, torch.device(device))
        mask = torch.ones_like(ids) if mask is None else mask
        out = model.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, pad_token_id=PAD, eos_token_id=EOS)
        acc[task] = sum(verify(p, decode(row[ids.shape[1]:])) for (p, _), row in zip(examples, out)) / n
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="paradecode/zoo/spec-pair")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps (each model)")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", type=int, default=100, help="prompts per task for the accuracy check")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=0.0, help="seconds of training per model (0 = all steps)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    summary = {"args": vars(args)}
    for i, name in enumerate(("target", "draft")):
        torch.manual_seed(args.seed + i)
        model = llama(*SIZES[name], seq=args.seq * 2)
        summary[name] = {"params": sum(p.numel() for p in model.parameters())}
        summary[name]["log"] = train(
            model, args.steps, args.lr, args.rows, args.seq, args.device, args.seed + 10 * i, name, args.time_budget
        )
        summary[name]["accuracy"] = accuracy(model, args.eval, 1234, args.device)
        print(name, summary[name]["params"], summary[name]["accuracy"], flush=True)
        model.to("cpu").to(torch.bfloat16 if name == "target" else torch.float32)
        model.generation_config.pad_token_id = PAD
        model.save_pretrained(out / name)
        build_tokenizer().save(str(out / name / "tokenizer.json"))
    (out / "train_log.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
