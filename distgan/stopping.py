"""When to stop a GAN: pure rules over a run's evaluation history.

A run ends early when it has `diverged` (non-finite losses or samples, losses beyond
`stop.max_loss`, a distance beyond DIVERGED_FD, or D saturated:
D(x) -> 1 and D(G(z)) -> 0 for K evaluations, so G's gradients vanish) or `plateaued`
(its best distance has not improved by a relative delta over P evaluations). The worker puts
the reason in its report (`stop_reason`) and ends; ASHA's stops are the scheduler's.

`watch_reason` is the `watch` scheduler's reading of one trial, in the distance's own noise
(its bootstrap standard error `<fd>_se`): a difference within z combined standard errors is
no difference. It stops a trial that has `plateaued` (its best has not moved beyond the noise
for P evaluations) or whose D overfits (`d_overfit`: r_t above target, D's gap between
training and held-out reals opened during the run and not closed again since the best
evaluation, and the distance risen beyond the noise since then: training on now hurts, and
the best checkpoint is the earlier one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distgan.config import StopConfig
from distgan.metrics.evaluate import DIVERGED_FD


def diverged(last: dict[str, float], fd_key: str) -> bool:
    """Non-finite losses or samples, or a distance beyond DIVERGED_FD, at this evaluation."""
    return last.get("nonfinite", 0) > 0 or last.get("diverged", 0) > 0 or not last[fd_key] < DIVERGED_FD


def stop_reason(history: Sequence[dict[str, float]], fd_key: str, cfg: StopConfig, probabilistic: bool) -> str:
    """'' (go on), 'diverged' or 'plateaued' after the last evaluation in `history`."""
    last = history[-1]
    if diverged(last, fd_key):
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


@dataclass(frozen=True)
class WatchRules:
    patience: int = 5
    """P: evaluations without an improvement beyond the noise before `plateaued` (0: never)."""
    noise: float = 2.0
    """z: `d_overfit` and `dominated` need the distance worse by z combined standard errors of
    the two distances compared (a claim that stops a trial wants evidence)."""
    plateau_noise: float = 1.0
    """An improvement beyond this many combined standard errors is progress (not `plateaued`)."""
    overfit_r: float = 0.6
    """r_t above which D is too sure of the reals (ADA's target)."""
    gap_rise: float = 0.05
    """How far d_gap must have risen above its lowest to count as D telling its reals apart
    (and beyond `noise` combined standard errors of the two gaps, `d_gap_se`)."""


def margin(se_a: float, se_b: float, z: float) -> float:
    """z standard errors of the difference of two independent distances."""
    return z * math.sqrt(se_a ** 2 + se_b ** 2)


def watch_reason(history: Sequence[dict[str, float]], fd_key: str, rules: WatchRules) -> tuple[str, str]:
    """('', '') to go on, else (reason, a line saying why) after the last evaluation."""
    se_key = f"{fd_key}_se"
    fd = [h[fd_key] for h in history]
    se = [h.get(se_key, 0.0) or 0.0 for h in history]
    last = history[-1]
    if diverged(last, fd_key):
        return "diverged", f"{fd_key} {fd[-1]:.4g}"
    best = min(range(len(fd)), key=fd.__getitem__)
    if best < len(fd) - 1 and "d_gap" in last and "d_gap" in history[best]:
        low = min((h for h in history if "d_gap" in h), key=lambda h: h["d_gap"])
        # D tells its reals from unseen ones more than it did, by more than gap_rise and than
        # the gap's noise (conservative: the two are measured on the same probe reals)
        opened = last["d_gap"] - low["d_gap"] > max(rules.gap_rise, margin(last.get("d_gap_se", 0.0),
                                                                           low.get("d_gap_se", 0.0), rules.noise))
        still_open = last["d_gap"] >= history[best]["d_gap"] - rules.gap_rise
        if (last.get("r_t", 0.0) > rules.overfit_r and opened and still_open
                and fd[-1] - fd[best] > margin(se[-1], se[best], rules.noise)):
            return "d_overfit", (f"r_t {last['r_t']:.2f} > {rules.overfit_r}, d_gap {low['d_gap']:.2f} -> "
                                 f"{last['d_gap']:.2f} (+-{last.get('d_gap_se', 0.0):.2g}; "
                                 f"{history[best]['d_gap']:.2f} at the best), {fd_key} "
                                 f"{fd[best]:.4g} -> {fd[-1]:.4g} (+-{se[-1]:.2g})")
    p = rules.patience
    if p and len(fd) > p:
        before = min(range(len(fd) - p), key=fd.__getitem__)
        recent = min(range(len(fd) - p, len(fd)), key=fd.__getitem__)
        gained = fd[before] - fd[recent]
        if gained <= margin(se[before], se[recent], rules.plateau_noise):
            return "plateaued", (f"best {fd_key} {fd[before]:.4g} -> {fd[recent]:.4g} over {p} evaluations, within "
                                 f"{rules.plateau_noise:g} combined standard errors "
                                 f"({margin(se[before], se[recent], 1.0):.2g})")
    return "", ""


def dominated(value: float, se: float, recorded: Sequence[tuple[float, float]], reduction_factor: int,
              z: float) -> str:
    """At a rung, ASHA with noise margins: '' to go on, else why the trial's best `value`
    (standard error `se`) is worse than the rung's top-1/rf cutoff over the (best, se) pairs
    other trials `recorded` there, by more than the combined noise."""
    if not recorded:
        return ""
    cutoff = float(np.percentile([v for v, _ in recorded], 100 / reduction_factor))
    near = min(recorded, key=lambda r: abs(r[0] - cutoff))
    if value > cutoff + margin(se, near[1], z):
        return f"best {value:.4g} (+-{se:.2g}) against the rung's top 1/{reduction_factor} cutoff {cutoff:.4g}"
    return ""
