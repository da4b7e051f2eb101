"""The lm-evaluation-harness model ``paradecode``: every diffusion strategy and cache policy in lm-eval.

    paradecode-eval --model paradecode --tasks gsm8k --num_fewshot 5 --apply_chat_template \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,strategy=threshold,threshold=0.9,cache=dual,gen_length=256,block_length=32

How ``--model paradecode`` is found. lm-eval's released versions (up to 0.4.13) resolve
``--model`` in a registry that only code already imported can fill: they read no entry
points. So paradecode ships ``paradecode-eval`` (also ``python -m paradecode.integrations.lm_eval``):
lm-eval's own command line, with this module imported first; every lm-eval argument works
as with ``lm_eval``. paradecode's package metadata also declares the entry point
``lm_eval.models: paradecode``, which lm-eval's plugin discovery (on its main branch, not in
a release yet) reads, so there plain ``lm_eval --model paradecode`` works. From Python,
``import paradecode.integrations.lm_eval`` and then ``lm_eval.simple_evaluate(model="paradecode", ...)``.

``model_args``:

* ``pretrained`` (required): a shipped model's name (``tasks-6m``) or a checkpoint directory
  (:func:`paradecode.models.loading.load_model_and_tokenizer`); ``tokenizer`` loads another
  tokenizer (``AutoTokenizer``), ``dtype`` casts the weights, ``device`` (lm-eval's
  ``--device``) places them, ``mask_id`` overrides the model's mask token.
* ``strategy`` (default ``lowconf``, LLaDA's) and ``cache`` (default none); every other name
  is an option of the strategy or of the cache policy (``threshold=0.9``, ``gen_length=256``,
  ``refresh_every=4``), checked by their configs before the model loads: an unknown name or a
  bad value stops the run with paradecode's message.
* Likelihood, as LLaDA's ``eval_llada.py`` (its defaults): ``mc_num=128`` masked samples per
  request, ``batch_size`` of them per forward (lm-eval's ``--batch_size``; ``mc_num`` must be
  a multiple), ``cfg=0`` unsupervised classifier-free guidance (also the generation's
  ``cfg_scale``, as there), ``is_check_greedy=True`` (LLaDA recommends False: it costs one
  forward per target token and none of its metrics read it). ``seed=1234`` seeds the masks
  of each request afresh (and sampling in generation), so a score does not depend on the
  order lm-eval sends requests in, and the choices of a question see the same masks.

``generate_until`` decodes ``batch_size`` prompts per :func:`paradecode.sample` call (sorted
by length; left-padded rows decode as they would alone), decodes the canvas with special
tokens, cuts it at the earliest ``until`` string and then drops special tokens, as LLaDA's
and Fast-dLLM's ``generate_until`` do. The canvas length is the strategy's ``gen_length``
(the references ignore lm-eval's ``max_gen_toks`` too); a task's sampling arguments
(``do_sample``, ``temperature``) are ignored: the strategy's options decide. A prompt longer
than the model's context minus ``gen_length`` keeps its last tokens, as lm-eval's ``hf``
model does. ``--apply_chat_template`` applies the tokenizer's chat template. After each call
:attr:`ParadecodeLM.stats` holds forwards, answer tokens and seconds (also logged), the speed
figures Fast-dLLM's ``show_speed`` prints.

Data parallel: started by ``torchrun --nproc_per_node N -m paradecode.integrations.lm_eval ...``
(or ``accelerate launch``), each process takes one GPU (``LOCAL_RANK``) and lm-eval gives each
rank its share of the requests; the results are gathered on rank 0. Scores do not depend on the
split (each request's masks are seeded by itself).

Dream checkpoints (``model_type: "Dream"``, loaded as :class:`~paradecode.models.dream.DreamModel`,
whose logits are already Dream's shifted ones, so every strategy and cache runs on them) follow
Dream's own evaluation (DreamLM/Dream ``eval/eval.py``; Fast-dLLM's ``dream/eval.py`` is the
same), the ``recipe=dream`` defaults (``recipe=llada`` / ``recipe=dream`` overrides the choice):

* ``add_bos_token=True``: the tokenizer's BOS is written before every context, as all of
  Dream's published base-model runs pass (Dream's tokenizer adds none itself); with
  ``--apply_chat_template`` it defaults to False, as Dream's instruct evaluation
  (``eval_instruct``, which has no such option) writes none;
* loglikelihood by :func:`~paradecode.likelihood.dream_mc_loglikelihood`: the continuation with
  EOS appended and visible, Bernoulli masks at noise level ``(1 - sampling_eps) t + sampling_eps``
  (``sampling_eps=1e-3``), cross-entropy divided by that level; ``mc_num=128`` as LLaDA;
  ``is_check_greedy=False``: Dream's evaluation reports every ``is_greedy`` as False (it
  computes none); with ``is_check_greedy=True`` the continuation (without the EOS) is checked
  as for LLaDA;
* ``max_length=2048`` (Dream's): longer requests keep their last tokens;
* a generation is also cut at the first EOS text, as Dream's ``_generate_batch`` cuts.

``loglikelihood_rolling`` (perplexity) raises ``NotImplementedError``, as in LLaDA's and Dream's
evaluations.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import sys
import time
from typing import Any, Optional, Sequence

import torch

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import model_registry
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError(
        f"paradecode.integrations.lm_eval needs lm-evaluation-harness >= 0.4.10 ({e}); "
        f'install it with: pip install "paradecode[eval]"'
    ) from None

from ..api import sample
from ..bench.real.data import truncate_at
from ..config import build_config, check_value, generation_defaults
from ..inputs import model_max_length
from ..likelihood import diffusion_model, dream_mc_loglikelihood, greedy_suffix_matches, mc_loglikelihood
from ..models.hf import resolve_mask_token_id
from ..models.loading import load_model_and_tokenizer
from ..registry import get_cache_class, get_strategy_class

__all__ = ["ParadecodeLM", "MODEL_NAME", "register", "split_model_args", "main"]

MODEL_NAME = "paradecode"
_TARGET = "paradecode.integrations.lm_eval:ParadecodeLM"
OWNER = f"lm-eval model {MODEL_NAME!r}"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Each reference evaluation's conventions where they differ (the module docstring says how).
RECIPES = {
    "llada": {"add_bos_token": False, "is_check_greedy": True, "max_length": None, "stop_at_eos": False},
    "dream": {"add_bos_token": True, "is_check_greedy": False, "max_length": 2048, "stop_at_eos": True},
}

logger = logging.getLogger(__name__)


def register() -> None:
    """Make ``--model paradecode`` resolvable (idempotent). Registered by name, so it agrees
    with the entry point when lm-eval's plugin discovery got there first."""
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=_TARGET)


