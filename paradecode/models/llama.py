"""A small Llama forward (gpt-fast style) over a Hugging Face Llama's own weights.

Speculative decoding needs caches whose rows have different lengths (each row accepts its own
number of drafts) and forwards of fixed shapes (so CUDA graphs can replay them).
transformers' dynamic cache has neither, and its static cache + ``torch.compile`` path failed
on our GPU (issue 15). This module runs the same arithmetic as ``LlamaForCausalLM`` (float32
RMSNorm, RoPE tables from the model's own ``inv_freq`` and ``attention_scaling`` — Llama-3
scaling included — GQA attention, SwiGLU) on the *same parameter tensors* (no copy), and
calls the layer protocol ``cache.update(layer, k, v, mask)`` (:class:`~paradecode.interfaces.LayerKV`)
so the cache decides what each layer attends to.

Llama-architecture models qualify: ``llama``, ``mistral`` without a sliding window, ``qwen2``
(q/k/v biases) — see :func:`check_supported`.

At batch 1 a decode forward is launch-bound (~30 small kernels per layer on a GPU), so
``fuse_projections=True`` trades kernels for nothing: q/k/v in one matmul and gate/up in one
(:class:`~paradecode.models.llada.FusedLinears`), RoPE of q and k in one call of the shared
elementwise kernel (one fused kernel under :func:`~paradecode.models.llada.compile_elementwise`),
grouped-query attention without copying the repeated keys/values, and the key mask made
additive once per forward. Both forwards call the shared table for SwiGLU and for each residual
add with the RMSNorm that reads it next (the MLP's with the next layer's input norm), so
``compile_elementwise`` makes each of those one kernel too (eager: the same arithmetic).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .decode_attention import ATTENTION_KERNELS, CACHE_MAX_TOKENS, check_available
from .llada import _KERNELS, FusedLinears, rope_joined, split_qkv

__all__ = ["LlamaLM", "check_supported", "gqa_mode", "SUPPORTED_TYPES", "GQA_MODES"]

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")
_STATIC_ROPE = ("default", "llama3", "linear", "yarn")  # inv_freq fixed at load time


def _rope_type(config: Any) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if isinstance(params, dict) and params and not {"rope_type", "type"} & set(params):
        params = next(iter(params.values()), {}) if isinstance(next(iter(params.values())), dict) else params
    return str(params.get("rope_type", params.get("type", "default"))) if isinstance(params, dict) else "default"


def check_supported(hf_model: nn.Module) -> None:
    """Raise ``ValueError`` naming what is missing when ``hf_model`` is not a Llama-architecture LM."""
    cfg = getattr(hf_model, "config", None)
    kind = getattr(cfg, "model_type", None)
    what = f"{type(hf_model).__name__} (model_type {kind!r})"
    if kind not in SUPPORTED_TYPES:
        raise ValueError(
            f"speculative decoding runs Llama-architecture causal LMs ({', '.join(SUPPORTED_TYPES)}); got {what}. "
            "Load a LlamaForCausalLM-style checkpoint with AutoModelForCausalLM."
        )
    body = getattr(hf_model, "model", None)
    layers = getattr(body, "layers", None)
    if layers is None or getattr(hf_model, "lm_head", None) is None or not hasattr(body, "rotary_emb"):
        raise ValueError(f"{what} lacks model.layers / model.rotary_emb / lm_head; it is not a Llama-layout model.")
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        raise ValueError(f"{what} uses sliding-window attention, which this Llama forward does not implement.")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"{what} uses hidden_act={cfg.hidden_act!r}; this Llama forward implements SwiGLU (silu).")
    if hasattr(layers[0].self_attn, "q_norm"):
        raise ValueError(f"{what} normalises q/k per head (Qwen3-style), which this Llama forward does not implement.")
    rope = _rope_type(cfg)
    if rope not in _STATIC_ROPE:
        raise ValueError(f"{what} uses rope_type {rope!r}, whose frequencies change with length; not supported.")


def _eps(norm: nn.Module) -> float:
    return getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))


def _rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """LlamaRMSNorm (normalise in float32, cast back, then scale): LLaDA's ``rms_norm`` is the
    same arithmetic, so :func:`paradecode.models.llada.compile_elementwise` fuses both models'."""
    return _KERNELS["rms_norm"](x, norm.weight, None, _eps(norm))


