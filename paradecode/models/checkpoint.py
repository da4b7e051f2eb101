"""Reading and writing Hugging Face-style safetensors checkpoints (single file or sharded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def load_state_dict_from_dir(path: Path) -> dict[str, torch.Tensor]:
    """Load ``model.safetensors`` or every shard named in ``model.safetensors.index.json``."""
    path = Path(path)
    if (path / INDEX).exists():
        index = json.loads((path / INDEX).read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            shard_path = path / shard
            if not shard_path.exists():
                raise ValueError(f"{INDEX} in {path} names shard {shard}, which is missing.")
            state.update(load_file(str(shard_path)))
        return state
    if (path / SINGLE).exists():
        return load_file(str(path / SINGLE))
    raise ValueError(f"{path} holds neither {SINGLE} nor {INDEX}.")


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """safetensors refuses tensors that share memory (fused projections are views of one
    tensor): copy those, leave the rest alone."""
    return t.clone() if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t


def save_state_dict_to_dir(
    state: dict[str, torch.Tensor], path: Path, max_shard_bytes: Optional[int] = None
) -> None:
    """Save as one file, or as shards plus an index when ``max_shard_bytes`` is exceeded."""
    state = {k: _own_storage(v.detach().contiguous().cpu()) for k, v in state.items()}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(state, str(path / SINGLE), metadata={"format": "pt"})
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
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    (path / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
