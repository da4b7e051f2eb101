"""Low-rank adapters (LoRA, Hu et al., 2021) for paradecode's own models, without peft.

dParallel's reference (github czg1225/dParallel, ``LLaDA/configs/config_lora_llada.yaml``)
distils LLaDA into LoRA adapters, so a distilled student ships as a few MB of adapter next to
its base instead of a full copy. Here:

* :func:`add_lora` turns chosen ``nn.Linear`` modules into :class:`LoRALinear` (still an
  ``nn.Linear`` with the same weight and bias, plus ``lora_A`` (r, in) and ``lora_B`` (out, r);
  ``y = x W^T + b + (alpha / r) * dropout(x) A^T B^T``). ``B`` starts at zero, so the wrapped
  model is the base model exactly until it trains; only ``lora_A`` / ``lora_B`` require grad.
* :func:`save_adapter` writes ``adapter_model.safetensors`` and ``adapter_config.json`` (peft's
  field and key names, so the files read like any LoRA adapter).
* :func:`load_adapter` **merges** ``W += (alpha / r) B A`` into the plain base model: decoding
  then runs at the base model's speed, and every cache, fused projection and CUDA graph works
  unchanged. :func:`merge_lora` does the same for a model wrapped by :func:`add_lora`.

Targets are module names (the last part of the path, as peft matches them). The reference's
config lists ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``, Llama's names. LLaDA's
modules are ``q_proj k_proj v_proj attn_out ff_proj up_proj ff_out`` (``paradecode.models.llada``
keeps them), and peft adapts only the listed names it finds. On LLaDA-8B the reference therefore
adapts ``q_proj k_proj v_proj up_proj`` and nothing else, and that is :data:`REFERENCE_TARGETS`,
the default. :data:`TARGET_ALIASES` maps the Llama names onto LLaDA's for those who want every
projection (``all``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "add_lora", "lora_parameters", "lora_state_dict", "merge_lora", "save_adapter",
           "load_adapter", "read_adapter_config", "check_lora_settings", "is_adapter_dir", "resolve_targets", "REFERENCE_RANK",
           "REFERENCE_ALPHA", "REFERENCE_DROPOUT", "REFERENCE_LR", "REFERENCE_TARGETS", "TARGET_ALIASES",
           "ADAPTER_CONFIG", "ADAPTER_WEIGHTS"]

# the reference's LoRA settings (config_lora_llada.yaml): r, lora_alpha, lora_dropout, learning_rate
REFERENCE_RANK, REFERENCE_ALPHA, REFERENCE_DROPOUT, REFERENCE_LR = 128, 128.0, 0.0, 2e-5
# what peft adapts on LLaDA with the reference's target list (the others are not LLaDA's names)
REFERENCE_TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj")
# Llama's projection names -> LLaDA's; "all" is every block projection of LLaDA
TARGET_ALIASES = {"o_proj": "attn_out", "gate_proj": "ff_proj", "down_proj": "ff_out"}
ALL_LLADA = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_PREFIX = "base_model.model."  # peft's key prefix in adapter_model.safetensors


def _delta(lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """``(alpha / r) B A`` in float32: what merging an adapter adds to its weight."""
    return (lora_B.float() @ lora_A.float()) * scaling


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` plus a trainable low-rank update; built by :func:`add_lora` from an
    existing linear, whose weight and bias it keeps (the same tensors, frozen)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        kw = dict(device=base.weight.device, dtype=torch.float32)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as LoRA's A
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        h = self.lora_dropout(x)
        return out + F.linear(F.linear(h, self.lora_A.to(h.dtype)), self.lora_B.to(h.dtype)) * self.scaling

    def delta(self) -> torch.Tensor:
        """``(alpha / r) B A`` in float32: what merging adds to the weight."""
        return _delta(self.lora_A, self.lora_B, self.scaling)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


def resolve_targets(targets: Union[str, Sequence[str], None]) -> tuple[str, ...]:
    """Target module names from a comma-separated string or a list: ``None`` / ``"reference"`` is
    :data:`REFERENCE_TARGETS`, ``"all"`` every LLaDA block projection; Llama names (``o_proj``,
    ``gate_proj``, ``down_proj``) become LLaDA's (:data:`TARGET_ALIASES`)."""
    if targets is None:
        return REFERENCE_TARGETS
    names = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else [str(t).strip() for t in targets]
    names = [n for n in names if n]
    if names == ["reference"]:
        return REFERENCE_TARGETS
    if names == ["all"]:
        return ALL_LLADA
    if not names:
        raise ValueError("LoRA targets are empty; give module names such as q_proj,k_proj,v_proj,up_proj, "
                         "'reference' or 'all'.")
    out: list[str] = []
    for n in names:
        n = TARGET_ALIASES.get(n, n)
        if n not in out:
            out.append(n)
    return tuple(out)


