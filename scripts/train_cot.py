"""Train a small LLaDA-architecture model on the chain-of-thought tasks (paradecode/bench/cot_tasks.py).

One shot on one GPU inside a wall-time budget (``--time-budget`` seconds from the start of the
script: data, training, checkpoint and the final evaluation), with LLaDA's SFT objective
(``diffusion_loss`` of scripts/train_dllm.py: the prompt is never masked, the loss is on the
answer canvas = the chain, the final line, then ``<eos>`` up to 256 words) plus label
smoothing (and, with ``--edit-noise``, LLaDA2.1's token-to-token stream), bf16 autocast on
cuda, a word-level tokenizer, and a checkpoint written every ``--save-every`` seconds so a
killed run still leaves a model.

At the end it prints: the held-out accuracy of LLaDA's baseline at full steps (lowconf, one
token per step; chain and final line verified), the share of committed-token confidences in
[0.5, 0.9) for this model and for the shipped ``tasks-6m`` on its own tasks, and the wall time.

    python scripts/train_cot.py --out $OUT/cot-10m --time-budget 420     # one H200
    python scripts/train_cot.py --out /tmp/cot-smoke --smoke             # CPU, ~1 minute

``--free-choice`` trains and evaluates on the ``cot-free*`` counterparts of the tasks
(``CotSpec.free_choice`` in paradecode/bench/cot_tasks.py: per step, a verb and a commutative
step's operand order drawn 70/30, choices no other token of the answer pins, so a calibrated
model commits them at confidence ~0.7); the model's info.json then lists ``cot-free``.

The directory --out gets config.json, the bf16 weights (safetensors shards of at most 8 MiB and their
index, so a shipped model's files stay small), tokenizer.json and info.json
(the command, the train log, the evaluation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paradecode.bench.confidence import confidence_summary, decode_with_confidences, model_confidences  # noqa: E402
from paradecode.bench.cot_tasks import FREE_CHOICE_TASKS, cot_vocabulary  # noqa: E402
from paradecode.bench.edit_training import noise_vocabulary  # noqa: E402
from paradecode.bench.tasks import get_task  # noqa: E402
from paradecode.bench.tokenizer import build_word_tokenizer  # noqa: E402
from paradecode.models import LLaDAConfig, LLaDAModel  # noqa: E402
from train_dllm import diffusion_loss, parse_mix  # noqa: E402  (the same objective as tasks-6m)

EVAL_SEED = 20_261_201  # held-out prompts ("cot" = the test split, disjoint from "cot-train")


def elapsed() -> float:
    return time.perf_counter() - T_START


class CotBatches(torch.utils.data.IterableDataset):
    """Endless batches (tokens (B, P+G), attention mask): fresh seeded problems, prompts
    left-padded to P, answers followed by <eos> up to G. An example whose prompt or answer
    does not fit is redrawn (counted in ``too_long``)."""

    def __init__(self, mix: dict[str, float], batch_size: int, prompt_len: int, gen_length: int,
                 seed: int, vocab: dict[str, int], pad: int, eos: int, short_canvas: int = 0,
                 full_share: float = 1.0) -> None:
        self.mix, self.batch_size, self.P, self.G = mix, batch_size, prompt_len, gen_length
        self.seed, self.vocab, self.pad, self.eos = seed, vocab, pad, eos
        # Most batches on a short canvas: at init a canvas query spreads its attention over every
        # key, and 200 <eos>/mask keys of a 256-word canvas drown the few prompt words it must
        # learn to find (the first run never learned it); a share of full canvases keeps the
        # evaluated layout (the answer, then <eos> to word 256) in the training distribution.
        self.short, self.full_share = short_canvas, full_share

    def encode(self, text: str) -> list[int]:
        return [self.vocab[w] for w in text.split(" ")]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"cot-train/{self.seed}/{info.id if info else 0}")
        tasks = [get_task(n) for n in self.mix]
        weights = list(self.mix.values())
        P = self.P
        while True:
            G = self.G if not self.short or rng.random() < self.full_share else self.short
            rows, masks = [], []
            while len(rows) < self.batch_size:
                ex = rng.choices(tasks, weights)[0].make(rng)
                p, a = self.encode(ex.prompt), self.encode(ex.answer)
                if len(p) > P or len(a) >= G:
                    continue
                rows.append([self.pad] * (P - len(p)) + p + a + [self.eos] * (G - len(a)))
                masks.append([0] * (P - len(p)) + [1] * (len(p) + G))
            yield torch.tensor(rows), torch.tensor(masks)


def free_choice_names(names: list[str]) -> list[str]:
    """Each task's free-choice counterpart (``--free-choice``); a free-choice task stays."""
    free = set(FREE_CHOICE_TASKS.values())
    bad = [n for n in names if n not in FREE_CHOICE_TASKS and n not in free]
    if bad:
        raise SystemExit(f"--free-choice: no free-choice counterpart of {bad}; use tasks among "
                         f"{sorted(FREE_CHOICE_TASKS)} (or their counterparts {sorted(free)})")
    return [FREE_CHOICE_TASKS.get(n, n) for n in names]


