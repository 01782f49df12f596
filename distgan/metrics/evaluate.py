"""One evaluation of a generator: a fixed latent set -> detector features -> the metrics due.

Samples are generated in batches and only features are kept, on the device, so 50k samples
never sit in memory as images and features never visit the host. Under DDP each rank makes
its contiguous share of the latents, features are all-gathered on the device, rank 0
computes the metrics once and broadcasts the numbers, so every rank decides alike (stop or
go on). The latent set is a pure function of (seed, n): successive evaluations of a trial
measure the same z's and their distances are comparable.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from distgan.config import RunConfig
from distgan.data.prepare import mixture_modes
from distgan.data.reader import load_rows
from distgan.data.schema import DatasetInfo
from distgan.distributed import all_gather_rows, broadcast_object
from distgan.latent import Latent
from distgan.metrics import detectors, registry
from distgan.metrics.control import CodedGenerator
from distgan.metrics.detectors import batched_features, exact_fp32
from distgan.metrics.stats import RealStats, real_stats

#: Distance reported for a generator whose samples are not finite: large and finite, because
#: ASHA never stops a NaN trial and Optuna drops NaN objectives.
DIVERGED_FD = 1e4
#: Seed of the fixed evaluation latents.
EVAL_SEED = 12345
#: Seed of the real subset the reference statistics are computed on.
REAL_SEED = 0
#: Held-out reals (and as many training reals) D's overfitting is read on.
PROBE_ROWS = 500


@dataclass
class CriticProbe:
    """D on training reals against reals it never saw (the held-out split), without
    augmentation. A D that memorizes its training set scores those above the unseen ones
    (Karras et al. 2020, Fig. 1; BigGAN §4.2): `d_gap` = 2·AUC − 1 of its scores, training
    against held-out (0: it cannot tell them apart, 1: every training real above every
    held-out one), from the order of the scores only, so a shift of all of D's outputs moves
    it not at all, with its standard error `d_gap_se`. Also r = E sign D(x) on each
    (`r_train`, `r_held`), ADA's heuristic on fixed reals."""
    train: tuple[torch.Tensor, torch.Tensor]
    held: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def read(cls, info: DatasetInfo, device: torch.device, rows: int = PROBE_ROWS) -> "CriticProbe | None":
        """None when the data set holds no row out (a split at read time may find none in a tiny set)."""
        if not (info.heldout or info.held_at_read):
            return None
        held = load_rows(info, info.heldout or info.files, rows, held=True)
        train = load_rows(info, info.files, len(held[0]))
        m = min(len(held[0]), len(train[0]))
        if m < 2:
            return None
        return cls(*(tuple(t[:m].to(device) for t in pair) for pair in (train, held)))

    @torch.no_grad()
    def __call__(self, critic: torch.nn.Module, conditional: bool, batch: int) -> dict[str, float]:
        was_training = critic.training
        critic.eval()  # spectral norm's power iteration and BatchNorm's statistics stay as they are

        def scores(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
            return torch.cat([critic(x[i:i + batch], y[i:i + batch] if conditional else None).float().flatten()
                              for i in range(0, len(x), batch)]).cpu().double().numpy()

        trained, unseen = scores(*self.train), scores(*self.held)
        critic.train(was_training)
        if not (np.isfinite(trained).all() and np.isfinite(unseen).all()):
            return {}
        # 2 AUC - 1 over every (training, held-out) pair, a tie counting half (Somers' D)
        gap = np.sign(trained[:, None] - unseen[None, :]).mean()
        return {"r_train": float(np.sign(trained).mean()), "r_held": float(np.sign(unseen).mean()),
                "d_gap": float(gap), "d_gap_se": gap_se(float(gap), len(trained), len(unseen))}


def gap_se(gap: float, n_train: int, n_held: int) -> float:
    """The standard error of d_gap = 2 AUC - 1 (Hanley & McNeil 1982): on 200 + 200 reals it is
    +-0.058 where D cannot tell them apart, so a rise of 0.07 is no evidence of memorizing."""
    a = (gap + 1) / 2
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_train - 1) * (q1 - a * a) + (n_held - 1) * (q2 - a * a)) / (n_train * n_held)
    return 2 * math.sqrt(max(var, 0.0))


