"""A procedural class-conditional image data set: coloured shapes (no download, any size).

Ten classes = five shapes (circle, square, triangle, plus, ring) x two colour families
(warm: red..yellow hues; cool: cyan..blue hues). Each image draws the shape at a random
position, size and rotation, in a random colour of its family, anti-aliased over a random
grey background with a soft gradient. A classifier must read both shape and colour, so its
accuracy on generated images measures whether a generator follows the class.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ["SHAPES", "FAMILIES", "NUM_CLASSES", "class_name", "make_shapes"]

SHAPES = ("circle", "square", "triangle", "plus", "ring")
FAMILIES = ("warm", "cool")
NUM_CLASSES = len(SHAPES) * len(FAMILIES)
_HUES = {"warm": (0.0, 60.0), "cool": (180.0, 250.0)}


def class_name(label: int) -> str:
    return f"{FAMILIES[label % 2]} {SHAPES[label // 2]}"


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h in degrees, s and v in [0, 1] -> (N, 3) RGB in [0, 1]."""
    k = lambda n: (n + h / 60.0) % 6  # noqa: E731
    f = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)  # noqa: E731
    return torch.stack([f(5), f(3), f(1)], dim=-1)


def _box(px: torch.Tensor, py: torch.Tensor, hx: torch.Tensor, hy: torch.Tensor) -> torch.Tensor:
    qx, qy = px.abs() - hx, py.abs() - hy
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def make_shapes(
    n: int,
    size: int = 32,
    labels: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, size, size) in [-1, 1] and their labels (random unless given)."""
    dev = torch.device(device)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev)

    if labels is None:
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator, device=dev)
    labels = labels.to(dev).long()
    shape_id, family = labels // 2, labels % 2
    s = size / 32.0  # every length below is in pixels of a 32x32 image
    r = (6.5 + 4.5 * rand(n)) * s
    cx = size / 2 + (rand(n) - 0.5) * 2 * (size / 2 - r - 1.5 * s)
    cy = size / 2 + (rand(n) - 0.5) * 2 * (size / 2 - r - 1.5 * s)
    rot = rand(n) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.arange(size, device=dev) + 0.5, torch.arange(size, device=dev) + 0.5, indexing="ij")
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    c, si = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    px, py = c * dx + si * dy, -si * dx + c * dy
    rr = r[:, None, None]
    dist = torch.sqrt(px**2 + py**2)
    sdf = torch.stack(
        [
            dist - rr,
            _box(px, py, 0.8 * rr, 0.8 * rr),
            torch.stack([px * math.cos(a) + py * math.sin(a) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]).amax(0)
            - 0.55 * rr,
            torch.minimum(_box(px, py, rr, 0.33 * rr), _box(px, py, 0.33 * rr, rr)),
            (dist - 0.72 * rr).abs() - 0.28 * rr,
        ],
        dim=1,
    )
    sdf = sdf[torch.arange(n, device=dev), shape_id]
    alpha = (0.5 - sdf).clamp(0, 1)[:, None]
    lo = torch.tensor([_HUES[f][0] for f in FAMILIES], device=dev)[family]
    hi = torch.tensor([_HUES[f][1] for f in FAMILIES], device=dev)[family]
    hue = lo + (hi - lo) * rand(n)
    colour = _hsv_to_rgb(hue, 0.65 + 0.35 * rand(n), 0.7 + 0.3 * rand(n))[:, :, None, None]
    grey = (0.15 + 0.55 * rand(n))[:, None, None, None]
    tilt = (rand(n) - 0.5)[:, None, None, None] * 0.25
    direction = rand(n) * 2 * math.pi
    ramp = (torch.cos(direction)[:, None, None] * (xs[None] / size - 0.5) + torch.sin(direction)[:, None, None] * (ys[None] / size - 0.5))
    background = (grey + tilt * ramp[:, None]).clamp(0, 1).expand(n, 3, size, size)
    img = background * (1 - alpha) + colour * alpha
    return img * 2 - 1, labels