def free_choice_mix(mix: dict[str, float]) -> dict[str, float]:
    """A task mix with each task replaced by its free-choice counterpart (weights kept)."""
    return dict(zip(free_choice_names(list(mix)), mix.values()))


def make_probe(tok, P: int, G: int, device: torch.device, n: int = 128, task: str = "cot"):
    """Teacher-forced accuracy on half of the answer words of ``n`` held-out ``task`` problems
    (names, numbers, all), on the evaluated layout. It tells early whether the model reads the
    prompt: a name is right only when looked up there (the first run stayed at chance, 1/20)."""
    from paradecode.bench.cot_tasks import NAMES

    vocab = tok.get_vocab()
    exs = get_task(task).examples(n, seed=EVAL_SEED + 1)
    rows, masks, answer = [], [], []
    for ex in exs:
        p, a = [vocab[w] for w in ex.prompt.split(" ")], [vocab[w] for w in ex.answer.split(" ")]
        rows.append([tok.pad_token_id] * (P - len(p)) + p + a + [tok.eos_token_id] * (G - len(a)))
        masks.append([0] * (P - len(p)) + [1] * (len(p) + G))
        answer.append([True] * len(a) + [False] * (G - len(a)))
    x, am, ans = torch.tensor(rows), torch.tensor(masks), torch.tensor(answer)
    hidden = ans & (torch.rand(ans.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
    names = torch.isin(x[:, P:], torch.tensor([vocab[w] for w in NAMES]))
    numbers = torch.isin(x[:, P:], torch.tensor([i for w, i in vocab.items() if w.isdigit()]))
    y = x.clone()
    y[:, P:][hidden] = tok.mask_token_id
    x, y, am, hidden, names, numbers = (t.to(device) for t in (x, y, am, hidden, names, numbers))

    @torch.no_grad()
    def measure(model) -> dict:
        was_training = model.training
        model.eval()
        right = model(y, attention_mask=am, logits_range=(P, P + G)).argmax(-1) == x[:, P:]
        model.train(was_training)
        return {k: round((right & hidden & m).sum().item() / max(1, (hidden & m).sum().item()), 3)
                for k, m in (("names", names), ("numbers", numbers), ("all", torch.ones_like(names)))}

    return measure


SHARD_BYTES = 8 * 2**20  # weights in shards of at most 8 MiB: a shipped model's files stay small for git


def save_checkpoint(model: LLaDAModel, tok, out: Path, info: dict) -> None:
    """bf16 weights + tokenizer + info.json, written to a temporary directory then moved in
    file by file, so a run killed while saving leaves the previous complete files."""
    tmp = out / ".saving"
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.bfloat16) for k, v in model.state_dict().items()}
    shipped = LLaDAModel(model.config)
    shipped.load_state_dict(state, assign=True)
    shipped.save_pretrained(tmp, max_shard_bytes=SHARD_BYTES)
    tok.save_pretrained(tmp)
    (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    written = {f.name for f in tmp.iterdir()}
    for stale in out.glob("model*.safetensors*"):  # a previous save's weights in the other layout
        if stale.name not in written:
            stale.unlink()
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def baseline_confidences(name: str, n: int, device: torch.device, batch: int) -> dict:
    """The same measurement for a shipped model on its own tasks (all committed tokens pooled)."""
    return model_confidences(name, n, EVAL_SEED, device=str(device), batch_size=batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--time-budget", type=float, default=420.0,
                    help="seconds from the start of the script to the end of the final evaluation")
    ap.add_argument("--eval-reserve", type=float, default=None,
                    help="seconds kept for the final save + evaluation (default 75 on cuda, 60 on cpu)")
    ap.add_argument("--save-every", type=float, default=60.0, help="seconds between checkpoints")
    ap.add_argument("--mix", default="cot-train:0.8,cot-short-train:0.2", help="task:weight,... of training tasks")
    ap.add_argument("--eval-tasks", default="cot", help="held-out tasks of the final evaluation")
    ap.add_argument("--free-choice", action="store_true",
                    help="train and evaluate on the free-choice counterparts of --mix, --warm-mix and --eval-tasks "
                         "(cot -> cot-free, ...: per step a verb and an operand order drawn 70/30 that nothing pins)")
    ap.add_argument("--d-model", type=int, default=320)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--heads", type=int, default=5)
    ap.add_argument("--mlp", type=int, default=704)
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--short-canvas", type=int, default=96,
                    help="canvas length of most training batches (0: always --gen-length)")
    ap.add_argument("--full-share", type=float, default=0.25,
                    help="share of training batches on the full --gen-length canvas")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=200, help="optimizer steps of linear warm-up")
    ap.add_argument("--label-smoothing", type=float, default=0.02)
    ap.add_argument("--edit-noise", type=float, default=0.0,
                    help="LLaDA2.1's token-to-token training stream: share of the visible canvas tokens replaced by "
                         "random tokens (never <pad>/<mask>/<unk>), with the loss also on every visible canvas "
                         "position, so the model learns to edit (paradecode/bench/edit_training.py); 0: off")
    ap.add_argument("--edit-weight", type=float, default=1.0,
                    help="weight of that visible-position loss beside the masked-diffusion loss (with --edit-noise)")
    ap.add_argument("--embed-std", type=float, default=0.5,
                    help="init std of the input embeddings (0.02 in the first run: names then stay nearly "
                         "alike in the residual stream and the model never learned to look them up)")
    ap.add_argument("--embed-decay", type=float, default=0.0, help="weight decay of the input embeddings")
    ap.add_argument("--head-decay", type=float, default=0.1, help="weight decay of the (untied) output projection")
    ap.add_argument("--tie-embeddings", action="store_true",
                    help="output projection = the input embeddings (logits scaled by 1/sqrt(d_model)): copying a "
                         "prompt word is then the identity map from input to output")
    ap.add_argument("--warm-share", type=float, default=0.0,
                    help="share of the training time (of the steps with --max-steps) spent first on --warm-mix "
                         "over a --warm-canvas canvas")
    ap.add_argument("--warm-mix", default="cot-short-train:0.7,cot-train:0.3", help="task:weight,... of the warm stage")
    ap.add_argument("--warm-canvas", type=int, default=32,
                    help="canvas of the warm stage (problems whose answer does not fit are redrawn)")
    ap.add_argument("--probe-every", type=int, default=500,
                    help="every this many steps, teacher-forced accuracy on names / numbers of held-out answers (0: off)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="stop after this many steps; the learning-rate schedule and the warm stage then run over "
                         "steps, not time (default: the time budget)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(12, max(1, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--eval-n", type=int, default=500)
    ap.add_argument("--eval-batch", type=int, default=500)
    ap.add_argument("--baseline", default="tasks-6m", help="shipped model whose confidences are measured too ('' to skip)")
    ap.add_argument("--baseline-n", type=int, default=256, help="problems per task of the baseline's measurement")
    ap.add_argument("--init", default=None, help="continue from this model directory (a previous --out; pass another --seed for new data)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager on error)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU check: a tiny model, a few steps, a small evaluation (sizes overridden)")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.d_model, args.layers, args.heads, args.mlp = "cpu", 32, 2, 2, 64
        args.batch_size, args.workers, args.max_steps, args.warmup = 8, 0, 6, 2
        args.eval_n, args.eval_batch, args.baseline_n, args.save_every = 6, 6, 3, 0.0
        args.probe_every = 2 if args.probe_every else 0
    for name in ("time_budget", "batch_size", "gen_length", "prompt_len", "eval_n"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.label_smoothing < 1:
        raise SystemExit(f"--label-smoothing must lie in [0, 1), got {args.label_smoothing}")
    if not 0 <= args.edit_noise < 1:  # (not nan: a nan fails both comparisons)
        raise SystemExit(f"--edit-noise must lie in [0, 1) (the share of visible canvas tokens replaced by random "
                         f"tokens; e.g. 0.1), got {args.edit_noise}")
    if not 0 < args.edit_weight < math.inf:
        raise SystemExit(f"--edit-weight must be a positive number (1 = the masked-diffusion loss's weight), "
                         f"got {args.edit_weight}")

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    words = cot_vocabulary()
    tok = build_word_tokenizer(words)
    vocab = tok.get_vocab()
    mix = parse_mix(args.mix)
    eval_tasks = [t.strip() for t in args.eval_tasks.split(",") if t.strip()]
    if args.free_choice:
        mix = free_choice_mix(mix)
        eval_tasks = free_choice_names(eval_tasks)
    for t in eval_tasks:
        get_task(t)
    V = len(tok)
    edit_vocab = noise_vocabulary(V, (tok.pad_token_id, tok.mask_token_id, tok.unk_token_id))
    config = LLaDAConfig(
        d_model=args.d_model, n_heads=args.heads, n_kv_heads=args.heads, n_layers=args.layers,
        mlp_hidden_size=args.mlp, mlp_ratio=4, vocab_size=V, embedding_size=(V + 15) // 16 * 16,
        max_sequence_length=max(512, args.prompt_len + args.gen_length), rope_theta=10000.0,
        mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        weight_tying=args.tie_embeddings, scale_logits=args.tie_embeddings,
    )
    if args.init:  # continued training: same vocabulary and tokens, the architecture of --init
        model = LLaDAModel.from_pretrained(args.init, torch_dtype=torch.float32, device=device).train()
        for key in ("vocab_size", "mask_token_id", "eos_token_id", "pad_token_id"):
            if getattr(model.config, key) != getattr(config, key):
                raise SystemExit(f"--init {args.init}: {key} is {getattr(model.config, key)}, expected {getattr(config, key)}")
        if model.config.max_sequence_length < args.prompt_len + args.gen_length:
            raise SystemExit(f"--init {args.init}: max_sequence_length {model.config.max_sequence_length} < "
                             f"prompt + canvas {args.prompt_len + args.gen_length}")
        config = model.config
        args.d_model, args.layers, args.mlp = config.d_model, config.n_layers, config.mlp_hidden_size
    else:
        model = LLaDAModel(config)
        torch.nn.init.normal_(model.model.transformer["wte"].weight, std=args.embed_std)
        model = model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    seq = args.prompt_len + args.gen_length
    print(f"model: {n_params / 1e6:.2f}M parameters (d {args.d_model}, {args.layers} layers, mlp {args.mlp}), "
          f"vocab {V}, sequence {seq} = prompt {args.prompt_len} + canvas {args.gen_length}, "
          f"batch {args.batch_size}, tasks {mix}, device {device}", flush=True)
    tr = model.model.transformer
    wte = tr["wte"].weight
    head = [] if model.config.weight_tying else [tr["ff_out"].weight]
    special = [wte, *head]
    decay = [p for p in model.parameters() if p.dim() >= 2 and all(p is not q for q in special)]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0},
                             {"params": [wte], "weight_decay": args.embed_decay},
                             {"params": head, "weight_decay": args.head_decay}],
                            lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    fwd = model
    if args.compile:
        try:
            fwd = torch.compile(model)
        except Exception as e:  # noqa: BLE001 - any failure: eager is always correct
            print(f"torch.compile unavailable ({type(e).__name__}: {e}); eager", flush=True)
    if not 0 < args.full_share <= 1 or not 0 <= args.short_canvas <= args.gen_length:
        raise SystemExit(f"--full-share must lie in (0, 1] and --short-canvas in [0, --gen-length], got "
                         f"{args.full_share} and {args.short_canvas}")
    if not 0 <= args.warm_share < 1 or not 0 < args.warm_canvas <= args.gen_length:
        raise SystemExit(f"--warm-share must lie in [0, 1) and --warm-canvas in (0, --gen-length], got "
                         f"{args.warm_share} and {args.warm_canvas}")
    warm_mix = parse_mix(args.warm_mix) if args.warm_share > 0 else {}
    if warm_mix and args.free_choice:
        warm_mix = free_choice_mix(warm_mix)

    def make_loader(data: CotBatches) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.workers,
                                           pin_memory=device.type == "cuda",
                                           prefetch_factor=4 if args.workers else None, persistent_workers=False)

    def batches():
        """The warm stage's batches (short canvas, mostly short chains) until its share of the
        training time is spent, then the main mix's."""
        if warm_mix:
            warm_end = t_train + args.warm_share * (train_end - t_train)
            for batch in make_loader(CotBatches(warm_mix, args.batch_size, args.prompt_len, args.warm_canvas,
                                                args.seed + 1_000_003, vocab, tok.pad_token_id, tok.eos_token_id)):
                if (step >= args.warm_share * args.max_steps) if args.max_steps else elapsed() >= warm_end:
                    print(f"warm stage over at step {step} ({elapsed():.0f}s)", flush=True)
                    break
                yield batch
        yield from make_loader(CotBatches(mix, args.batch_size, args.prompt_len, args.gen_length, args.seed, vocab,
                                          tok.pad_token_id, tok.eos_token_id, args.short_canvas, args.full_share))

    probe_task = free_choice_names(["cot"])[0] if args.free_choice else "cot"
    probe = make_probe(tok, args.prompt_len, args.gen_length, device, task=probe_task) if args.probe_every else None
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    reserve = args.eval_reserve if args.eval_reserve is not None else (75.0 if device.type == "cuda" else 60.0)
    train_end = args.time_budget - reserve  # seconds since the script started
    if train_end <= elapsed() + 1 and not args.smoke:
        raise SystemExit(f"--time-budget {args.time_budget} leaves no training time after the {reserve:.0f}s reserve")

    def make_info(step: int, train_seconds: float, log: list, final: bool, extra: dict | None = None) -> dict:
        return {
            "name": out.name,
            "description": f"{n_params / 1e6:.1f}M-parameter LLaDA-architecture masked-diffusion LM, word-level, "
                           f"trained on {', '.join(mix)} (chain-of-thought arithmetic, canvas {args.gen_length})",
            "tasks": eval_tasks,
            "gen_length": args.gen_length, "block_length": get_task(eval_tasks[0]).block_length,
            "task_gen_length": {t: get_task(t).gen_length for t in eval_tasks},
            "task_block_length": {t: get_task(t).block_length for t in eval_tasks},
            "parameters": n_params, "complete": final,
            "train": {"command": "python scripts/train_cot.py " + " ".join(sys.argv[1:]), "steps": step,
                      "seconds": round(train_seconds, 1),
                      "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      "mix": mix, "free_choice": args.free_choice,
                      "batch_size": args.batch_size, "lr": args.lr, "label_smoothing": args.label_smoothing,
                      "edit": {"noise": args.edit_noise, "weight": args.edit_weight if args.edit_noise else None,
                               "excluded": ["<pad>", "<mask>", "<unk>"] if args.edit_noise else None},
                      "embed_std": args.embed_std, "embed_decay": args.embed_decay,
                      "short_canvas": args.short_canvas, "full_share": args.full_share,
                      "head_decay": args.head_decay, "tie_embeddings": args.tie_embeddings,
                      "warm": {"share": args.warm_share, "mix": warm_mix, "canvas": args.warm_canvas},
                      "prompt_len": args.prompt_len, "seed": args.seed, "init": args.init, "log": log},
            **(extra or {}),
        }

    loss_options = dict(label_smoothing=args.label_smoothing, edit_noise=args.edit_noise, edit_vocab=edit_vocab,
                        edit_weight=args.edit_weight)
    step, log, ema = 0, [], None
    t_train = elapsed()
    last_save = t_train
    tokens_seen = 0
    t_speed, step_speed = None, 0
    for tokens, am in batches():
        now = elapsed()
        if now >= train_end or (args.max_steps is not None and step >= args.max_steps):
            break
        # the schedule runs over --max-steps when given (reproducible step counts), else the time
        frac = (min(1.0, step / args.max_steps) if args.max_steps
                else min(1.0, (now - t_train) / max(1.0, train_end - t_train)))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        tokens, am = tokens.to(device, non_blocking=True), am.to(device, non_blocking=True)
        try:
            with autocast:
                loss = diffusion_loss(fwd, tokens, am, args.prompt_len, tok.mask_token_id, **loss_options)
        except Exception as e:  # noqa: BLE001
            if fwd is model:
                raise
            print(f"torch.compile failed at the first step ({type(e).__name__}: {str(e)[:300]}); eager", flush=True)
            fwd = model
            with autocast:
                loss = diffusion_loss(fwd, tokens, am, args.prompt_len, tok.mask_token_id, **loss_options)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += tokens.numel()
        if step == 20:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_speed, step_speed = elapsed(), step
        if step % 100 == 0 or step == 1 or (args.smoke and step <= 6):
            value = loss.item()
            ema = value if ema is None else 0.9 * ema + 0.1 * value
            rate = ""
            if t_speed is not None and step > step_speed:
                sps = (step - step_speed) / (elapsed() - t_speed)
                rate = f" {sps:.1f} steps/s {sps * args.batch_size * seq / 1e6:.2f}M tok/s"
            log.append({"step": step, "loss": round(value, 4), "lr": lr, "t": round(elapsed(), 1)})
            print(f"step {step} loss {value:.4f} (ema {ema:.4f}) lr {lr:.2e} t {elapsed():.0f}s{rate}", flush=True)
        if probe is not None and step % args.probe_every == 0:
            with autocast:
                acc = probe(model)
            log.append({"step": step, "teacher_forced": acc})
            print(f"step {step} teacher-forced held-out accuracy {acc}", flush=True)
        if args.save_every and elapsed() - last_save >= args.save_every or (args.smoke and step == 3):
            save_checkpoint(model, tok, out, make_info(step, elapsed() - t_train, log, final=False))
            last_save = elapsed()
            print(f"checkpoint at step {step} ({elapsed():.0f}s)", flush=True)
    train_seconds = elapsed() - t_train
    rate = {}
    if t_speed is not None and step > step_speed:
        sps = (step - step_speed) / (t_train + train_seconds - t_speed)
        rate = {"steps_per_s": round(sps, 2), "tokens_per_s": round(sps * args.batch_size * seq)}
    print(f"trained {step} steps in {train_seconds:.0f}s ({tokens_seen / 1e6:.1f}M tokens){' ' + str(rate) if rate else ''}",
          flush=True)

    # Save, then evaluate what is shipped: the bf16 weights loaded back in float32.
    model.eval()
    save_checkpoint(model, tok, out, make_info(step, train_seconds, log, final=False))
    shipped = LLaDAModel.from_pretrained(out, torch_dtype=torch.float32, device=device)
    evaluation: dict = {"strategy": "lowconf, steps = gen_length", "n": args.eval_n, "seed": EVAL_SEED}
    acc, final_acc = {}, {}
    all_conf, all_tok = [], []
    from paradecode.bench.cot_tasks import check_final

    for t in eval_tasks:
        task = get_task(t)
        exs = task.examples(args.eval_n, seed=EVAL_SEED)
        res = decode_with_confidences(shipped, tok, task, exs, batch_size=args.eval_batch)
        acc[t] = sum(res["correct"]) / len(exs)
        final_acc[t] = sum(check_final(e.data, tx.strip()) for e, tx in zip(exs, res["texts"])) / len(exs)
        all_conf.append(res["confidence"])
        all_tok.append(res["token"])
        print(f"held-out {t}: chain+answer {acc[t]:.1%}, final answer {final_acc[t]:.1%} "
              f"(N={len(exs)}); e.g. {res['texts'][0][:160]!r}", flush=True)
    evaluation.update(accuracy=acc, final_answer_accuracy=final_acc,
                      confidence=confidence_summary(torch.cat(all_conf), torch.cat(all_tok), tok.eos_token_id))
    if args.baseline:
        try:
            evaluation["baseline_confidence"] = baseline_confidences(args.baseline, args.baseline_n, device,
                                                                     batch=min(512, args.eval_batch))
        except Exception as e:  # noqa: BLE001 - the model is saved either way
            print(f"baseline measurement failed: {type(e).__name__}: {e}", flush=True)
    evaluation["wall_seconds"] = round(elapsed(), 1)
    save_checkpoint(model, tok, out, make_info(step, train_seconds, log, final=True, extra={"eval": evaluation}))

    c = evaluation["confidence"]
    print("\n==== summary ====")
    print(f"held-out accuracy, lowconf at full steps (chain and final line verified): {json.dumps(acc)}")
    print(f"final-answer-only accuracy: {json.dumps(final_acc)}")
    print(f"committed-token confidences in [0.5, 0.9): {c['share_in_band']:.1%} of {c['n']} "
          f"({c['share_in_band_without_eos']:.1%} of {c['n_without_eos']} without <eos>)")
    if "baseline_confidence" in evaluation:
        b = evaluation["baseline_confidence"]
        print(f"  {b['model']} on its tasks: {b['share_in_band']:.1%} of {b['n']} "
              f"({b['share_in_band_without_eos']:.1%} without <eos>)")
    print(f"histogram bins {c['bins']}:\n  this model {[round(h, 4) for h in c['histogram']]}")
    if "baseline_confidence" in evaluation:
        print(f"  {args.baseline} {[round(h, 4) for h in evaluation['baseline_confidence']['histogram']]}")
    print(f"saved {out}; {step} steps; wall time {elapsed():.0f}s (budget {args.time_budget:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
