"""Learnability probe of the cot task on the CPU: does a tiny LLaDA model learn to read the prompt?

Trains a small model for a few hundred steps with the training objective of
scripts/train_cot.py on a short canvas, then measures on held-out problems:
- ``first``: with the canvas fully masked, the argmax at the first canvas position is the name
  of a person a valid chain may start with (``chance`` = the same for a name drawn uniformly
  from the prompt's names);
- ``tf``: teacher-forced accuracy on half the answer tokens masked (numbers and names apart);
- ``prompt_gain``: the loss with another problem's prompt minus the loss with the right one
  (0 = the model ignores the prompt).

    OMP_NUM_THREADS=1 python scripts/cot_probe.py --order dependency --steps 300
    OMP_NUM_THREADS=1 python scripts/cot_probe.py --order shuffled --steps 300
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paradecode.bench import cot_tasks as ct  # noqa: E402
from paradecode.bench.tokenizer import build_word_tokenizer  # noqa: E402
from paradecode.models import LLaDAConfig, LLaDAModel  # noqa: E402
from train_dllm import diffusion_loss  # noqa: E402


def encode_batch(exs, vocab, P, G, pad, eos):
    rows, masks = [], []
    for ex in exs:
        p = [vocab[w] for w in ex.prompt.split(" ")]
        a = [vocab[w] for w in ex.answer.split(" ")]
        rows.append([pad] * (P - len(p)) + p + a + [eos] * (G - len(a)))
        masks.append([0] * (P - len(p)) + [1] * (len(p) + G))
    return torch.tensor(rows), torch.tensor(masks)


def draw(make, rng, n, P, G):
    out = []
    while len(out) < n:
        ex = make(rng)
        if len(ex.prompt.split(" ")) <= P and len(ex.answer.split(" ")) < G:
            out.append(ex)
    return out


def ready_first(data) -> set[str]:
    return {c.split(" ")[0] for c in ct.valid_chains(data, limit=2000)}


@torch.no_grad()
def measure(model, tok, exs, P, G) -> dict:
    vocab, inv = tok.get_vocab(), {v: k for k, v in tok.get_vocab().items()}
    mask_id, eos, pad = tok.mask_token_id, tok.eos_token_id, tok.pad_token_id
    x, am = encode_batch(exs, vocab, P, G, pad, eos)
    model.eval()
    # first step from a fully masked canvas
    z = x.clone()
    z[:, P:] = mask_id
    first = model(z, attention_mask=am)[:, P].argmax(-1).tolist()
    hits = chance = 0.0
    for ex, f in zip(exs, first):
        ok = ready_first(ex.data)
        names = [n for n in ex.data["relations"]]
        hits += inv.get(f, "") in ok
        chance += len(ok & set(names)) / len(names)
    # teacher forcing, half of the answer tokens masked
    g = torch.Generator().manual_seed(0)
    ans = torch.zeros_like(x, dtype=torch.bool)
    for i, ex in enumerate(exs):
        ans[i, P : P + len(ex.answer.split(" "))] = True
    sel = ans & (torch.rand(x.shape, generator=g) < 0.5)
    y = x.clone()
    y[sel] = mask_id
    pred = model(y, attention_mask=am).argmax(-1)
    is_num = torch.tensor([[inv.get(int(t), "").isdigit() for t in row] for row in x.tolist()])
    is_name = torch.tensor([[inv.get(int(t), "") in ct.NAMES for t in row] for row in x.tolist()])
    right = pred == x
    tf = {k: (right & sel & m).sum().item() / max(1, (sel & m).sum().item())
          for k, m in (("all", torch.ones_like(sel)), ("numbers", is_num), ("names", is_name))}
    # prompt dependence: same canvases, prompts rolled by one problem
    torch.manual_seed(1)
    l_right = diffusion_loss(model, x, am, P, mask_id).item()
    xr, amr = x.clone(), am.clone()
    xr[:, :P], amr[:, :P] = x[:, :P].roll(1, 0), am[:, :P].roll(1, 0)
    torch.manual_seed(1)
    l_wrong = diffusion_loss(model, xr, amr, P, mask_id).item()
    model.train()
    n = len(exs)
    return {"first": round(hits / n, 3), "chance": round(chance / n, 3),
            "tf": {k: round(v, 3) for k, v in tf.items()}, "prompt_gain": round(l_wrong - l_right, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--order", default="dependency", choices=("dependency", "shuffled"))
    ap.add_argument("--max-steps", type=int, default=4, help="most needed steps of a problem")
    ap.add_argument("--min-steps", type=int, default=2, help="fewest needed steps of a problem")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--gen-length", type=int, default=56)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embed-decay", type=float, default=0.1, help="weight decay of the embeddings")
    ap.add_argument("--embed-std", type=float, default=0.02, help="init std of the input embeddings")
    ap.add_argument("--givens", default="2,3")
    ap.add_argument("--distractors", default="1,2")
    ap.add_argument("--tie", action="store_true", help="output head = input embeddings (logits scaled by 1/sqrt(d))")
    ap.add_argument("--head-decay", type=float, default=0.1, help="weight decay of the untied output head")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    spec = ct.CotSpec(givens=tuple(int(v) for v in args.givens.split(",")), steps=(args.min_steps, args.max_steps),
                      distractors=tuple(int(v) for v in args.distractors.split(",")), prompt_order=args.order)
    make_train, make_test = ct._maker(spec, "train"), ct._maker(spec, "test")
    tok = build_word_tokenizer(ct.cot_vocabulary())
    V = len(tok)
    cfg = LLaDAConfig(d_model=args.d_model, n_heads=4, n_kv_heads=4, n_layers=args.layers,
                      mlp_hidden_size=3 * args.d_model, mlp_ratio=4, vocab_size=V,
                      embedding_size=(V + 15) // 16 * 16, max_sequence_length=512, rope_theta=10000.0,
                      mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, weight_tying=args.tie, scale_logits=args.tie)
    model = LLaDAModel(cfg).train()
    wte = model.model.transformer["wte"].weight
    torch.nn.init.normal_(wte, std=args.embed_std)
    head = [] if args.tie else [model.model.transformer["ff_out"].weight]
    rest = [p for p in model.parameters() if p is not wte and all(p is not h for h in head)]
    opt = torch.optim.AdamW([{"params": rest, "weight_decay": 0.1}, {"params": [wte], "weight_decay": args.embed_decay},
                             {"params": head, "weight_decay": args.head_decay}],
                            lr=args.lr, betas=(0.9, 0.95))
    P, G = args.prompt_len, args.gen_length
    rng = random.Random(f"probe/{args.seed}")
    test = draw(make_test, random.Random(123), 64, P, G)
    vocab = tok.get_vocab()
    t0 = time.time()
    print(f"order {args.order}, steps {args.min_steps}-{args.max_steps}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
          f"params, before: {measure(model, tok, test, P, G)}", flush=True)
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1, step / 30) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        x, am = encode_batch(draw(make_train, rng, args.batch, P, G), vocab, P, G, tok.pad_token_id, tok.eos_token_id)
        loss = diffusion_loss(model, x, am, P, tok.mask_token_id, label_smoothing=0.02)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            print(f"step {step} loss {loss.item():.4f} t {time.time() - t0:.0f}s {measure(model, tok, test, P, G)}",
                  flush=True)


if __name__ == "__main__":
    main()
