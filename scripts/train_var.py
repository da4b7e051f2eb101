"""Train the shipped image models on procedural 32x32 shapes (paradecode.vision.shapes).

Four models, each for a wall-clock budget, on fresh procedural batches every step:
1. the multi-scale VQ-VAE (MSE + VQ loss, dead codes re-seeded from residuals early on),
2. the classifier used by the metrics,
3. a large and 4. a small VAR transformer (teacher forcing on the VQ-VAE's token pyramids,
   10% label dropout for classifier-free guidance, the reference's initialisation).

    python scripts/train_var.py --out paradecode/vision/shipped/shapes32 --device cuda
    python scripts/train_var.py --out /tmp/smoke --tiny          # CPU smoke test, seconds

Checkpoints are written in float16 (config.json + model.safetensors per model) and a
``train_log.json`` with the losses and held-out accuracies.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from paradecode.vision import VAR, VARConfig, VQVAE, VQVAEConfig
from paradecode.vision.metrics import ClassifierConfig, ShapesClassifier
from paradecode.vision.shapes import NUM_CLASSES, make_shapes

PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8)


def lr_at(frac: float, peak: float, warmup: float = 0.03) -> float:
    if frac < warmup:
        return peak * frac / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))


def timed_steps(seconds: float, max_steps: int):
    """Yield (step, fraction of the budget used) until the time or step budget is spent."""
    t0, step = time.perf_counter(), 0
    while step < max_steps:
        frac = max((time.perf_counter() - t0) / seconds, step / max_steps)
        if frac >= 1:
            return
        yield step, frac
        step += 1


def batch(n: int, device: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return make_shapes(n, 32, generator=gen, device=device)


def train_vae(args, gen: torch.Generator, log: dict) -> VQVAE:
    cfg = VQVAEConfig(
        vocab_size=args.vocab, z_channels=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, v_patch_nums=PATCH_NUMS,
    )
    vae = VQVAE(cfg).to(args.device).train()
    opt = torch.optim.Adam(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.95))
    losses = []
    for step, frac in timed_steps(args.vae_seconds, args.max_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, args.vae_lr)
        img, _ = batch(args.batch, args.device, gen)
        rec, vq = vae(img)
        loss = F.mse_loss(rec, img) + vq
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            losses.append(float(loss.detach()))
        if step % 100 == 50 and frac < 0.6:
            reseed_dead_codes(vae, img)
    vae.eval()
    with torch.no_grad():
        img, _ = batch(512, args.device, gen)
        ids = vae.img_to_idxBl(img)
        rec = vae.idxBl_to_img(ids)
        used = torch.cat(ids, 1).unique().numel()
    log["vae"] = dict(steps=step + 1, final_loss=sum(losses[-10:]) / max(1, len(losses[-10:])),
                      rec_mse=float(F.mse_loss(rec, img)), codes_used=used, vocab=args.vocab)
    print("vae", log["vae"], flush=True)
    return vae


@torch.no_grad()
def reseed_dead_codes(vae: VQVAE, img: torch.Tensor) -> None:
    """Codes nobody picked in this batch take the value of a random residual vector."""
    q = vae.quantize
    hits, vecs = torch.zeros(q.vocab_size, device=img.device), []
    for _, _, z, idx, _ in q.walk(vae.quant_conv(vae.encoder(img)).float()):
        hits += idx.bincount(minlength=q.vocab_size).float()
        vecs.append(z)
    dead = (hits == 0).nonzero().flatten()
    if len(dead):
        pool = torch.cat(vecs)
        pick = torch.randint(0, pool.shape[0], (len(dead),), device=pool.device)
        q.embedding.weight.data[dead] = pool[pick] + 0.01 * torch.randn_like(pool[pick])


def train_classifier(args, gen: torch.Generator, log: dict) -> ShapesClassifier:
    clf = ShapesClassifier(ClassifierConfig(num_classes=NUM_CLASSES, width=args.clf_width)).to(args.device).train()
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=0.01)
    n = 0
    for step, frac in timed_steps(args.clf_seconds, args.max_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, 2e-3)
        img, y = batch(args.batch, args.device, gen)
        loss = F.cross_entropy(clf(img), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
    clf.eval()
    with torch.no_grad():
        img, y = batch(2000, args.device, gen)
        acc = float((clf(img).argmax(-1) == y).float().mean())
    log["classifier"] = dict(steps=n, heldout_accuracy=acc)
    print("classifier", log["classifier"], flush=True)
    return clf


def fit_var(args, var: VAR, vae: VQVAE, gen: torch.Generator, seconds: float, lr: float, first: int = 0) -> tuple[int, list]:
    """Teacher-forced cross-entropy on fresh batches; loss on tokens from index ``first`` on."""
    var.train()
    opt = torch.optim.AdamW(var.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    amp = args.device.startswith("cuda")
    losses, steps = [], 0
    for step, frac in timed_steps(seconds, args.max_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, lr)
        with torch.no_grad():
            img, y = batch(args.batch, args.device, gen)
            ids = vae.img_to_idxBl(img)
            x = vae.quantize.idxBl_to_var_input(ids)
            target = torch.cat(ids, 1)[:, first:]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = var(y, x)[:, first:]
        loss = F.cross_entropy(logits.float().reshape(-1, vae.V), target.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        if step % 10 == 0:
            losses.append(float(loss.detach()))
        steps = step + 1
    var.eval()
    return steps, losses


def _mean_tail(xs: list) -> float:
    return sum(xs[-10:]) / max(1, len(xs[-10:]))


def train_var(args, name: str, depth: int, width: int, heads: int, seconds: float, vae: VQVAE,
              gen: torch.Generator, log: dict) -> VAR:
    cfg = VARConfig(
        num_classes=NUM_CLASSES, depth=depth, embed_dim=width, num_heads=heads, patch_nums=PATCH_NUMS,
        vocab_size=vae.V, Cvae=vae.Cvae, attn_l2_norm=True, cond_drop_rate=0.1, drop_path_rate=0.0,
    )
    var = VAR(cfg).to(args.device)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    steps, losses = fit_var(args, var, vae, gen, seconds, args.var_lr)
    log[name] = dict(steps=steps, final_loss=_mean_tail(losses), depth=depth, width=width, heads=heads,
                     params=sum(p.numel() for p in var.parameters()))
    print(name, log[name], flush=True)
    return var


def finetune_refiner(args, vae: VQVAE, small: VAR, gen: torch.Generator, log: dict) -> VAR:
    """CoDe's specialised refiner: the small VAR fine-tuned on the scales it refines only
    (loss on tokens of scales >= ``--refine-from-scale``), from its own checkpoint."""
    var = small.to(args.device)
    first = var.begin_ends[args.refine_from_scale][0]
    steps, losses = fit_var(args, var, vae, gen, args.refiner_seconds, args.refiner_lr, first)
    log["var_refiner"] = dict(steps=steps, final_loss_on_refined_scales=_mean_tail(losses),
                              refine_from_scale=args.refine_from_scale, initial_loss=losses[0] if losses else None)
    print("var_refiner", log["var_refiner"], flush=True)
    return var


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="paradecode/vision/shipped/shapes32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--vae-seconds", type=float, default=110)
    p.add_argument("--clf-seconds", type=float, default=25)
    p.add_argument("--large-seconds", type=float, default=170)
    p.add_argument("--small-seconds", type=float, default=90)
    p.add_argument("--max-steps", type=int, default=10**9)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--var-lr", type=float, default=2e-3)
    p.add_argument("--large", default="6,128,4", help="depth,width,heads of the large VAR")
    p.add_argument("--small", default="2,96,3", help="depth,width,heads of the small VAR")
    p.add_argument("--clf-width", type=int, default=32)
    p.add_argument("--tiny", action="store_true", help="seconds-long CPU smoke test")
    p.add_argument("--refiner-from", default=None,
                   help="only fine-tune CoDe's specialised refiner from DIR/var_small (+ DIR/vae), write OUT/var_refiner")
    p.add_argument("--refine-from-scale", type=int, default=4)
    p.add_argument("--refiner-seconds", type=float, default=120)
    p.add_argument("--refiner-lr", type=float, default=5e-4)
    args = p.parse_args()
    if args.tiny:
        args.batch, args.vocab, args.max_steps = 16, 64, 3
        args.large, args.small, args.clf_width = "2,64,2", "1,32,2", 8
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    out = Path(args.out)
    log: dict = {"args": vars(args)}
    t0 = time.perf_counter()
    if args.refiner_from:
        src = Path(args.refiner_from)
        vae = VQVAE.from_pretrained(src / "vae", device=args.device)
        small = VAR.from_pretrained(src / "var_small", device=args.device)
        refiner = finetune_refiner(args, vae, small, gen, log)
        refiner.save_pretrained(out / "var_refiner", dtype=torch.float16)
        (out / "refiner_log.json").write_text(json.dumps(log, indent=2) + "\n")
        return
    vae = train_vae(args, gen, log)
    for q in vae.parameters():
        q.requires_grad_(False)
    clf = train_classifier(args, gen, log)
    large = train_var(args, "var_large", *map(int, args.large.split(",")), args.large_seconds, vae, gen, log)
    small = train_var(args, "var_small", *map(int, args.small.split(",")), args.small_seconds, vae, gen, log)
    log["total_seconds"] = time.perf_counter() - t0
    for model, name in ((vae, "vae"), (clf, "classifier"), (large, "var_large"), (small, "var_small")):
        model.save_pretrained(out / name, dtype=torch.float16)
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print("saved to", out, "in", round(log["total_seconds"]), "s", flush=True)


if __name__ == "__main__":
    main()
