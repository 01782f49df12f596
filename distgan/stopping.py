"""When to stop a GAN: pure rules over a run's evaluation history.

A run ends early when it has `diverged` (non-finite losses or samples, losses beyond
`stop.max_loss`, a distance beyond DIVERGED_FD, or D saturated:
D(x) -> 1 and D(G(z)) -> 0 for K evaluations, so G's gradients vanish) or `plateaued`
(its best distance has not improved by a relative delta over P evaluations). The worker puts
the reason in its report (`stop_reason`) and ends; ASHA's stops are the scheduler's.
"""

from __future__ import annotations

from collections.abc import Sequence

from distgan.config import StopConfig
from distgan.metrics.evaluate import DIVERGED_FD


def stop_reason(history: Sequence[dict[str, float]], fd_key: str, cfg: StopConfig, probabilistic: bool) -> str:
    """'' (go on), 'diverged' or 'plateaued' after the last evaluation in `history`."""
    last = history[-1]
    if last.get("nonfinite", 0) > 0 or last.get("diverged", 0) > 0 or not last[fd_key] < DIVERGED_FD:
        return "diverged"
    if cfg.max_loss and max(abs(last.get("loss_d", 0.0)), abs(last.get("loss_g", 0.0))) > cfg.max_loss:
        return "diverged"
    k = cfg.saturation_evals
    if probabilistic and k and len(history) >= k and all(
            h.get("d_real", 0) >= 1 - cfg.saturation_eps and h.get("d_fake", 1) <= cfg.saturation_eps
            for h in history[-k:]):
        return "diverged"
    p = cfg.plateau_evals
    if p and len(history) > p:
        before = min(h[fd_key] for h in history[:-p])
        recent = min(h[fd_key] for h in history[-p:])
        if recent > before * (1 - cfg.plateau_delta):
            return "plateaued"
    return ""