def model_recipe(model: Any) -> str:
    """``"dream"`` for a Dream model (its config's ``model_type``), else ``"llada"``."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    return "dream" if isinstance(kind, str) and kind.lower() == "dream" else "llada"


def split_model_args(strategy: str, cache: Optional[str], options: dict[str, Any]) -> tuple[dict, dict]:
    """``options`` split into the strategy's and the cache policy's, each checked by its config
    (unknown names and bad values raise ``ValueError`` / ``TypeError`` naming them)."""
    try:
        scls = get_strategy_class(strategy)
        ccls = get_cache_class(cache) if cache is not None else None
    except ValueError as e:
        raise ValueError(f"{OWNER}: {e}") from None
    if scls.family != "dllm":
        raise ValueError(
            f"{OWNER}: strategy {strategy!r} decodes {scls.family!r} models; lm-eval runs diffusion-LM "
            f"strategies here (those of family 'dllm' in `paradecode strategies`)."
        )
    sfields = {f.name for f in dataclasses.fields(scls.Config) if f.init}
    cfields = {f.name for f in dataclasses.fields(ccls.Config) if f.init} if ccls is not None else set()
    unknown = sorted(set(options) - sfields - cfields)
    if unknown:
        cache_part = f"; cache {cache!r}: {sorted(cfields)}" if ccls is not None else ""
        raise ValueError(
            f"{OWNER} got unknown model_args {unknown}. Valid: the model's {sorted(_OWN_ARGS)}; "
            f"strategy {strategy!r}: {sorted(sfields)}{cache_part}."
        )
    strat = {k: v for k, v in options.items() if k in sfields}
    cache_options = {k: v for k, v in options.items() if k in cfields and k not in sfields}
    build_config(scls.Config, f"{OWNER}, strategy {strategy!r}", strat)
    if ccls is not None:
        build_config(ccls.Config, f"{OWNER}, cache {cache!r}", cache_options)
    return strat, cache_options


class ParadecodeLM(TemplateLM):
    """lm-eval's ``LM`` over :func:`paradecode.sample` (generation) and
    :func:`paradecode.likelihood.mc_loglikelihood` (scoring); the module docstring lists the
    ``model_args``."""

    backend = "causal"  # how TemplateLM splits context and continuation: encode the whole, then cut

    def __init__(
        self,
        pretrained: Any = None,
        strategy: str = "lowconf",
        cache: Optional[str] = None,
        batch_size: Any = 1,
        max_batch_size: Any = None,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        tokenizer: Optional[str] = None,
        trust_remote_code: bool = False,
        mask_id: Optional[int] = None,
        mc_num: int = 128,
        cfg: float = 0.0,
        is_check_greedy: Optional[bool] = None,
        seed: int = 1234,
        max_length: Optional[int] = None,
        recipe: Optional[str] = None,
        add_bos_token: Optional[bool] = None,
        sampling_eps: Optional[float] = None,
        **options: Any,
    ) -> None:
        super().__init__()
        c = lambda name, value, annotation: check_value(name, value, annotation, OWNER, kind="model_arg")  # noqa: E731
        if pretrained is None:
            raise ValueError(f"{OWNER} needs pretrained=<shipped model name or checkpoint directory> in --model_args.")
        self.strategy = c("strategy", strategy, str)
        self.cache_name = c("cache", cache, Optional[str])
        self.batch_size = _batch_size(batch_size)
        self.mc_num = c("mc_num", mc_num, int)
        self.cfg = c("cfg", cfg, float)
        is_check_greedy = c("is_check_greedy", is_check_greedy, Optional[bool])
        self.seed = c("seed", seed, int)
        recipe = c("recipe", recipe, Optional[str])
        add_bos_token = c("add_bos_token", add_bos_token, Optional[bool])
        self.sampling_eps = c("sampling_eps", sampling_eps, Optional[float])
        if recipe is not None and recipe not in RECIPES:
            raise ValueError(f"{OWNER}: recipe must be one of {sorted(RECIPES)} (default: by the model's type), "
                             f"got {recipe!r}.")
        if self.sampling_eps is not None and not 0 <= self.sampling_eps < 1:
            raise ValueError(f"{OWNER}: sampling_eps must be in [0, 1) (Dream: 1e-3), got {self.sampling_eps}.")
        if self.mc_num < 1 or self.mc_num % self.batch_size:
            raise ValueError(
                f"{OWNER}: mc_num ({self.mc_num}) must be a positive multiple of batch_size ({self.batch_size}), "
                f"which is how many masked samples share a forward; change --batch_size or mc_num."
            )
        if self.cfg < 0:
            raise ValueError(f"{OWNER}: cfg must be >= 0 (0: no guidance; LLaDA uses 0 to 2), got {self.cfg}.")
        if "cfg_scale" in options:
            raise ValueError(
                f"{OWNER}: give the guidance scale as cfg=... (it sets the likelihood's guidance and the "
                f"generation's cfg_scale, as LLaDA's eval_llada.py); cfg_scale is not a model_arg here."
            )
        if self.cfg > 0:
            options["cfg_scale"] = self.cfg
        self.options, self.cache_options = split_model_args(self.strategy, self.cache_name, options)
        torch_dtype = DTYPES.get(c("dtype", dtype, Optional[str]) or "", None)
        if dtype is not None and torch_dtype is None:
            raise ValueError(f"{OWNER}: dtype must be one of {sorted(DTYPES)} (or left out: as stored), got {dtype!r}.")
        self._rank, self._world_size, self._device = _distributed(_device(device))

        try:
            model, tok = load_model_and_tokenizer(str(pretrained), device=str(self._device))
        except ValueError as e:
            raise ValueError(f"{OWNER}: {e}") from None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=bool(trust_remote_code))
        if tok is None:
            raise ValueError(f"{OWNER}: {pretrained!r} has no tokenizer.json; pass tokenizer=<directory or hub id>.")
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        self.model = model
        self.tokenizer = tok
        self.recipe = recipe or model_recipe(model)
        defaults = RECIPES[self.recipe]
        if self.recipe == "dream":
            self.sampling_eps = 1e-3 if self.sampling_eps is None else self.sampling_eps
        elif self.sampling_eps is not None:
            raise ValueError(f"{OWNER}: sampling_eps belongs to Dream's likelihood (recipe=dream); {pretrained!r} "
                             f"is scored by LLaDA's, which has no such option.")
        self.is_check_greedy = defaults["is_check_greedy"] if is_check_greedy is None else is_check_greedy
        self.add_bos_token = defaults["add_bos_token"] if add_bos_token is None else add_bos_token
        self._bos_by_default = add_bos_token is None
        if self.add_bos_token and getattr(tok, "bos_token", None) is None:
            raise ValueError(f"{OWNER}: add_bos_token=True, but the tokenizer of {pretrained!r} has no BOS token; "
                             f"pass add_bos_token=False.")
        self.stop_at_eos = defaults["stop_at_eos"]
        self.mask_id = resolve_mask_token_id(model, tok, c("mask_id", mask_id, Optional[int]))
        self._scorer = diffusion_model(model, self.mask_id)
        scls = get_strategy_class(self.strategy)
        resolved = generation_defaults(scls.Config, getattr(model, "generation_defaults", None) or {}, self.options)
        self.gen_length = int(build_config(scls.Config, f"{OWNER}, strategy {self.strategy!r}", resolved).gen_length)
        declared = model_max_length(model)
        fallback = declared[1] if declared else None
        if defaults["max_length"] is not None:
            fallback = min(defaults["max_length"], fallback or defaults["max_length"])
        self._max_length = c("max_length", max_length, Optional[int]) or fallback
        self.pretrained = str(pretrained)
        self.stats: dict[str, float] = {}
        self._warned: set = set()

    # ---- data parallel (lm-eval gives each rank its share of the requests) -----------------
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._world_size == 1:
            return tensor
        import torch.distributed as dist

        part = tensor.reshape(1) if tensor.dim() == 0 else tensor.contiguous()
        parts = [torch.empty_like(part) for _ in range(self._world_size)]
        dist.all_gather(parts, part)
        return torch.cat(parts)

    def gather_object(self, obj: Any, dst: int = 0) -> Optional[list]:
        if self._world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self._world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # ---- what TemplateLM asks of a model ----------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """Conditioning token for an empty context: BOS where the tokenizer has one, else EOS."""
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> Optional[int]:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", self.pretrained)).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs: Any) -> list[int]:
        """Token ids; the tokenizer's special tokens are added unless the text already starts
        with BOS (a chat template writes it), as lm-eval's ``hf`` model does. With
        ``add_bos_token`` the BOS text is written first (Dream's evaluation), unless there."""
        if add_special_tokens is None:
            if self.add_bos_token and not string.startswith(self.tokenizer.bos_token):
                string = self.tokenizer.bos_token + string
            bos = getattr(self.tokenizer, "bos_token", None)
            add_special_tokens = not (bos and string.startswith(bos))
        return self.tokenizer(string, add_special_tokens=add_special_tokens)["input_ids"]

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The tokenizer's chat template. lm-eval calls it while it builds the requests, before
        any is run; from then on ``add_bos_token`` left at its default is off (Dream's instruct
        evaluation writes no BOS before the template)."""
        if self._bos_by_default:
            self.add_bos_token = False
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"{OWNER}: the tokenizer of {self.pretrained!r} has no chat template; drop --apply_chat_template "
                f"or pass tokenizer=<one that has a template>."
            )
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # ---- scoring ------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **_: Any) -> list[tuple[float, bool]]:
        from tqdm import tqdm

        out = []
        for (context, continuation), context_enc, continuation_enc in tqdm(
            requests, desc="paradecode loglikelihood", disable=disable_tqdm
        ):
            generator = torch.Generator().manual_seed(self.seed)
            if self.recipe == "dream":  # the EOS Dream appends counts against the context
                prefix = self._fit(list(context_enc), len(continuation_enc) + 1, "loglikelihood")
                ll = dream_mc_loglikelihood(self._scorer, prefix, continuation_enc, mask_id=self.mask_id,
                                            eos_id=self.eot_token_id, mc_num=self.mc_num, batch_size=self.batch_size,
                                            sampling_eps=self.sampling_eps, cfg=self.cfg, generator=generator)
            else:
                prefix = self._fit(list(context_enc), len(continuation_enc), "loglikelihood")
                ll = mc_loglikelihood(self._scorer, prefix, continuation_enc, mask_id=self.mask_id, mc_num=self.mc_num,
                                      batch_size=self.batch_size, cfg=self.cfg, generator=generator)
            greedy = bool(self.is_check_greedy) and greedy_suffix_matches(
                self._scorer, prefix, continuation_enc, mask_id=self.mask_id, cfg=self.cfg
            )
            out.append((ll, greedy))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), (ll, greedy))
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            f"{OWNER}: loglikelihood_rolling (perplexity tasks) is not implemented, as in LLaDA's "
            f"eval_llada.py; a diffusion LM scores text by the Monte Carlo bound of loglikelihood tasks."
        )

    # ---- generation ---------------------------------------------------------------------------
    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        contexts = [req.args[0] for req in requests]
        kwargs = [dict(req.args[1] or {}) for req in requests]
        self._note_ignored(kwargs)
        prompts = [self._fit(self.tok_encode(ctx), self.gen_length, "generate_until") for ctx in contexts]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[Optional[str]] = [None] * len(prompts)
        nfe = row_nfe = tokens = 0
        start = time.perf_counter()
        for first in tqdm(range(0, len(order), self.batch_size), desc="paradecode generate", disable=disable_tqdm):
            chunk = order[first : first + self.batch_size]
            out = sample(self.model, [prompts[i] for i in chunk], self.strategy, cache=self.cache_name,
                         cache_options=self.cache_options or None, seed=self.seed, mask_token_id=self.mask_id,
                         **self.options)
            nfe += out.trace.nfe
            row_nfe += int(out.trace.row_nfe.sum())
            texts = self.tokenizer.batch_decode(out.generated, skip_special_tokens=False)
            for i, text in zip(chunk, texts):
                answer = self.postprocess(text, kwargs[i].get("until"))
                tokens += len(self.tokenizer(answer, add_special_tokens=False)["input_ids"])
                results[i] = answer
                self.cache_hook.add_partial("generate_until", (contexts[i], requests[i].args[1]), answer)
        seconds = time.perf_counter() - start
        self.stats = {"requests": len(prompts), "nfe": nfe, "mean_row_nfe": row_nfe / max(len(prompts), 1),
                      "answer_tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / max(seconds, 1e-9)}
        logger.info("%s: %d requests, %d answer tokens in %.1f s (%.1f tokens/s), %d forwards (%.1f per request)",
                    OWNER, len(prompts), tokens, seconds, self.stats["tokens_per_second"], nfe, self.stats["mean_row_nfe"])
        return [r if r is not None else "" for r in results]

    def postprocess(self, text: str, until: Any) -> str:
        """The decoded canvas cut at the earliest ``until`` string (and EOS, for Dream), then
        without special tokens."""
        stops = [until] if isinstance(until, str) else list(until or [])
        if self.stop_at_eos and self.tokenizer.eos_token:
            stops.append(self.tokenizer.eos_token)
        cut = truncate_at(text, stops)
        return self.tokenizer.decode(self.tokenizer(cut, add_special_tokens=False)["input_ids"], skip_special_tokens=True)

    # ---- helpers ------------------------------------------------------------------------------
    def _fit(self, ids: list[int], room: int, what: str) -> list[int]:
        """``ids`` left-truncated so that ``room`` more tokens fit the model's context."""
        if self._max_length is None or len(ids) + room <= self._max_length:
            return ids
        keep = self._max_length - room
        if keep < 1:
            raise ValueError(
                f"{OWNER}: {what} needs {room} tokens but the model's context is {self._max_length}; "
                f"lower gen_length or pass max_length=..."
            )
        if what not in self._warned:
            logger.warning("%s: %s context of %d tokens left-truncated to %d to fit the model's %d.",
                           OWNER, what, len(ids), keep, self._max_length)
            self._warned.add(what)
        return ids[-keep:]

    def _note_ignored(self, kwargs: list[dict]) -> None:
        asked = sorted({k for kw in kwargs for k in kw} - {"until"})
        if asked and "gen_kwargs" not in self._warned:
            logger.info("%s: the strategy's options decide decoding; task generation_kwargs %s are not used "
                        "(gen_length=%d is the canvas).", OWNER, asked, self.gen_length)
            self._warned.add("gen_kwargs")


_OWN_ARGS = set(inspect.signature(ParadecodeLM.__init__).parameters) - {"self", "options"}


def _batch_size(value: Any) -> int:
    """lm-eval passes ``--batch_size`` as an int or a string; ``auto`` has no meaning here."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{OWNER}: batch_size must be a positive integer (auto is not supported), got {value!r}.")
    return value


def _device(device: Optional[str]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(str(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{OWNER}: device {device!r} was asked for but CUDA is not available; pass --device cpu.")
    return dev


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """``(rank, world size, device)``. Started by ``torchrun`` / ``accelerate launch`` with
    several processes (``WORLD_SIZE`` > 1): one process group, and on CUDA one GPU per process
    (``LOCAL_RANK``), as LLaDA's evaluation runs data parallel."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def main(argv: Optional[Sequence[str]] = None) -> None:
    """lm-eval's command line with ``--model paradecode`` available (``paradecode-eval``). A bad
    model_arg ends the run with one line ``paradecode-eval: error: ...`` and status 2; lm-eval's
    own errors keep their tracebacks."""
    from lm_eval.__main__ import cli_evaluate

    register()
    saved = sys.argv
    if argv is not None:
        sys.argv = [saved[0], *argv]  # lm-eval's parser reads sys.argv
    try:
        cli_evaluate()
    except (ValueError, TypeError) as e:
        if not str(e).startswith(OWNER):
            raise
        print(f"paradecode-eval: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        sys.argv = saved
    _close_process_group()


def _close_process_group() -> None:
    """Wait for every rank, then take the process group down. A rank that left with its group
    still up could abort at interpreter exit ("terminate called without an active exception"
    from gloo's threads) while rank 0 was still writing the results."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


register()

if __name__ == "__main__":
    main()
