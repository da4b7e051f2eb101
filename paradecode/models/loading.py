"""Load a model (and its tokenizer) from a shipped model's name, a checkpoint directory or a
Hugging Face hub id.

A directory is routed by its ``config.json``'s ``model_type``, so the user names a checkpoint
and never a class:

* ``llada`` (LLaDA-8B-Base/-Instruct, LLaDA-1.5 and our own saves; also a config without a
  ``model_type``): our :class:`~.llada.LLaDAModel`, which reads LLaDA's parameter names and
  takes every cache policy;
* ``Dream`` (Dream-v0-Base/-Instruct-7B): ``paradecode.models.dream.DreamModel``, imported by
  name when it is needed;
* anything else: ``transformers.AutoModel`` behind :class:`~.hf.HFDiffusionAdapter` (no caches;
  remote code only with ``trust_remote_code=True``).

A directory holding a LoRA adapter instead (``adapter_config.json``, no ``config.json``; see
:mod:`.lora`) loads as its base (``paradecode.zoo.load_dir``) with the adapter merged in.

A hub id is looked up in the local Hugging Face cache first and is then read offline; only a
missing snapshot is downloaded, and never when ``HF_HUB_OFFLINE`` is set. Nothing here touches
the network at import time.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .checkpoint import read_config_json
from .llada import LLaDAModel
from .lora import is_adapter_dir

__all__ = ["load_tokenizer", "load_model_and_tokenizer", "resolve_checkpoint", "model_type", "parse_dtype", "DTYPES"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
# model_type (as config.json spells it) -> (module, class) of our own implementation
NATIVE = {"llada": ("paradecode.models.llada", "LLaDAModel"), "dream": ("paradecode.models.dream", "DreamModel")}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_dtype(dtype: Union[str, torch.dtype, None]) -> Optional[torch.dtype]:
    """``"bf16"`` / ``"bfloat16"`` / ... or a ``torch.dtype`` -> the dtype; None stays None (the
    checkpoint's own)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str) or dtype.lower() not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}.")
    return DTYPES[dtype.lower()]


def load_tokenizer(directory: Path, trust_remote_code: bool = False) -> Optional[Any]:
    """The tokenizer saved in ``directory`` (``tokenizer.json`` as a ``PreTrainedTokenizerFast``,
    with its ``tokenizer_config.json``: special tokens, chat template; else whatever
    ``AutoTokenizer`` reads from a ``tokenizer_config.json``), or None when there is none; a
    file the tokenizers library cannot read raises ``ValueError`` naming it."""
    directory = Path(directory)
    file = directory / "tokenizer.json"
    if not file.exists() and not (directory / "tokenizer_config.json").exists():
        return None
    try:
        if file.exists():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(directory))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except Exception as e:  # the Rust tokenizers library raises a bare Exception for a bad file
        raise ValueError(
            f"the tokenizer in {directory} is not readable ({type(e).__name__}: {str(e)[:200]}); restore it from "
            f"the original checkpoint or save the tokenizer again."
        ) from None


