"""Fast-dLLM's own LLaDA generate loops, run at benchmark time from a checkout outside the repo.

Fast-dLLM (NVlabs/Fast-dLLM, ``llada/generate.py``) is the reference for the prefix and dual
caches. Its code is not part of this project (never copied or committed): ``--fast-dllm-dir``
points at a checkout of its ``llada/`` directory (``generate.py`` and ``model/``), imported
here at run time. Their model class takes LLaDA's parameter names, so our random
``LLaDAModel``'s state dict loads into it unchanged (``assign=True``: their model reads the
very same tensors, no second copy of 16 GB).

Their loops are run as published: ``threshold=None`` (fixed k per step: the block's masks spread
evenly over the block's steps), ``remasking='low_confidence'``, temperature 0 -- the work of our
``lowconf`` with ``steps = gen / tokens_per_step``. Their loops allocate the canvas with one row
(``torch.full((1, ...))``), so batches above 1 fail there; the caller records that failure.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch

# our cache name -> their loop in llada/generate.py (they have no dKV-Cache)
LOOPS = {"none": "generate", "prefix": "generate_with_prefix_cache", "dual": "generate_with_dual_cache"}
NEEDED = ("generate.py", "model/__init__.py", "model/configuration_llada.py", "model/modeling_llada.py")


def load(fast_dllm_dir: str | Path) -> ModuleType:
    """Import Fast-dLLM's ``llada/generate.py`` from ``fast_dllm_dir`` (its ``model`` package
    is imported as the top-level ``model``, as their script expects)."""
    root = Path(fast_dllm_dir).resolve()
    missing = [f for f in NEEDED if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--fast-dllm-dir {root} lacks {', '.join(missing)}: pass a checkout of NVlabs/Fast-dLLM's "
            "llada/ directory (copy generate.py and model/{__init__,configuration_llada,modeling_llada}.py)."
        )
    clash = sys.modules.get("model")
    if clash is not None and Path(getattr(clash, "__file__", "") or "").resolve().parent != root / "model":
        raise ImportError(f"a module named 'model' is already imported ({clash!r}); Fast-dLLM's generate.py "
                          "needs that name for its llada/model package: run it in a fresh process.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("fast_dllm_generate", root / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def their_model(gen_mod: ModuleType, ours: torch.nn.Module) -> torch.nn.Module:
    """Fast-dLLM's ``LLaDAModelLM`` holding ``ours``'s tensors (built on meta, then assigned).

    Building their model changes torch's global SDPA switches (flash on, memory-efficient off:
    their own setting); :func:`sdpa_switches` / :func:`restore_sdpa` let the caller undo that.
    """
    modeling = sys.modules["model.modeling_llada"]
    cfg_mod = sys.modules["model.configuration_llada"]
    cfg = cfg_mod.LLaDAConfig(**ours.config.to_dict())
    cfg.use_cache = False  # their forward reads config.use_cache; transformers 5 no longer sets it
    inner_cfg = modeling.create_model_config_from_pretrained_config(cfg)
    inner_cfg.init_device = "meta"
    inner = modeling.LLaDAModel(inner_cfg, init_params=False)
    model = modeling.LLaDAModelLM(cfg, model=inner)
    sd = ours.state_dict()
    model.load_state_dict(sd, strict=True, assign=True)
    theirs = model.state_dict()
    copied = [k for k, v in sd.items() if theirs[k].data_ptr() != v.data_ptr()]
    if copied:  # at the 8B shape a copy would be another 16 GB on the device
        raise RuntimeError(f"Fast-dLLM's model did not take our tensors as they are ({copied[:3]} ...).")
    return model.eval()


def sdpa_switches() -> tuple[bool, bool]:
    return torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled()


def restore_sdpa(switches: tuple[bool, bool]) -> None:
    torch.backends.cuda.enable_flash_sdp(switches[0])
    torch.backends.cuda.enable_mem_efficient_sdp(switches[1])


def run(gen_mod: ModuleType, model: torch.nn.Module, cache: str, prompt: torch.Tensor, gen: int, block: int,
        tokens_per_step: int, mask_id: int) -> tuple[torch.Tensor, int]:
    """Their loop for ``cache`` (``threshold=None``, greedy): (canvas, forwards)."""
    loop: Callable[..., Any] = getattr(gen_mod, LOOPS[cache])
    with torch.inference_mode():
        x, nfe = loop(model, prompt, steps=gen // tokens_per_step, gen_length=gen, block_length=block,
                      temperature=0.0, remasking="low_confidence", mask_id=mask_id, threshold=None)
    return x, int(nfe)


def same_tokens(gen_mod: ModuleType, ours: torch.nn.Module, theirs: torch.nn.Module, prompt: torch.Tensor,
                gen: int, block: int, tokens_per_step: int) -> dict[str, Any]:
    """Per cache: does their loop give the canvas ``paradecode.sample(..., 'lowconf')`` gives on
    the same weights and prompt (greedy), in as many forwards as our steps?"""
    from paradecode import sample

    mask_id = ours.config.mask_token_id
    out: dict[str, Any] = {}
    for cache in LOOPS:
        x, nfe = run(gen_mod, theirs, cache, prompt, gen, block, tokens_per_step, mask_id)
        with torch.inference_mode():
            o = sample(ours, prompt, "lowconf", cache=None if cache == "none" else cache, gen_length=gen,
                       block_length=block, steps=gen // tokens_per_step)
        gen_ours = o.sequences[:, prompt.shape[1]:]
        out[cache] = {"equal": bool(torch.equal(x.cpu(), o.sequences.cpu())), "their_forwards": nfe,
                      "our_steps": int(o.trace.steps), "distinct_tokens": int(gen_ours.unique().numel()),
                      "differing_positions": int((x.cpu() != o.sequences.cpu()).sum())}
    return out


class ForwardWork:
    """Notes (tokens, keys, logits) of each forward of their model, as the benchmark's limit
    counts work: fed tokens (all rows), the positions they attend to, positions given logits
    (their model returns logits for every fed position). With ``replace_position`` (dual
    cache) the fed block overwrites its own columns of the cache; otherwise it extends it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.work: list[tuple[int, int, int]] = []
        self._handle = model.register_forward_pre_hook(self._note, with_kwargs=True)

    def _note(self, module, args, kwargs) -> None:
        ids = args[0] if args else kwargs["input_ids"]
        rows, fed = ids.shape
        past = kwargs.get("past_key_values")
        cached = past[0][0].shape[-2] if past else 0
        keys = cached if kwargs.get("replace_position") is not None else cached + fed
        self.work.append((rows * fed, keys, rows * fed))

    def close(self) -> None:
        self._handle.remove()
