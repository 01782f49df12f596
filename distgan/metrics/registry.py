"""Sample-quality metrics registered by name, each with the protocol its numbers carry.

A metric's logged name says what it measures: the feature space and the sample count.
`fid10k` is only ever the Fréchet distance in the standard Inception features (comparable
to published numbers); in another network's features it is `fd_lenet2k`, `fd_coords2k`,
so numbers that must never be compared never look alike. A run lists what it computes at
each evaluation in `eval.metrics`: `fd` and `modes` are cheap and on by default; `kd` (KID)
and `prdc` (precision, recall, density, coverage) cost O(N²) and are opt-in, every
evaluation or every k-th one (`kd@5`). `control` (distgan.metrics.control) scores how
well InfoGAN codes steer visible attributes: on by default, empty for a model without codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from distgan.metrics.control import CodedGenerator, controllability
from distgan.metrics.frechet import bootstrap_se, features_distance
from distgan.metrics.kid import kid
from distgan.metrics.modes import class_coverage, mixture_coverage
from distgan.metrics.prdc import prdc
from distgan.metrics.stats import RealStats

#: Short names of the feature spaces in metric names; inception's is implied by `fid`/`kid`.
FEATURE_SPACE = {"lenet-mnist": "lenet", "coords": "coords"}
#: What a Fréchet distance of the original (pre-registry) runs was named: fid2k whatever the features.
LEGACY = re.compile(r"^(fid|kid)(\d+k?)(_std)?$")


def protocol(n: int) -> str:
    """The sample count as metric names carry it: 2000 -> '2k', 500 -> '500'."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def space_tag(detector: str, n: int) -> str:
    """'10k' for Inception features, '_lenet2k' for LeNet ones: what follows a metric's stem."""
    short = FEATURE_SPACE.get(detector)
    return f"_{short}{protocol(n)}" if short else protocol(n)


def fd_name(detector: str, n: int) -> str:
    """The Fréchet distance of an n-sample protocol in a detector's features."""
    return f"fid{protocol(n)}" if detector == "inception" else f"fd{space_tag(detector, n)}"


def kd_name(detector: str, n: int) -> str:
    return f"kid{protocol(n)}" if detector == "inception" else f"kd{space_tag(detector, n)}"


@dataclass(frozen=True)
class Inputs:
    """What one evaluation hands every metric: features on their device, the detector's class
    predictions, the real side's statistics, and what names need."""
    fake: torch.Tensor
    fake_pred: torch.Tensor | None
    real: RealStats
    detector: str
    has_classes: bool
    mixture: tuple[np.ndarray, float] | None
    coded: CodedGenerator | None = None
    """G to render code sweeps with (image models with InfoGAN codes only)."""
    bootstrap: int = 0
    """Resamples for the distance's standard error (`<fd>_se`); 0: not measured."""


def _fd(i: Inputs) -> dict[str, float]:
    name = fd_name(i.detector, len(i.fake))
    out = {name: features_distance(i.fake, i.real.mu, i.real.sigma)}
    if i.bootstrap > 1:
        out[f"{name}_se"] = bootstrap_se(i.fake, i.real.mu, i.real.sigma, i.bootstrap)
    return out


def _kd(i: Inputs) -> dict[str, float]:
    mean, std = kid(i.real.features, i.fake)
    name = kd_name(i.detector, len(i.fake))
    return {name: mean, f"{name}_std": std}


def _prdc(i: Inputs) -> dict[str, float]:
    tag = space_tag(i.detector, len(i.fake))
    return {f"{k}{tag}": v for k, v in prdc(i.real.features, i.fake).items()}


def _modes(i: Inputs) -> dict[str, float]:
    out = {}
    if i.fake_pred is not None and i.has_classes:
        out.update(class_coverage(i.fake_pred, len(i.real.class_hist), i.real.class_hist))
    if i.mixture is not None:
        out.update(mixture_coverage(i.fake, *i.mixture))
    return out


def _control(i: Inputs) -> dict[str, float]:
    return controllability(i.coded) if i.coded is not None else {}


METRICS: dict[str, Callable[[Inputs], dict[str, float]]] = {"fd": _fd, "kd": _kd, "prdc": _prdc, "modes": _modes,
                                                             "control": _control}


def parse(entries: tuple[str, ...] | list[str]) -> dict[str, int]:
    """`["fd", "kd@5"]` -> {"fd": 1, "kd": 5}: each metric and every how many evaluations it runs."""
    out = {}
    for entry in entries:
        name, _, every = str(entry).partition("@")
        if name not in METRICS:
            raise ValueError(f"{entry!r}: unknown metric, expected one of {sorted(METRICS)} (optionally @K)")
        try:
            period = int(every) if every else 1
        except ValueError:
            period = 0
        if period < 1:
            raise ValueError(f"{entry!r}: the period after @ must be a whole number >= 1")
        out[name] = period
    if "fd" not in out:
        raise ValueError("the Fréchet distance 'fd' must be listed: it is the objective and the checkpoint score")
    if out["fd"] != 1:
        raise ValueError("'fd' runs at every evaluation (it picks the best checkpoint)")
    return out


def due(schedule: dict[str, int], index: int | None) -> list[str]:
    """The metrics of evaluation number `index` (1, 2, ...); None: all of them (promotion, `distgan fid`)."""
    return [m for m, every in schedule.items() if index is None or index % every == 0]


def compute(inputs: Inputs, names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        out.update(METRICS[name](inputs))
    return out


def upgrade(metrics: dict, detector: str) -> dict:
    """A record written before metric names carried their feature space (`fid2k` from LeNet
    features) under today's names, so old runs stay readable; Inception's keep theirs."""
    if detector == "inception":
        return metrics
    out = {}
    for key, value in metrics.items():
        m = LEGACY.match(key)
        if m:
            stem, n, std = m.groups()
            key = f"{'fd' if stem == 'fid' else 'kd'}_{FEATURE_SPACE.get(detector, detector)}{n}{std or ''}"
        elif key == "fid_best":
            key = "fd_best"
        out[key] = value
    return out
