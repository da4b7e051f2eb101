"""Speculative decoding of a causal LM as a paradecode strategy.

One step reads as gpt-fast's ``speculative_decode``: the drafter (:mod:`.drafting`: a draft
model, or prompt lookup with no model) proposes up to k tokens, the target scores the last
committed token and all drafts in one ``target`` forward of k + 1 tokens, the acceptance rule
(:mod:`.acceptance`) keeps a prefix and adds one token, and both caches roll back. Both models
keep fixed-shape caches with one length per row (:class:`~paradecode.caches.static_kv.StaticKVCache`):
every row of a batch accepts on its own and decodes as it would alone, and a rollback is a
length update. Rows stay in the batch until all are done (finished rows commit nothing), so
every forward after the first has one shape per k and replays as a CUDA graph on a GPU
(:class:`.causal_lm.CausalLM`). A step reads the device once (how far each row got). A step with
a constant draft length is itself recorded as one CUDA graph (:mod:`.step_graph`;
``capture_step``), so it costs one launch instead of k + 1 graphs and ~60 small kernels, and the
next such step is queued before this one's counts are read (``launch_ahead``), so the host's
turnaround overlaps the device's work. A sampled step reads its random numbers from kept
buffers filled before each replay (:mod:`.noise`), so it records too, with the tokens of a step
that runs as it is.

Draft length: fixed (``num_draft_tokens``), transformers' ``heuristic`` schedule (+2 after a
step where every draft was accepted, -1 otherwise; restarted at ``num_draft_tokens`` for each
call, as transformers' ``heuristic_transient``), and/or a confidence stop (a row stops
drafting once the draft's probability of its token falls below
``draft_confidence_threshold``, as transformers' ``assistant_confidence_threshold``). Every
rule depends only on the draft's own outputs, so decoding stays lossless.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..interfaces import ModelCall, Request, Strategy
from .acceptance import accept_greedy, accept_sampled, first_eos, warp_probs
from ..caches.static_kv import StaticKVCache
from ..models.llama import check_attention
from .causal_lm import CausalLM, bucket_length, check_compile_mode, vocab_size
from .drafting import DRAFTERS, Drafts
from .noise import DrawnNoise, KeptNoise
from . import step_graph
from .step_graph import CountsCopy, StepBuffers
from .vocabtrim import VocabTrim

__all__ = ["SpeculativeConfig", "SpeculativeState", "SpeculativeDecoding", "eos_token_ids"]

SCHEDULES = ("constant", "heuristic")
# Prompt tokens per refill forward (continuous batching): around where an 8B forward stops being
# bound by its weight read (~180 tokens at 790 TFLOP/s and 4.3 TB/s), so larger groups save nothing.
REFILL_TOKENS = 256


def _token_ids(vocabtrim: object) -> torch.Tensor:
    """A kept-token list given as a tensor or a sequence of ints, as a long tensor (a clear error otherwise)."""
    try:
        ids = torch.as_tensor(vocabtrim)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"vocabtrim must be a VocabTrim (VocabTrim.load(path)) or a 1-D list of token ids, "
                        f"got {type(vocabtrim).__name__}: {e}") from None
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"vocabtrim must hold integer token ids, got dtype {ids.dtype}.")
    return ids.long()


@dataclass
class SpeculativeConfig:
    """Hyper-parameters (defaults: k = 5 as gpt-fast's ``speculate_k``; the rest as
    transformers' ``generate``: greedy unless ``do_sample``, temperature 1, no top-k/top-p)."""

    num_draft_tokens: int = 5
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    draft_length_schedule: str = "constant"
    max_draft_tokens: int = 32
    draft_confidence_threshold: float = 0.0
    stop_at_eos: bool = True
    record_draft_time: bool = False
    drafter: str = "model"
    prompt_lookup_max_ngram: int = 2
    cuda_graphs: bool = True
    # record each step of constant draft length (draft k, verify, accept) as one CUDA graph
    capture_step: bool = True
    # queue the next recorded step before reading this one's counts (hides the host's turnaround;
    # a generation that ends on EOS runs one step in vain, whose tokens are discarded; with the
    # loop's timing=True each step's time then includes the device work of the step queued after it)
    launch_ahead: bool = True
    fuse_projections: bool = False  # joined q/k/v and gate/up matmuls (paradecode.models.llama.LlamaLM)
    # torch.compile of each captured forward (CausalLM; COMPILE_MODES): one mode for both models,
    # or {"draft": mode} / {"target": mode, "draft": mode} per role (a role left out stays eager).
    compile_mode: Union[str, dict, None] = None
    # "triton": each layer's RoPE, cache write and attention in one kernel (needs fuse_projections, a CUDA GPU)
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        if self.num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {self.num_draft_tokens}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when do_sample=True, got {self.temperature}; use do_sample=False for greedy.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.draft_length_schedule not in SCHEDULES:
            raise ValueError(f"draft_length_schedule must be one of {SCHEDULES}, got {self.draft_length_schedule!r}.")
        if self.draft_length_schedule == "heuristic" and self.max_draft_tokens < self.num_draft_tokens:
            raise ValueError(
                f"max_draft_tokens ({self.max_draft_tokens}) must be >= num_draft_tokens ({self.num_draft_tokens}) "
                f"with draft_length_schedule='heuristic'."
            )
        if self.drafter not in DRAFTERS:
            raise ValueError(f"drafter must be one of {sorted(DRAFTERS)}, got {self.drafter!r}.")
        if self.prompt_lookup_max_ngram < 1:
            raise ValueError(f"prompt_lookup_max_ngram must be >= 1, got {self.prompt_lookup_max_ngram}.")
        if isinstance(self.compile_mode, dict) and set(self.compile_mode) - {"target", "draft"}:
            raise ValueError(f"compile_mode keys are the roles 'target' and 'draft', "
                             f"got {sorted(set(self.compile_mode) - {'target', 'draft'})}.")
        for role in ("target", "draft"):
            check_compile_mode(self.compile_mode_of(role))
        check_attention(self.attention, self.fuse_projections)
        if not 0.0 <= self.draft_confidence_threshold < 1.0:
            raise ValueError(f"draft_confidence_threshold must be in [0, 1), got {self.draft_confidence_threshold}.")

    def compile_mode_of(self, role: str) -> Optional[str]:
        """The ``torch.compile`` mode of ``role``'s captured forwards (None: eager kernels)."""
        if isinstance(self.compile_mode, dict):
            return self.compile_mode.get(role)
        return self.compile_mode

    def validate(self) -> None:
        """Refuse options this combination never reads, as transformers' ``GenerationConfig.validate``
        does: a user who sets them expects an effect they would not get."""
        default = {f.name: f.default for f in dataclasses.fields(self)}
        if not self.do_sample:
            for name in ("temperature", "top_k", "top_p"):
                if getattr(self, name) != default[name]:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} has no effect with do_sample=False (greedy decoding reads "
                        f"neither temperature, top_k nor top_p); pass do_sample=True to sample, or leave {name} out."
                    )
        if self.draft_length_schedule == "constant" and self.max_draft_tokens != default["max_draft_tokens"]:
            raise ValueError(
                f"max_draft_tokens={self.max_draft_tokens} has no effect with draft_length_schedule='constant' "
                f"(every step drafts num_draft_tokens); pass draft_length_schedule='heuristic', or leave "
                f"max_draft_tokens out."
            )
        if self.drafter == "prompt-lookup" and self.draft_confidence_threshold != default["draft_confidence_threshold"]:
            raise ValueError(
                "draft_confidence_threshold has no effect with drafter='prompt-lookup' (no draft model scores "
                "its tokens); leave it out."
            )
        if self.compile_mode is not None and not self.cuda_graphs:
            raise ValueError(
                "compile_mode compiles the forwards that are captured as CUDA graphs, and cuda_graphs=False "
                "captures none; leave compile_mode out, or keep cuda_graphs=True (a GPU)."
            )
        if self.drafter == "model" and self.prompt_lookup_max_ngram != default["prompt_lookup_max_ngram"]:
            raise ValueError(
                "prompt_lookup_max_ngram has no effect with drafter='model'; pass drafter='prompt-lookup', or leave it out."
            )


