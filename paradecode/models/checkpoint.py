"""Reading and writing Hugging Face-style safetensors checkpoints (single file or sharded).

Every way a checkpoint can be broken raises ``ValueError`` naming the file and what to do:
a missing directory, file or shard, a ``config.json`` that is not a JSON object or has a
field of the wrong type, a truncated or foreign file, an index without ``weight_map``,
missing/unexpected keys and wrong shapes. Silent corruption is caught too: our savers write
a sha256 of each tensor's bytes into the safetensors metadata and loading verifies it
(files written elsewhere, e.g. the shipped ones, have none and load unchecked).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
from torch import nn
from torch.nn.modules import module as _module
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..config import check_value, type_hints

__all__ = [
    "SINGLE", "INDEX", "CHECKSUM_KEY", "load_state_dict_from_dir", "save_state_dict_to_dir", "load_safetensors",
    "save_safetensors", "read_config_json", "check_config_fields", "check_state_dict", "check_directory", "as_path",
    "tensor_sha256", "build_on_meta", "save_model_dir", "load_model_dir",
]

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
CHECKSUM_KEY = "paradecode.sha256"  # metadata entry: JSON {tensor name: sha256 hex of its bytes}
_FIX = "re-download the checkpoint or re-save it with save_pretrained"


def _few(names: Iterable[str], n: int = 6) -> str:
    names = sorted(names)
    return f"{names[:n]}{f' and {len(names) - n} more' if len(names) > n else ''}"


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes as safetensors stores them (C order, native = little endian)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def as_path(value: Any, arg: str = "directory") -> Path:
    """``value`` as a Path; anything but a str or os.PathLike raises ``TypeError`` naming ``arg``."""
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{arg} must be a path (str or os.PathLike), got {type(value).__name__} {value!r:.80}.")
    return Path(value)


def check_directory(path: Any, what: str = "checkpoint directory", arg: str = "directory") -> Path:
    """``path`` as a Path that exists and is a directory, or a ValueError saying which it is not."""
    path = as_path(path, arg)
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist; check the path (or download the checkpoint there).")
    if not path.is_dir():
        raise ValueError(f"{what} {path} is a file; give the directory that holds config.json and the weights.")
    return path


def read_config_json(file: Path, hint: str = "is it a checkpoint directory written by save_pretrained?") -> dict[str, Any]:
    """The JSON object in ``file``; a missing file, bad JSON or a non-object raise ``ValueError``."""
    file = Path(file)
    if not file.is_file():
        raise ValueError(f"{file.parent} has no {file.name}; {hint}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{file} is not text (not UTF-8); restore it from the original checkpoint or {_FIX}.") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{file} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); restore it from the "
            f"original checkpoint or {_FIX}."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object of named fields, got a JSON {type(data).__name__}; {_FIX}.")
    return data


def check_config_fields(
    fields: Mapping[str, Any], hints: Mapping[str, Any], where: str, positive: Iterable[str] = ()
) -> dict[str, Any]:
    """``fields`` with every annotated one checked (:func:`paradecode.config.check_value`) and the
    ``positive`` ones (when present and not None) required to be >= 1; others pass unchanged.

    A wrong type raises ``ValueError`` too: for a loader it is a fault in a file, not in the call.
    """
    try:
        out = {k: (check_value(k, v, hints[k], where, kind="field") if k in hints else v) for k, v in fields.items()}
    except TypeError as e:
        raise ValueError(f"{e} Fix config.json or {_FIX}.") from None
    for k in positive:
        if out.get(k) is not None and out[k] < 1:
            raise ValueError(f"{where}: field {k} must be >= 1, got {out[k]}; {_FIX}.")
    return out


# ---- safetensors files ----------------------------------------------------------------------


def save_safetensors(state: Mapping[str, torch.Tensor], file: Path) -> None:
    """``save_file`` with a sha256 of every tensor in the metadata, for :func:`load_safetensors`."""
    sums = {k: tensor_sha256(v) for k, v in state.items()}
    save_file(dict(state), str(file), metadata={"format": "pt", CHECKSUM_KEY: json.dumps(sums, sort_keys=True)})


def load_safetensors(file: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """Load one safetensors file; a missing, truncated, foreign or (when it carries checksums)
    altered file raises ``ValueError`` naming it."""
    file = Path(file)
    if not file.is_file():
        raise ValueError(f"{file} is missing{' (it is a directory)' if file.is_dir() else ''}; {_FIX}.")
    try:
        with safe_open(str(file), "pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"{file} is not a readable safetensors file ({e}): it is truncated (an interrupted download or copy) "
            f"or not a safetensors file at all; {_FIX}."
        ) from None
    if verify and CHECKSUM_KEY in metadata:
        _verify(file, state, metadata[CHECKSUM_KEY])
    return state


def _verify(file: Path, state: Mapping[str, torch.Tensor], entry: str) -> None:
    try:
        sums = json.loads(entry)
    except json.JSONDecodeError:
        sums = None
    if not isinstance(sums, dict):
        raise ValueError(f"{file}: the {CHECKSUM_KEY!r} metadata is damaged (not a JSON object); {_FIX}.")
    unlisted = set(state) - set(sums)
    gone = set(sums) - set(state)
    if unlisted or gone:
        raise ValueError(
            f"{file} was changed after it was saved: tensors without a checksum {_few(unlisted)}, checksummed "
            f"tensors absent {_few(gone)}; {_FIX}."
        )
    for name in sorted(state):
        if tensor_sha256(state[name]) != sums[name]:
            raise ValueError(
                f"{file}: tensor {name!r} does not match the sha256 written when it was saved, so its bytes were "
                f"changed on disk or in transfer (silent corruption); {_FIX}."
            )


# ---- directories --------------------------------------------------------------------------------


def _read_index(path: Path) -> dict[str, str]:
    index = read_config_json(path / INDEX)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        got = "none" if weight_map is None else f"a {type(weight_map).__name__}" if not isinstance(weight_map, dict) else "an empty one"
        raise ValueError(
            f"{path / INDEX} has no usable 'weight_map' (a {{tensor name: shard file}} object; got {got}); "
            f"restore the index from the original checkpoint or {_FIX}."
        )
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or Path(shard).name != shard or shard in (".", ".."):
            raise ValueError(f"{path / INDEX}: weight_map maps {name!r} to {shard!r}, which is not a shard file name; {_FIX}.")
    return weight_map


def load_state_dict_from_dir(path: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """Load ``model.safetensors`` or every shard named in ``model.safetensors.index.json``.

    ``verify`` checks the per-tensor sha256 our savers write (files without one load unchecked).
    """
    path = check_directory(path)
    if (path / INDEX).exists():
        weight_map = _read_index(path)
        shards = sorted(set(weight_map.values()))
        absent = [s for s in shards if not (path / s).is_file()]
        if absent:
            raise ValueError(
                f"{path / INDEX} names shard(s) {_few(absent)}, missing from {path}; download every shard "
                f"of the checkpoint (or {_FIX})."
            )
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            part = load_safetensors(path / shard, verify=verify)
            listed = {k for k, s in weight_map.items() if s == shard}
            if listed - set(part):
                raise ValueError(
                    f"{path / INDEX} puts {_few(listed - set(part))} in {shard}, which does not hold them; "
                    f"the index and the shards come from different saves; {_FIX}."
                )
            state.update(part)
        return state
    if (path / SINGLE).exists():
        return load_safetensors(path / SINGLE, verify=verify)
    raise ValueError(f"{path} holds neither {SINGLE} nor {INDEX}; is it a checkpoint directory? ({_FIX}).")


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """safetensors refuses tensors that share memory (fused projections are views of one
    tensor): copy those, leave the rest alone."""
    return t.clone() if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t


def save_state_dict_to_dir(
    state: dict[str, torch.Tensor], path: Path, max_shard_bytes: Optional[int] = None
) -> None:
    """Save as one file, or as shards plus an index when ``max_shard_bytes`` is exceeded;
    each file carries the sha256 of its tensors."""
    state = {k: _own_storage(v.detach().contiguous().cpu()) for k, v in state.items()}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_safetensors(state, path / SINGLE)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(shard, path / fname)
        weight_map.update({k: fname for k in shard})
    (path / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


# ---- state dict against a model -------------------------------------------------------------------


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], where: str, model: str) -> None:
    """Raise ``ValueError`` naming a few missing, unexpected, wrongly shaped or non-float-for-float
    entries of ``state`` against the model's own ``expected`` state dict."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    common = sorted(set(expected) & set(state))
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
              for k in common if tuple(state[k].shape) != tuple(expected[k].shape)]
    dtypes = [f"{k}: {state[k].dtype}" for k in common
              if expected[k].is_floating_point() and not state[k].is_floating_point()]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if shapes:
        problems.append(f"wrongly shaped weights {shapes[:6]}{' ...' if len(shapes) > 6 else ''}")
    if dtypes:
        problems.append(f"non-float tensors for float weights {dtypes[:6]}")
    if problems:
        raise ValueError(
            f"checkpoint {where} does not match {model}: {'; '.join(problems)}. Check that config.json "
            f"describes these weights (the same model size and variant) or {_FIX}."
        )


