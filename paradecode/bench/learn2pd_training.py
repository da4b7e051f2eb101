"""Training Learn2PD's filter (Bao et al., 2025, "Learning to Parallel"): trajectories, then BCE.

Training data follows the reference (``generate_training_data.py``): decode each prompt once
with the base strategy (LLaDA low-confidence, one token per step) to get the final tokens;
then replay the *Extremely Greedy Parallel* oracle, which at every step records the block's
confidences with labels "prediction == final token" and commits exactly the masked
positions whose prediction is already right (the block is filled with the final tokens if
the predictions stop changing). It runs whole generations, so it sits with the benchmarks,
above the strategies (``scripts/train_learn2pd.py`` uses it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..config import build_config
from ..samplers.base import BlockDiffusionStrategy, BlockView, DiffusionConfig, DiffusionState, RuleState
from ..samplers.learn2pd_filter import Learn2PDFilter

__all__ = ["collect_trajectories", "train_filter"]


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
