"""Mode coverage: how much of the real distribution's modes the generator reaches.

Mode collapse shows here before FID moves much: a G that fools D with one easy mode
covers 1 of K modes however good those samples look.
"""

from __future__ import annotations

import numpy as np
import torch


def mixture_coverage(points, centres: np.ndarray, std: float, min_share: float = 0.01) -> dict[str, float]:
    """A sample is high quality when within 3 std of its nearest centre; a mode is covered
    when at least `min_share` of the samples are high-quality samples of it."""
    p = torch.as_tensor(points).to(torch.float64)
    c = torch.as_tensor(centres, dtype=torch.float64, device=p.device)
    dist, nearest = torch.cdist(p, c).min(1)
    good = dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(c))
    return {"modes_covered": float((counts >= min_share * len(p)).sum()),
            "modes_total": float(len(c)),
            "hq_share": float(good.double().mean())}


def class_coverage(pred, num_classes: int, real_hist: np.ndarray | None = None,
                   min_share: float = 0.01) -> dict[str, float]:
    """Classes covered (>= min_share of samples) and KL(generated || real) of the class histograms."""
    pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    hist = np.bincount(pred, minlength=num_classes).astype(np.float64) / max(1, len(pred))
    real = np.full(num_classes, 1 / num_classes) if real_hist is None else np.asarray(real_hist) / np.sum(real_hist)
    eps = 1e-10
    kl = float(np.sum(hist * (np.log(hist + eps) - np.log(real + eps))))
    return {"classes_covered": float((hist >= min_share).sum()), "classes_total": float(num_classes),
            "class_kl": kl}
