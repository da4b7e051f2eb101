"""Steps-to-quality plot: accuracy vs forwards, one panel per task, one line per strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


def plot_curves(rows: list[dict], path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Write a PNG of ``rows`` (from :func:`paradecode.bench.run_bench`); return its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ValueError("plotting needs matplotlib: pip install 'paradecode[plot]'.") from err
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    cols = min(3, len(tasks))
    nrows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    markers = "osD^v<>p*h"
    for ax, task in zip(axes.flat, tasks):
        for i, strategy in enumerate(strategies):
            pts = sorted((r["nfe"], r["accuracy"]) for r in rows if r["task"] == task and r["strategy"] == strategy)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=markers[i % len(markers)],
                        label=strategy, linewidth=1.5, markersize=4)
        ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel("forwards per sample (NFE)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