def _residual(x: torch.Tensor, update: torch.Tensor, norm: Optional[nn.Module]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``x + update`` and, when ``norm`` (the norm that reads it next) is given, its output: one
    kernel under ``compile_elementwise`` (LLaDA's ``add_rms_norm``; eager, the same add then norm)."""
    if norm is None:
        return x + update, None
    return _KERNELS["add_rms_norm"](x, update, norm.weight, None, _eps(norm))


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    return t * cos + torch.cat((-t[..., half:], t[..., :half]), dim=-1) * sin


def _repeat_kv(t: torch.Tensor, rep: int) -> torch.Tensor:
    B, H, S, D = t.shape
    return t[:, :, None].expand(B, H, rep, S, D).reshape(B, H * rep, S, D)


GQA_MODES = ("expand", "native", "pack")


def gqa_mode(n_heads: int, n_kv: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> str:
    """How grouped-query attention runs, decided once per model (no per-call check or sync).

    ``native``: ``F.scaled_dot_product_attention(enable_gqa=True)``, where this torch has it and,
    on CUDA, its memory-efficient kernel (flash takes no mask; this one takes our additive mask)
    accepts it — otherwise SDPA would fall back to its unfused math kernel. ``pack``: the ``rep`` query heads
    that share a key/value head become ``rep`` times more queries of that head (the
    FlashDecoding layout): any kernel, no copy of the keys/values. ``expand`` (transformers'
    ``repeat_kv``, copying K and V to every query head) is what the unfused forward keeps.
    """
    if n_kv == n_heads:
        return "expand"  # nothing is repeated
    q = torch.zeros(1, n_heads, 2, head_dim, dtype=dtype, device=device)
    kv = torch.zeros(1, n_kv, 8, head_dim, dtype=dtype, device=device)
    mask = torch.zeros(1, 1, 2, 8, dtype=dtype, device=device)  # the additive mask the fused forward passes
    try:
        if device.type == "cuda":
            from torch.backends.cuda import SDPAParams, can_use_efficient_attention

            return "native" if can_use_efficient_attention(SDPAParams(q, kv, kv, mask, 0.0, False, True), False) else "pack"
        F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask, enable_gqa=True)
        return "native"
    except (ImportError, TypeError, RuntimeError):  # an older torch: no enable_gqa / SDPAParams arity
        return "pack"


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], scale: float,
            mode: str, packed_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """SDPA of (B, H, T, hd) queries over (B, H_kv, S, hd) keys/values, as (B, T, H * hd).

    ``packed_mask`` (mode ``pack`` only) is ``mask`` with its query rows repeated per head of a
    group (:func:`_pack_mask`, built once per forward)."""
    B, H, T, D = q.shape
    rep = H // k.shape[1]
    if rep == 1 or mode == "expand":
        if rep != 1:
            k, v = _repeat_kv(k, rep), _repeat_kv(v, rep)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    elif mode == "native":
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    else:  # pack: query head kv * rep + r is row r * T + t of key/value head kv
        qp = q.reshape(B, H // rep, rep * T, D)
        a = F.scaled_dot_product_attention(qp, k, v, attn_mask=packed_mask, scale=scale)
        return a.unflatten(2, (rep, T)).permute(0, 3, 1, 2, 4).reshape(B, T, H * D)
    return a.transpose(1, 2).reshape(B, T, H * D)


def check_attention(attention: str, fuse_projections: bool) -> str:
    """``attention`` if :class:`LlamaLM` can run it; a clear error otherwise. ``"sdpa"``: RoPE,
    the cache write and ``F.scaled_dot_product_attention``, one kernel each. ``"triton"``: the
    three in one kernel (:mod:`paradecode.models.decode_attention`), inside the fused forward."""
    if attention not in ATTENTION_KERNELS:
        raise ValueError(f"attention must be one of {ATTENTION_KERNELS}, got {attention!r}.")
    if attention == "triton" and not fuse_projections:
        raise ValueError("attention='triton' runs inside the fused forward (it reads the joined q/k/v output): "
                         "pass fuse_projections=True as well, or leave attention at 'sdpa'.")
    return attention


def _additive_mask(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The boolean key mask as the additive one (0 / -inf) SDPA would convert it to in every
    layer (two kernels each); built once per forward instead."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask, 0.0, float("-inf")).to(dtype)


def _pack_mask(mask: Optional[torch.Tensor], rep: int) -> Optional[torch.Tensor]:
    """(B, 1, T, S) key mask -> (B, 1, rep * T, S), the rows of :func:`_attend`'s packed queries
    (a view without a copy for one-token forwards)."""
    if mask is None:
        return None
    B, one, T, S = mask.shape
    return mask[:, :, None].expand(B, one, rep, T, S).reshape(B, one, rep * T, S)


class LlamaLM(nn.Module):
    """``(input_ids, positions, cache, num_logits) -> logits`` over ``hf_model``'s parameters.

    ``keep_ids`` (VocabTrim) restricts the LM head to those rows: the logits come back over
    ``len(keep_ids)`` tokens in that order, and the head reads K x d weights instead of V x d.
    The module holds references to the Hugging Face modules, not copies.

    ``fuse_projections`` (off by default; off, the forward is unchanged) takes the fast path:
    each layer's q/k/v and gate/up ``nn.Linear`` are joined into one weight (and bias) per group
    by :class:`~paradecode.models.llada.FusedLinears`, which rebinds the Hugging Face modules'
    parameters as views of the joined tensor — no extra memory (a copy would add every q/k/v and
    gate/up weight again: ~9.1 GB at Llama-3.1-8B in bf16), same state-dict names, and
    :meth:`weight_bytes` unchanged. Moving the model afterwards separates the views; the forward
    then notices and runs the separate matmuls (correct, unfused). q and k are rotated in one
    call of ``_KERNELS["rope"]`` (LLaDA's RoPE: the rotation in float32 as Meta's Llama and
    gpt-fast do, where transformers rounds it in bf16, so bf16 logits differ from the unfused
    ones by rounding; float32 ones agree), and grouped-query attention runs as
    :func:`gqa_mode` picks (no copy of the repeated keys/values). ``attention="triton"`` (with
    ``fuse_projections``; a CUDA GPU and Triton) does each layer's RoPE, cache write and attention
    in one kernel (:func:`check_attention`).
    """

    def __init__(self, hf_model: nn.Module, keep_ids: Optional[torch.Tensor] = None,
                 fuse_projections: bool = False, attention: str = "sdpa") -> None:
        super().__init__()
        check_supported(hf_model)
        self.attention = check_attention(attention, fuse_projections)
        self.hf_model = hf_model
        self.config = hf_model.config
        body = hf_model.model
        self.layers = list(body.layers)
        # The norm that reads each layer's output next (the next layer's input norm; the head
        # normalises the last rows itself): the MLP's residual add and that norm are one call.
        self._next_norm: list[Optional[nn.Module]] = [layer.input_layernorm for layer in self.layers[1:]] + [None]
        first = self.layers[0].self_attn
        self.head_dim = int(getattr(first, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads)
        self.n_heads = int(self.config.num_attention_heads)
        self.n_kv = int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)
        self.scaling = float(getattr(first, "scaling", self.head_dim ** -0.5))
        rotary = body.rotary_emb
        self.register_buffer("inv_freq", rotary.inv_freq.detach().float().clone(), persistent=False)
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        head = hf_model.lm_head
        self.vocab_size = int(head.weight.shape[0])
        self.keep_ids: Optional[torch.Tensor] = None
        weight, bias = head.weight.detach(), head.bias.detach() if head.bias is not None else None
        if keep_ids is not None:
            keep_ids = keep_ids.to(head.weight.device).long()
            self.keep_ids = keep_ids
            # A copy of the kept rows only (the trimmed head is the point of VocabTrim).
            weight, bias = weight[keep_ids].clone(), bias[keep_ids].clone() if bias is not None else None
        self.register_buffer("head_weight", weight, persistent=False)
        self.register_buffer("head_bias", bias, persistent=False)
        self._softcap = getattr(self.config, "final_logit_softcapping", None)
        self.fuse_projections = bool(fuse_projections)
        self._fused: Optional[list[tuple[FusedLinears, FusedLinears]]] = None
        self.gqa = "expand"  # see gqa_mode; tests may set another mode
        if self.fuse_projections:
            with torch.inference_mode(False):  # plain parameters, usable by the model's own forward later
                self._fused = _joined_projections(hf_model)
            self.gqa = gqa_mode(self.n_heads, self.n_kv, self.head_dim, weight.dtype, weight.device)
        if self.attention == "triton":
            check_available(weight.device)

    @property
    def device(self) -> torch.device:
        return self.head_weight.device

    @property
    def fused(self) -> bool:
        """Whether the joined q/k/v and gate/up weights are in use (``fuse_projections`` and the
        parameters not moved since: a moved model runs the separate matmuls)."""
        if self._fused and not all(a.fresh() and b.fresh() for a, b in self._fused):
            self._fused = None  # stale copy: the modules' parameters are no longer its views
        return bool(self._fused)

    @property
    def dtype(self) -> torch.dtype:
        return self.head_weight.dtype

    @property
    def out_size(self) -> int:
        """Size of the logits this model returns (the trimmed size under VocabTrim)."""
        return self.vocab_size if self.keep_ids is None else int(self.keep_ids.numel())

    def weight_bytes(self) -> int:
        """Bytes of weights one decode step reads (the embedding reads one row: not counted)."""
        n = sum(p.numel() * p.element_size() for layer in self.layers for p in layer.parameters())
        n += self.hf_model.model.norm.weight.numel() * self.hf_model.model.norm.weight.element_size()
        return n + self.head_weight.numel() * self.head_weight.element_size()

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (B, 1, T, hd) as LlamaRotaryEmbedding computes them (float32, then cast)."""
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        return (emb.cos() * self.rope_scale).to(dtype), (emb.sin() * self.rope_scale).to(dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: Any, num_logits: int = 1) -> torch.Tensor:
        """Logits (B, num_logits, out_size) of the last ``num_logits`` fed positions.

        ``cache`` gets ``begin_forward(positions)``, one ``update(layer, k, v, None)`` per layer
        (it returns the keys/values to attend to and the boolean key mask) and ``end_forward()``.
        """
        return self.path()(input_ids, positions, cache, num_logits)

    def path(self) -> Any:
        """The forward a call takes now: the fused one while the joined weights are in use, else
        the plain one. Decided in Python, outside any compiled region (the check compares data
        pointers, which ``torch.compile`` cannot trace)."""
        return self._forward_fused if self.fused else self._forward_plain

    def _forward_plain(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: Any, num_logits: int) -> torch.Tensor:
        """:meth:`forward` with the model's own separate projections (transformers' arithmetic)."""
        B, T = input_ids.shape
        x = self.hf_model.model.embed_tokens(input_ids)
        cos, sin = self.rope(positions, x.dtype)
        cache.begin_forward(positions)
        h = _rms_norm(x, self.layers[0].input_layernorm)
        for i, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            q = attn.q_proj(h).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            k, v, mask = cache.update(i, k, v, None)
            if self.n_kv != self.n_heads:  # GQA as transformers' repeat_kv (expand, no host sync)
                k, v = _repeat_kv(k, self.n_heads // self.n_kv), _repeat_kv(v, self.n_heads // self.n_kv)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
            x, h = _residual(x, attn.o_proj(a.transpose(1, 2).reshape(B, T, -1)), layer.post_attention_layernorm)
            x, h = _residual(x, mlp.down_proj(_KERNELS["swiglu"](mlp.gate_proj(h), mlp.up_proj(h))), self._next_norm[i])
        cache.end_forward()
        return self._head(x, num_logits)

    def _forward_fused(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: Any, num_logits: int) -> torch.Tensor:
        """:meth:`forward` with the joined matmuls, one RoPE call for q and k, copy-free GQA and
        the key mask made additive once per forward (not by SDPA in every layer)."""
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        # the kernel is for a step's few tokens; a prompt's forward takes SDPA
        kernel = self.attention == "triton" and input_ids.shape[1] <= CACHE_MAX_TOKENS
        x = self.hf_model.model.embed_tokens(input_ids)
        cos, sin = self.rope(positions, torch.float32)  # float32 tables: LLaDA's RoPE rotates in float32
        cache.begin_forward(positions, build_mask=not kernel)
        mask_src: Any = ()
        bias = packed = None
        h = _rms_norm(x, self.layers[0].input_layernorm)
        for i, (layer, (qkv, gate_up)) in enumerate(zip(self.layers, self._fused)):
            if kernel:  # RoPE, the cache write and attention in one kernel
                q, k, v = split_qkv(qkv.output(h), H, Hkv, D)
                a = cache.attend(i, q, k, v, cos, sin, H, self.scaling)
            else:
                q, k, v = rope_joined(qkv.output(h), H, Hkv, D, cos, sin)
                k, v, mask = cache.update(i, k, v, None)
                if mask is not mask_src:  # the cache's mask is one tensor per forward: convert it once
                    mask_src, bias = mask, _additive_mask(mask, q.dtype)
                    packed = _pack_mask(bias, H // Hkv) if self.gqa == "pack" else None
                a = _attend(q, k, v, bias, self.scaling, self.gqa, packed)
            x, h = _residual(x, layer.self_attn.o_proj(a), layer.post_attention_layernorm)
            x, h = _residual(x, layer.mlp.down_proj(_KERNELS["swiglu"](*gate_up(h))), self._next_norm[i])
        cache.end_forward()
        return self._head(x, num_logits)

    def _head(self, x: torch.Tensor, num_logits: int) -> torch.Tensor:
        x = _rms_norm(x[:, -num_logits:], self.hf_model.model.norm)
        logits = F.linear(x, self.head_weight, self.head_bias)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits


_JOINED = "_paradecode_joined_projections"


def _joined_projections(hf_model: nn.Module) -> list[tuple[FusedLinears, FusedLinears]]:
    """Each layer's joined (q/k/v, gate/up) linears, kept on ``hf_model`` so every wrapper of one
    model (the draft with and without VocabTrim) shares them: joining again would rebind the
    parameters and leave the other wrappers' joined copies stale."""
    joined = hf_model.__dict__.get(_JOINED)
    if joined is None or not all(a.fresh() and b.fresh() for a, b in joined):
        joined = hf_model.__dict__[_JOINED] = [_fuse_layer(i, layer) for i, layer in enumerate(hf_model.model.layers)]
    return joined


def _fuse_layer(i: int, layer: nn.Module) -> tuple[FusedLinears, FusedLinears]:
    """Join layer ``i``'s q/k/v and gate/up linears (a clear error where they cannot be joined)."""
    attn, mlp = layer.self_attn, layer.mlp
    groups = ([attn.q_proj, attn.k_proj, attn.v_proj], [mlp.gate_proj, mlp.up_proj])
    for group in groups:
        ws = [m.weight for m in group]
        if not all(isinstance(m, nn.Linear) for m in group) or len({(w.device, w.dtype) for w in ws}) != 1:
            raise ValueError(
                f"fuse_projections joins each layer's q/k/v and gate/up nn.Linear weights into one tensor, but in "
                f"layer {i} they are {[type(m).__name__ for m in group]} on {sorted({str(w.device) for w in ws})} "
                f"in {sorted({str(w.dtype) for w in ws})}; put the model on one device and dtype "
                "(no quantised or split layers) or leave fuse_projections off."
            )
    return FusedLinears(groups[0]), FusedLinears(groups[1])