class _TooBig(BaseException):
    """Raised from a registration hook to stop a build; BaseException so no model code catches it."""


def build_on_meta(factory: Callable[[], nn.Module], state_size: int, where: str, model: str) -> nn.Module:
    """``factory()`` on the meta device (no memory), stopped once it registers far more
    modules and tensors than a checkpoint of ``state_size`` tensors can fill: a config that
    asks for 2**40 layers fails at once instead of looping. Build errors become ``ValueError``."""
    limit = 4 * state_size + 256
    count = 0

    def hook(*_: Any) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise _TooBig

    handles = [
        _module.register_module_parameter_registration_hook(hook),
        _module.register_module_buffer_registration_hook(hook),
        _module.register_module_module_registration_hook(hook),
    ]
    try:
        with torch.device("meta"):
            return factory()
    except _TooBig:
        raise ValueError(
            f"{where}: this config describes a {model} far larger than the checkpoint's {state_size} tensors; "
            f"fix config.json (layer counts, sizes) or {_FIX}."
        ) from None
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, OverflowError, IndexError) as e:
        raise ValueError(f"{where}: cannot build a {model} from this config ({e}); fix config.json or {_FIX}.") from None
    finally:
        for h in handles:
            h.remove()


def save_model_dir(model: nn.Module, directory: Any, max_shard_bytes: Optional[int] = None) -> None:
    """Write ``model.config``'s ``config.json`` and its safetensors (sharded with an index when
    large) into ``directory``: the ``save_pretrained`` of paradecode's own models."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    save_state_dict_to_dir(model.state_dict(), path, max_shard_bytes=max_shard_bytes)


def load_model_dir(
    model_cls: Callable[[Any], nn.Module],
    config_cls: type,
    directory: Any,
    *,
    name: str,
    positive: Iterable[str],
    torch_dtype: Optional[torch.dtype] = None,
    device: Any = "cpu",
    ignored: Iterable[str] = (),
) -> nn.Module:
    """The ``from_pretrained`` of paradecode's own models: ``config.json`` checked against
    ``config_cls``'s constructor (``ignored`` keys dropped, ``positive`` sizes >= 1), the weights
    (one file or sharded) checked against a model built on the meta device, so a wrong config
    allocates nothing; every error names the path and what to do. ``name`` ("LLaDA") names the
    directory and the model (``LLaDAModel``) in the messages. The loaded directory becomes ``config.name_or_path``, which lets
    companions saved next to it be found (the Learn2PD filter)."""
    path = check_directory(directory, f"{name} checkpoint directory")
    config_file = path / "config.json"
    fields = read_config_json(config_file, hint=f"is it a {name} checkpoint directory?")
    fields = check_config_fields(fields, type_hints(config_cls.__init__), str(config_file), positive=tuple(positive))
    fields = {k: v for k, v in fields.items() if k not in set(ignored)}
    state = load_state_dict_from_dir(path)
    label = f"{name}Model"
    model = build_on_meta(lambda: model_cls(config_cls(**fields)), len(state), str(config_file), label)
    check_state_dict(model.state_dict(), state, str(path), label)
    if torch_dtype is not None:
        state = {k: v.to(torch_dtype) for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    model.config.name_or_path = str(path)
    return model.to(device).eval()
