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
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .llada import _KERNELS

__all__ = ["LlamaLM", "check_supported", "SUPPORTED_TYPES"]

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


def _rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """LlamaRMSNorm (normalise in float32, cast back, then scale): LLaDA's ``rms_norm`` is the
    same arithmetic, so :func:`paradecode.models.llada.compile_elementwise` fuses both models'."""
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    return _KERNELS["rms_norm"](x, norm.weight, None, eps)


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    return t * cos + torch.cat((-t[..., half:], t[..., :half]), dim=-1) * sin


def _repeat_kv(t: torch.Tensor, rep: int) -> torch.Tensor:
    B, H, S, D = t.shape
    return t[:, :, None].expand(B, H, rep, S, D).reshape(B, H * rep, S, D)


class LlamaLM(nn.Module):
    """``(input_ids, positions, cache, num_logits) -> logits`` over ``hf_model``'s parameters.

    ``keep_ids`` (VocabTrim) restricts the LM head to those rows: the logits come back over
    ``len(keep_ids)`` tokens in that order, and the head reads K x d weights instead of V x d.
    The module holds references to the Hugging Face modules, not copies.
    """

    def __init__(self, hf_model: nn.Module, keep_ids: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        check_supported(hf_model)
        self.hf_model = hf_model
        self.config = hf_model.config
        body = hf_model.model
        self.layers = list(body.layers)
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

    @property
    def device(self) -> torch.device:
        return self.head_weight.device

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
        B, T = input_ids.shape
        x = self.hf_model.model.embed_tokens(input_ids)
        cos, sin = self.rope(positions, x.dtype)
        cache.begin_forward(positions)
        for i, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = _rms_norm(x, layer.input_layernorm)
            q = attn.q_proj(h).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            k, v, mask = cache.update(i, k, v, None)
            if self.n_kv != self.n_heads:  # GQA as transformers' repeat_kv (expand, no host sync)
                k, v = _repeat_kv(k, self.n_heads // self.n_kv), _repeat_kv(v, self.n_heads // self.n_kv)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
            x = x + attn.o_proj(a.transpose(1, 2).reshape(B, T, -1))
            h = _rms_norm(x, layer.post_attention_layernorm)
            x = x + mlp.down_proj(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        cache.end_forward()
        x = _rms_norm(x[:, -num_logits:], self.hf_model.model.norm)
        logits = F.linear(x, self.head_weight, self.head_bias)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits
