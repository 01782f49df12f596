"""Does a latent code control something one can see? Measured without another network.

For each continuous code, fixed rows of z (and class, and category) are rendered while the
code sweeps [-1, 1]; each image gets simple attributes a digit's style is made of: ink mass
(stroke width), slant (the shear of its second-order moments, as MNIST deskewing uses) and
its bounding box's height and width. Per row, the Spearman rank correlation of the code with
each attribute; their mean over rows is the code's ρ for that attribute (a code that widens
every digit has ρ ≈ 1; one that does nothing consistent ≈ 0). `info_rho_c1` is code 1's best
|ρ| over the attributes, `info_rho` the mean of those over the codes. A categorical code is
scored, where the detector classifies, by its clustering accuracy against the predicted
classes: the best one-to-one matching of code values to classes (Hungarian).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distgan.latent import Latent

ATTRIBUTES = ("ink", "slant", "height", "width")
#: Rows of z per sweep and values per sweep: 32 x 9 images per code.
ROWS, STEPS = 32, 9
#: Seed of the sweep's fixed rows (apart from the evaluation latents').
SWEEP_SEED = 271828


def _extent(mask: torch.Tensor) -> torch.Tensor:
    """Length from the first to the last True along dim 1 (0 for none)."""
    length = mask.shape[1]
    any_ = mask.any(1)
    first = mask.float().argmax(1)
    last = length - 1 - mask.flip(1).float().argmax(1)
    return torch.where(any_, last - first + 1, torch.zeros_like(first)).float()


def attributes(images: torch.Tensor) -> torch.Tensor:
    """(n, 4) ink, slant, height, width of images in [-1, 1] (bright strokes on dark)."""
    x = ((images.float().mean(1) + 1) / 2).clamp(0, 1)
    _, h, w = x.shape
    mass = x.sum((1, 2)).clamp(min=1e-6)
    rows = torch.arange(h, dtype=x.dtype, device=x.device)
    cols = torch.arange(w, dtype=x.dtype, device=x.device)
    dy = rows[None, :] - (x.sum(2) * rows).sum(1)[:, None] / mass[:, None]
    dx = cols[None, :] - (x.sum(1) * cols).sum(1)[:, None] / mass[:, None]
    mu02 = (x * dy[:, :, None] ** 2).sum((1, 2)) / mass
    mu11 = (x * dy[:, :, None] * dx[:, None, :]).sum((1, 2)) / mass
    on = x > 0.5
    return torch.stack([mass / (h * w), mu11 / mu02.clamp(min=1e-6), _extent(on.any(2)), _extent(on.any(1))], 1)


def ranks(t: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dim, ties given their average rank (as Spearman's ρ needs)."""
    less = (t[..., None, :] < t[..., :, None]).sum(-1).float()
    equal = (t[..., None, :] == t[..., :, None]).sum(-1).float()
    return less + (equal + 1) / 2


def spearman(values: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of Spearman's ρ between `values` (S,) and attrs (rows, S, A): (A,).
    A row whose attribute does not change has no correlation (0)."""
    rv = ranks(values)
    ra = ranks(attrs.transpose(1, 2))  # (rows, A, S)
    rv, ra = rv - rv.mean(), ra - ra.mean(-1, keepdim=True)
    denom = rv.norm() * ra.norm(dim=-1)
    rho = torch.where(denom > 0, (ra * rv).sum(-1) / denom.clamp(min=1e-12), torch.zeros_like(denom))
    return rho.mean(0)


def matched_accuracy(codes: torch.Tensor, classes: torch.Tensor) -> float:
    """Clustering accuracy: the share of samples whose code value maps to their class under the
    best one-to-one matching of code values to classes."""
    from scipy.optimize import linear_sum_assignment

    codes, classes = codes.cpu(), classes.cpu()
    counts = torch.zeros(int(codes.max()) + 1, int(classes.max()) + 1)
    counts.index_put_((codes, classes), torch.ones(len(codes)), accumulate=True)
    r, c = linear_sum_assignment(counts.numpy(), maximize=True)
    return float(counts[r, c].sum() / len(codes))


@dataclass
class CodedGenerator:
    """What the metric needs of one evaluation: G as a function of (latent rows, labels)."""
    render: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    latent: Latent
    num_classes: int
    """G's classes (0: unconditional)."""
    classify: Callable[[torch.Tensor], torch.Tensor | None] | None = None
    """Predicted classes of images (the detector's), for a categorical code's accuracy."""


def controllability(s: CodedGenerator, rows: int = ROWS, steps: int = STEPS, seed: int = SWEEP_SEED) -> dict[str, float]:
    lat = s.latent
    z = lat.seeded(rows, seed)[:, :lat.noise]
    y = torch.arange(rows) % s.num_classes if s.num_classes else None
    category = torch.arange(rows) % lat.categories if lat.categories else None
    values = torch.linspace(-1, 1, steps)
    out: dict[str, float] = {}
    best = []
    for i in range(lat.codes):
        images = s.render(lat.vary(z, i, values, category), y.repeat_interleave(steps) if y is not None else None)
        rho = spearman(values, attributes(images).cpu().view(rows, steps, len(ATTRIBUTES))).abs()
        out.update({f"info_rho_c{i + 1}_{a}": float(r) for a, r in zip(ATTRIBUTES, rho)})
        out[f"info_rho_c{i + 1}"] = float(rho.max())
        best.append(float(rho.max()))
    if best:
        out["info_rho"] = sum(best) / len(best)
    if lat.categories and s.classify is not None:
        k = torch.arange(lat.categories).repeat(rows)
        latents = lat.join(z.repeat_interleave(lat.categories, 0), k=k)
        pred = s.classify(s.render(latents, y.repeat_interleave(lat.categories) if y is not None else None))
        if pred is not None:
            out["info_acc"] = matched_accuracy(k, pred)
    return out


def describe(metrics: dict[str, float]) -> str:
    """'c1 0.91 slant, c2 0.64 ink' for a console line ('' without codes)."""
    parts = []
    i = 1
    while f"info_rho_c{i}" in metrics:
        attr = max(ATTRIBUTES, key=lambda a: metrics.get(f"info_rho_c{i}_{a}", 0.0))
        parts.append(f"c{i} {metrics[f'info_rho_c{i}']:.2f} {attr}")
        i += 1
    if "info_acc" in metrics:
        parts.append(f"category acc {metrics['info_acc']:.2f}")
    return ", ".join(parts)
