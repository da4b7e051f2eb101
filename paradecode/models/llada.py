"""A LLaDA-compatible bidirectional transformer.

The module tree mirrors LLaDA's published ``modeling_llada.py`` (``LLaDAModelLM`` ->
``model.transformer.{wte, blocks.N.*, ln_f, ff_out}``) so that the state-dict names of a
real LLaDA checkpoint load unchanged; the config fields are those of LLaDA's
``config.json``. The forward is our own: SDPA attention, RoPE at explicit positions, an
optional key-padding mask, and a cache hook that the cache policies of
``paradecode.caches`` plug into.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from .attention import sdpa
from .decode_attention import ATTENTION_KERNELS, check_available
from .checkpoint import load_model_dir, save_model_dir
from .split_k import SplitKPlan, plan_from_times, project, tune_split_k

__all__ = ["EAGER_KERNELS", "FusableProjections", "FusedLinears", "LLaDAConfig", "LLaDAModel", "compile_elementwise"]

# config.json sizes that must be >= 1 (checked by from_pretrained before anything is built)
_POSITIVE = ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_ratio", "mlp_hidden_size", "vocab_size",
             "embedding_size", "max_sequence_length")


class LLaDAConfig(PretrainedConfig):
    """Configuration with LLaDA's field names (``d_model``, ``n_heads``, ``mlp_hidden_size`` ...).

    Defaults are LLaDA-8B's published values, so ``LLaDAConfig()`` describes the 8B model.
    """

    model_type = "llada"

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: Optional[int] = 32,
        n_layers: int = 32,
        mlp_ratio: int = 4,
        mlp_hidden_size: Optional[int] = 12288,
        vocab_size: int = 126464,
        embedding_size: Optional[int] = 126464,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        include_bias: bool = False,
        include_qkv_bias: Optional[bool] = False,
        weight_tying: bool = False,
        activation_type: str = "silu",
        block_type: str = "llama",
        layer_norm_type: str = "rms",
        rope: bool = True,
        alibi: bool = False,
        scale_logits: bool = False,
        attention_layer_norm: bool = False,
        mask_token_id: Optional[int] = 126336,
        eos_token_id: Optional[int] = 126081,
        pad_token_id: Optional[int] = 126081,
        **kwargs: Any,
    ) -> None:
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_layers = n_layers
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size
        self.embedding_size = embedding_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.weight_tying = weight_tying
        self.activation_type = activation_type
        self.block_type = block_type
        self.layer_norm_type = layer_norm_type
        self.rope = rope
        self.alibi = alibi
        self.scale_logits = scale_logits
        self.attention_layer_norm = attention_layer_norm
        self.mask_token_id = mask_token_id
        kwargs.setdefault("architectures", ["LLaDAModelLM"])
        super().__init__(
            vocab_size=vocab_size, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs
        )

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def effective_n_kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden_mlp(self) -> int:
        return self.mlp_hidden_size or self.mlp_ratio * self.d_model

    @property
    def num_embeddings(self) -> int:
        return self.embedding_size or self.vocab_size

    def check_supported(self) -> None:
        """Raise a clear error for LLaDA variants this implementation does not cover."""
        unsupported = {
            "block_type": (self.block_type, "llama"),
            "layer_norm_type": (self.layer_norm_type, "rms"),
            "activation_type": (self.activation_type, "silu"),
            "rope": (self.rope, True),
            "alibi": (self.alibi, False),
            "attention_layer_norm": (self.attention_layer_norm, False),
        }
        bad = {k: v for k, (v, want) in unsupported.items() if v != want}
        if bad:
            raise ValueError(
                f"LLaDAModel implements the LLaDA-8B block (llama block, RMSNorm, SwiGLU with silu, "
                f"RoPE); this config asks for {bad}."
            )
        if self.d_model % self.n_heads or self.n_heads % self.effective_n_kv_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must divide by n_heads ({self.n_heads}) and n_heads by "
                f"n_kv_heads ({self.effective_n_kv_heads})."
            )


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, as LLaDA's ``RMSLayerNorm`` does."""

    def __init__(self, size: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _KERNELS["rms_norm"](x, self.weight, self.bias, self.eps)

    def residual(self, x: torch.Tensor, update: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x + update, self(x + update))``: a block's residual add and the next norm, one
        kernel under :func:`compile_elementwise` (eager: the same two steps as before)."""
        return _KERNELS["add_rms_norm"](x, update, self.weight, self.bias, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """LLaDA's RMSNorm: normalise in float32, cast back, then scale (and shift)."""
    x32 = x.float()
    x = weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return x + bias if bias is not None else x


def add_rms_norm(
    x: torch.Tensor, update: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual add (in the activation dtype) and :func:`rms_norm` of its result; both are
    returned, since the sum is the next residual."""
    x = x + update
    return x, rms_norm(x, weight, bias, eps)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's activation ``silu(gate) * up`` in the activation dtype (LLaDA's ``SiLU`` act then
    the product, as LLaDA's ``LLaMABlock`` computes it; Llama's and Qwen2's MLP too)."""
    return F.silu(gate) * up


def write_kv(
    k_buf: torch.Tensor, v_buf: torch.Tensor, index: tuple[torch.Tensor, ...], k: torch.Tensor, v: torch.Tensor
) -> None:
    """A static cache's write of one layer: ``k`` and ``v`` into ``k_buf`` / ``v_buf`` at
    ``index`` (advanced indices into the buffers, one entry per written element of ``k``).

    ``index_put_``, not ``scatter_``: compiled, inductor writes both buffers in place in one
    kernel over the new slots only, where a ``scatter_`` becomes a copy of the whole buffer."""
    k_buf.index_put_(index, k)
    v_buf.index_put_(index, v)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for explicit ``positions`` (batch, T), in float32 (LLaDA's full precision RoPE)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # (B, T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, hd)
    return emb.cos(), emb.sin()


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (LLaDA / Llama layout), computed in float32."""
    t32 = t.float()
    half = t32.shape[-1] // 2
    rotated = torch.cat((-t32[..., half:], t32[..., :half]), dim=-1)
    return (t32 * cos + rotated * sin).to(t.dtype)


def cached_attention(
    layer: int,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    attn_mask: Optional[torch.Tensor],
    cache: Any = None,
) -> torch.Tensor:
    """Bidirectional attention of (B, heads, T, hd) queries over (B, kv_heads, T, hd) keys/values
    with RoPE at the fed positions, the cache hook and grouped-query heads: the attention core
    every model with paradecode's cache hook shares (LLaDABlock, DreamAttention). ``cos`` None:
    q and k come rotated already (:func:`rope_joined`).

    A cache (the ``LayerKV`` protocol) merges this forward's keys/values of ``layer`` with the
    kept ones and returns the key mask that goes with them."""
    if cos is not None:
        rope = _KERNELS["rope"]
        q, k = rope(q, cos, sin), rope(k, cos, sin)
    if cache is not None:
        k, v, attn_mask = cache.update(layer, k, v, attn_mask)
        if getattr(cache, "layer_hooks", False):
            cache.layer_queries(layer, q, k)
    rep = q.shape[1] // k.shape[1]
    if rep != 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return sdpa(q, k, v, attn_mask)


def split_qkv(qkv: torch.Tensor, n_heads: int, n_kv: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """(q, k, v) as (B, T, heads * hd) views of a joined q/k/v projection's output (no copy)."""
    q_end, k_end = n_heads * head_dim, (n_heads + n_kv) * head_dim
    return qkv[..., :q_end], qkv[..., q_end:k_end], qkv[..., k_end:]


def rope_joined(qkv: torch.Tensor, n_heads: int, n_kv: int, head_dim: int, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v) as (B, heads, T, hd) from a fused q/k/v projection's output (B, T, (H + 2 Hkv) hd),
    with q and k rotated by one RoPE call over both (adjacent in the joined output): one kernel
    where two ran, the same arithmetic per element. Pass ``cos=None`` to :func:`cached_attention`."""
    B, T, _ = qkv.shape
    qk = qkv[..., : (n_heads + n_kv) * head_dim].view(B, T, n_heads + n_kv, head_dim).transpose(1, 2)
    qk = _KERNELS["rope"](qk, cos, sin)
    v = qkv[..., (n_heads + n_kv) * head_dim:].view(B, T, n_kv, head_dim).transpose(1, 2)
    return qk[:, :n_heads], qk[:, n_heads:], v


def qkv_heads(module: Any, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              fused: Optional[dict] = None) -> tuple[torch.Tensor, ...]:
    """(q, k, v, cos, sin) for :func:`cached_attention` from ``module``'s ``q_proj`` / ``k_proj`` /
    ``v_proj`` (and ``n_heads``, ``n_kv``, ``head_dim``): q/k/v as (B, heads, T, hd). With the
    module's fused groups (``fused``), one matmul and one RoPE call (:func:`rope_joined`); cos and
    sin then come back None, since q and k are rotated already."""
    if fused:
        return (*rope_joined(fused["qkv"].output(h), module.n_heads, module.n_kv, module.head_dim, cos, sin), None, None)
    B, T, _ = h.shape
    q = module.q_proj(h).view(B, T, module.n_heads, module.head_dim).transpose(1, 2)
    k = module.k_proj(h).view(B, T, module.n_kv, module.head_dim).transpose(1, 2)
    v = module.v_proj(h).view(B, T, module.n_kv, module.head_dim).transpose(1, 2)
    return q, k, v, cos, sin


def set_attention_kernel(modules: Any, kind: str, device: torch.device) -> None:
    """Set ``attention_kernel`` on every attention module (a model's ``use_attention_kernel``)."""
    if kind not in ATTENTION_KERNELS:
        raise ValueError(f"attention kernel must be one of {ATTENTION_KERNELS}, got {kind!r}.")
    if kind == "triton":
        check_available(device)
    for m in modules:
        m.attention_kernel = kind


def kernel_attention(module: Any, layer: int, h: torch.Tensor, cos: Optional[torch.Tensor],
                     sin: Optional[torch.Tensor], cache: Any, fused: Optional[dict]) -> Optional[torch.Tensor]:
    """(B, T, heads * hd): this layer's RoPE, cache write and attention in Triton kernels
    (:func:`~paradecode.models.decode_attention.canvas_attention`) when ``module`` was set to
    ``attention_kernel = "triton"`` and the cache serves this forward (``cache.can_attend``: a
    canvas cache's partial step with few fed tokens); None otherwise, and the caller runs
    :func:`qkv_heads` and :func:`cached_attention` (refreshes, layer hooks, no cache). ``fused``:
    the module's :meth:`~FusableProjections.fused_groups`, as the caller read it."""
    if getattr(module, "attention_kernel", "sdpa") != "triton" or cache is None or cos is None:
        return None
    can = getattr(cache, "can_attend", None)
    if can is None or not can(layer, h.shape[1]):
        return None
    H, Hkv, D = module.n_heads, module.n_kv, module.head_dim
    if fused:
        q, k, v = split_qkv(fused["qkv"].output(h), H, Hkv, D)
    else:
        q, k, v = module.q_proj(h), module.k_proj(h), module.v_proj(h)
    return cache.attend(layer, q, k, v, cos, sin, H, D ** -0.5)


def joined_layers(layers: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  attn_mask: Optional[torch.Tensor], cache: Any, join: bool) -> torch.Tensor:
    """The plain layer loop (no layer hooks), shared by LLaDA and Dream. With ``join`` each layer
    gives the next its normed input (``run(..., next_norm)``), the residual add and that norm made
    in one kernel under :func:`compile_elementwise`; each layer has ``run`` and ``input_norm``."""
    h = None
    for i, layer in enumerate(layers):
        next_norm = layers[i + 1].input_norm if join and i + 1 < len(layers) else None
        x, h = layer.run(x, h, cos, sin, attn_mask, cache, next_norm)
    return x


def hooked_layers(layers: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  attn_mask: Optional[torch.Tensor], cache: Any, head_dim: int, rope_theta: float) -> torch.Tensor:
    """The layer loop for a cache with ``layer_hooks`` (:class:`~paradecode.interfaces.LayerHooks`),
    shared by every model that offers them: before each layer the cache may record its input and
    change the rows it computes (a subset of the canvas, or the whole canvas from cached inputs;
    the RoPE tables follow the returned positions), and after it map the output back; inside,
    the layer hands the cache its queries. Each layer is called ``layer(x, cos, sin, mask, cache)``
    and has ``values(x)``."""
    for i, layer in enumerate(layers):
        x, positions = cache.layer_input(i, x, layer)
        if positions is not None:
            cos, sin = rope_cos_sin(positions, head_dim, rope_theta)
        x = cache.layer_output(i, layer(x, cos, sin, attn_mask, cache))
    cache.end_forward()
    return x


class FusedLinears:
    """Several ``nn.Linear`` that read the same input, computed as one matmul.

    The weights (and biases) move into one concatenated tensor and each module's parameters
    become views of it, so state-dict names, checkpoints and memory stay as they were. Moving
    the modules afterwards (``.to``) separates the views: :meth:`fresh` turns False and the
    caller must fall back to the separate matmuls (correct, just unfused): fuse after moving.
    """

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        self.linears = list(linears)
        self.sizes = [m.weight.shape[0] for m in self.linears]
        self.weight = self._join("weight")
        has_bias = [m.bias is not None for m in self.linears]
        if any(has_bias) and not all(has_bias):
            raise ValueError("FusedLinears joins linears that all have a bias or none do.")
        self.bias = self._join("bias") if all(has_bias) else None
        self._ptrs = [m.weight.data_ptr() for m in self.linears]

    def _join(self, kind: str) -> torch.Tensor:
        parts = [getattr(m, kind) for m in self.linears]
        joined = torch.cat([p.detach() for p in parts])
        offset = 0
        for m, p in zip(self.linears, parts):
            setattr(m, kind, nn.Parameter(joined[offset : offset + p.shape[0]], requires_grad=p.requires_grad))
            offset += p.shape[0]
        return joined

    def fresh(self) -> bool:
        """Whether every module's weight is still the view of the joined tensor it was made."""
        return all(m.weight.data_ptr() == p for m, p in zip(self.linears, self._ptrs))

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The joined output: each module's output side by side in the last dimension."""
        return F.linear(x, self.weight, self.bias)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.output(x).split(self.sizes, dim=-1)


class FusableProjections:
    """Mixin for a module whose ``nn.Linear`` children in each group of ``FUSE_GROUPS`` read the
    same input: :meth:`fuse_projections` joins each group (:class:`FusedLinears`), and
    :meth:`fused_groups` gives the joined groups to compute with, or None (not fused, or moved
    since: the separate matmuls are then the right ones)."""

    FUSE_GROUPS: dict[str, tuple[str, ...]] = {}

    def fuse_projections(self) -> None:
        self._fused = {g: FusedLinears([getattr(self, n) for n in names]) for g, names in self.FUSE_GROUPS.items()}

    def fused_groups(self) -> Optional[dict[str, FusedLinears]]:
        fused = getattr(self, "_fused", None)
        if not fused:
            return None
        if not all(f.fresh() for f in fused.values()):
            self._fused = None  # the parameters were moved or replaced: the joined copy is stale
            return None
        return fused


# The elementwise kernels the models (LLaDA, Dream, the Llama forward) call, eager by default;
# :func:`compile_elementwise` swaps in fused ones.
EAGER_KERNELS: dict[str, Any] = {"rms_norm": rms_norm, "rope": apply_rope, "swiglu": swiglu,
                                 "add_rms_norm": add_rms_norm, "write_kv": write_kv}
_KERNELS: dict[str, Any] = dict(EAGER_KERNELS)


def compile_elementwise(enable: bool = True, backend: str = "inductor", triton_kernels: bool = True) -> None:
    """Fuse each elementwise kernel of :data:`EAGER_KERNELS` (float32 RMSNorm, RoPE, SwiGLU's
    ``silu(gate) * up``, residual add + RMSNorm, a static cache's k and v write) into one
    kernel with ``torch.compile``.

    In eager mode RMSNorm and RoPE are ~7 elementwise kernels each that read and write float32
    copies of the activations; at batch 1 a forward is launch-bound, so every kernel counts.
    The arithmetic is the same (outputs match eager up to float rounding: a compiled kernel
    keeps bf16 intermediates in float32). Process-wide, since the kernels are module functions;
    ``compile_elementwise(False)`` restores every eager one.
    Pair it with :class:`paradecode.models.graphs.CUDAGraphModel`: called eagerly, the
    compiled functions' guard checks (~130 calls per forward) cost more than they save.

    ``triton_kernels`` (where Triton runs): RoPE and SwiGLU run as the hand-written kernels of
    :mod:`~paradecode.models.elementwise_triton` instead, which index whole rows where the
    compiled ones (every size symbolic) divide per element; other layouts fall back to the
    compiled kernels.
    """
    if not enable:
        _KERNELS.update(EAGER_KERNELS)
        return
    # Sizes 0 and 1 stay specialised under dynamic=True, so batch 1 / one token / a one-row refill
    # each compile their own entry; past dynamo's default limit of 8 per function, new shapes would
    # run the eager kernels (hit on a GPU by continuous batching's refills at several batch sizes).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    _KERNELS.update({name: torch.compile(fn, dynamic=True, backend=backend) for name, fn in EAGER_KERNELS.items()})
    if triton_kernels:
        from .elementwise_triton import rope_triton, swiglu_triton, triton

        if triton is not None:
            _KERNELS["rope"] = _first_of(rope_triton, _KERNELS["rope"])
            _KERNELS["swiglu"] = _first_of(swiglu_triton, _KERNELS["swiglu"])


def _first_of(kernel: Any, fallback: Any) -> Any:
    """``kernel``'s result, or ``fallback``'s where ``kernel`` returns None (a layout it does not
    cover) or where ``torch.compile`` traces the caller (a whole forward compiled: Inductor fuses
    the eager arithmetic there, with the shapes it specialises on)."""

    def run(*args: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return fallback(*args)
        out = kernel(*args)
        return fallback(*args) if out is None else out

    run.__name__ = getattr(kernel, "__name__", "kernel")
    return run


class LLaDABlock(FusableProjections, nn.Module):
    """One LLaDA 'llama' block: pre-norm attention and SwiGLU MLP with LLaDA's parameter names.

    :meth:`fuse_projections` computes q/k/v and the two SwiGLU input projections as one matmul
    each (:class:`FusableProjections`), and RoPE as one call over q and k (:func:`rope_joined`)."""

    FUSE_GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("ff_proj", "up_proj")}

    def __init__(self, config: LLaDAConfig, layer_id: int) -> None:
        super().__init__()
        c = config
        self.layer_id = layer_id
        self.n_heads, self.n_kv, self.head_dim = c.n_heads, c.effective_n_kv_heads, c.head_dim
        qkv_bias = bool(c.include_bias or c.include_qkv_bias)
        self.attn_norm = RMSNorm(c.d_model, c.rms_norm_eps)
        self.ff_norm = RMSNorm(c.d_model, c.rms_norm_eps)
        self.q_proj = nn.Linear(c.d_model, c.d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(c.d_model, self.n_kv * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(c.d_model, self.n_kv * self.head_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(c.d_model, c.d_model, bias=c.include_bias)
        self.ff_proj = nn.Linear(c.d_model, c.hidden_mlp, bias=c.include_bias)
        self.up_proj = nn.Linear(c.d_model, c.hidden_mlp, bias=c.include_bias)
        self.ff_out = nn.Linear(c.hidden_mlp, c.d_model, bias=c.include_bias)
        self.split_k: Optional[SplitKPlan] = None  # attn_out / ff_out matmuls split (LLaDAModel.use_split_k)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: Optional[torch.Tensor],
        cache: Any = None,
    ) -> torch.Tensor:
        return self.run(x, None, cos, sin, attn_mask, cache)[0]

    @property
    def input_norm(self) -> "RMSNorm":
        return self.attn_norm

    def run(
        self,
        x: torch.Tensor,
        h: Optional[torch.Tensor],
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: Optional[torch.Tensor],
        cache: Any = None,
        next_norm: Optional["RMSNorm"] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The block on ``x``, given ``h``, its attention norm, where the block before made it
        (None: made here). Returns the output and, with ``next_norm`` (the next block's attention
        norm), that norm of it: the residual add and the norm in one kernel under
        :func:`compile_elementwise`, where a separate add would be a kernel per layer."""
        B, T, C = x.shape
        if h is None:
            h = self.attn_norm(x)
        fused = self.fused_groups()
        att = kernel_attention(self, self.layer_id, h, cos, sin, cache, fused)
        if att is None:
            q, k, v, cos, sin = qkv_heads(self, h, cos, sin, fused)
            att = cached_attention(self.layer_id, q, k, v, cos, sin, attn_mask, cache).transpose(1, 2).reshape(B, T, C)
        x, h = self.ff_norm.residual(x, project(self.attn_out, att, self.split_k))
        gate, up = fused["gate_up"](h) if fused else (self.ff_proj(h), self.up_proj(h))
        out = project(self.ff_out, _KERNELS["swiglu"](gate, up), self.split_k)
        return (x + out, None) if next_norm is None else next_norm.residual(x, out)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, kv_heads * head_dim) value vectors of the layer input ``x`` (what dLLM-Cache's
        V-verify compares between steps; exposed so a cache needs no knowledge of the weights).
        Fused or not, ``v_proj``'s weight is the right one (a view of the joined tensor)."""
        return self.v_proj(self.attn_norm(x))


class _Backbone(nn.Module):
    """Holds ``transformer`` so parameter names read ``model.transformer.*`` as in LLaDA."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        modules: dict[str, nn.Module] = {
            "wte": nn.Embedding(config.num_embeddings, config.d_model),
            "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
            "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
        }
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(
                config.d_model, config.num_embeddings, bias=config.include_bias
            )
        self.transformer = nn.ModuleDict(modules)


class LLaDAModel(nn.Module):
    """LLaDA-8B architecture; ``model(tokens, positions=..., cache=...) -> logits``.

    Args of ``forward``:
        input_ids: (batch, T) token ids of the fed positions.
        positions: (batch, T) absolute positions used by RoPE; defaults to ``arange(T)``
            (or, with ``attention_mask``, the count of real tokens before each position, so a
            left-padded row sees the same positions as the unpadded one).
        cache: a cache-policy object (``paradecode.caches``) or None.
        attention_mask: (batch, K) 1 for real tokens, 0 for padding, over the attended keys; or
            (batch, T, K) bool, the keys each query attends to (``supports_pair_mask``; no cache,
            and give ``positions``).
        logits_range: (start, end) columns of the fed positions whose logits are wanted;
            skipping the LM head elsewhere saves a large share of a full-canvas step.
    """

    #: The per-layer cache hooks (interfaces.LayerHooks) exist: ``elastic`` and ``dllm-cache`` need them.
    supports_layer_hooks = True

    config_class = LLaDAConfig

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        config.check_supported()
        self.config = config
        self.model = _Backbone(config)
        #: Each block's last residual add and the next block's attention norm as one kernel (under
        #: compile_elementwise): one kernel fewer per layer. False runs them apart (a benchmark A/B).
        self.join_residual_norms = True
        self.reset_parameters()

    # ---- construction ----------------------------------------------------------------------
    def reset_parameters(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.model.transformer["blocks"]:
            nn.init.normal_(block.attn_out.weight, std=std / math.sqrt(2 * self.config.n_layers))
            nn.init.normal_(block.ff_out.weight, std=std / math.sqrt(2 * self.config.n_layers))

    @property
    def device(self) -> torch.device:
        return self.model.transformer["wte"].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.transformer["wte"].weight.dtype

    @property
    def mask_token_id(self) -> Optional[int]:
        return self.config.mask_token_id

    supports_cache = True
    supports_pair_mask = True

    def fuse_projections(self) -> "LLaDAModel":
        """One matmul for q/k/v and one for the SwiGLU inputs in every block (same weights,
        same names; see :class:`FusedLinears`). Call after ``.to(device, dtype)``."""
        for block in self.model.transformer["blocks"]:
            block.fuse_projections()
        return self

    def use_attention_kernel(self, kind: str = "triton") -> "LLaDAModel":
        """``"triton"``: a cached step's RoPE, KV write and attention in Triton kernels where the
        cache allows it (:func:`kernel_attention`; a CUDA GPU); ``"sdpa"``: back to PyTorch's."""
        set_attention_kernel(self.model.transformer["blocks"], kind, next(self.parameters()).device)
        return self

    def use_split_k(self, plan: Union[str, SplitKPlan, None] = "tune") -> "LLaDAModel":
        """Split the attention output and MLP down matmuls over their input features where that
        is faster (:mod:`paradecode.models.split_k`): ``"tune"`` times the splits on this GPU with
        the model's own weights (a few seconds, CUDA only), a :class:`SplitKPlan` is used as
        given, None turns splitting off. Tokens can differ from the unsplit model's (another
        summation order); call it before capturing graphs."""
        blocks = list(self.model.transformer["blocks"])
        if isinstance(plan, str):
            if plan != "tune":
                raise ValueError(f"use_split_k takes 'tune', a SplitKPlan or None, got {plan!r}.")
            times: dict = {}
            for name in ("attn_out", "ff_out"):
                times.update(tune_split_k([getattr(b, name).weight for b in blocks]))
            plan = plan_from_times(times)
            self.split_k_times = times
        elif plan is not None and not isinstance(plan, SplitKPlan):
            raise ValueError(f"use_split_k takes 'tune', a SplitKPlan or None, got {type(plan).__name__}.")
        for b in blocks:
            b.split_k = plan
        return self

    # ---- forward ---------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
        logits_range: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
        if positions is None:
            positions = self.default_positions(input_ids, attention_mask, cache)
        if positions.shape != input_ids.shape:
            raise ValueError(
                f"positions {tuple(positions.shape)} must match input_ids {tuple(input_ids.shape)}."
            )
        return self.logits_of(self.hidden_states(input_ids, positions, cache, attention_mask), logits_range)

    @staticmethod
    def default_positions(
        input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, cache: Any = None
    ) -> torch.Tensor:
        """Positions of a forward given none: 0.. per row, or with a padding mask and no cache
        the count of real tokens before each position (left padding shifts nothing)."""
        B, T = input_ids.shape
        if attention_mask is not None and cache is None:
            return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        return torch.arange(T, device=input_ids.device).expand(B, T)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: Any = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The last block's output (before ``ln_f``) for every fed position; ``forward``'s body
        without the LM head (CUDA graphs capture this part, whose shapes are fixed)."""
        tr = self.model.transformer
        x = tr["wte"](input_ids)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        attn_mask = None
        if attention_mask is not None:
            # Boolean key mask (batch, 1, 1, K): True = attend. Only built when padding exists.
            # A (batch, T, K) mask gives each query its own keys (WINO's shadow block).
            if attention_mask.dim() == 3:
                if cache is not None:
                    raise ValueError("a per-query (batch, T, K) attention_mask cannot be combined with a cache.")
                attn_mask = attention_mask.bool()[:, None]
            else:
                attn_mask = attention_mask.bool()[:, None, None, :]
        if cache is not None:
            cache.begin_forward(positions)
        if getattr(cache, "layer_hooks", False):
            return hooked_layers(tr["blocks"], x, cos, sin, attn_mask, cache, self.config.head_dim, self.config.rope_theta)
        x = joined_layers(tr["blocks"], x, cos, sin, attn_mask, cache, self.join_residual_norms)
        if cache is not None:
            cache.end_forward()
        return x

    def logits_of(self, hidden: torch.Tensor, logits_range: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Logits of the ``logits_range`` columns of ``hidden_states``' output (all by default):
        the part of the forward after the body (:class:`~paradecode.models.graphs.CUDAGraphModel`
        runs it eagerly after a replay)."""
        if logits_range is not None:
            hidden = hidden[:, logits_range[0] : logits_range[1]]
        return self.lm_head(hidden)

    def lm_head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of hidden states: ``ln_f``, the output projection, optional scaling."""
        tr = self.model.transformer
        x = tr["ln_f"](x)
        logits = F.linear(x, tr["wte"].weight) if self.config.weight_tying else tr["ff_out"](x)
        if self.config.scale_logits:
            logits = logits * (1 / math.sqrt(self.config.d_model))
        return logits

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
    ) -> "LLaDAModel":
        """Load a LLaDA checkpoint directory (``config.json`` + safetensors, sharded or not).

        A missing or malformed directory, config or weight file, missing, unexpected or
        wrongly-shaped weights and (for files we saved) altered bytes raise ``ValueError``
        naming the path and the keys.
        """
        return load_model_dir(cls, LLaDAConfig, directory, name="LLaDA", positive=_POSITIVE, torch_dtype=torch_dtype,
                              device=device)
