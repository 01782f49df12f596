"""Differentiable augmentation of everything D sees, reals and fakes alike.

DiffAugment (Zhao et al. 2020): translation, cutout and colour, applied to reals and to
fakes (in D's and in G's updates) with gradients flowing back to G, so D cannot memorize
a small set of reals and G is not taught to draw the augmentations. ADA (Karras et al.
2020): each operation is applied to a sample with probability p, and p follows D's
overfitting heuristic r_t = E sign(D(x_real)) toward a target (0.6): up while D is too sure
of the reals, down otherwise.

Random numbers come from the caller's `draw(n, *shape)` (the engine's stream, sliced by
rank), so a DDP run augments exactly as one process with the same global batch. No
library does this for us: kornia's augmentations draw from the global RNG per call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Draw = Callable[..., torch.Tensor]  # draw(n, *shape): numbers from the engine's stream (here uniform in [0, 1))
#: Translation moves an image by up to this fraction of its side; cutout blanks a square of
#: this fraction (DiffAugment's defaults).
TRANSLATION, CUTOUT = 0.125, 0.5


def brightness(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    return x + (draw(len(x), 1, 1, 1) - 0.5)


def saturation(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (draw(len(x), 1, 1, 1) * 2) + mean


def contrast(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (draw(len(x), 1, 1, 1) + 0.5) + mean


def color(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    return contrast(saturation(brightness(x, draw), draw), draw)


def _ints(draw: Draw, n: int, low: int, high: int, device: torch.device) -> torch.Tensor:
    """Integers in [low, high] from uniform draws."""
    return (low + (draw(n) * (high - low + 1)).floor().clamp(max=high - low)).long().to(device)


def translation(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    """Shift by whole pixels, zero-padded (gathered, so differentiable in x)."""
    b, _, h, w = x.shape
    sh, sw = int(h * TRANSLATION + 0.5), int(w * TRANSLATION + 0.5)
    dy, dx = _ints(draw, b, -sh, sh, x.device), _ints(draw, b, -sw, sw, x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None] + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    """Zero a square of half the side at a random place."""
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
    top = _ints(draw, b, 0, h + (1 - ch % 2) - 1, x.device) - ch // 2
    left = _ints(draw, b, 0, w + (1 - cw % 2) - 1, x.device) - cw // 2
    r = torch.arange(h, device=x.device)[None, :] - top[:, None]
    c = torch.arange(w, device=x.device)[None, :] - left[:, None]
    inside = ((r >= 0) & (r < ch))[:, :, None] & ((c >= 0) & (c < cw))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


OPS: dict[str, Callable[[torch.Tensor, Draw], torch.Tensor]] = {
    "translation": translation, "cutout": cutout, "color": color}


def parse_policy(policy: str) -> list[str]:
    """'translation,cutout' -> the operations, in order; ValueError names an unknown one."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in OPS]
    if unknown or not names:
        raise ValueError(f"{policy!r}: expected a comma-separated list of {sorted(OPS)}")
    return names


def augment(x: torch.Tensor, ops: list[str], draw: Draw, p: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Each operation of the policy on each sample with probability p (1: always, DiffAugment)."""
    for name in ops:
        out = OPS[name](x, draw)
        if isinstance(p, float) and p >= 1.0:
            x = out
        else:
            keep = (draw(len(x)).to(x.device) < p).to(x.dtype).view(-1, *[1] * (x.dim() - 1))
            x = keep * out + (1 - keep) * x
    return x


def ada_step(p: torch.Tensor, r_t: torch.Tensor, target: float, images: int, kimg: float) -> torch.Tensor:
    """ADA's update after `images` reals: p moves by images / (kimg * 1000) toward less
    augmentation when r_t < target and more when r_t > target, within [0, 1]."""
    return (p + torch.sign(r_t - target) * (images / (kimg * 1000))).clamp(0.0, 1.0)