def check_lora_settings(rank: int, alpha: float, dropout: float) -> None:
    """A clear ``ValueError`` for a rank < 1, a non-positive alpha or a dropout outside [0, 1)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be an int >= 1, got {rank!r}.")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"LoRA alpha must be a positive number, got {alpha!r}.")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}.")


def _targeted(model: nn.Module, targets: Iterable[str], kind: type = nn.Linear) -> dict[str, nn.Module]:
    """``{full name: module}`` of the ``kind`` modules whose last name part is a target; an error
    naming the model's linear names when a target matches nothing (a typo would train nothing)."""
    targets = tuple(targets)
    found = {n: m for n, m in model.named_modules() if isinstance(m, kind) and n.rpartition(".")[2] in targets}
    hit = {n.rpartition(".")[2] for n in found}
    missing = [t for t in targets if t not in hit]
    if missing:
        names = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"LoRA target(s) {missing} match no linear module of {type(model).__name__}; its linear "
                         f"modules are named {names}.")
    return found


def _unfuse(model: nn.Module) -> None:
    """Drop joined q/k/v and gate/up copies (``FusableProjections``): a fused block would compute
    with the joined base weight and skip the adapters. Fuse again after merging if wanted."""
    for m in model.modules():
        if getattr(m, "_fused", None):
            m._fused = None


def add_lora(model: nn.Module, rank: int = REFERENCE_RANK, alpha: Optional[float] = None,
             dropout: float = REFERENCE_DROPOUT, targets: Union[str, Sequence[str], None] = None) -> list[str]:
    """Wrap the target linears of ``model`` in place with :class:`LoRALinear` and freeze every
    other parameter; returns the wrapped modules' names. ``B = 0``: the model's outputs are the
    base model's until it trains. ``alpha`` defaults to ``rank``: the reference's scale
    alpha / r = 128 / 128 = 1 at any rank."""
    check_lora_settings(rank, rank if alpha is None else alpha, dropout)
    alpha = float(rank) if alpha is None else alpha
    names = resolve_targets(targets)
    found = _targeted(model, names)
    if any(isinstance(m, LoRALinear) for m in found.values()):
        raise ValueError("the model already has LoRA adapters; merge_lora(model) first or start from the base model.")
    for p in model.parameters():
        p.requires_grad_(False)
    _unfuse(model)
    for full, module in found.items():
        parent_name, _, attr = full.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(module, rank, float(alpha), float(dropout)))
    model._lora = {"r": rank, "lora_alpha": float(alpha), "lora_dropout": float(dropout), "target_modules": list(names)}
    return list(found)


def _lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    mods = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not mods:
        raise ValueError(f"{type(model).__name__} has no LoRA adapters; call add_lora(model, ...) first.")
    return mods


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (``lora_A``, ``lora_B`` of every :class:`LoRALinear`): what trains."""
    return [p for m in _lora_modules(model).values() for p in (m.lora_A, m.lora_B)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters alone, under peft's key names (``base_model.model.<module>.lora_A.weight``)."""
    out = {}
    for name, m in _lora_modules(model).items():
        out[f"{_PREFIX}{name}.lora_A.weight"] = m.lora_A.detach()
        out[f"{_PREFIX}{name}.lora_B.weight"] = m.lora_B.detach()
    return out


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (``W += (alpha / r) B A``) and put plain ``nn.Linear``
    back (same weight tensors, so state-dict names and checkpoints are the base model's)."""
    for full, m in _lora_modules(model).items():
        m.weight.add_(m.delta().to(m.weight.dtype))
        plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        plain.weight, plain.bias = m.weight, m.bias
        parent_name, _, attr = full.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, plain)
    model.__dict__.pop("_lora", None)
    return model