@dataclass
class SpeculativeState:
    """One generation's state. The caches (and, while it runs, the device tensors) may be kept
    with the models' wrappers for the next generation; ``result`` leaves the state copies of
    the small tensors, while its caches are the next generation's on the same model."""

    tokens: torch.Tensor  # (B, P + max_new_tokens + scratch) output canvas, pad after a row's end
    prompt_length: int
    length: torch.Tensor  # (B,) device: committed tokens per row (prompt columns included)
    start: torch.Tensor  # (B,) device: left-padding columns per row
    budget_end: torch.Tensor  # (B,) device: the length at which a row has max_new_tokens
    n_gen: torch.Tensor  # (B,) CPU: tokens generated per row
    finished: torch.Tensor  # (B,) CPU bool
    finished_device: torch.Tensor  # (B,) device bool: ``finished``, kept on the device by the step itself
    active: torch.Tensor  # (b,) CPU: indices of the rows not finished
    target_cache: StaticKVCache
    draft_cache: Optional[StaticKVCache]
    k: int  # current draft length (the heuristic schedule changes it)
    generator: Optional[torch.Generator]
    noise: Any  # sampling: where a step's random numbers come from (.noise), else None
    eos_ids: Optional[torch.Tensor]
    keep_ids: Optional[torch.Tensor]  # VocabTrim: the draft's kept token ids, or None
    vocab_size: int
    models: dict = field(default_factory=dict)
    buffers: Optional[StepBuffers] = None  # kept device tensors (graphs on a GPU), else None
    ahead: Optional[tuple] = None  # (graph, k, counts slot) of a step queued before the last read
    steps: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def update_active(self) -> None:
        """``active`` from ``finished``, after a step or a refill changed it."""
        self.active = torch.nonzero(~self.finished).flatten()

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]


