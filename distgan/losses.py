"""GAN objectives, one class per loss; the engine calls them in its D and G phases
(regularizers, which add terms of their own, are in distgan.regularizers).

With the cross-entropy objective V(D, G) = E log D(x) + E log(1 - D(G(z))), the best D is
p_r / (p_r + p_g); at p_g = p_r it outputs 1/2 and V = -log 4. `ns` and `minimax` share
D's loss (-V) and differ in G's: minimax minimizes log(1 - D(G(z))), whose gradient
vanishes while D easily rejects fakes; ns maximizes log D(G(z)) instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from distgan.config import LossConfig


class GANLoss:
    #: D's logits are log-odds, so sigmoid(logit) is D's probability "real".
    probabilistic = True
    #: D's output halfway between its targets for fakes and reals: r_t = E sign(D(x) - midpoint).
    midpoint = 0.0

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NonSaturating(GANLoss):
    def d_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits):
        return F.softplus(-fake_logits).mean()


class Minimax(NonSaturating):
    def g_loss(self, fake_logits):
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(l)) = -softplus(l)


class Hinge(GANLoss):
    probabilistic = False

    def d_loss(self, real_logits, fake_logits):
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def g_loss(self, fake_logits):
        return -fake_logits.mean()


class Wasserstein(GANLoss):
    """The critic's loss of WGAN; `wgan-gp` adds the gradient penalty (distgan.regularizers)."""
    probabilistic = False

    def d_loss(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits):
        return -fake_logits.mean()


class LeastSquares(GANLoss):
    """LSGAN (Mao et al. 2017) with targets 0 (fake) and 1 (real): D's output is a score, not
    log-odds, and its gradient does not vanish for fakes far on the real side of the boundary."""
    probabilistic = False
    midpoint = 0.5

    def d_loss(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits ** 2).mean()

    def g_loss(self, fake_logits):
        return 0.5 * ((fake_logits - 1) ** 2).mean()


LOSSES: dict[str, type[GANLoss]] = {"ns": NonSaturating, "minimax": Minimax, "hinge": Hinge,
                                    "wgan-gp": Wasserstein, "lsgan": LeastSquares}


def build_loss(cfg: LossConfig) -> GANLoss:
    return LOSSES[cfg.kind]()


def value_function(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """V(D, G) of the original paper from D's logits: E log D(x) + E log(1 - D(G(z)))."""
    return -NonSaturating().d_loss(real_logits, fake_logits)

