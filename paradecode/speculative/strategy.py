"""Speculative decoding of a causal LM as a paradecode strategy.

One step = the draft model proposes up to k tokens (k ``draft`` forwards, each a sub-call
that does not end the step), then the target scores the pending token and all drafts in one
``target`` forward; the acceptance rule (:mod:`.acceptance`) keeps a prefix and adds one
token. Both models keep their KV caches across steps; rejected slots are cropped or masked
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

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..loop import Request, Strategy
from ..registry import register
from .acceptance import accept_greedy, accept_sampled, warp_probs
from .causal_lm import CausalLM, KVStream, vocab_size
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
        if self.max_draft_tokens < self.num_draft_tokens:
            raise ValueError(
                f"max_draft_tokens ({self.max_draft_tokens}) must be >= num_draft_tokens ({self.num_draft_tokens})."
            )
        if not 0.0 <= self.draft_confidence_threshold < 1.0:
            raise ValueError(f"draft_confidence_threshold must be in [0, 1), got {self.draft_confidence_threshold}.")


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
    phase: str = "draft"
    k_step: int = 0  # drafts planned this step
    drafts: list = field(default_factory=list)  # (b,) token ids
    draft_probs: list = field(default_factory=list)  # (b, V) q_i over the target vocabulary
    draft_len: Optional[torch.Tensor] = None  # (b,) drafts each row proposes this step
    drafting: Optional[torch.Tensor] = None  # (b,) bool rows still drafting (confidence stop)
    draft_t0: float = 0.0
    memo_valid: Optional[torch.Tensor] = None  # validity of the slots the pending request appends
    memo_dense: bool = True  # ... and whether all of them are valid (host flag)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]


def _as_ids(value: Any) -> Optional[torch.Tensor]:
    if value is None:
        return None
    ids = value if isinstance(value, (list, tuple)) else [value]
    return torch.tensor([int(i) for i in ids], dtype=torch.long)


@register("speculative")
class SpeculativeDecoding(Strategy[SpeculativeState]):
    description = "speculative sampling with a draft causal LM: draft k, verify in one target forward (lossless); VocabTrim"
    Config = SpeculativeConfig
    runtime_options = ("draft_model", "vocabtrim")

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

    # ---- propose -------------------------------------------------------------------------
    def propose(self, state: SpeculativeState) -> Request:
        c = self.config
        b = len(state.active)
        if state.phase == "draft" and not state.drafts:
            remaining = c.max_new_tokens - state.n_gen[state.active]
            # Accepted drafts + the final token never exceed the largest remaining budget.
            state.k_step = int(min(state.k, int(remaining.max()) - 1))
            state.draft_len = torch.zeros(b, dtype=torch.long, device=state.tokens.device)
            state.drafting = torch.ones(b, dtype=torch.bool, device=state.tokens.device)
            state.draft_t0 = time.perf_counter()
            if state.k_step <= 0:
                state.k_step = 0
                state.phase = "verify"
        if state.phase == "draft":
            if not state.drafts:
                ids, valid, dense = state.draft.feed_pending()
            else:
                ids = state.drafts[-1][:, None]
                valid, dense = torch.ones_like(ids), True
            state.memo_valid, state.memo_dense = valid, dense
            kwargs = state.draft.request_kwargs(valid, num_logits=1, dense=dense)
            return Request(ids, kwargs=kwargs, role="draft", rows=state.active, ends_step=False)
        # verify: the target's pending token(s) then every draft, scored in one forward
        if c.record_draft_time:
            dev = state.tokens.device
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            state.extras["draft_seconds"] = time.perf_counter() - state.draft_t0
        ids, valid, dense = state.target.feed_pending()
        k = len(state.drafts)
        if k:
            d = torch.stack(state.drafts, dim=1)
            ids = torch.cat([ids, d], dim=1)
            valid = torch.cat([valid, torch.ones_like(d)], dim=1)
        state.memo_valid, state.memo_dense = valid, dense
        kwargs = state.target.request_kwargs(valid, num_logits=k + 1, dense=dense)
        return Request(ids, kwargs=kwargs, role="target", rows=state.active)

    # ---- commit --------------------------------------------------------------------------
    def commit(self, state: SpeculativeState, logits: torch.Tensor) -> Optional[torch.Tensor]:
        if state.phase == "draft":
            self._commit_draft(state, logits[:, -1])
            return None
        return self._commit_verify(state, logits)

    def _commit_draft(self, state: SpeculativeState, logits: torch.Tensor) -> None:
        c = self.config
        state.draft.advance(state.memo_valid, state.memo_dense)
        keep_ids = state.keep_ids
        if c.do_sample:
            q = warp_probs(logits, c.temperature, c.top_k, c.top_p)
            idx = torch.multinomial(q, 1, generator=state.generator).squeeze(1)
            conf = q.gather(1, idx[:, None]).squeeze(1)
            if keep_ids is not None:  # q over the full vocabulary: zero outside the kept tokens
                full = q.new_zeros(q.shape[0], state.vocab_size)
                q = full.index_copy_(1, keep_ids, q)
            state.draft_probs.append(q)
        else:
            idx = logits.argmax(-1)
            conf = None
            if c.draft_confidence_threshold > 0:
                conf = logits.float().softmax(-1).gather(1, idx[:, None]).squeeze(1)
        token = keep_ids[idx] if keep_ids is not None else idx
        state.drafts.append(token)
        state.draft_len = torch.where(state.drafting, state.draft_len + 1, state.draft_len)
        stop = len(state.drafts) >= state.k_step
        if c.draft_confidence_threshold > 0:
            state.drafting = state.drafting & (conf >= c.draft_confidence_threshold)
            stop = stop or not bool(state.drafting.any())  # one small sync per draft token
        if stop:
            state.phase = "verify"

    def _commit_verify(self, state: SpeculativeState, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        k = len(state.drafts)
        b = len(state.active)
        dev = state.tokens.device
        drafts = torch.stack(state.drafts, 1) if k else torch.zeros(b, 0, dtype=torch.long, device=dev)
        draft_len = state.draft_len if k else None
        if c.do_sample:
            p = warp_probs(logits, c.temperature, c.top_k, c.top_p)
            q = torch.stack(state.draft_probs, 1) if k else p[:, :0]
            n, nxt = accept_sampled(drafts, q, p, draft_len, state.generator)
        else:
            n, nxt = accept_greedy(drafts, logits, draft_len)
        # Candidate text of this step: d_1..d_n then the target's token.
        cand = torch.cat([drafts, torch.zeros_like(nxt)[:, None]], dim=1)
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
        state.target.advance(state.memo_valid, state.memo_dense)
        state.target.rollback(k, n, n_cpu)
        state.target.append_pending(nxt[:, None], torch.ones_like(nxt)[:, None])
        # Draft cache: it saw d_1..d_{k-1}; keep the accepted ones. A row that accepted all k
        # still has to show d_k to the draft next step.
        if k:
            state.draft.rollback(k - 1, torch.clamp(n, max=k - 1), torch.clamp(n_cpu, max=k - 1))
            all_in = n_cpu == k
            if bool(all_in.any()):
                state.draft.append_pending(drafts[:, -1:], (n == k)[:, None], dense=bool(all_in.all()))
        state.draft.append_pending(nxt[:, None], torch.ones_like(nxt)[:, None])
        # Per-step record.
        committed = torch.zeros(state.batch_size, dtype=torch.long)
        committed[state.active] = length_cpu
        accepted = torch.zeros(state.batch_size, dtype=torch.long)
        accepted[state.active] = torch.minimum(n_cpu, length_cpu)
        drafted = torch.zeros(state.batch_size, dtype=torch.long)
        if k:
            drafted[state.active] = state.draft_len.cpu()
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
        state.drafts, state.draft_probs = [], []
        state.phase = "draft"
        return committed

    # ---- end -----------------------------------------------------------------------------
    def done(self, state: SpeculativeState) -> bool:
        return len(state.active) == 0

    def result(self, state: SpeculativeState) -> torch.Tensor:
        return state.tokens
