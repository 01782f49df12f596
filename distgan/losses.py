"""GAN objectives, one class per loss; the engine calls them per phase.

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
    #: The D phase needs D's output on interpolates (gradient penalty).
    needs_penalty = False

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


class WGANGP(GANLoss):
    probabilistic = False
    needs_penalty = True

    def __init__(self, gp_weight: float = 10.0):
        self.gp_weight = gp_weight

    def d_loss(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits):
        return -fake_logits.mean()

    def penalty(self, interp: torch.Tensor, interp_logits: torch.Tensor) -> torch.Tensor:
        """lambda * E(||grad_x D(x_hat)|| - 1)^2 (Gulrajani et al. 2017); create_graph for the double backward."""
        (grad,) = torch.autograd.grad(interp_logits.sum(), interp, create_graph=True)
        norms = grad.flatten(1).norm(2, dim=1)
        return self.gp_weight * ((norms - 1) ** 2).mean()


LOSSES: dict[str, type[GANLoss]] = {"ns": NonSaturating, "minimax": Minimax, "hinge": Hinge, "wgan-gp": WGANGP}


def build_loss(cfg: LossConfig) -> GANLoss:
    return WGANGP(cfg.gp_weight) if cfg.kind == "wgan-gp" else LOSSES[cfg.kind]()


def value_function(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """V(D, G) of the original paper from D's logits: E log D(x) + E log(1 - D(G(z)))."""
    return -NonSaturating().d_loss(real_logits, fake_logits)

