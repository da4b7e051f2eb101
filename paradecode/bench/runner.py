"""``run_bench``: sweep strategies over their speed knob on verifiable tasks.

Each strategy is run at every setting of its sweep (LLaDA baseline: steps = gen_length,
1/2, 1/4 ... down to one step per block; Fast-dLLM threshold: a list of thresholds) on N
seeded problems per task, batched; one row per (strategy, setting, task) records accuracy,
mean forwards per sample (NFE), tokens committed per forward and wall time.

Where a sweep comes from, first match wins:
1. ``sweeps={"name": [...settings]}`` given to :func:`run_bench` (CLI: ``--sweep``);
2. a ``sweep`` class attribute of the registered strategy class, either a dict
   ``{"knob": [values]}`` (one setting per value; several knobs give their product) or a
   callable ``(gen_length, block_length) -> list[dict]``; a new strategy declares its own
   here, e.g. ``sweep = {"threshold": [0.95, 0.9, 0.7, 0.5]}``, without editing this file;
3. :data:`SWEEPS` below;
4. otherwise the strategy's defaults only (one setting).
Every setting also gets ``gen_length`` / ``block_length`` of the task and, when the
strategy's config has a ``steps`` field the setting leaves unset, ``steps = gen_length``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..api import sample
from ..registry import get_strategy_class
from .tasks import get_task

__all__ = ["SWEEPS", "run_bench", "sweep_for", "summarize", "format_summary", "BASELINE"]

Setting = dict[str, Any]
SweepSpec = Union[dict[str, Sequence[Any]], Callable[[int, int], list[Setting]], list[Setting]]

BASELINE = "lowconf"


def halving_steps(gen_length: int, block_length: int) -> list[Setting]:
    """steps = gen_length, gen_length/2, ... down to one step per block (LLaDA's knob)."""
    blocks = gen_length // block_length
    steps, out = gen_length, []
    while steps >= blocks:
        if steps % blocks == 0:
            out.append({"steps": steps})
        if steps == blocks:
            break
        steps = max(blocks, steps // 2)
    return out


def prophet_sweep(gen_length: int, block_length: int) -> list[Setting]:
    """Prophet: the paper's thresholds over the lowconf base's steps (full, 1/2, 1/4 ...), and
    over Fast-dLLM's threshold rule at 0.9 and 0.7."""
    over_steps = [{"base_options": s} for s in halving_steps(gen_length, block_length)]
    return over_steps + [{"base": "threshold", "base_options": {"threshold": t}} for t in (0.9, 0.7)]


SWEEPS: dict[str, SweepSpec] = {
    "lowconf": halving_steps,
    "prophet": prophet_sweep,
    "threshold": {"threshold": [0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1]},
}


def _expand(spec: SweepSpec, gen_length: int, block_length: int) -> list[Setting]:
    if callable(spec):
        return [dict(s) for s in spec(gen_length, block_length)]
    if isinstance(spec, dict):
        knobs = list(spec)
        return [dict(zip(knobs, values)) for values in itertools.product(*(spec[k] for k in knobs))]
    return [dict(s) for s in spec]


def sweep_for(strategy: str, gen_length: int, block_length: int,
              sweeps: Optional[dict[str, SweepSpec]] = None) -> list[Setting]:
    """The settings ``strategy`` is run at (see the module docstring for the order)."""
    cls = get_strategy_class(strategy)
    if sweeps and strategy in sweeps:
        spec = sweeps[strategy]
    elif getattr(cls, "sweep", None) is not None:
        spec = cls.sweep
    elif strategy in SWEEPS:
        spec = SWEEPS[strategy]
    else:
        spec = [{}]
    settings = _expand(spec, gen_length, block_length)
    if not settings:
        raise ValueError(f"the sweep of strategy {strategy!r} is empty.")
    return settings


def setting_label(setting: Setting) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items()) or "default"


def _full_options(strategy: str, setting: Setting, gen_length: int, block_length: int) -> dict[str, Any]:
    opts = {"gen_length": gen_length, "block_length": block_length, **setting}
    fields = {f.name for f in dataclasses.fields(get_strategy_class(strategy).Config)}
    if "steps" in fields and "steps" not in opts:
        opts["steps"] = gen_length
    return opts


def _load(model: Any, tokenizer: Any, device: str) -> tuple[Any, Any, dict[str, Any], str]:
    """(model, tokenizer, info, name) from a zoo name, a directory or objects."""
    from .. import zoo

    if model is None:
        names = zoo.available()
        if not names:
            raise ValueError("no shipped model found; pass model= (a zoo name or a checkpoint directory).")
        model = names[0]
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.is_dir():
            from ..models.loading import load_model_and_tokenizer

            m, tok = load_model_and_tokenizer(str(path), device=device)
            info = json.loads((path / "info.json").read_text()) if (path / "info.json").exists() else {}
            return m, tok, info, info.get("name", path.name)
        m, tok = zoo.load(str(model), device=device)
        return m, tok, zoo.info(str(model)), str(model)
    if tokenizer is None:
        raise ValueError("a model object needs its tokenizer: pass tokenizer=.")
    return model, tokenizer, {}, type(model).__name__


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(
    model: Any = None,
    tokenizer: Any = None,
    *,
    strategies: Sequence[str] = ("lowconf", "threshold"),
    tasks: Optional[Sequence[str]] = None,
    n: int = 500,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    sweeps: Optional[dict[str, SweepSpec]] = None,
    out: Union[str, Path, None] = None,
    plot: Union[str, Path, None] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every strategy at every setting of its sweep on every task; return
    ``{"model", "n", "seed", "rows", "summary"}`` and write ``out`` (JSON, or CSV when it
    ends in .csv) and ``plot`` (PNG) when given.

    ``model`` is a zoo name (default: the best shipped model), a checkpoint directory, or a
    model object with ``tokenizer``. ``tasks`` defaults to the model's tasks. The LLaDA
    baseline at full steps is always run (it is the summary's reference).
    """
    if n <= 0 or batch_size <= 0:
        raise ValueError(f"n ({n}) and batch_size ({batch_size}) must be positive.")
    strategies = list(dict.fromkeys(strategies))
    for s in strategies:
        get_strategy_class(s)  # unknown names fail before any work
    m, tok, info, name = _load(model, tokenizer, device)
    task_names = list(tasks or info.get("tasks") or [])
    if not task_names:
        raise ValueError("no tasks given and the model's info names none; pass tasks=[...].")
    dev = torch.device(device)

    plan = []  # (task, strategy, setting, options)
    for tname in task_names:
        task = get_task(tname)
        gen = int(info.get("task_gen_length", {}).get(tname, task.gen_length))
        block = int(info.get("task_block_length", {}).get(tname, task.block_length))
        runs = [(s, st) for s in strategies for st in sweep_for(s, gen, block, sweeps)]
        if (BASELINE, {"steps": gen}) not in runs:
            runs.insert(0, (BASELINE, {"steps": gen}))
        plan += [(tname, s, st, _full_options(s, st, gen, block)) for s, st in runs]

    examples = {t: get_task(t).examples(n, seed=seed) for t in task_names}
    prompts = {t: [tok.encode(e.prompt) for e in ex] for t, ex in examples.items()}
    n_batches = -(-n // batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan) * n_batches, desc="bench", unit="batch")
    # Warm-up (kernels, allocator) so the first timed setting is not charged for it.
    first = plan[0]
    sample(m, prompts[first[0]][: min(batch_size, 8)], first[1], timing=False, **first[3])

    rows = []
    for tname, strategy, setting, opts in plan:
        task = get_task(tname)
        correct, nfe_sum, tokens_sum, seconds = 0, 0.0, 0.0, 0.0
        for b in range(0, n, batch_size):
            batch = prompts[tname][b : b + batch_size]
            _sync(dev)
            t0 = time.perf_counter()
            result = sample(m, batch, strategy, timing=False, **opts)
            gen_ids = result.generated.tolist()
            _sync(dev)
            seconds += time.perf_counter() - t0
            texts = tok.batch_decode(gen_ids, skip_special_tokens=True)
            correct += sum(task.verify(e, t) for e, t in zip(examples[tname][b : b + batch_size], texts))
            nfe_sum += float(result.trace.row_nfe.float().sum())
            tokens_sum += float(result.trace.tokens_committed.float().sum())
            if bar is not None:
                bar.set_postfix_str(f"{tname} {strategy} {setting_label(setting)}")
                bar.update(1)
        rows.append({
            "strategy": strategy, "setting": setting_label(setting), "task": tname,
            "accuracy": correct / n, "nfe": nfe_sum / n,
            "tokens_per_forward": tokens_sum / nfe_sum if nfe_sum else 0.0,
            "seconds": seconds, "n": n, "options": opts,
        })
    if bar is not None:
        bar.close()
    result = {"model": name, "n": n, "seed": seed, "device": str(dev), "rows": rows,
              "summary": summarize(rows)}
    if out is not None:
        write_table(result, out)
    if plot is not None:
        from .plot import plot_curves

        plot_curves(rows, plot, title=f"{name}: accuracy vs forwards (N={n} per task)")
    return result


def _baseline(rows: list[dict], task: str) -> Optional[dict]:
    """The LLaDA baseline at full steps (steps == gen_length) on ``task``."""
    cands = [r for r in rows if r["task"] == task and r["strategy"] == BASELINE
             and r["options"].get("steps") == r["options"].get("gen_length")]
    return cands[0] if cands else None


def summarize(rows: list[dict], tolerance: float = 0.01) -> list[dict]:
    """Per (strategy, task): the setting with the fewest forwards whose accuracy stays within
    ``tolerance`` (1 point) of the full-step baseline, and its speed-up in NFE and wall time."""
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        for task in dict.fromkeys(r["task"] for r in rows):
            base = _baseline(rows, task)
            mine = [r for r in rows if r["strategy"] == strategy and r["task"] == task]
            if base is None or not mine:
                continue
            ok = [r for r in mine if r["accuracy"] >= base["accuracy"] - tolerance - 1e-9]
            best = min(ok, key=lambda r: (r["nfe"], -r["accuracy"])) if ok else None
            out.append({
                "strategy": strategy, "task": task, "baseline_accuracy": base["accuracy"],
                "baseline_nfe": base["nfe"],
                "setting": best["setting"] if best else None,
                "accuracy": best["accuracy"] if best else None,
                "nfe": best["nfe"] if best else None,
                "speedup_nfe": base["nfe"] / best["nfe"] if best else None,
                "speedup_time": base["seconds"] / best["seconds"] if best and best["seconds"] else None,
            })
    return out


def format_summary(summary: list[dict]) -> str:
    """The summary as a fixed-width text table."""
    head = f"{'strategy':12s} {'task':9s} {'base acc':>8s} {'base NFE':>8s}  {'setting (within 1 pt)':24s} {'acc':>6s} {'NFE':>6s} {'x NFE':>6s} {'x time':>6s}"
    lines = [head, "-" * len(head)]
    for s in summary:
        if s["setting"] is None:
            lines.append(f"{s['strategy']:12s} {s['task']:9s} {s['baseline_accuracy']:8.1%} {s['baseline_nfe']:8.1f}  "
                         f"{'(none within 1 point)':24s}")
            continue
        lines.append(
            f"{s['strategy']:12s} {s['task']:9s} {s['baseline_accuracy']:8.1%} {s['baseline_nfe']:8.1f}  "
            f"{s['setting']:24s} {s['accuracy']:6.1%} {s['nfe']:6.1f} {s['speedup_nfe']:6.2f} "
            f"{s['speedup_time'] or 0:6.2f}"
        )
    return "\n".join(lines)


def write_table(result: dict[str, Any], path: Union[str, Path]) -> None:
    """JSON (the whole result) or, for a .csv path, one line per row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        import csv

        keys = ["strategy", "setting", "task", "accuracy", "nfe", "tokens_per_forward", "seconds", "n"]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(result["rows"])
    else:
        path.write_text(json.dumps(result, indent=1) + "\n")
