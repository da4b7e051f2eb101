"""dParallel: certainty-forcing distillation of a shipped dLLM (Chen et al., 2025, arXiv 2509.26488).

One shot inside a wall-time budget (``--time-budget`` seconds from the start of the script):

1. the teacher (default the shipped ``tasks-6m``) answers ``--prompts-per-task`` training
   prompts of each of its tasks with LLaDA's baseline at full steps; only verified answers
   are kept (the reference filters out wrong answers too);
2. a fine-tune of a copy of the teacher on those answers with the reference's loss
   (``paradecode/bench/dparallel_training.py``: semi-AR block masking at ratio 0.5 with the
   complementary mask, cross-entropy on the block's masked positions, plus 2 x the entropy
   at temperature 0.5 on the masked positions already predicted right): all weights, or with
   ``--lora-rank R`` LoRA adapters only (the reference's way; ``paradecode/models/lora.py``);
3. the final evaluation on held-out prompts of each task (seed ``--eval-seed``; training
   prompts that coincide with the evaluation's or ``paradecode bench``'s seed-0 problems are
   dropped): accuracy and mean NFE per prompt of teacher and student with dParallel's decoding
   rule (``dparallel``: an entropy threshold, ``--threshold``, 0.5 as the reference's evaluation), and
   their accuracy with LLaDA's baseline at full steps.

The reference's training defaults and ours (see the dev note, docs/dev-notes/issue-18-dparallel.md):
6 epochs, 64 sequences per optimizer step, AdamW with weight decay 0.01 and betas (0.9, 0.999),
constant learning rate 2e-5, no warm-up, gradient clipping at 1 (all kept). The reference
trains LoRA adapters (r = alpha = 128, no dropout, lr 2e-5; on LLaDA its target list matches
q_proj, k_proj, v_proj and up_proj, see ``paradecode.models.lora``): ``--lora-rank R`` does that
(alpha defaults to R, the reference's scale 1), without it every weight trains.

    python scripts/train_dparallel.py --out $OUT/tasks-6m-dparallel --time-budget 230   # one H200
    python scripts/train_dparallel.py --out /tmp/dparallel-smoke --smoke                # CPU, < 1 minute
    python scripts/train_dparallel.py --out /tmp/dparallel-lora-smoke --smoke --lora-rank 4

``--out`` gets config.json, model.safetensors (bf16), tokenizer.json (+ config) and info.json
(the command, the train log, the evaluation, the decoding rule to use). With ``--lora-rank`` it
gets adapter_config.json + adapter_model.safetensors (bf16) and info.json with ``"base"`` (the
teacher's zoo name or directory) instead: ``paradecode.zoo`` and ``load_model_and_tokenizer``
load it as the teacher with the adapter merged in (and the teacher's tokenizer), and the
evaluation runs on exactly that.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paradecode  # noqa: E402
from paradecode import zoo  # noqa: E402
from paradecode.bench.dparallel_training import dparallel_loss, teacher_trajectories  # noqa: E402
from paradecode.bench.tasks import get_task  # noqa: E402
from paradecode.models import LLaDAModel  # noqa: E402
from paradecode.models import lora  # noqa: E402

T0 = time.perf_counter()
BENCH_SEED = 0  # `paradecode bench`'s default problems: kept out of training too
DECODING = "dparallel"  # the entropy-threshold rule of the reference's evaluation
FULL_FT_LR = 2e-5  # all weights: the reference's LoRA rate, kept (docs/dev-notes/issue-18-dparallel.md)


def elapsed() -> float:
    return time.perf_counter() - T0


def model_path(name_or_dir: str) -> Path:
    path = Path(name_or_dir)
    return path if path.is_dir() else zoo.model_dir(name_or_dir)


@torch.no_grad()
def evaluate(model, tok, tasks, n, seed, threshold, batch=500) -> dict:
    """Per task: accuracy and mean NFE per prompt with ``dparallel`` (entropy threshold ``threshold``),
    and accuracy (NFE = gen_length) with ``lowconf`` at full steps."""
    model.eval()
    out = {}
    for name in tasks:
        task = get_task(name)
        exs = task.examples(n, seed=seed)
        runs = {DECODING: dict(threshold=threshold), "lowconf_full": dict(steps=task.gen_length)}
        res = {}
        for label, opts in runs.items():
            strategy = "lowconf" if label == "lowconf_full" else label
            ok, nfe = 0, 0.0
            for s in range(0, n, batch):
                chunk = exs[s : s + batch]
                gen = paradecode.sample(model, [tok.encode(e.prompt) for e in chunk], strategy,
                                        gen_length=task.gen_length, block_length=task.block_length,
                                        timing=False, **opts)
                texts = tok.batch_decode(gen.generated.tolist(), skip_special_tokens=True)
                ok += sum(task.verify(e, t) for e, t in zip(chunk, texts))
                nfe += float(gen.trace.row_nfe.float().sum())
            res[label] = {"accuracy": ok / n, "mean_nfe": nfe / n}
        out[name] = res
    return out


def format_eval(label: str, ev: dict) -> str:
    lines = [f"{label}: task  acc@{DECODING}  mean NFE  acc@lowconf-full (NFE)"]
    for name, r in ev.items():
        a, b = r[DECODING], r["lowconf_full"]
        lines.append(f"  {name:10s} {a['accuracy']:.3f}  {a['mean_nfe']:6.2f}  {b['accuracy']:.3f} ({b['mean_nfe']:.0f})")
    return "\n".join(lines)


def teacher_base(teacher: str) -> str:
    """What an adapter's info.json names as its base: the zoo name, or the teacher directory's
    absolute path (an adapter directory may move; the base stays where it is)."""
    if not Path(teacher).is_dir() and teacher in zoo.available():
        return teacher
    return str(model_path(teacher).resolve())


def held_out_prompts(tasks, n, traj_seed, eval_n, eval_seed) -> tuple[dict[str, set], list[str]]:
    """Per task, the prompts training must skip: the evaluation's and ``paradecode bench``'s
    (seed 0, first 1000). A task whose training draws would lose more than half to that (a
    small prompt space: ``words`` has 6 prompts) is trained on all its draws and listed."""
    exclude, not_held_out = {}, []
    for t in tasks:
        task = get_task(t)
        held = {e.prompt for seed in (eval_seed, BENCH_SEED) for e in task.examples(max(eval_n, 1000), seed=seed)}
        draws = {e.prompt for e in task.examples(n, seed=traj_seed)}
        if len(draws - held) >= 0.5 * len(draws):
            exclude[t] = held
        else:
            not_held_out.append(t)
    return exclude, not_held_out


def batches(traj, batch_size, epochs, seed):
    """Epoch by epoch: every kept answer once, in batches of one canvas length, in a seeded order."""
    rng = random.Random(f"dparallel/{seed}")
    for _ in range(epochs):
        order = []
        for G, (toks, _) in traj.groups.items():
            idx = list(range(toks.shape[0]))
            rng.shuffle(idx)
            order += [(G, idx[s : s + batch_size]) for s in range(0, len(idx), batch_size)]
        rng.shuffle(order)
        yield from order


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--teacher", default="tasks-6m", help="zoo name or model directory to distil")
    ap.add_argument("--tasks", default=None, help="comma-separated tasks evaluated (default: the teacher's)")
    ap.add_argument("--train-tasks", default=None,
                    help="comma-separated tasks whose prompts the teacher answers for training (default: --tasks); "
                         "e.g. cot-train for cot-8m, whose 'cot' task draws only held-out prompts")
    ap.add_argument("--time-budget", type=float, default=230.0,
                    help="seconds from the start of the script to the end of the final evaluation")
    ap.add_argument("--prompts-per-task", type=int, default=8192, help="training prompts the teacher answers, per task")
    ap.add_argument("--traj-seed", type=int, default=7, help="seed of the training prompts")
    ap.add_argument("--keep", choices=("correct", "all"), default="correct",
                    help="keep only verified answers (the reference's filter) or all")
    ap.add_argument("--prompt-len", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=6, help="passes over the kept answers (reference: 6)")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per optimizer step (reference: 8 GPUs x 8 accumulation)")
    ap.add_argument("--lr", type=float, default=None,
                    help=f"constant; default {lora.REFERENCE_LR:g} with --lora-rank (the reference's LoRA rate), "
                         f"{FULL_FT_LR:g} for all weights")
    ap.add_argument("--lora-rank", type=int, default=None,
                    help=f"train LoRA adapters of this rank only, base frozen (reference: {lora.REFERENCE_RANK}); "
                         f"default: all weights")
    ap.add_argument("--lora-alpha", type=float, default=None,
                    help="LoRA alpha (default: the rank, i.e. the reference's alpha / r = 128 / 128 = 1)")
    ap.add_argument("--lora-dropout", type=float, default=lora.REFERENCE_DROPOUT, help="reference: 0")
    ap.add_argument("--lora-targets", default="reference",
                    help="comma-separated module names; 'reference' = " + ",".join(lora.REFERENCE_TARGETS)
                         + " (what the reference's list matches on LLaDA), 'all' = every block projection; "
                           "Llama names o_proj/gate_proj/down_proj map to attn_out/ff_proj/ff_out")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--entropy-weight", type=float, default=2.0, help="reference: 2 for LLaDA, 1 for Dream")
    ap.add_argument("--temperature", type=float, default=0.5, help="of the certainty-forcing entropy")
    ap.add_argument("--mask-ratio", type=float, default=0.5, help="inside the picked block (reference: fixed 0.5)")
    ap.add_argument("--threshold", type=float, default=0.5, help="entropy threshold of the evaluation (reference: 0.5)")
    ap.add_argument("--eval-n", type=int, default=500, help="held-out prompts per task")
    ap.add_argument("--eval-seed", type=int, default=10_000)
    ap.add_argument("--gen-batch", type=int, default=1024, help="prompts per decoding call (trajectories)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the batch order and the noise")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU check: two tasks, a few prompts, a few steps, a small evaluation")
    args = ap.parse_args(argv)
    use_lora = args.lora_rank is not None
    if args.lr is None:
        args.lr = lora.REFERENCE_LR if use_lora else FULL_FT_LR
    if not use_lora and (args.lora_alpha is not None or args.lora_targets != "reference"):
        raise SystemExit("--lora-alpha / --lora-targets need --lora-rank R (the LoRA rank; the reference's is 128)")
    if use_lora:
        try:
            lora_targets = lora.resolve_targets(args.lora_targets)
            lora.check_lora_settings(args.lora_rank, args.lora_rank if args.lora_alpha is None else args.lora_alpha,
                              args.lora_dropout)
        except ValueError as e:
            raise SystemExit(f"bad LoRA option: {e}")
        if (Path(args.out) / "config.json").exists():
            raise SystemExit(f"{args.out} already holds a full model (config.json); give --lora-rank runs a fresh --out")
    if args.smoke:
        args.device, args.tasks = "cpu", args.tasks or "words,add"
        args.prompts_per_task, args.batch_size, args.max_steps, args.epochs = 12, 6, 3, 1
        args.eval_n, args.gen_batch = 4, 64
    for name in ("time_budget", "prompts_per_task", "prompt_len", "epochs", "batch_size", "lr", "eval_n", "gen_batch"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.entropy_weight < 0 or args.threshold < 0:
        raise SystemExit("--entropy-weight and --threshold must be >= 0")

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    teacher_dir = model_path(args.teacher)
    teacher_info = json.loads((teacher_dir / "info.json").read_text())
    tasks = [t.strip() for t in (args.tasks or ",".join(teacher_info["tasks"])).split(",") if t.strip()]
    train_tasks = [t.strip() for t in args.train_tasks.split(",") if t.strip()] if args.train_tasks else tasks
    for t in tasks + train_tasks:
        get_task(t)
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(teacher_dir))
    teacher = LLaDAModel.from_pretrained(teacher_dir, torch_dtype=torch.float32, device=device).eval()
    mask_id = teacher.config.mask_token_id
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []

    # 1. held-out problems out of training; the teacher's evaluation (it also times the final one)
    exclude, not_held_out = held_out_prompts(train_tasks, args.prompts_per_task, args.traj_seed, args.eval_n,
                                             args.eval_seed)
    if not_held_out:
        print(f"tasks whose prompt space is too small to hold the evaluation's prompts out of training: "
              f"{not_held_out}", flush=True)
    t_eval = elapsed()
    teacher_eval = evaluate(teacher, tok, tasks, args.eval_n, args.eval_seed, args.threshold)
    eval_seconds = elapsed() - t_eval
    print(format_eval(f"teacher {args.teacher}", teacher_eval), f"\n({eval_seconds:.1f}s)", flush=True)

    # 2. the teacher's own answers
    t_traj = elapsed()
    traj = teacher_trajectories(teacher, tok, train_tasks, args.prompts_per_task, args.traj_seed,
                                prompt_len=args.prompt_len, batch_size=args.gen_batch, exclude=exclude, keep=args.keep)
    traj_seconds = elapsed() - t_traj
    print(f"trajectories: {len(traj)} kept answers in {traj_seconds:.1f}s: {json.dumps(traj.stats)}", flush=True)
    if not len(traj):
        raise SystemExit("the teacher answered no training prompt correctly: nothing to distil")
    groups = {G: (t.to(device), a.to(device)) for G, (t, a) in traj.groups.items()}
    block_of = {G: next(get_task(t).block_length for t in train_tasks if get_task(t).gen_length == G) for G in groups}

    # 3. certainty-forcing distillation
    student = LLaDAModel.from_pretrained(teacher_dir, torch_dtype=torch.float32, device=device).train()
    if use_lora:
        wrapped = lora.add_lora(student, args.lora_rank, args.lora_alpha, args.lora_dropout, lora_targets)
        print(f"LoRA r={args.lora_rank} alpha={student._lora['lora_alpha']:g} on {len(wrapped)} modules "
              f"({','.join(lora_targets)}): {sum(p.numel() for p in lora.lora_parameters(student))} trainable "
              f"parameters; base frozen", flush=True)
    trainable = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, fused=device.type == "cuda")
    gen = torch.Generator(device).manual_seed(args.seed)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    reserve = 1.5 * eval_seconds + 10.0  # the student's evaluation + the save
    train_end = args.time_budget - reserve
    steps_total = sum(-(-t.shape[0] // args.batch_size) for t, _ in traj.groups.values()) * args.epochs
    if args.max_steps is not None:
        steps_total = min(steps_total, args.max_steps)
    print(f"training: {steps_total} steps planned ({args.epochs} epochs x batch {args.batch_size}); "
          f"train until {train_end:.0f}s (reserve {reserve:.0f}s)", flush=True)
    step, t_train, stopped = 0, elapsed(), "epochs"
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for G, idx in batches(traj, args.batch_size, args.epochs, args.seed):
        if step >= steps_total:
            stopped = "max_steps" if args.max_steps is not None else "epochs"
            break
        if elapsed() >= train_end and not args.smoke:
            stopped = "time_budget"
            break
        toks, am = groups[G]
        sel = torch.tensor(idx, device=device)
        with autocast:
            loss, parts = dparallel_loss(student, toks[sel], am[sel], args.prompt_len, block_of[G], mask_id, gen,
                                         entropy_weight=args.entropy_weight, temperature=args.temperature,
                                         mask_ratio=args.mask_ratio)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        for k, v in {"loss": loss.detach(), **parts}.items():
            sums[k] = sums.get(k, 0) + v
        count += 1
        if step % 200 == 0 or step == 1 or (args.smoke and step <= 4):  # means since the last row
            row = {"step": step, "seconds": round(elapsed() - t_train, 1),
                   **{k: round(float(v) / count, 4) for k, v in sums.items()}}
            sums, count = {}, 0
            log.append(row)
            print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    train_seconds = elapsed() - t_train
    print(f"trained {step} steps in {train_seconds:.0f}s (stopped by {stopped})", flush=True)
    if step == 0:
        print("WARNING: no training step fit in --time-budget after the teacher's evaluation and the "
              "trajectories; the saved model is the teacher. Raise --time-budget or lower --prompts-per-task.",
              flush=True)

    # 4. save (bf16), then evaluate what is saved (an adapter: merged into the teacher, as it loads)
    student.eval()
    base = teacher_base(args.teacher)
    if use_lora:
        lora.save_adapter(student, out, base=base, dtype=torch.bfloat16)
        shipped, _ = zoo.load_dir(out, device=device)
    else:
        student.to(torch.bfloat16).save_pretrained(out)
        tok.save_pretrained(out)
        shipped = LLaDAModel.from_pretrained(out, torch_dtype=torch.float32, device=device).eval()
    student_eval = evaluate(shipped, tok, tasks, args.eval_n, args.eval_seed, args.threshold)
    print(format_eval("student (dParallel)", student_eval), flush=True)
    n_params = sum(p.numel() for p in shipped.parameters())
    adapter = {}
    if use_lora:
        adapter = {"base": base,
                   "adapter": {**{k: v for k, v in student._lora.items()},
                               "parameters": sum(p.numel() for p in lora.lora_parameters(student)),
                               "bytes": (out / lora.ADAPTER_WEIGHTS).stat().st_size}}
    info = {
        "name": out.name,
        "description": f"{teacher_info.get('name', teacher_dir.name)} after dParallel certainty-forcing distillation "
                       f"(arXiv 2509.26488) on its own verified answers"
                       f"{f', as a rank-{args.lora_rank} LoRA adapter merged into it on load' if use_lora else ''}; "
                       f"decode with {DECODING} (threshold {args.threshold})",
        **adapter,
        "tasks": tasks,
        **{k: teacher_info[k] for k in ("gen_length", "block_length") if k in teacher_info},
        "task_gen_length": {t: get_task(t).gen_length for t in tasks},
        "task_block_length": {t: get_task(t).block_length for t in tasks},
        "parameters": n_params,
        "decoding": {"strategy": DECODING, "threshold": args.threshold},
        "train": {"script": "scripts/train_dparallel.py",
                  "command": "python scripts/train_dparallel.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  "teacher": str(args.teacher), "train_tasks": train_tasks, "steps": step, "stopped_by": stopped,
                  "seconds": round(train_seconds, 1), "wall_seconds": round(elapsed(), 1),
                  "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  "trajectories": {"seed": args.traj_seed, "per_task": traj.stats, "keep": args.keep,
                                   "not_held_out": not_held_out,
                                   "seconds": round(traj_seconds, 1)},
                  **{k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "entropy_weight",
                                                    "temperature", "mask_ratio", "prompt_len", "seed")},
                  "log": log},
        "eval": {"n": args.eval_n, "seed": args.eval_seed, "teacher": teacher_eval, "student": student_eval},
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"saved {out}; wall time {elapsed():.0f}s (budget {args.time_budget:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