def save_adapter(model: nn.Module, directory: Union[str, Path], base: Optional[str] = None,
                 dtype: torch.dtype = torch.float32) -> Path:
    """Write the adapters of ``model`` (wrapped by :func:`add_lora`) into ``directory``:
    ``adapter_model.safetensors`` (in ``dtype``) and ``adapter_config.json`` (r, lora_alpha,
    lora_dropout, target_modules, base_model_name_or_path = ``base``)."""
    from safetensors.torch import save_file

    settings = getattr(model, "_lora", None)
    state = lora_state_dict(model)
    if settings is None:
        raise ValueError("the model's adapters were not made by add_lora; wrap the base model with add_lora first.")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous().cpu() for k, v in state.items()}, str(path / ADAPTER_WEIGHTS))
    config = {"peft_type": "LORA", **settings, "bias": "none", "base_model_name_or_path": base,
              "modules": sorted(_lora_modules(model))}
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return path


def is_adapter_dir(directory: Union[str, Path]) -> bool:
    """A directory with a LoRA adapter and no full model (``adapter_config.json``, no ``config.json``)."""
    path = Path(directory)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def read_adapter_config(directory: Union[str, Path]) -> dict[str, Any]:
    """``adapter_config.json`` of ``directory``, checked: r, lora_alpha and target_modules present."""
    file = Path(directory) / ADAPTER_CONFIG
    if not file.is_file():
        raise ValueError(f"{directory} has no {ADAPTER_CONFIG}; is it an adapter saved by save_adapter "
                         f"(scripts/train_dparallel.py --lora-rank R)?")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON ({e}); save the adapter again.") from None
    lacking = [k for k in ("r", "lora_alpha", "target_modules") if k not in config]
    if lacking:
        raise ValueError(f"{file} lacks {lacking}; save the adapter again with save_adapter.")
    check_lora_settings(config["r"], config["lora_alpha"], config.get("lora_dropout", 0.0))
    return config


@torch.no_grad()
def load_adapter(model: nn.Module, directory: Union[str, Path]) -> nn.Module:
    """Merge the adapter saved in ``directory`` into ``model`` (the plain base model it was
    trained on): ``W += (alpha / r) B A`` for every adapted module, in place. Every key, the
    rank and each module's shape are checked first, so a wrong adapter changes nothing."""
    from safetensors.torch import load_file

    path = Path(directory)
    config = read_adapter_config(path)
    r, scaling = int(config["r"]), float(config["lora_alpha"]) / int(config["r"])
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("load_adapter merges into a plain base model; this one has LoRA wrappers "
                         "(merge_lora(model) first, or load the base model afresh).")
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}; copy the adapter directory whole.")
    state = load_file(str(weights))
    base = config.get("base_model_name_or_path")
    hint = f" (the adapter was trained on {base!r})" if base else ""
    modules = _targeted(model, resolve_targets(config["target_modules"]))
    expected = {f"{_PREFIX}{n}.lora_{ab}.weight" for n in modules for ab in "AB"}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}/{ADAPTER_WEIGHTS} does not fit {type(model).__name__}{hint}: "
                         f"{len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}; "
                         f"load it onto the base model it was trained on.")
    updates = []
    for name, m in modules.items():
        A, B = state[f"{_PREFIX}{name}.lora_A.weight"], state[f"{_PREFIX}{name}.lora_B.weight"]
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != r or B.shape[1] != r:
            raise ValueError(f"{path}: {name}'s adapter has rank {A.shape[0] if A.dim() == 2 else '?'}, but "
                             f"{ADAPTER_CONFIG} says r={r}; the files do not belong together: save the adapter again.")
        if A.shape[1] != m.in_features or B.shape[0] != m.out_features:
            raise ValueError(f"{path}: {name}'s adapter is for a {A.shape[1]}->{B.shape[0]} projection, the model's "
                             f"is {m.in_features}->{m.out_features}; load it onto the base model it was trained "
                             f"on{hint}.")
        updates.append((m, A, B))
    for m, A, B in updates:  # in place: a fused (joined) weight, whose views these are, stays in sync
        m.weight.add_(_delta(A.to(m.weight.device), B.to(m.weight.device), scaling).to(m.weight.dtype))
    return model
