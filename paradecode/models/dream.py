"""A Dream-compatible bidirectional transformer (Dream-org/Dream-v0-Instruct-7B / -Base-7B).

Dream is Qwen2 (q/k/v projections with biases, none on ``o_proj``, grouped-query heads,
RoPE with the config's ``rope_theta``, RMSNorm, SwiGLU) run without a causal mask. The
module tree mirrors Dream's ``modeling_dream.py`` (``model.embed_tokens``,
``model.layers.N.self_attn.*`` / ``.mlp.*`` / ``.input_layernorm`` /
``.post_attention_layernorm``, ``model.norm``, ``lm_head``) so a Dream checkpoint loads
unchanged. Norm, RoPE and the attention core are LLaDAModel's (the same math); the forward
takes the same cache hook, so every canvas cache policy serves it.

Two Dream conventions differ from LLaDA:

* **Shifted logits.** Dream was trained like an autoregressive model: the output at column
  i predicts the token at column i + 1. Its samplers therefore read column i's prediction
  from column i - 1 (``logits = cat([logits[:, :1], logits[:, :-1]], 1)``); this model
  returns logits already shifted that way, so every strategy reads them as LLaDA's. With a
  cache feeding a subset of columns, the predecessor of each requested column is fed too
  (``logits_shift = 1`` tells the canvas caches) and ``logits_from`` names it.
* **Padding mask.** Dream's ``diffusion_generate`` builds a (batch, 1, L, L) mask of
  real-token pairs and positions that count real tokens only. Real tokens see exactly that
  here too: a key-padding mask (padding keys hidden) and the same positions; only padding
  queries differ (they attend to real keys instead of producing NaN), which no real
  position reads.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from .checkpoint import load_model_dir, save_model_dir
from .llada import (_KERNELS, FusableProjections, LLaDAModel, RMSNorm, cached_attention, hooked_layers,
                    joined_layers, kernel_attention, qkv_heads, rope_cos_sin, set_attention_kernel)

__all__ = ["DreamConfig", "DreamModel"]

_POSITIVE = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "max_position_embeddings")


class DreamConfig(PretrainedConfig):
    """Dream's ``config.json`` fields; the defaults are Dream-v0-7B's published values."""

    model_type = "Dream"

    def __init__(
        self,
        vocab_size: int = 152064,
        hidden_size: int = 3584,
        intermediate_size: int = 18944,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 28,
        num_key_value_heads: Optional[int] = 4,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        rope_theta: float = 1000000.0,
        rope_scaling: Optional[dict] = None,
        attention_dropout: float = 0.0,
        mask_token_id: Optional[int] = 151666,
        pad_token_id: Optional[int] = 151643,
        bos_token_id: Optional[int] = 151643,
        eos_token_id: Optional[int] = 151643,
        **kwargs: Any,
    ) -> None:
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attention_dropout = attention_dropout
        self.mask_token_id = mask_token_id
        kwargs.setdefault("architectures", ["DreamModel"])
        super().__init__(
            vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    def check_supported(self) -> None:
        """Raise a clear error for Dream variants this implementation does not cover."""
        scaling = self.rope_scaling
        rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
        if self.hidden_act != "silu" or rope_type != "default":
            raise ValueError(
                f"DreamModel implements Dream-v0 (SwiGLU with silu, plain RoPE); this config asks for "
                f"hidden_act={self.hidden_act!r}, rope_scaling={scaling!r}. Load it through "
                f"HFDiffusionAdapter.dream(AutoModel.from_pretrained(..., trust_remote_code=True)) instead."
            )
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.n_kv_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must divide by num_attention_heads ({self.num_attention_heads}) "
                f"and num_attention_heads by num_key_value_heads ({self.n_kv_heads})."
            )


class DreamAttention(FusableProjections, nn.Module):
    """Qwen2 attention projections with Dream's names (biases on q/k/v only); q/k/v fuse into
    one matmul, biases joined too (:class:`~paradecode.models.llada.FusableProjections`)."""

    FUSE_GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj")}

    def __init__(self, config: DreamConfig, layer_idx: int) -> None:
        super().__init__()
        c = config
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = c.num_attention_heads, c.n_kv_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=True)
        self.v_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, c.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor], cache: Any = None) -> torch.Tensor:
        B, T, _ = h.shape
        fused = self.fused_groups()
        att = kernel_attention(self, self.layer_idx, h, cos, sin, cache, fused)
        if att is None:
            q, k, v, cos, sin = qkv_heads(self, h, cos, sin, fused)
            att = cached_attention(self.layer_idx, q, k, v, cos, sin, attn_mask, cache)
            att = att.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(att)


class DreamMLP(FusableProjections, nn.Module):
    """SwiGLU; gate and up fuse into one matmul."""

    FUSE_GROUPS = {"gate_up": ("gate_proj", "up_proj")}

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fused_groups()
        gate, up = fused["gate_up"](x) if fused else (self.gate_proj(x), self.up_proj(x))
        return self.down_proj(_KERNELS["swiglu"](gate, up))


class DreamDecoderLayer(nn.Module):
    """Pre-norm attention and MLP, Dream's (Qwen2's) layer."""

    def __init__(self, config: DreamConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = DreamAttention(config, layer_idx)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor], cache: Any = None) -> torch.Tensor:
        return self.run(x, None, cos, sin, attn_mask, cache)[0]

    @property
    def input_norm(self) -> RMSNorm:
        return self.input_layernorm

    def run(self, x: torch.Tensor, h: Optional[torch.Tensor], cos: torch.Tensor, sin: torch.Tensor,
            attn_mask: Optional[torch.Tensor], cache: Any = None,
            next_norm: Optional[RMSNorm] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The layer on ``x`` given its input norm ``h`` (None: made here); with ``next_norm``, also
        returns that norm of the output (``LLaDABlock.run``)."""
        att = self.self_attn(self.input_layernorm(x) if h is None else h, cos, sin, attn_mask, cache)
        x, h = self.post_attention_layernorm.residual(x, att)
        out = self.mlp(h)
        return (x + out, None) if next_norm is None else next_norm.residual(x, out)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, kv_heads * head_dim) value vectors of the layer input ``x`` (what dLLM-Cache's
        V-verify compares between steps), as ``LLaDABlock.values``."""
        return self.self_attn.v_proj(self.input_layernorm(x))


class _DreamBackbone(nn.Module):
    """``model.*`` of Dream's state dict."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DreamDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamModel(nn.Module):
    """Dream-v0 architecture; ``model(tokens, positions=..., cache=...) -> shifted logits``.

    The call is :class:`~paradecode.models.llada.LLaDAModel`'s (``positions``, ``cache``,
    ``attention_mask``, ``logits_range``); the logits at column i are Dream's prediction for
    column i (its output at column i - 1; column 0 keeps its own, as in Dream's samplers).
    ``logits_from`` (batch, n), given by a cache that feeds a subset of columns, lists the
    fed positions whose outputs give the n requested logits (each one's predecessor column)
    and replaces ``logits_range``.
    """

    config_class = DreamConfig
    supports_cache = True
    #: The output at column i predicts column i + logits_shift; canvas caches feed predecessors.
    logits_shift = 1
    #: The per-layer cache hooks (interfaces.LayerHooks) exist: ``elastic`` and ``dllm-cache`` use them.
    supports_layer_hooks = True

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        config.check_supported()
        self.config = config
        self.model = _DreamBackbone(config)
        self.join_residual_norms = True  # as LLaDAModel.join_residual_norms
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Fast-dLLM's Dream evaluation canvas (gen_length 256, block_length 32); sample()'s options override it.
        self.generation_defaults = {"gen_length": 256, "block_length": 32}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def mask_token_id(self) -> Optional[int]:
        return self.config.mask_token_id

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def fuse_projections(self) -> "DreamModel":
        """One matmul (bias included) for q/k/v and one for gate/up in every layer (same weights,
        same names; see :class:`~paradecode.models.llada.FusedLinears`). Call after ``.to(device, dtype)``."""
        for layer in self.model.layers:
            layer.self_attn.fuse_projections()
            layer.mlp.fuse_projections()
        return self

    def use_attention_kernel(self, kind: str = "triton") -> "DreamModel":
        """``"triton"``: a cached step's RoPE, KV write and attention in Triton kernels where the
        cache allows it (:func:`~paradecode.models.llada.kernel_attention`; a CUDA GPU)."""
        set_attention_kernel([layer.self_attn for layer in self.model.layers], kind, next(self.parameters()).device)
        return self

    # ---- forward ---------------------------------------------------------------------------
    #: Dream's positions are LLaDA's: 0.. per row, or with a padding mask and no cache the count
    #: of real tokens before each position (what Dream's ``diffusion_generate`` computes).
    default_positions = staticmethod(LLaDAModel.default_positions)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
        logits_range: Optional[tuple[int, int]] = None,
        logits_from: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
        if positions is None:
            positions = self.default_positions(input_ids, attention_mask, cache)
        if positions.shape != input_ids.shape:
            raise ValueError(
                f"positions {tuple(positions.shape)} must match input_ids {tuple(input_ids.shape)}."
            )
        h = self.hidden_states(input_ids, positions, cache, attention_mask)
        return self.logits_of(h, logits_range, logits_from)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The last layer's output (before ``model.norm``) for every fed position."""
        x = self.model.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        attn_mask = None
        if attention_mask is not None:
            # Key-padding mask (batch, 1, 1, K): real queries see the real keys of Dream's 4-D mask.
            attn_mask = attention_mask.bool()[:, None, None, :]
        if cache is not None:
            cache.begin_forward(positions)
        if getattr(cache, "layer_hooks", False):
            return hooked_layers(self.model.layers, x, cos, sin, attn_mask, cache, self.config.head_dim,
                                 self.config.rope_theta)
        x = joined_layers(self.model.layers, x, cos, sin, attn_mask, cache, self.join_residual_norms)
        if cache is not None:
            cache.end_forward()
        return x

    def logits_of(
        self,
        hidden: torch.Tensor,
        logits_range: Optional[tuple[int, int]] = None,
        logits_from: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Shifted logits of the requested columns: column i from the output at i - 1."""
        if logits_from is not None:
            src = logits_from.to(hidden.device)
            picked = hidden.gather(1, src[:, :, None].expand(-1, -1, hidden.shape[-1]))
            return self.lm_head_logits(picked)
        T = hidden.shape[1]
        start, end = logits_range if logits_range is not None else (0, T)
        if start >= 1:
            picked = hidden[:, start - 1 : end - 1]
        else:
            picked = torch.cat([hidden[:, :1], hidden[:, : max(end - 1, 0)]], dim=1)[:, : end - start]
        return self.lm_head_logits(picked)

    def lm_head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Unshifted logits of hidden states: ``model.norm`` then the output projection."""
        x = self.model.norm(hidden)
        if self.config.tie_word_embeddings:
            return F.linear(x, self.model.embed_tokens.weight)
        return self.lm_head(x)

    # ---- checkpoints -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, max_shard_bytes: Optional[int] = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` (sharded with an index when large)."""
        save_model_dir(self, directory, max_shard_bytes)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        torch_dtype: Optional[torch.dtype] = None,
        device: str | torch.device = "cpu",
    ) -> "DreamModel":
        """Load a Dream checkpoint directory (``config.json`` + safetensors, sharded with
        ``model.safetensors.index.json`` as Dream-v0 ships, or one file).

        A missing or malformed directory, config or weight file, missing, unexpected or
        wrongly-shaped weights raise ``ValueError`` naming the path and the keys.
        """
        return load_model_dir(cls, DreamConfig, directory, name="Dream", positive=_POSITIVE, torch_dtype=torch_dtype,
                              device=device, ignored=("auto_map", "model_type"))