def fixed_latents(n: int, latent: Latent | int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents for evaluation (a z width: no codes); conditional models get balanced labels (i mod K)."""
    latent = Latent(latent) if isinstance(latent, int) else latent
    y = torch.arange(n) % num_classes if num_classes else None
    return latent.seeded(n, seed), y


@dataclass
class Evaluator:
    detector: detectors.Detector
    real: RealStats | None
    """On the evaluation device; only rank 0, which computes the metrics, needs them."""
    n: int
    batch: int
    schedule: dict[str, int]
    mixture: tuple[np.ndarray, float] | None
    device: torch.device
    latent: Latent | None = None
    """G's latent layout (InfoGAN codes); None: z only, of G's z_dim."""
    bootstrap: int = 0
    """Resamples for the distance's standard error."""
    probe: CriticProbe | None = None
    """D's overfitting signal (rank 0; None: the data set holds nothing out)."""

    @property
    def fd_key(self) -> str:
        return registry.fd_name(self.detector.name, self.n)

    @classmethod
    def build(cls, cfg: RunConfig, info: DatasetInfo, device: torch.device | str, real: RealStats | None = None,
              cache_dir: str | None = None, n: int | None = None) -> "Evaluator":
        """The run's detector and schedule; real statistics as given, else from the cache
        (computed there on this device if missing)."""
        device = torch.device(device)
        n = n or cfg.eval.num_samples
        det = detectors.build(cfg.eval.detector, info.sample_shape, device=device)
        if real is None:  # a run's reference: a set smaller than n is drawn with repeats
            real = real_stats(info.location, det, n, cache_dir if cache_dir is not None else (cfg.eval.cache_dir or None),
                              allow_repeat=True, batch=cfg.eval.batch_size, seed=REAL_SEED, device=device)
        return cls(det, real.to(device), n, cfg.eval.batch_size, registry.parse(cfg.eval.metrics),
                   mixture_modes(info.name), device, Latent.of(cfg.model), cfg.eval.fd_bootstrap,
                   CriticProbe.read(info, device))

    def __call__(self, generator: torch.nn.Module, index: int | None = None, rank: int = 0, world_size: int = 1,
                 seed: int = EVAL_SEED, progress: bool = False, critic: torch.nn.Module | None = None) -> dict[str, float]:
        """The metrics due at evaluation number `index` (None: every registered one) of G_ema,
        the probe's signals of `critic` (D, unwrapped from DDP) when given, plus `eval_s`, the
        seconds this took (generation, features, gather, metrics)."""
        t0 = time.perf_counter()
        latent = self.latent or Latent(generator.z_dim)
        z, y = fixed_latents(self.n, latent, generator.num_classes, seed)
        share = slice(rank * self.n // world_size, (rank + 1) * self.n // world_size)
        was_training = generator.training
        generator.eval()

        @torch.no_grad()
        def generate(zb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
            out = generator(zb.to(self.device), yb.to(self.device) if yb is not None else None).float()
            return out.clamp(-1, 1) if out.dim() == 4 else out

        feats, preds = batched_features(generate, z[share], y[share] if y is not None else None, self.detector,
                                        self.batch, progress)
        if world_size > 1:
            feats = all_gather_rows(feats)
            preds = all_gather_rows(preds) if preds is not None else None
        metrics = None
        if rank == 0:
            coded = None
            if latent.coded and self.detector.name != "coords":  # attributes of images, not points
                coded = CodedGenerator(generate, latent, generator.num_classes,
                              self.classify if self.detector.has_classes else None)
            metrics = self.metrics(feats, preds, index, coded)
            if self.probe is not None and critic is not None:
                metrics.update(self.probe(critic, generator.num_classes > 0, self.batch))
        generator.train(was_training)
        metrics = broadcast_object(metrics)
        return {**metrics, "eval_s": time.perf_counter() - t0}

    def classify(self, images: torch.Tensor) -> torch.Tensor | None:
        with exact_fp32(images.device):
            _, logits = self.detector(images.float())
        return logits.argmax(1) if logits is not None else None

    def metrics(self, feats: torch.Tensor, preds: torch.Tensor | None, index: int | None = None,
                coded: CodedGenerator | None = None) -> dict[str, float]:
        if not torch.isfinite(feats).all():
            return {self.fd_key: DIVERGED_FD, "diverged": 1.0}
        inputs = registry.Inputs(feats, preds, self.real, self.detector.name, self.detector.has_classes, self.mixture,
                                 coded, self.bootstrap)
        return {**registry.compute(inputs, registry.due(self.schedule, index)), "diverged": 0.0}

