"""VAR next-scale generation as a step-loop strategy: one step = one scale.

A step asks the VAR for the logits of the next scale (through the loop's caller, which applies
the role's KV cache), mixes the conditional and unconditional rows with VAR's ramped guidance,
samples the scale's tokens with top-k / top-p, adds them to ``f_hat`` through the VQ-VAE's
residual quantizer and prepares the next scale's input. This is ``VAR.autoregressive_infer_cfg`` of FoundationVision/VAR
(defaults cfg 1.5, top_k 0, top_p 0; its demo uses cfg 4, top_k 900, top_p 0.95), split so that
the loop can time, count and cache every scale.

>>> out = paradecode.vision.generate(var, class_labels, seed=0, cfg=4.0, top_k=900, top_p=0.95)
>>> out.images, out.trace.extra("kv_bytes")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..caches.scalekv import ASIRecorder, ScaleKVConfig, ScaleKVPlan
from ..caches.var_kv import VARKVCache
from ..config import build_config
from ..inputs import make_generator
from ..interfaces import ModelCall, Request, Strategy
from .var import VAR
from .vqvae import VQVAE

__all__ = [
    "VARSampleConfig", "VARState", "VARStrategy", "cfg_mix",
    "filter_top_k_top_p", "sample_filtered", "sample_top_k_top_p", "smooth_embedding", "calibrate_scalekv",
]

PerScale = Union[int, float, Sequence[int], Sequence[float]]


def cfg_mix(logits: torch.Tensor, cfg: float, si: int, num_scales: int) -> torch.Tensor:
    """VAR's guidance ramp: t = cfg * si / (S - 1); (1 + t) * cond - t * uncond."""
    B = logits.shape[0] // 2
    t = cfg * si / (num_scales - 1)
    return (1 + t) * logits[:B] - t * logits[B:]