def eos_token_ids(model: nn.Module) -> list[int]:
    """The ids that end a generation of ``model``: its generation config's, else its config's."""
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _as_ids(value: Any) -> Optional[torch.Tensor]:
    if value is None:
        return None
    ids = value if isinstance(value, (list, tuple)) else [value]
    return torch.tensor([int(i) for i in ids], dtype=torch.long)


class SpeculativeDecoding(Strategy[SpeculativeState]):
    name = "speculative"
    family = "causal-lm"
    roles = ("target", "draft")
    description = ("speculative sampling with a draft causal LM or prompt lookup: draft k, verify in one target "
                   "forward (lossless); VocabTrim; static caches and CUDA graphs")
    Config = SpeculativeConfig
    runtime_options = ("draft_model", "vocabtrim")

    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self.drafter = DRAFTERS[config.drafter](config)
        c = config
        # Steps that repeat exactly (shape and host decisions): constant k, no early stop.
        self._recordable = (c.capture_step and c.cuda_graphs and not c.record_draft_time
                            and c.draft_length_schedule == "constant" and c.draft_confidence_threshold == 0)

    # ---- setup ---------------------------------------------------------------------------
    def setup(
        self,
        model: Any,
        draft_model: Optional[nn.Module] = None,
        vocabtrim: Union[VocabTrim, torch.Tensor, Sequence[int], None] = None,
        **_: Any,
    ) -> tuple[dict, dict]:
        lookup = self.config.drafter == "prompt-lookup"
        if lookup and (draft_model is not None or vocabtrim is not None):
            raise ValueError(
                "drafter='prompt-lookup' drafts from the text itself: leave draft_model and vocabtrim out "
                "(or pass drafter='model' to draft with a model)."
            )
        checks = (("model", model),) if lookup else (("model", model), ("draft_model", draft_model))
        for name, m in checks:
            if m is None:
                raise ValueError(
                    "speculative decoding needs a draft model: pass draft_model=<a smaller causal LM "
                    "with the target's tokenizer>, e.g. AutoModelForCausalLM.from_pretrained(...), "
                    "or drafter='prompt-lookup' to draft without one."
                )
            if not isinstance(m, nn.Module) or not hasattr(m, "config"):
                raise ValueError(
                    f"{name} must be a Hugging Face causal LM (AutoModelForCausalLM), got {type(m).__name__}."
                )
            if getattr(m.config, "is_encoder_decoder", False):
                raise ValueError(f"{name} is an encoder-decoder model; speculative decoding here needs decoder-only causal LMs.")
        vt = vocab_size(model)
        fuse = self.config.fuse_projections
        mode = self.config.compile_mode_of
        attn = self.config.attention
        models = {"target": CausalLM.of(model, fuse_projections=fuse, compile_mode=mode("target"), attention=attn)}
        keep = None
        if not lookup:
            vd = vocab_size(draft_model)
            if vt != vd:
                raise ValueError(
                    f"vocabulary mismatch: the target predicts {vt} tokens, the draft {vd}; the draft must share the "
                    "target's tokenizer and LM-head size (transformers' UniversalSpeculativeDecoding handles other tokenizers)."
                )
            dev_t, dev_d = next(model.parameters()).device, next(draft_model.parameters()).device
            if dev_t != dev_d:
                raise ValueError(f"target is on {dev_t} but the draft on {dev_d}; move the draft with draft_model.to({str(dev_t)!r}).")
            if vocabtrim is not None:
                keep = vocabtrim.keep_ids if isinstance(vocabtrim, VocabTrim) else _token_ids(vocabtrim)
                VocabTrim.check_ids(keep, vt)
            models["draft"] = CausalLM.of(draft_model, keep, fuse_projections=fuse, compile_mode=mode("draft"),
                                          attention=attn)
        for lm in models.values():
            lm.graphs = self.config.cuda_graphs
        cfg = model.config
        gen_cfg = getattr(model, "generation_config", None)
        eos = eos_token_ids(model)
        pad = getattr(gen_cfg, "pad_token_id", None) if gen_cfg is not None else None
        if pad is None:
            pad = getattr(cfg, "pad_token_id", None)
        if pad is None:
            pad = eos[0] if eos else 0
        eos_ids = _as_ids(eos) if self.config.stop_at_eos and eos else None
        return models, {"pad_id": int(pad), "eos_ids": eos_ids, "models": models}

    # ---- start ---------------------------------------------------------------------------
    def start(
        self,
        prompt_ids: torch.Tensor,
        *,
        models: dict,
        pad_id: int,
        eos_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        **_: Any,
    ) -> SpeculativeState:
        c = self.config
        B, P = prompt_ids.shape
        k_max = c.max_draft_tokens if c.draft_length_schedule == "heuristic" else c.num_draft_tokens
        k_max = min(k_max, c.max_new_tokens)  # a step never drafts past the budget (see step)
        # room for a finished row's drafts past its end, bucketed as the caches' lengths, so
        # nearby prompt lengths share kept buffers and their recorded steps
        width = bucket_length(P + c.max_new_tokens + k_max + 2)
        pads = (P - attention_mask.long().sum(1)) if attention_mask is not None else torch.zeros(B, dtype=torch.long)
        # steps may be recorded as graphs, which hold addresses: keep the buffers with the target
        kept = self._recordable and models["target"]._graphable(prompt_ids)
        buf = self._buffers(models["target"], prompt_ids, width, eos_ids, kept)
        buf.tokens.fill_(pad_id)
        buf.tokens[:, :P] = prompt_ids
        buf.length.fill_(P)
        buf.start.copy_(pads)
        buf.budget_end.fill_(P + c.max_new_tokens)
        buf.finished.zero_()
        caches = {role: lm.cache(B, width, role) for role, lm in models.items()}
        for cache in caches.values():
            cache.start.copy_(buf.start)
        draft = models.get("draft")
        return SpeculativeState(
            tokens=buf.tokens,
            prompt_length=P,
            length=buf.length,
            start=buf.start,
            budget_end=buf.budget_end,
            n_gen=torch.zeros(B, dtype=torch.long),
            finished=torch.zeros(B, dtype=torch.bool),
            finished_device=buf.finished,
            active=torch.arange(B),
            target_cache=caches["target"],
            draft_cache=caches.get("draft"),
            k=c.num_draft_tokens,
            generator=generator,
            noise=DrawnNoise(generator) if c.do_sample else None,
            eos_ids=buf.eos_ids,
            keep_ids=draft.keep_ids if draft is not None else None,
            vocab_size=models["target"].vocab_size,
            models=models,
            buffers=buf if kept else None,
        )

    def _buffers(self, target: CausalLM, prompt_ids: torch.Tensor, width: int,
                 eos_ids: Optional[torch.Tensor], kept: bool) -> StepBuffers:
        """The generation's device tensors: kept with the target's wrapper (``kept``), else made fresh."""
        B, dev = prompt_ids.shape[0], prompt_ids.device

        def make() -> StepBuffers:
            def vec(dtype: torch.dtype) -> torch.Tensor:
                return torch.zeros(B, dtype=dtype, device=dev)

            return StepBuffers(
                tokens=torch.zeros(B, width, dtype=torch.long, device=dev), length=vec(torch.long),
                start=vec(torch.long), budget_end=vec(torch.long), finished=vec(torch.bool),
                eos_ids=eos_ids.to(dev) if eos_ids is not None else None, copies=CountsCopy(B, dev),
            )

        if not kept:
            return make()
        eos_key = None if eos_ids is None else tuple(eos_ids.tolist())
        return target.workspace(("speculative", B, width, eos_key), make)

    # ---- one step: draft k, verify once, accept, roll back ----------------------------------
    def step(self, state: SpeculativeState, call: ModelCall) -> torch.Tensor:
        c = self.config
        remaining = torch.where(state.finished, 0, c.max_new_tokens - state.n_gen)
        ahead, state.ahead = state.ahead, None
        if ahead is not None:  # queued by the previous step, before its read
            graph, k, slot = ahead
        else:
            # Accepted drafts + the final token never exceed the largest remaining budget.
            k = max(0, int(min(state.k, int(remaining.max()) - 1)))
            graph = self._step_graph(state, k)
            if graph is None:
                t0 = time.perf_counter()
                drafts = self.drafter.propose(state, call, k)
                if c.record_draft_time:
                    if state.tokens.device.type == "cuda":
                        torch.cuda.synchronize(state.tokens.device)
                    state.extras["draft_seconds"] = time.perf_counter() - t0
                counts = self._verify_and_accept(state, call, drafts)
                state.steps += 1
                return self._account(state, k, counts.cpu())  # the step's one host sync: how far each row got
            slot = self._launch(state, graph, call)
        # The next step may be queued now when this one cannot end the generation by its budget
        # and leaves k as it is: some row keeps >= 2 (k + 1) tokens to go (only an EOS in every
        # row could make the queued step run in vain; finished rows commit nothing).
        if c.launch_ahead and int(remaining.max()) >= 2 * (k + 1):
            state.ahead = (graph, k, self._launch(state, graph, call))
        state.steps += 1
        return self._account(state, k, state.buffers.copies.wait(slot))

    def _launch(self, state: SpeculativeState, graph: Any, call: ModelCall) -> int:
        """Replay a recorded step (a sampled one after its numbers are drawn), count its forwards
        (they run whether or not the step's result is read) and queue its counts' copy to the
        host; returns the copy's slot."""
        if graph.noise is not None:
            graph.noise.fill(state.generator)
        counts = graph.replay()
        for role in graph.roles:
            call.count_forward(role, state.active)
        return state.buffers.copies.start(counts)

    def _device_step(self, state: SpeculativeState, call: ModelCall, k: int) -> torch.Tensor:
        """A whole step on the device (what :meth:`_step_graph` records): the step's counts."""
        return self._verify_and_accept(state, call, self.drafter.propose(state, call, k))

    def _step_graph(self, state: SpeculativeState, k: int) -> Any:
        """The graph of this step, recorded on first use; None where the step runs as it is
        (a changing draft length, the first step, a shape not yet warmed up)."""
        buf = state.buffers
        if buf is None or buf.error is not None or state.steps == 0 or k != self.config.num_draft_tokens:
            return None
        models, caches = state.models, {"target": state.target_cache, "draft": state.draft_cache}
        shapes = [("target", k + 1, k + 1)] + [("draft", t, 1) for t in self.drafter.forward_tokens(k)]
        c = self.config
        # everything the recorded step bakes in: the drafter, the sampling settings, the models,
        # caches and shapes (the graphs live with buffers that outlive this strategy object)
        settings = (c.drafter, c.prompt_lookup_max_ngram, c.do_sample, c.temperature, c.top_k, c.top_p)
        key = settings + tuple((id(models[role]), id(caches[role]), t, n) for role, t, n in shapes)
        graph = buf.graphs.get(key)
        if graph is not None:
            return graph
        if not all(models[role].warmed(caches[role], t, n) for role, t, n in shapes):
            return None  # compile, autotune and capture each forward first (CausalLM does)
        try:
            # the step records this state's fields as they are now (a graph keeps addresses, not
            # the Python object): a copy, since ``result`` points the caller's state at copies
            recorded = copy.copy(state)
            recorded.noise = self._kept_noise(state, k)
            graph = step_graph.record_step(lambda inline: self._device_step(recorded, inline, k), models, buf)
            graph.noise = recorded.noise
        except RuntimeError as err:  # run steps as before; the same tokens either way
            buf.error = f"{type(err).__name__}: {err}"
            warnings.warn(f"recording a speculative step as one CUDA graph failed, running it forward by forward: "
                          f"{buf.error}", RuntimeWarning)
            return None
        buf.graphs[key] = graph
        return graph

    def _kept_noise(self, state: SpeculativeState, k: int) -> Optional[KeptNoise]:
        """The buffers a sampled step's graph reads its random numbers from (None: greedy)."""
        if not self.config.do_sample:
            return None
        draft = state.models.get("draft")
        draft_vocab = None
        if self.drafter.role is not None and k:
            draft_vocab = draft.keep_ids.numel() if draft.keep_ids is not None else state.vocab_size
        return KeptNoise(state.batch_size, k, draft_vocab, state.vocab_size, state.tokens.device)

    def _verify_and_accept(self, state: SpeculativeState, call: ModelCall, drafts: Drafts) -> torch.Tensor:
        """Verify: the target's cache holds all committed tokens but the last (the whole prompt
        is fed at the first step); it scores that token and every draft in one forward. Then
        accept, write the canvas and roll both caches back, all on the device."""
        first = state.tokens[:, : state.prompt_length] if state.steps == 0 else state.tokens.gather(1, state.length[:, None] - 1)
        ids = torch.cat([first, drafts.tokens], dim=1) if drafts.k else first
        logits = call("target", Request(ids, kwargs=dict(cache=state.target_cache, num_logits=drafts.k + 1), rows=state.active))
        return self._accept(state, drafts, logits)

    def _accept(self, state: SpeculativeState, drafts: Drafts, logits: torch.Tensor) -> torch.Tensor:
        """The acceptance rule and its writes; returns (3 or 4, B) counts on the device:
        drafts accepted, tokens committed, EOS hit (and drafts proposed, when k > 0)."""
        c = self.config
        k = drafts.k
        dev = state.tokens.device
        if c.do_sample:
            p = warp_probs(logits, c.temperature, c.top_k, c.top_p)
            q = drafts.probs if k else p[:, :0]
            n, nxt = accept_sampled(drafts.tokens, q, p, drafts.lengths, noise=state.noise)
        else:
            n, nxt = accept_greedy(drafts.tokens, logits, drafts.lengths)
        # Candidate text of this step: d_1..d_n then the target's token.
        cand = torch.cat([drafts.tokens, torch.zeros_like(nxt)[:, None]], dim=1)
        cand.scatter_(1, n[:, None], nxt[:, None])
        # The budget left per row, from device tensors: copying the host's count up would be a
        # pageable host->device copy, which waits for the verify forward before the step's own work.
        remaining = torch.where(state.finished_device, 0, state.budget_end - state.length)
        length = torch.minimum(n + 1, remaining)  # 0 for finished rows
        j = torch.arange(k + 1, device=dev)
        hit_eos = torch.zeros_like(n, dtype=torch.bool)
        if state.eos_ids is not None:
            eos_at = first_eos(cand, state.eos_ids, length)
            hit_eos = eos_at <= k
            length = torch.where(hit_eos, eos_at + 1, length)
        # Write the committed tokens into the canvas (the rest of the k + 1 go to scratch columns
        # past the row's end, which later steps overwrite or ``result`` cuts off).
        cols = state.length[:, None] + j[None, :]
        keep = j[None, :] < length[:, None]
        state.tokens.scatter_(1, cols, torch.where(keep, cand, state.tokens.gather(1, cols)))
        state.length += length
        state.finished_device |= hit_eos | (state.length >= state.budget_end)
        # Roll back: the target keeps every committed token but the last, the drafter likewise.
        state.target_cache.set_length(state.length - 1)
        self.drafter.accepted(state, drafts)
        return torch.stack([n, length, hit_eos.long()] + ([drafts.lengths] if k else []))

    def _account(self, state: SpeculativeState, k: int, counts: torch.Tensor) -> torch.Tensor:
        """The host's side of a step, from its counts read back: per-row tallies, the draft
        length schedule, which rows are done. Returns the tokens committed per row."""
        c = self.config
        n_cpu, length_cpu, eos_cpu = counts[0], counts[1], counts[2].bool()
        act = state.active
        accepted = torch.zeros(state.batch_size, dtype=torch.long)
        accepted[act] = torch.minimum(n_cpu, length_cpu)[act]
        drafted = torch.zeros(state.batch_size, dtype=torch.long)
        if k:
            drafted[act] = counts[3][act]
        state.extras.update(accepted=accepted, drafted=drafted, draft_tokens=k)
        state.n_gen += length_cpu
        # Draft-length schedule (transformers' heuristic): +2 if every row accepted all, else -1.
        if c.draft_length_schedule == "heuristic" and k:
            if bool((n_cpu[act] == k).all()):
                state.k = min(state.k + 2, c.max_draft_tokens)
            else:
                state.k = max(1, state.k - 1)
        # Rows that are done stop committing (they stay in the batch: fixed shapes).
        state.finished |= eos_cpu | (state.n_gen >= c.max_new_tokens)
        state.update_active()
        return length_cpu

    # ---- finished rows take new prompts (continuous batching) -------------------------------
    def refill(self, state: SpeculativeState, row: int, prompt: Sequence[int], pad_id: int) -> None:
        """Start ``prompt`` in finished row ``row`` while the other rows go on (:meth:`refill_rows`)."""
        self.refill_rows(state, [row], [prompt], pad_id)

    def refill_rows(self, state: SpeculativeState, rows: Sequence[int], prompts: Sequence[Sequence[int]],
                    pad_id: int) -> None:
        """Start ``prompts[i]`` in finished row ``rows[i]`` while the other rows go on: their canvas
        rows and counts reset in place (recorded steps keep their addresses), each prompt
        left-padded to the canvas' prompt width, and both caches filled to where a step expects
        them (the target with every prompt token but the last, a draft model with all but the
        last two).

        The fill is one forward per model for the rows, in a kept cache of as many rows (rounded
        up to a power of two, so few shapes recur and are captured as graphs; an eager 8B forward
        is launch-bound, ~30 ms), then copied into the rows. A short forward reads every weight
        however many rows it carries, so refilling rows together costs about one; groups stop at
        :data:`REFILL_TOKENS` prompt tokens."""
        P, r = state.prompt_length, len(rows)
        if r != len(prompts) or not r:
            raise ValueError(f"refill_rows takes one prompt per row, got {r} rows and {len(prompts)} prompts.")
        if len(set(rows)) != r:
            raise ValueError(f"refill_rows got a row more than once: {list(rows)}.")
        for row, prompt in zip(rows, prompts):
            if not state.finished[row]:
                raise ValueError(f"row {row} is still generating; only a finished row takes a new prompt.")
            if not 2 <= len(prompt) <= P:
                raise ValueError(f"a refill prompt needs 2 to {P} tokens (the canvas' prompt width), got {len(prompt)}.")
        dev, W = state.tokens.device, state.tokens.shape[1]
        canvas = torch.full((r, W), pad_id, dtype=torch.long)
        pads = torch.tensor([P - len(p) for p in prompts])
        for i, prompt in enumerate(prompts):
            canvas[i, int(pads[i]) : P] = torch.tensor(list(map(int, prompt)))
        index = torch.tensor(list(rows))
        if dev.type == "cuda":  # pinned and queued: a pageable copy would wait for the step queued ahead
            canvas, pads, index = canvas.pin_memory(), pads.pin_memory(), index.pin_memory()
        canvas, pads, index = (t.to(dev, non_blocking=True) for t in (canvas, pads, index))
        # Row writes by index, each one kernel: a Python scalar written through ``t[row] =`` is
        # a copy from the host.
        state.tokens.index_copy_(0, index, canvas)
        state.length.index_fill_(0, index, P)
        state.start.index_copy_(0, index, pads)
        state.budget_end.index_fill_(0, index, P + self.config.max_new_tokens)
        state.finished_device.index_fill_(0, index, False)
        fills = [("target", state.target_cache, P - 1)]
        if self.drafter.role is not None:
            fills.append(("draft", state.draft_cache, P - 2))
        # Rows per fill forward: a power of two, and no more prompt tokens than REFILL_TOKENS,
        # past which a forward is bound by its matmuls, not by reading the weights, so a larger
        # group saves nothing and its kept cache only takes memory.
        group = 1 << max(0, (REFILL_TOKENS // P).bit_length() - 1)
        for role, cache, slots in fills:
            lm = state.models[role]
            for at in range(0, r, group) if slots else ():
                n = min(group, r - at)
                width = 1 << (n - 1).bit_length()  # kept-cache rows; the spare ones repeat the last prompt
                take = torch.arange(at, at + width, device=dev).clamp_(max=at + n - 1)
                kept = lm.cache(width, P, f"{role}-refill")  # zero lengths; the same cache for this width
                kept.start.copy_(pads[take])
                lm(canvas[take, :slots], cache=kept, num_logits=1)
                cache.copy_rows(list(rows[at : at + n]), kept, slots)
            cache.start.index_copy_(0, index, pads)
            cache.length.index_fill_(0, index, slots)
        for row in rows:
            state.n_gen[row], state.finished[row] = 0, False
        state.update_active()

    # ---- end -----------------------------------------------------------------------------
    def done(self, state: SpeculativeState) -> bool:
        return bool(state.finished.all())

    def max_steps(self, state: SpeculativeState) -> int:
        return self.config.max_new_tokens  # every step commits at least one token per row

    def result(self, state: SpeculativeState) -> torch.Tensor:
        if state.buffers is not None:
            # the kept buffers are the next generation's: the state returned to the caller keeps
            # copies (small: ids and per-row counts), so a later generation leaves it as it ended
            for name in ("tokens", "length", "start", "budget_end", "finished_device"):
                setattr(state, name, getattr(state, name).clone())
            state.buffers, state.ahead = None, None
        return state.tokens[:, : state.prompt_length + self.config.max_new_tokens].clone()
