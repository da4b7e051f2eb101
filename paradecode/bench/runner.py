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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..api import sample
from ..loop import synchronize
from ..registry import get_strategy_class
from .real.adapter import REAL_TASKS, cut_at_stop_ids, is_real_task, prepare_task, stop_token_ids
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


def _load(model: Any, tokenizer: Any, device: str, dtype: Any = None,
          trust_remote_code: bool = False) -> tuple[Any, Any, dict[str, Any], str]:
    """(model, tokenizer, info, name) from a zoo name, a directory, a hub id or objects."""
    from .. import zoo
    from ..models.loading import load_model_and_tokenizer, parse_dtype

    if model is None:
        names = zoo.available()
        if not names:
            raise ValueError("no shipped model found; pass model= (a zoo name or a checkpoint directory).")
        model = names[0]
    if isinstance(model, (str, Path)):
        path = Path(model)
        m, tok = load_model_and_tokenizer(str(model), device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        if path.is_dir():
            info = zoo.info(path)
            return m, tok, info, info.get("name", path.name)
        return m, tok, (zoo.info(str(model)) if str(model) in zoo.available() else {}), str(model)
    if tokenizer is None:
        raise ValueError("a model object needs its tokenizer: pass tokenizer=.")
    torch_dtype = parse_dtype(dtype)
    if torch_dtype is not None:
        model = model.to(torch_dtype)
    return model, tokenizer, {}, type(model).__name__


@dataclass
class _Job:
    """One task ready to run: token prompts in run order, the canvas, a decoder and a scorer."""

    name: str
    prompts: list[list[int]]
    order: list[int]  # run position -> problem index (real tasks run longest prompt first)
    gen: int
    block: int
    decode: Callable[[list[list[int]]], tuple[list[str], int]]  # -> texts, answer tokens (before the end id)
    score: Callable[[list[str]], dict[str, Any]]  # texts in problem order -> {"accuracy", ...}
    meta: dict[str, Any]
    texts: list[str]  # prompt texts (for the samples log)


def _synthetic_job(name: str, tok: Any, info: dict, n: int, seed: int, gen: Optional[int], block: Optional[int]) -> _Job:
    task = get_task(name)
    examples = task.examples(n, seed=seed)
    gen = gen or int(info.get("task_gen_length", {}).get(name, task.gen_length))
    block = block or int(info.get("task_block_length", {}).get(name, task.block_length))

    def score(texts: list[str]) -> dict[str, Any]:
        ok = [bool(task.verify(e, t)) for e, t in zip(examples, texts)]
        return {"accuracy": sum(ok) / len(ok), "per_sample": [{"text": t, "correct": c} for t, c in zip(texts, ok)]}

    stop_ids = stop_token_ids(tok)

    def decode(rows: list[list[int]]) -> tuple[list[str], int]:
        return tok.batch_decode(rows, skip_special_tokens=True), sum(len(cut_at_stop_ids(r, stop_ids)) for r in rows)

    return _Job(name, [tok.encode(e.prompt) for e in examples], list(range(n)), gen, block, decode, score, {},
                [e.prompt for e in examples])


def _real_job(name: str, tok: Any, real: dict[str, Any], gen: Optional[int], block: Optional[int]) -> _Job:
    task = prepare_task(name, tok, **real)
    prompts = [list(tok(t)["input_ids"]) for t in task.prompts]
    # longest first, as lm-eval orders generate_until requests: batches hold similar lengths (less
    # padding) and the first batch shows the peak memory at once
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    stop_ids = stop_token_ids(tok)

    def decode(rows: list[list[int]]) -> tuple[list[str], int]:
        answers = [cut_at_stop_ids(r, stop_ids) for r in rows]
        return tok.batch_decode(answers, skip_special_tokens=True), sum(map(len, answers))

    meta = {"prompt_format": task.fmt, "num_fewshot": task.shots, "metric": task.metric,
            "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts)}
    return _Job(name, [prompts[i] for i in order], order, gen or task.gen_length, block or task.block_length,
                decode, task.score, meta, task.prompts)


def _check_tasks(names: Sequence[str]) -> None:
    from .tasks import synthetic_task_names

    synthetic = synthetic_task_names()
    bad = [t for t in names if t not in synthetic and t not in REAL_TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; valid tasks: real {list(REAL_TASKS)} (checkpoints with a "
                         f"tokenizer) and synthetic {synthetic} (the shipped models).")


def _check_cache(cache: Optional[str], cache_options: Optional[dict[str, Any]]) -> None:
    """An unknown policy or option fails here, before a model is loaded."""
    if cache is None:
        if cache_options:
            raise ValueError("cache options were given without a cache policy; add --cache NAME (paradecode caches lists them).")
        return
    from ..config import build_config
    from ..registry import get_cache_class

    ccls = get_cache_class(cache)
    build_config(ccls.Config, f"cache policy {cache!r}", dict(cache_options or {}))


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
    cache: Optional[str] = None,
    cache_options: Optional[dict[str, Any]] = None,
    dtype: Any = None,
    limit: Optional[int] = None,
    data: Any = None,
    prompt_format: str = "auto",
    num_fewshot: Optional[int] = None,
    shot_data: Optional[dict[str, Any]] = None,
    gen_length: Optional[int] = None,
    block_length: Optional[int] = None,
    cuda_graphs: bool = False,
    baseline: bool = True,
    trust_remote_code: bool = False,
    exec_timeout: float = 10.0,
    samples_out: Union[str, Path, None] = None,
) -> dict[str, Any]:
    """Run every strategy at every setting of its sweep on every task; return
    ``{"model", "n", "seed", "rows", "summary"}`` and write ``out`` (JSON, or CSV when it
    ends in .csv) and ``plot`` (PNG) when given.

    ``model`` is a zoo name (default: the best shipped model), a checkpoint directory, a hub id,
    or a model object with ``tokenizer``; ``dtype`` casts its weights. ``tasks`` defaults to the
    model's tasks. Synthetic tasks draw ``n`` seeded problems; the real ones (``gsm8k``,
    ``humaneval``, ``mbpp``) read their test set from ``data`` (a path, or ``{task: path}``; the
    hub when None), keep the first ``limit`` problems and build prompts in ``prompt_format``
    (:mod:`paradecode.bench.real.adapter`); their generations are cut at the first end-of-turn
    token and the task's stop sequences before scoring. ``cache`` / ``cache_options`` pick a cache
    policy for every run; ``cuda_graphs`` replays the model's fixed-shape forwards
    (:class:`~paradecode.models.graphs.CUDAGraphModel`, CUDA only). The LLaDA baseline at full steps
    is run as the summary's reference unless ``baseline`` is false. Rows record accuracy (GSM8K:
    flexible-extract, with both filters beside it), NFE, tokens per forward, wall seconds of
    generation (decoding and scoring excluded), seconds per sample and two rates:
    ``tokens_per_second`` counts every generated canvas position (``gen_length`` per sample: what
    the decoding costs), ``answer_tokens_per_second`` only the tokens before the first end-of-text
    or end-of-turn id (Fast-dLLM's ``show_speed`` count: what the answer holds).
    """
    if n <= 0 or batch_size <= 0:
        raise ValueError(f"n ({n}) and batch_size ({batch_size}) must be positive.")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of problems, got {limit}.")
    strategies = list(dict.fromkeys(strategies))
    for s in strategies:
        get_strategy_class(s)  # unknown names fail before any work
    _check_cache(cache, cache_options)
    if tasks is not None:
        _check_tasks(tasks)
    if cuda_graphs and torch.device(device).type != "cuda":
        raise ValueError(f"cuda_graphs (--cuda-graphs) needs a CUDA device, got device={device!r}; leave it out on {device}.")
    m, tok, info, name = _load(model, tokenizer, device, dtype, trust_remote_code)
    task_names = list(tasks or info.get("tasks") or [])
    if not task_names:
        raise ValueError("no tasks given and the model's info names none; pass tasks=[...] (e.g. --tasks gsm8k).")
    _check_tasks(task_names)
    if cuda_graphs:
        from ..models.graphs import CUDAGraphModel

        m = CUDAGraphModel(m)
    dev = torch.device(device)
    real = {"data": data, "prompt_format": prompt_format, "limit": limit, "num_fewshot": num_fewshot,
            "shot_data": shot_data, "hub": data is None, "timeout": exec_timeout}
    jobs = {t: (_real_job(t, tok, real, gen_length, block_length) if is_real_task(t)
                else _synthetic_job(t, tok, info, n, seed, gen_length, block_length)) for t in task_names}

    plan = []  # (task, strategy, setting, options)
    for tname, job in jobs.items():
        runs = [(s, st) for s in strategies for st in sweep_for(s, job.gen, job.block, sweeps)]
        if baseline and (BASELINE, {"steps": job.gen}) not in runs:
            runs.insert(0, (BASELINE, {"steps": job.gen}))
        plan += [(tname, s, st, _full_options(s, st, job.gen, job.block)) for s, st in runs]
    call = {"cache": cache, "cache_options": dict(cache_options) if cache_options else None, "timing": False}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(-(-len(jobs[t].prompts) // batch_size) for t, *_ in plan), desc="bench", unit="batch")
    # Warm-up on the first batch (kernels, allocator, graph captures) so the first timed setting is not charged for it.
    first = plan[0]
    sample(m, jobs[first[0]].prompts[:batch_size], first[1], **call, **first[3])

    rows, logged = [], []
    for tname, strategy, setting, opts in plan:
        job = jobs[tname]
        count = len(job.prompts)
        texts: list[str] = [""] * count
        nfe_sum, tokens_sum, seconds, answer_tokens = 0.0, 0.0, 0.0, 0
        graphs0 = (getattr(m, "captures", 0), getattr(m, "replays", 0))
        for b in range(0, count, batch_size):
            batch = job.prompts[b : b + batch_size]
            synchronize(dev)
            t0 = time.perf_counter()
            result = sample(m, batch, strategy, **call, **opts)
            gen_ids = result.generated.tolist()
            synchronize(dev)
            seconds += time.perf_counter() - t0
            decoded, n_answer = job.decode(gen_ids)
            answer_tokens += n_answer
            for j, t in enumerate(decoded):
                texts[job.order[b + j]] = t
            nfe_sum += float(result.trace.row_nfe.float().sum())
            tokens_sum += float(result.trace.tokens_committed.float().sum())
            if bar is not None:
                bar.set_postfix_str(f"{tname} {strategy} {setting_label(setting)}")
                bar.update(1)
        scored = job.score(texts)
        per_sample = scored.pop("per_sample", None)
        rows.append({
            "strategy": strategy, "setting": setting_label(setting), "task": tname, **scored,
            "nfe": nfe_sum / count, "tokens_per_forward": tokens_sum / nfe_sum if nfe_sum else 0.0,
            "seconds": seconds, "tokens_per_second": count * opts["gen_length"] / seconds if seconds else 0.0,
            "answer_tokens_per_second": answer_tokens / seconds if seconds else 0.0,
            "seconds_per_sample": seconds / count, "n": count, "batch_size": batch_size, "cache": cache,
            "cache_options": call["cache_options"], **job.meta, "options": opts,
        })
        if cuda_graphs:  # how many forwards were captured / replayed (padded batches run eagerly)
            rows[-1].update(graph_captures=m.captures - graphs0[0], graph_replays=m.replays - graphs0[1])
        if samples_out is not None and per_sample is not None:
            logged += [{"task": tname, "strategy": strategy, "setting": setting_label(setting), "index": i,
                        "prompt": job.texts[i], **s} for i, s in enumerate(per_sample)]
    if bar is not None:
        bar.close()
    counts = {t: len(j.prompts) for t, j in jobs.items()}
    result = {"model": name, "n": next(iter(counts.values())) if len(set(counts.values())) == 1 else counts, "seed": seed, "device": str(dev),
              "dtype": str(getattr(m, "dtype", "")) or None, "cache": cache, "cuda_graphs": cuda_graphs,
              "batch_size": batch_size, "rows": rows, "summary": summarize(rows)}
    if out is not None:
        write_table(result, out)
    if samples_out is not None:
        path = Path(samples_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in logged))
    if plot is not None:
        from .plot import plot_curves

        plot_curves(rows, plot, title=f"{name}: accuracy vs forwards (N={result['n']} per task)")
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

        keys = ["strategy", "setting", "task", "accuracy", "nfe", "tokens_per_forward", "seconds", "n",
                "tokens_per_second", "answer_tokens_per_second", "seconds_per_sample", "accuracy_strict",
                "accuracy_flexible"]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(result["rows"])
    else:
        path.write_text(json.dumps(result, indent=1) + "\n")