def model_type(directory: Path) -> str:
    """``config.json``'s ``model_type``, lower-cased; ``"llada"`` when absent (our older saves)."""
    fields = read_config_json(Path(directory) / "config.json", hint="is it a model checkpoint directory?")
    value = fields.get("model_type") or "llada"
    if not isinstance(value, str):
        raise ValueError(f"{directory}/config.json: model_type must be a string, got {value!r}.")
    return value.lower()


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def resolve_checkpoint(name: str, download: bool = True) -> Path:
    """The local directory of hub id ``name`` (``org/model``): the cached snapshot when there is
    one (read offline), else a download, unless ``download`` is false or ``HF_HUB_OFFLINE`` is set."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ValueError(f"{name!r} looks like a hub id, but huggingface_hub is not installed; "
                         "give a local checkpoint directory.") from None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        return Path(snapshot_download(name, local_files_only=True, cache_dir=cache_dir))
    except LocalEntryNotFoundError:
        pass
    if not download or _hub_offline():
        raise ValueError(
            f"{name!r} is not in the local Hugging Face cache and downloading is off (HF_HUB_OFFLINE); run "
            f"`huggingface-cli download {name}` on a machine with network access, or give the checkpoint directory."
        )
    try:
        return Path(snapshot_download(name, cache_dir=cache_dir))
    except Exception as e:  # network, auth, unknown repo: one message that says what to do
        raise ValueError(f"could not download {name!r} from the hub ({type(e).__name__}: {str(e)[:200]}); check "
                         f"the id and the network, or give a local checkpoint directory.") from None


def _native_class(kind: str) -> type:
    module_name, class_name = NATIVE[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise ValueError(
            f"{kind!r} checkpoints load through {module_name}.{class_name}, which this paradecode does not have "
            f"yet; update paradecode, or wrap transformers' model yourself: HFDiffusionAdapter.dream(model, tokenizer)."
        ) from None
    return getattr(module, class_name)


def _load_directory(path: Path, device: str, dtype: Optional[torch.dtype], trust_remote_code: bool) -> tuple[Any, Any]:
    if is_adapter_dir(path):  # a LoRA adapter: its base (info.json "base") with the adapter merged in
        from .. import zoo  # resolves the base by shipped-model name or directory; the models' layer

        model, tok = zoo.load_dir(path, device=device)
        return (model.to(dtype) if dtype is not None else model), tok
    kind = model_type(path)
    tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
    if kind == "llada":
        return LLaDAModel.from_pretrained(path, torch_dtype=dtype, device=device), tok
    if kind in NATIVE:
        return _native_class(kind).from_pretrained(path, torch_dtype=dtype, device=device), tok
    import transformers

    from .hf import HFDiffusionAdapter

    auto = _auto_class(path)
    try:
        hf_model = getattr(transformers, auto).from_pretrained(str(path), trust_remote_code=trust_remote_code, dtype=dtype)
    except (ValueError, OSError) as e:
        hint = "" if trust_remote_code else " If the checkpoint ships its own modeling code, pass trust_remote_code."
        raise ValueError(f"{path}: transformers cannot build model_type {kind!r} with {auto} ({str(e)[:200]}).{hint}") from None
    return HFDiffusionAdapter(hf_model.to(device).eval(), tokenizer=tok), tok


def _auto_class(path: Path) -> str:
    """The transformers auto class for a checkpoint we do not implement: the one its own modeling
    code registers (``auto_map``; remote-code diffusion LMs register ``AutoModel`` for the model
    with the LM head), else ``AutoModelForMaskedLM`` (a masked-diffusion LM is a bidirectional
    model with a token head)."""
    auto_map = read_config_json(Path(path) / "config.json").get("auto_map") or {}
    for name in ("AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM"):
        if name in auto_map:
            return name
    return "AutoModelForMaskedLM"


def load_model_and_tokenizer(
    name_or_dir: str,
    device: str = "cpu",
    dtype: Union[str, torch.dtype, None] = None,
    trust_remote_code: bool = False,
    download: bool = True,
) -> tuple[Any, Optional[Any]]:
    """``(model, tokenizer or None)`` from a checkpoint directory (routed by ``model_type``, see
    the module docstring), a shipped model's name or a hub id. ``dtype`` (``"bf16"`` ...) casts
    the weights; None keeps the checkpoint's (shipped models load in float32)."""
    torch_dtype = parse_dtype(dtype)
    path = Path(name_or_dir)
    if path.is_dir():
        return _load_directory(path, device, torch_dtype, trust_remote_code)
    try:
        from .. import zoo  # shipped models: the same layer as the models
    except ImportError:
        zoo = None
    if zoo is not None and name_or_dir in zoo.available():
        model, tok = zoo.load(name_or_dir, device=device)
        return (model.to(torch_dtype) if torch_dtype is not None else model), tok
    if not path.exists() and _HUB_ID.match(str(name_or_dir)):
        return _load_directory(resolve_checkpoint(str(name_or_dir), download), device, torch_dtype, trust_remote_code)
    shipped = zoo.available() if zoo is not None else []
    what = "a file, not a checkpoint directory" if path.exists() else "neither a checkpoint directory, a hub id (org/name) nor a shipped model name"
    raise ValueError(f"{name_or_dir!r} is {what}; give a directory with config.json and weights, or one of {shipped}.")
