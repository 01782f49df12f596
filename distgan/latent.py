"""G's input vector: Gaussian noise z, then InfoGAN's codes (Chen et al. 2016).

A code is a part of the latent that G is made to keep readable in its images: a Q head on
D's trunk predicts it back from G's output, and the negative log-likelihood of that guess
(a lower bound on the mutual information I(c; G(z, c)), up to the codes' entropy) is in G's
and Q's losses. Continuous codes are U(-1, 1) with a Gaussian guess; one categorical code
of K values is one-hot with a softmax guess. One layout for training, evaluation, sampling
and the exported model: [z | continuous codes | one-hot category].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distgan.augment import Draw
from distgan.config import ConfigError


@dataclass(frozen=True)
class Latent:
    noise: int
    codes: int = 0
    """Continuous codes c_i ~ U(-1, 1)."""
    categories: int = 0
    """K of the one categorical code (0: none)."""

    @classmethod
    def of(cls, model) -> Latent:
        """The latent of a ModelConfig."""
        return cls(model.z_dim, model.codes, model.code_categories)

    @property
    def width(self) -> int:
        return self.noise + self.codes + self.categories

    @property
    def coded(self) -> bool:
        return bool(self.codes or self.categories)

    @property
    def q_width(self) -> int:
        """What the Q head predicts: a mean and a log standard deviation per continuous code,
        then the category's logits."""
        return 2 * self.codes + self.categories

    def compose(self, z: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """[z | 2u - 1 | one-hot(floor(K u_last))] from Gaussian z and uniform u
        (codes + 1 columns when there is a category, else codes)."""
        if not self.coded:
            return z
        parts = [z, 2 * u[:, :self.codes] - 1]
        if self.categories:
            k = (u[:, -1] * self.categories).long().clamp(max=self.categories - 1)
            parts.append(F.one_hot(k, self.categories).to(z.dtype))
        return torch.cat(parts, 1)

    def draw(self, n: int, normal: Draw, uniform: Draw) -> torch.Tensor:
        """n latents from the given sources (the engine's rank-sliced stream, or a seeded generator)."""
        z = normal(n, self.noise)
        return self.compose(z, uniform(n, self.codes + (1 if self.categories else 0)) if self.coded else None)

    def seeded(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return self.draw(n, lambda *s: torch.randn(*s, generator=g), lambda *s: torch.rand(*s, generator=g))

    def split(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(z, continuous codes, category index or None) of latent rows."""
        z, c = latent[:, :self.noise], latent[:, self.noise:self.noise + self.codes]
        k = latent[:, self.noise + self.codes:].argmax(1) if self.categories else None
        return z, c, k

    def info_nll(self, q: torch.Tensor, latent: torch.Tensor, code_weight: float = 1.0,
                 category_weight: float = 1.0) -> torch.Tensor:
        """The Q head's negative log-likelihood of the codes that made the images: Gaussian
        NLL summed over continuous codes plus the category's cross-entropy, mean over rows;
        each part weighted (InfoGAN weighs the category by 1, continuous codes less)."""
        _, c, k = self.split(latent)
        mean, log_std = q[:, :self.codes], q[:, self.codes:2 * self.codes].clamp(-5, 5)
        nll = (log_std + 0.5 * ((c - mean) / log_std.exp()) ** 2 + 0.5 * math.log(2 * math.pi)).sum(1).mean()
        nll = code_weight * nll
        if self.categories:
            nll = nll + category_weight * F.cross_entropy(q[:, 2 * self.codes:], k)
        return nll

    def join(self, z: torch.Tensor, c: torch.Tensor | None = None, k: torch.Tensor | None = None) -> torch.Tensor:
        """Latent rows from z and chosen codes: continuous ones (default 0), the category (default 0)."""
        n = len(z)
        parts = [z, c if c is not None else torch.zeros(n, self.codes, dtype=z.dtype)]
        if self.categories:
            k = k if k is not None else torch.zeros(n, dtype=torch.long)
            parts.append(F.one_hot(k, self.categories).to(z.dtype))
        return torch.cat(parts, 1)

    def vary(self, z: torch.Tensor, code: int, values: torch.Tensor, category: torch.Tensor | None = None) -> torch.Tensor:
        """Latents for a sweep of continuous code `code` (0-based): row i of z repeated once per
        value, the other continuous codes at 0, the category per row (default 0). Row-major:
        the values of z[0], then of z[1], ..."""
        if not 0 <= code < self.codes:
            raise ValueError(f"code {code + 1}: the model has {self.codes} continuous codes")
        n, s = len(z), len(values)
        c = torch.zeros(n * s, self.codes, dtype=z.dtype)
        c[:, code] = values.repeat(n)
        return self.join(z.repeat_interleave(s, 0), c, category.repeat_interleave(s, 0) if category is not None else None)


#: How far `--vary` sweeps a code: past the training range U(-1, 1), as InfoGAN shows.
VARY_RANGE = 2.0


def vary_latents(latent: Latent, code: int, rows: int, steps: int, seed: int, span: float = VARY_RANGE) -> torch.Tensor:
    """A `--vary` grid's latents: row r a fixed z (and category r mod K), its columns continuous
    code `code` (1-based) from -span to span, the other codes at 0."""
    if latent.codes == 0:
        raise ConfigError(f"--vary c{code}: the model has no continuous codes (train it with model.codes)")
    if not 1 <= code <= latent.codes:
        raise ConfigError(f"--vary c{code}: the model has codes c1..c{latent.codes}")
    z = torch.randn(rows, latent.noise, generator=torch.Generator().manual_seed(seed))
    category = torch.arange(rows) % latent.categories if latent.categories else None
    return latent.vary(z, code - 1, torch.linspace(-span, span, steps), category)
