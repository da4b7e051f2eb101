"""Speculative decoding of a causal LM as a paradecode strategy.

One step reads as gpt-fast's ``speculative_decode``: the drafter (:mod:`.drafting`) proposes
up to k tokens (k ``draft`` forwards through the loop's caller), the target scores the
pending token and all drafts in one ``target`` forward, the acceptance rule
(:mod:`.acceptance`) keeps a prefix and adds one token, and both caches roll back. Both models keep their KV caches across steps; rejected slots are cropped or masked
(:class:`.causal_lm.KVStream`), so every row of a batch accepts on its own and decodes as it
would alone. Finished rows (``max_new_tokens`` reached or EOS) leave the batch.

Draft length: fixed (``num_draft_tokens``), transformers' ``heuristic`` schedule (+2 after a
step where every draft was accepted, -1 otherwise; restarted at ``num_draft_tokens`` for each
call, as transformers' ``heuristic_transient``), and/or a confidence stop (a row stops
drafting once the draft's probability of its token falls below
``draft_confidence_threshold``, as transformers' ``assistant_confidence_threshold``). Every
rule depends only on the draft's own outputs, so decoding stays lossless.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..interfaces import ModelCall, Request, Strategy
from .acceptance import accept_greedy, accept_sampled, warp_probs
from .causal_lm import CausalLM, KVStream, vocab_size
from .drafting import DraftModelDrafter, Drafts
from .vocabtrim import VocabTrim

__all__ = ["SpeculativeConfig", "SpeculativeState", "SpeculativeDecoding"]

SCHEDULES = ("constant", "heuristic")


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
        if not 0.0 <= self.draft_confidence_threshold < 1.0:
            raise ValueError(f"draft_confidence_threshold must be in [0, 1), got {self.draft_confidence_threshold}.")

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


@dataclass
class SpeculativeState:
    tokens: torch.Tensor  # (B, P + max_new_tokens) output canvas, pad after a row's end
    prompt_length: int
    n_gen: torch.Tensor  # (B,) CPU: tokens generated per row
    active: torch.Tensor  # (b,) CPU: original indices of the rows still in the batch
    target: KVStream
    draft: KVStream
    k: int  # current draft length (the heuristic schedule changes it)
    generator: Optional[torch.Generator]
    eos_ids: Optional[torch.Tensor]
    keep_ids: Optional[torch.Tensor]  # VocabTrim: the draft's kept token ids, or None
    vocab_size: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]


def _as_ids(value: Any) -> Optional[torch.Tensor]:
    if value is None:
        return None
    ids = value if isinstance(value, (list, tuple)) else [value]
    return torch.tensor([int(i) for i in ids], dtype=torch.long)


class SpeculativeDecoding(Strategy[SpeculativeState]):
    name = "speculative"
    family = "causal-lm"
    roles = ("target", "draft")
    description = "speculative sampling with a draft causal LM: draft k, verify in one target forward (lossless); VocabTrim"
    Config = SpeculativeConfig
    runtime_options = ("draft_model", "vocabtrim")

    def __init__(self, config: SpeculativeConfig) -> None:
        super().__init__(config)
        self.drafter = DraftModelDrafter(config)

    # ---- setup ---------------------------------------------------------------------------
    def setup(
        self,
        model: Any,
        draft_model: Optional[nn.Module] = None,
        vocabtrim: Union[VocabTrim, torch.Tensor, Sequence[int], None] = None,
        **_: Any,
    ) -> tuple[dict, dict]:
        for name, m in (("model", model), ("draft_model", draft_model)):
            if m is None:
                raise ValueError(
                    "speculative decoding needs a draft model: pass draft_model=<a smaller causal LM "
                    "with the target's tokenizer>, e.g. AutoModelForCausalLM.from_pretrained(...)."
                )
            if not isinstance(m, nn.Module) or not hasattr(m, "config"):
                raise ValueError(
                    f"{name} must be a Hugging Face causal LM (AutoModelForCausalLM), got {type(m).__name__}."
                )
            if getattr(m.config, "is_encoder_decoder", False):
                raise ValueError(f"{name} is an encoder-decoder model; speculative decoding here needs decoder-only causal LMs.")
        vt, vd = vocab_size(model), vocab_size(draft_model)
        if vt != vd:
            raise ValueError(
                f"vocabulary mismatch: the target predicts {vt} tokens, the draft {vd}; the draft must share the "
                "target's tokenizer and LM-head size (transformers' UniversalSpeculativeDecoding handles other tokenizers)."
            )
        dev_t, dev_d = next(model.parameters()).device, next(draft_model.parameters()).device
        if dev_t != dev_d:
            raise ValueError(f"target is on {dev_t} but the draft on {dev_d}; move the draft with draft_model.to({str(dev_t)!r}).")
        keep = None
        if vocabtrim is not None:
            keep = vocabtrim.keep_ids if isinstance(vocabtrim, VocabTrim) else torch.as_tensor(vocabtrim, dtype=torch.long)
            VocabTrim.check_ids(keep, vt)
        cfg = model.config
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if eos is None:
            eos = getattr(cfg, "eos_token_id", None)
        pad = getattr(gen_cfg, "pad_token_id", None) if gen_cfg is not None else None
        if pad is None:
            pad = getattr(cfg, "pad_token_id", None)
        if pad is None:
            pad = (eos[0] if isinstance(eos, (list, tuple)) else eos) if eos is not None else 0
        models = {"target": CausalLM(model), "draft": CausalLM(draft_model, keep_ids=keep)}
        return models, {"pad_id": int(pad), "eos_ids": _as_ids(eos) if self.config.stop_at_eos else None, "models": models}

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
        dev = prompt_ids.device
        tokens = torch.full((B, P + c.max_new_tokens), pad_id, dtype=torch.long, device=dev)
        tokens[:, :P] = prompt_ids
        valid = attention_mask.bool() if attention_mask is not None else torch.ones_like(prompt_ids, dtype=torch.bool)
        dense = attention_mask is None  # prepare_prompts gives None when no row is padded
        return SpeculativeState(
            tokens=tokens,
            prompt_length=P,
            n_gen=torch.zeros(B, dtype=torch.long),
            active=torch.arange(B),
            target=KVStream.start(models["target"].hf_model, prompt_ids, valid, dense),
            draft=KVStream.start(models["draft"].hf_model, prompt_ids, valid, dense),
            k=c.num_draft_tokens,
            generator=generator,
            eos_ids=eos_ids.to(dev) if eos_ids is not None else None,
            keep_ids=models["draft"].keep_ids,
            vocab_size=models["target"].vocab_size,
        )

    # ---- one step: draft k, verify once, accept, roll back ----------------------------------
    def step(self, state: SpeculativeState, call: ModelCall) -> torch.Tensor:
        c = self.config
        remaining = c.max_new_tokens - state.n_gen[state.active]
        # Accepted drafts + the final token never exceed the largest remaining budget.
        k = max(0, int(min(state.k, int(remaining.max()) - 1)))
        t0 = time.perf_counter()
        drafts = self.drafter.propose(state, call, k)
        if c.record_draft_time:
            if state.tokens.device.type == "cuda":
                torch.cuda.synchronize(state.tokens.device)
            state.extras["draft_seconds"] = time.perf_counter() - t0
        # Verify: the target's pending token(s) then every draft, scored in one forward.
        ids, valid, dense = state.target.feed_pending()
        if drafts.k:
            ids = torch.cat([ids, drafts.tokens], dim=1)
            valid = torch.cat([valid, torch.ones_like(drafts.tokens)], dim=1)
        kwargs = state.target.request_kwargs(valid, num_logits=drafts.k + 1, dense=dense)
        logits = call("target", Request(ids, kwargs=kwargs, rows=state.active))
        state.target.advance(valid, dense)
        return self._accept(state, drafts, logits)

    def _accept(self, state: SpeculativeState, drafts: Drafts, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        k = drafts.k
        b = len(state.active)
        dev = state.tokens.device
        if c.do_sample:
            p = warp_probs(logits, c.temperature, c.top_k, c.top_p)
            q = drafts.probs if k else p[:, :0]
            n, nxt = accept_sampled(drafts.tokens, q, p, drafts.lengths, state.generator)
        else:
            n, nxt = accept_greedy(drafts.tokens, logits, drafts.lengths)
        # Candidate text of this step: d_1..d_n then the target's token.
        cand = torch.cat([drafts.tokens, torch.zeros_like(nxt)[:, None]], dim=1)
        cand.scatter_(1, n[:, None], nxt[:, None])
        length = n + 1
        remaining = (c.max_new_tokens - state.n_gen[state.active]).to(dev)
        length = torch.minimum(length, remaining)
        hit_eos = torch.zeros(b, dtype=torch.bool, device=dev)
        if state.eos_ids is not None:
            j = torch.arange(k + 1, device=dev)
            is_eos = torch.isin(cand, state.eos_ids) & (j[None, :] < length[:, None])
            hit_eos = is_eos.any(1)
            first = torch.where(is_eos, j[None, :], k + 1).min(1).values
            length = torch.where(hit_eos, first + 1, length)
        # Write the committed tokens into the canvas.
        rows_dev = state.active.to(dev)
        start = state.prompt_length + state.n_gen[state.active].to(dev)
        j = torch.arange(k + 1, device=dev)
        write = j[None, :] < length[:, None]
        r_idx = rows_dev[:, None].expand(-1, k + 1)[write]
        c_idx = (start[:, None] + j[None, :])[write]
        state.tokens.index_put_((r_idx, c_idx), cand[write])
        # One host sync per step: how far each row got.
        n_cpu, length_cpu, eos_cpu = n.cpu(), length.cpu(), hit_eos.cpu()
        # Target cache: pending + drafts were appended; keep the pending and the accepted drafts.
        state.target.rollback(k, n, n_cpu)
        state.target.append_pending(nxt[:, None], torch.ones_like(nxt)[:, None])
        self.drafter.accepted(state, drafts, n, n_cpu, nxt)
        # Per-step record.
        committed = torch.zeros(state.batch_size, dtype=torch.long)
        committed[state.active] = length_cpu
        accepted = torch.zeros(state.batch_size, dtype=torch.long)
        accepted[state.active] = torch.minimum(n_cpu, length_cpu)
        drafted = torch.zeros(state.batch_size, dtype=torch.long)
        if k:
            drafted[state.active] = drafts.lengths.cpu()
        state.extras.update(accepted=accepted, drafted=drafted, draft_tokens=k)
        state.n_gen[state.active] += length_cpu
        # Draft-length schedule (transformers' heuristic): +2 if every row accepted all, else -1.
        if c.draft_length_schedule == "heuristic" and k:
            if bool((n_cpu == k).all()):
                state.k = min(state.k + 2, c.max_draft_tokens)
            else:
                state.k = max(1, state.k - 1)
        # Rows that are done leave the batch.
        done = eos_cpu | (state.n_gen[state.active] >= c.max_new_tokens)
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            state.active = state.active[keep]
            keep_dev = keep.to(dev)
            state.target.select_rows(keep_dev)
            state.draft.select_rows(keep_dev)
        return committed

    # ---- end -----------------------------------------------------------------------------
    def done(self, state: SpeculativeState) -> bool:
        return len(state.active) == 0

    def max_steps(self, state: SpeculativeState) -> int:
        return self.config.max_new_tokens  # every step commits at least one token per row

    def result(self, state: SpeculativeState) -> torch.Tensor:
        return state.tokens
