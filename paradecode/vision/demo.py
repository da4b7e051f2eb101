"""The image demo: one PNG grid comparing full VAR, CoDe and ScaleKV on the same seeds.

Rows: the large VAR with its full cache, CoDe at two drafting depths, ScaleKV at two budgets;
columns: one image per class, the same class labels and seed in every row. Each row's caption
gives its wall time (best of 3 after a warm-up), the KV cache at its fullest and, against the full
model's images, the speed ratio, the KV ratio and the mean PSNR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..caches.scalekv import ScaleKV, ScaleKVConfig
from .generate import calibrate_scalekv as calibrate
from .api import VisionOutput, generate
from .metrics import psnr
from .shapes import NUM_CLASSES, class_name
from .zoo import ShapesModels

__all__ = ["GridRow", "run_comparison", "render_grid"]


@dataclass
class GridRow:
    name: str
    images: torch.Tensor
    seconds: float
    kv_peak_bytes: int
    psnr_vs_full: Optional[float] = None
    accuracy: Optional[float] = None


def _timed(fn, repeats: int = 3) -> tuple[VisionOutput, float]:
    """Best of ``repeats`` timed runs after a warm-up (first-call overheads are not the method's)."""
    fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def run_comparison(
    models: ShapesModels,
    labels: Sequence[int],
    seed: int = 0,
    draft_steps: Sequence[int] = (5, 4),
    budgets: Sequence[float] = (0.25, 0.10),
    window_size: int = 4,
    **options,
) -> list[GridRow]:
    """Generate the grid's rows; ``options`` are the sampling options (cfg, top_k, top_p)."""
    m = models
    y = torch.as_tensor(list(labels), device=m.large.device)
    settings = [("VAR large, full cache", lambda: generate(m.large, y, seed=seed, timing=False, **options))]
    who = "specialised small" if m.refiner is not None else "small"
    for n in draft_steps:
        settings.append((f"CoDe N={n} (large drafts {n} scales, {who} refines)",
                         lambda n=n: generate(m.large, y, "code", refiner=m.code_refiner, draft_steps=n, seed=seed,
                                              timing=False, **options)))
    if budgets:
        plan = calibrate(m.large, m.vae, None, ScaleKVConfig(window_size=window_size), **options)
        for b in budgets:
            pol = ScaleKV(ScaleKVConfig(budget=b, window_size=window_size), plan)
            settings.append((f"ScaleKV {round(b * 100)}% budget",
                             lambda pol=pol: generate(m.large, y, seed=seed, cache=pol, timing=False, **options)))
    rows: list[GridRow] = []
    for name, fn in settings:
        with torch.inference_mode():
            out, sec = _timed(fn)
            acc = float((m.classifier(out.images * 2 - 1).argmax(-1) == y).float().mean())
        row = GridRow(name, out.images.cpu(), sec, int(max(out.trace.extra("kv_peak_bytes"))), accuracy=acc)
        if rows:
            p = psnr(row.images, rows[0].images)
            row.psnr_vs_full = float(p.clamp(max=99).mean())
        rows.append(row)
    return rows


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def render_grid(rows: list[GridRow], labels: Sequence[int], scale: int = 3):
    """A PIL image: one row per setting with its caption, one column per class."""
    from PIL import Image, ImageDraw

    n, side = len(labels), rows[0].images.shape[-1] * scale
    cap_w, head_h, pad = 330, 18, 4
    W = cap_w + n * (side + pad)
    H = head_h + len(rows) * (side + pad)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, lab in enumerate(labels):
        draw.text((cap_w + j * (side + pad), 3), class_name(int(lab)) if lab < NUM_CLASSES else "uncond", fill=(0, 0, 0))
    full = rows[0]
    for i, row in enumerate(rows):
        y0 = head_h + i * (side + pad)
        lines = [row.name, f"{row.seconds * 1e3:.0f} ms  ({full.seconds / row.seconds:.2f}x)",
                 f"KV peak {_size(row.kv_peak_bytes)} ({100 * row.kv_peak_bytes / full.kv_peak_bytes:.0f}%)",
                 f"class acc {row.accuracy:.2f}" + ("" if row.psnr_vs_full is None else f"  PSNR {row.psnr_vs_full:.1f} dB")]
        for k, line in enumerate(lines):
            draw.text((4, y0 + 4 + 13 * k), line, fill=(0, 0, 0))
        imgs = (row.images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for j in range(n):
            tile = Image.fromarray(imgs[j]).resize((side, side), Image.NEAREST)
            canvas.paste(tile, (cap_w + j * (side + pad), y0))
    return canvas
