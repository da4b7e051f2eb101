"""Learn2PD's filter model and its training (Bao et al., 2025, "Learning to Parallel").

The filter f_theta reads the confidences of the current block's positions (all of them,
committed or not, as the reference feeds them) and predicts, per position, whether the
model's current prediction already equals the token the sequence will finally hold. It is a
logistic regression over the block's confidences (``hidden_sizes=()``; hidden layers are
optional), trained with binary cross-entropy.

Training data follows the reference (``generate_training_data.py``): decode each prompt once
with the base strategy (LLaDA low-confidence, one token per step) to get the final tokens;
then replay the *Extremely Greedy Parallel* oracle, which at every step records the block's
confidences with labels "prediction == final token" and commits exactly the masked
positions whose prediction is already right (the block is filled with the final tokens if
the predictions stop changing).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..config import build_config
from .base import BlockDiffusionStrategy, BlockView, DiffusionConfig, DiffusionState, RuleState

__all__ = ["Learn2PDFilter", "FILTER_DIRNAME", "collect_trajectories", "train_filter", "find_filter", "shipped_filter"]

FILTER_DIRNAME = "learn2pd_filter"  # saved next to the model: <model dir>/learn2pd_filter/


class Learn2PDFilter(nn.Module):
    """``(batch, block_length)`` confidences -> per-position logits of "already final"."""

    def __init__(self, block_length: int = 32, hidden_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        if block_length < 1 or any(h < 1 for h in hidden_sizes):
            raise ValueError(f"block_length and hidden sizes must be positive, got {block_length}, {list(hidden_sizes)}.")
        self.block_length = int(block_length)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        sizes = [self.block_length, *self.hidden_sizes, self.block_length]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        self.net = nn.Sequential(*layers)

    def forward(self, confidence: torch.Tensor) -> torch.Tensor:
        if confidence.shape[-1] != self.block_length:
            raise ValueError(
                f"this Learn2PD filter reads blocks of {self.block_length} confidences, got {confidence.shape[-1]}; "
                f"use block_length={self.block_length} or train a filter for your block length."
            )
        return self.net(confidence.float())

    @classmethod
    def rejecting(cls, block_length: int) -> "Learn2PDFilter":
        """A filter that accepts nothing (logit -inf-like everywhere): the no-filter fallback."""
        f = cls(block_length)
        with torch.no_grad():
            f.net[-1].weight.zero_()
            f.net[-1].bias.fill_(-100.0)
        return f.eval()

    def accept(self, confidence: torch.Tensor, threshold: float) -> torch.Tensor:
        """Bool mask of positions whose predicted probability of being final exceeds ``threshold``."""
        return torch.sigmoid(self(confidence)) > threshold

    # ---- save / load ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, **metadata: Any) -> None:
        """Write ``config.json`` and ``model.safetensors`` (a few hundred bytes of weights, with
        their sha256 so that a damaged file is refused on loading)."""
        from ..models.checkpoint import SINGLE, save_safetensors

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        config = {"model_type": "learn2pd_filter", "block_length": self.block_length,
                  "hidden_sizes": self.hidden_sizes, **metadata}
        (path / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        save_safetensors({k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}, path / SINGLE)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "Learn2PDFilter":
        """Load a filter written by :meth:`save_pretrained`; every fault names the path."""
        from ..models.checkpoint import (
            SINGLE, as_path, build_on_meta, check_config_fields, check_state_dict, load_safetensors, read_config_json,
        )

        path = as_path(directory)
        if not (path / "config.json").is_file() or not (path / SINGLE).is_file():
            raise ValueError(
                f"{path} holds no Learn2PD filter (config.json + model.safetensors); train one with "
                f"scripts/train_learn2pd.py."
            )
        where = str(path / "config.json")
        config = read_config_json(path / "config.json")
        if config.get("model_type") != "learn2pd_filter":
            raise ValueError(f"{where} is not a Learn2PD filter config (model_type={config.get('model_type')!r}).")
        if "block_length" not in config:
            raise ValueError(f"{where} has no block_length; re-save the filter with save_pretrained.")
        config = check_config_fields(config, {"block_length": int, "hidden_sizes": list[int]}, where,
                                     positive=("block_length",))
        if any(h < 1 for h in config.get("hidden_sizes", ())):
            raise ValueError(f"{where}: field hidden_sizes must hold sizes >= 1, got {config['hidden_sizes']}.")
        state = load_safetensors(path / SINGLE)
        # shapes first, on the meta device: a wrong config allocates nothing
        build = lambda: cls(config["block_length"], config.get("hidden_sizes", ()))  # noqa: E731
        check_state_dict(build_on_meta(build, len(state), where, "Learn2PDFilter").state_dict(), state, str(path), "Learn2PDFilter")
        model = cls(config["block_length"], config.get("hidden_sizes", ()))
        model.load_state_dict({k: v.float() for k, v in state.items()})
        model.metadata = {k: v for k, v in config.items() if k not in ("model_type", "block_length", "hidden_sizes")}
        return model.to(device).eval()


def find_filter(model: Any) -> Optional[Path]:
    """The filter saved next to ``model`` (``<dir the model was loaded from>/learn2pd_filter``)."""
    config = getattr(model, "config", None)
    where = getattr(config, "name_or_path", None) or getattr(model, "name_or_path", None)
    if where and (Path(where) / FILTER_DIRNAME / "config.json").exists():
        return Path(where) / FILTER_DIRNAME
    return None


def shipped_filter(block_length: int) -> Optional[Path]:
    """A filter shipped with paradecode for this block length (next to a zoo model), or None."""
    zoo = Path(__file__).resolve().parent.parent / "zoo"
    for cand in sorted(zoo.glob(f"*/{FILTER_DIRNAME}/config.json")):
        if json.loads(cand.read_text()).get("block_length") == block_length:
            return cand.parent
    return None


# ---- trajectories -----------------------------------------------------------------------------
@dataclass
class _OracleState(RuleState):
    final: Optional[torch.Tensor] = None  # (B, L) the base strategy's final canvas
    records: list = field(default_factory=list)  # (confidences, prediction == final) per step
    prev: Optional[torch.Tensor] = None  # (B, block_length) last step's predictions
    stuck: Optional[torch.Tensor] = None  # (n,) CPU bool: rows whose predictions stopped changing


class _GreedyOracle(BlockDiffusionStrategy):
    """Extremely Greedy Parallel: commit exactly the masked positions already predicted right;
    a row whose predictions stop changing (or that used its block's steps) takes the final
    tokens for the rest of its block."""

    Config = DiffusionConfig
    name = "learn2pd-oracle"
    may_stall = True  # a step may commit nothing; the block's step cap bounds it

    def new_state(self, batch_size, mask_id, eos_id, generator, device) -> _OracleState:
        prev = torch.full((batch_size, self.config.block_length), -1, dtype=torch.long, device=device)
        return _OracleState(batch_size, mask_id, eos_id, generator, prev=prev)

    def select(self, view: BlockView, state: _OracleState) -> torch.Tensor:
        dev_rows = view.rows.to(view.x0.device)
        final = state.final[dev_rows[:, None], view.block_columns]
        right = view.x0 == final
        state.records.append((view.confidence.float().cpu(), right.cpu()))
        stuck = (view.x0 == state.prev[dev_rows]).all(-1)
        state.prev[dev_rows] = view.x0
        state.stuck = stuck.cpu() | (view.step_in_block + 1 >= self.config.block_length)
        return (right | state.stuck.to(right.device)[:, None]) & view.mask

    def apply(self, state: DiffusionState, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        cols = self.block_columns(state, rows)
        committed = super().apply(state, rows, logits)
        stuck = state.rule.stuck
        if stuck is not None and bool(stuck.any()):  # stuck rows committed their whole block: make it final
            dev_rows = rows.to(state.x.device)
            final = state.rule.final[dev_rows[:, None], cols]
            here = state.x[dev_rows[:, None], cols]
            state.x[dev_rows[:, None], cols] = torch.where(stuck.to(here.device)[:, None], final, here)
        return committed

    def on_block_end(self, state: _OracleState, rows: torch.Tensor) -> None:
        state.prev[rows.to(state.prev.device)] = -1


@torch.no_grad()
def collect_trajectories(
    model: Any,
    prompts: Any,
    *,
    gen_length: int = 256,
    block_length: int = 32,
    steps: Optional[int] = None,
    batch_size: int = 64,
    mask_token_id: Optional[int] = None,
    **base_options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs ``(confidences (N, block_length), labels (N, block_length))``.

    ``prompts``: a list of token lists (or a tensor). The final tokens come from the base
    strategy, LLaDA low-confidence with ``steps`` (default ``gen_length``: one token per step).
    """
    import paradecode
    from ..inputs import model_device, prepare_prompts
    from ..loop import run_loop

    steps = gen_length if steps is None else steps
    rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else [list(map(int, p)) for p in prompts]
    xs, ys = [], []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        base = paradecode.sample(model, chunk, "lowconf", gen_length=gen_length, block_length=block_length,
                                 steps=steps, mask_token_id=mask_token_id, **base_options)
        oracle = _GreedyOracle(build_config(DiffusionConfig, "learn2pd oracle", dict(
            gen_length=gen_length, block_length=block_length,
            **{k: v for k, v in base_options.items() if k in ("temperature", "cfg_scale")})))
        models, ctx = oracle.setup(model, mask_token_id=mask_token_id)
        ids, am = prepare_prompts(chunk, None, ctx["pad_id"], model_device(model))
        state = oracle.start(ids, attention_mask=am, **ctx)
        state.rule.final = base.sequences
        run_loop(oracle, state, models, ids.shape[0], device=ids.device, timing=False)
        for conf, right in state.rule.records:
            xs.append(conf)
            ys.append(right.float())
    return torch.cat(xs), torch.cat(ys)


def train_filter(
    confidences: torch.Tensor,
    labels: torch.Tensor,
    *,
    hidden_sizes: Sequence[int] = (),
    epochs: int = 3000,
    lr: float = 3e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    threshold: float = 0.96,
) -> tuple[Learn2PDFilter, dict[str, float]]:
    """Full-batch AdamW on BCE-with-logits (the reference notebook's recipe: lr 3e-3).

    Returns the filter and held-out figures at ``threshold``: precision (accepted positions
    that were right), recall, and the share of positions accepted.
    """
    if confidences.shape != labels.shape or confidences.dim() != 2:
        raise ValueError(f"confidences {tuple(confidences.shape)} and labels {tuple(labels.shape)} must both be (N, block_length).")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(confidences.shape[0], generator=g)
    n_val = max(1, int(len(perm) * val_fraction))
    val, tr = perm[:n_val], perm[n_val:]
    X, Y = confidences[tr].float(), labels[tr].float()
    torch.manual_seed(seed)
    filt = Learn2PDFilter(confidences.shape[1], hidden_sizes)
    opt = torch.optim.AdamW(filt.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            loss = loss_fn(filt(X), Y)
            loss.backward()
            opt.step()
    filt.eval()
    with torch.no_grad():
        Xv, Yv = confidences[val].float(), labels[val].float()
        acc = filt.accept(Xv, threshold)
        tp = (acc & (Yv > 0.5)).sum().item()
        stats = {
            "train_loss": float(loss_fn(filt(X), Y)),
            "val_loss": float(loss_fn(filt(Xv), Yv)),
            "val_precision": tp / max(1, int(acc.sum())),
            "val_recall": tp / max(1, int((Yv > 0.5).sum())),
            "val_accepted_share": float(acc.float().mean()),
            "n_train": int(len(tr)),
            "n_val": int(n_val),
        }
    return filt, stats