def filter_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """A copy of (B, l, V) logits with VAR's top-k / top-p filtering (dropped entries at -inf).

    top-k keeps every logit >= the k-th largest (ties survive); top-p drops the low tail whose
    cumulative probability is <= 1 - top_p (the top token always stays).
    """
    V = logits.shape[-1]
    logits = logits.clone()
    if top_k > 0:
        kth = logits.topk(min(top_k, V), dim=-1).values.amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < kth, float("-inf"))
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits.masked_fill_(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return logits


def sample_filtered(
    logits: torch.Tensor, temperature: float = 1.0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Sample (B, l) ids from filtered logits divided by ``temperature`` (CoDe's addition; 1 in VAR)."""
    B, l, V = logits.shape
    if temperature != 1.0:
        logits = logits / temperature
    probs = logits.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(B, l)


def sample_top_k_top_p(
    logits: torch.Tensor,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """VAR's ``sample_with_top_k_top_p_``: filter (:func:`filter_top_k_top_p`), then sample."""
    return sample_filtered(filter_top_k_top_p(logits, top_k, top_p), temperature, generator)


def smooth_embedding(
    filtered: torch.Tensor, embedding: torch.Tensor, si: int, num_scales: int, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """VAR's ``more_smooth`` (visualisation only): a soft code mix, Gumbel-softmax of the filtered
    logits sharpened by (1 + r) at temperature max(0.27 (1 - 0.95 r), 0.005), r = si / (S - 1)."""
    r = si / (num_scales - 1)
    tau = max(0.27 * (1 - r * 0.95), 0.005)
    gumbels = -torch.empty_like(filtered).exponential_(generator=generator).log()
    return ((filtered * (1 + r) + gumbels) / tau).softmax(-1) @ embedding.unsqueeze(0)


def _per_scale(value: PerScale, si: int) -> Any:
    return value[si] if isinstance(value, (list, tuple)) else value


@dataclass
class VARSampleConfig:
    """Sampling options of ``autoregressive_infer_cfg`` (its defaults).

    ``top_k`` and ``temperature`` may be one value or one per scale (CoDe's script uses
    top_k 600 and temperature 1.1 on the first 7 scales, 1.0 after). ``use_cache=False``
    re-encodes the whole prefix every scale (the uncached reference for tests).
    ``more_smooth`` is the reference's visualisation option (soft Gumbel mixes of codes; not
    for FID), off by default as there.
    """

    cfg: float = 1.5
    top_k: Union[int, tuple] = 0
    top_p: float = 0.0
    temperature: Union[float, tuple] = 1.0
    use_cache: bool = True
    more_smooth: bool = False

    def __post_init__(self) -> None:
        if self.cfg < 0:
            raise ValueError(f"cfg must be >= 0, got {self.cfg}.")
        for name in ("top_k", "temperature"):
            v = getattr(self, name)
            if isinstance(v, list):
                setattr(self, name, tuple(v))
        ks = self.top_k if isinstance(self.top_k, tuple) else (self.top_k,)
        if any(int(k) != k or k < 0 for k in ks):
            raise ValueError(f"top_k must be a non-negative integer (or one per scale), got {self.top_k}.")
        if not 0 <= self.top_p < 1:
            raise ValueError(f"top_p must be in [0, 1), got {self.top_p}.")
        ts = self.temperature if isinstance(self.temperature, tuple) else (self.temperature,)
        if any(t <= 0 for t in ts):
            raise ValueError(f"temperature must be > 0 (or one per scale), got {self.temperature}.")


@dataclass
class VARState:
    labels: torch.Tensor  # (B,) class ids (num_classes = unconditional)
    vae: VQVAE
    f_hat: torch.Tensor  # (B, Cvae, H, W) accumulated feature map
    num_scales: int
    si: int = 0  # the scale generated next
    next_input: Optional[torch.Tensor] = None  # (B, pn*pn, Cvae) input of scale si (None at 0)
    hub: list = field(default_factory=list)  # inputs of scales 1..si, for prefix passes
    tokens: list = field(default_factory=list)  # sampled ids per scale, (B, pn*pn)
    generator: Optional[torch.Generator] = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]


class VARStep:
    """The callable the loop runs for a VAR: one scale per call (``VAR.step``)."""

    supports_cache = True

    def __init__(self, var: VAR) -> None:
        self.var = var

    @property
    def device(self) -> torch.device:
        return self.var.device

    def __call__(self, inputs: Optional[torch.Tensor], **kw: Any) -> torch.Tensor:
        return self.var.step(x_BlCv=inputs, **kw)


def _holds_bool(values: Any) -> bool:
    """True for a bool, a bool tensor/array or a list holding one (``torch.as_tensor([True])``
    would otherwise pass as label 1)."""
    if isinstance(values, (bool, np.bool_)):
        return True
    if isinstance(values, torch.Tensor):
        return values.dtype == torch.bool
    if isinstance(values, np.ndarray):
        return values.dtype == np.bool_
    if isinstance(values, (list, tuple)):
        return any(_holds_bool(v) for v in values)
    return False


def _check_var(model: Any, what: str) -> VAR:
    if not isinstance(model, VAR):
        raise ValueError(f"{what} must be a paradecode.vision.VAR, got {type(model).__name__}.")
    return model


class VARStrategy(Strategy[VARState]):
    """VAR next-scale prediction: one scale per step, KV cache across scales, ramped CFG."""

    name = "var"
    family = "var"
    description = "VAR next-scale prediction (one scale per step, KV cache, ramped CFG, top-k/top-p)"
    Config = VARSampleConfig
    runtime_options = ("vae",)

    # ---- setup -----------------------------------------------------------------------------------
    def setup(self, model: Any, vae: Optional[VQVAE] = None, **_: Any) -> tuple[dict, dict]:
        var = _check_var(model, "model")
        vae = self._resolve_vae(var, vae)
        self._check_top_k_len(var)
        self._num_classes = var.num_classes
        self._vae = vae
        return {"model": VARStep(var)}, {"vae": vae}

    def default_caches(self, models: dict[str, Any]) -> dict[str, Any]:
        """VAR's full KV cache per model (none with ``use_cache=False``)."""
        return {role: VARKVCache() for role in self.roles} if self.config.use_cache else {}

    def calibrate_scalekv(self, var: VAR, config: ScaleKVConfig) -> ScaleKVPlan:
        """A ScaleKV plan for ``var`` calibrated with this strategy's sampling options."""
        c = self.config
        return calibrate_scalekv(var, self._vae, config=config, cfg=c.cfg, top_k=c.top_k, top_p=c.top_p, temperature=c.temperature)

    def _resolve_vae(self, var: VAR, vae: Optional[VQVAE]) -> VQVAE:
        if vae is not None and not isinstance(vae, VQVAE):
            raise TypeError(
                f"vae must be a paradecode.vision.VQVAE (e.g. VQVAE.from_pretrained(path)) or None for the VAR's "
                f"own, got {type(vae).__name__} {vae!r:.60}."
            )
        vae = vae if vae is not None else var.vae
        if vae is None:
            raise ValueError("VAR generation needs the VQ-VAE: pass vae=... or build the VAR with VAR(config, vae=vae).")
        var._check_vae(vae)
        return vae

    def _check_top_k_len(self, var: VAR) -> None:
        S = len(var.patch_nums)
        for name in ("top_k", "temperature"):
            v = getattr(self.config, name)
            if isinstance(v, tuple) and len(v) != S:
                raise ValueError(f"{name} has {len(v)} values but the model has {S} scales; give one or {S}.")

    def prepare_inputs(
        self, prompt_ids: Any, attention_mask: Any, pad_id: int, device: Any, vocab_size: Optional[int] = None
    ) -> tuple[torch.Tensor, None]:
        """Class labels -> (B, 1) LongTensor; -1 means unconditional (the null class). The
        labels are bounded by the model's classes, not by ``vocab_size`` (its codebook)."""
        if attention_mask is not None:
            raise ValueError("attention_mask does not apply to class-conditional VAR generation.")
        if _holds_bool(prompt_ids):
            raise TypeError(f"class_labels must be int class ids, got bools {prompt_ids!r:.60}; True is not a class.")
        try:
            labels = torch.as_tensor(prompt_ids)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"class_labels must be an int, a list of ints or an integer tensor of class ids, got "
                f"{type(prompt_ids).__name__} {prompt_ids!r:.60}."
            ) from None
        if labels.dim() == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.dim() == 0:
            labels = labels[None]
        if labels.dim() != 1 or labels.numel() == 0 or labels.is_floating_point():
            raise ValueError(f"class_labels must be a non-empty 1-D list/tensor of ints, got shape {tuple(labels.shape)}.")
        n = self._num_classes
        if bool(((labels < -1) | (labels >= n)).any()):
            raise ValueError(f"class_labels must be in [0, {n - 1}] (or -1 for unconditional), got {labels.tolist()}.")
        labels = torch.where(labels < 0, torch.full_like(labels, n), labels).long()
        return labels.to(device or "cpu")[:, None], None

    # ---- start -----------------------------------------------------------------------------------
    def start(self, prompt_ids: torch.Tensor, *, vae: VQVAE, generator: Optional[torch.Generator] = None, **_: Any) -> VARState:
        labels = prompt_ids[:, 0]
        pn = vae.config.v_patch_nums[-1]
        f_hat = torch.zeros(labels.shape[0], vae.Cvae, pn, pn, device=labels.device)
        return VARState(
            labels=labels, vae=vae, f_hat=f_hat, num_scales=len(vae.config.v_patch_nums), generator=generator,
        )

    # ---- one scale ---------------------------------------------------------------------------------
    def model_role(self, state: VARState) -> str:
        return "model"

    def step(self, state: VARState, call: ModelCall) -> torch.Tensor:
        kwargs: dict[str, Any] = dict(si=state.si, label_B=state.labels)
        if self.config.use_cache:
            inputs = state.next_input  # the role's cache holds the earlier scales
        else:
            kwargs["prefix"] = True
            inputs = torch.cat(state.hub, dim=1) if state.hub else None
        return self.commit(state, call(self.model_role(state), Request(inputs, kwargs=kwargs)))

    def commit(self, state: VARState, logits: torch.Tensor) -> torch.Tensor:
        """Sample scale ``state.si`` from its logits and prepare the next scale's input."""
        c, si, S = self.config, state.si, state.num_scales
        pn = state.vae.config.v_patch_nums[si]
        B = state.batch_size
        filtered = filter_top_k_top_p(cfg_mix(logits, c.cfg, si, S), _per_scale(c.top_k, si), c.top_p)
        idx = sample_filtered(filtered, _per_scale(c.temperature, si), state.generator)
        state.tokens.append(idx)
        quant = state.vae.quantize
        if c.more_smooth:
            h = smooth_embedding(filtered, quant.embedding.weight.float(), si, S, state.generator)
        else:
            h = quant.embedding(idx).float()
        h = h.transpose(1, 2).reshape(B, quant.Cvae, pn, pn)
        state.f_hat, nxt = quant.get_next_autoregressive_input(si, S, state.f_hat, h)
        if si != S - 1:
            state.next_input = nxt.reshape(B, quant.Cvae, -1).transpose(1, 2)
            state.hub.append(state.next_input)
        state.extras.update(scale=si, patch=pn, tokens_per_row=pn * pn, role=self.model_role(state))
        state.si += 1
        return torch.full((B,), pn * pn, dtype=torch.long, device=state.labels.device)

    def done(self, state: VARState) -> bool:
        return state.si >= state.num_scales

    def max_steps(self, state: VARState) -> int:
        return state.num_scales

    def result(self, state: VARState) -> torch.Tensor:
        """(B, 1 + L): the class label, then every scale's token ids."""
        return torch.cat([state.labels[:, None]] + state.tokens, dim=1)


def calibrate_scalekv(
    var: Any,
    vae: Any = None,
    class_labels: Optional[Sequence[int]] = None,
    config: Optional[ScaleKVConfig] = None,
    **sample_options: Any,
) -> ScaleKVPlan:
    """Run full-cache generations and pick each scale's drafters (lowest ASI).

    ``class_labels`` default to ``calibration_samples`` labels spread over the classes;
    ``sample_options`` (cfg, top_k, top_p ...) are those of the ``var`` strategy.
    """
    config = config or ScaleKVConfig()
    if class_labels is None:
        n = config.calibration_samples
        class_labels = [(i * var.num_classes) // n for i in range(n)]
    recorder = ASIRecorder(var.depth, var.patch_nums, config.asi_topk)
    strategy = VARStrategy(build_config(VARSampleConfig, "scalekv calibration", dict(sample_options)))
    models, context = strategy.setup(var, vae=vae if vae is not None else var.vae)
    labels, _ = strategy.prepare_inputs(list(class_labels), None, 0, var.device)
    state = strategy.start(labels, generator=make_generator(config.calibration_seed, labels.device), **context)
    recorder.prepare_for(var)
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        while not strategy.done(state):  # the loop's work without its bookkeeping (calibration is not traced)
            strategy.step(state, lambda role, request: recorder.forward(models[role], request))
    asi = (recorder.sum / recorder.count.clamp_min(1)).float()
    nd = config.drafters_for(var.depth)
    drafters = [[] if si == 0 else sorted(torch.argsort(asi[si])[:nd].tolist()) for si in range(len(var.patch_nums))]
    return ScaleKVPlan(drafters=drafters, asi=asi, depth=var.depth, patch_nums=tuple(var.patch_nums))
