"""Terms added to D's loss, each a small object that owns its term, its phase and its interval,
so a new regularizer needs no edit of the engine.

Phases (as in stylegan2-ada-pytorch): a `Dmain` term joins D's main loss and reads the same
forward pass (its logits, or extra inputs it asks for); a `Dreg` term takes its own D step
every `every` D updates with its loss scaled by `every` (lazy regularization, Karras et al.
2020: the same expected gradient at a fraction of the cost).
"""

from __future__ import annotations

import torch

from distgan.augment import Draw
from distgan.config import LossConfig
from distgan.distributed import all_mean


def _grad(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)  # kept for the double backward
    return grad.flatten(1)


class Regularizer:
    name = ""
    phase = "Dmain"
    every = 1
    #: Differentiates D's gradient in the main phase (torch.compile cannot).
    double_backward = False

    def extra_input(self, real: torch.Tensor, fake: torch.Tensor, draw: Draw) -> torch.Tensor | None:
        """A batch D should also see in the main forward (None: none)."""
        return None

    # A Dmain term: term(*, real_logits, fake_logits, extra, extra_logits) -> tensor.
    # A Dreg term: penalty(real, real_logits) -> tensor, unscaled.

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class GradientPenalty(Regularizer):
    """lambda * E(||grad_x D(x_hat)|| - 1)^2 on interpolates of reals and fakes (WGAN-GP,
    Gulrajani et al. 2017), in the main forward: one spectral-norm power iteration and one
    DDP reduction per D update."""
    name = "gp"
    double_backward = True

    def __init__(self, weight: float):
        self.weight = weight

    def extra_input(self, real, fake, draw):
        eps = draw(len(real), *[1] * (real.dim() - 1))
        return (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)

    def term(self, *, real_logits, fake_logits, extra=None, extra_logits=None):
        return self.weight * ((_grad(extra_logits, extra).norm(2, dim=1) - 1) ** 2).mean()


class LeCam(Regularizer):
    """lambda * (E(D(x) - a_fake)^2 + E(D(G(z)) - a_real)^2), a_* moving averages of D's
    outputs (Tseng et al. 2021): keeps D's outputs on reals and fakes from drifting apart,
    which is how D overfits a small data set. The averages are over the global batch."""
    name = "lecam"

    def __init__(self, weight: float, decay: float):
        self.weight, self.decay = weight, decay
        self.ema: torch.Tensor | None = None  # (a_real, a_fake)

    def term(self, *, real_logits, fake_logits, extra=None, extra_logits=None):
        means = all_mean(torch.stack([real_logits.detach().mean(), fake_logits.detach().mean()]))
        self.ema = means if self.ema is None else torch.lerp(means, self.ema.to(means.device), self.decay)
        a_real, a_fake = self.ema[0], self.ema[1]
        return self.weight * (((real_logits - a_fake) ** 2).mean() + ((fake_logits - a_real) ** 2).mean())

    def state_dict(self):
        return {"ema": self.ema}

    def load_state_dict(self, state):
        self.ema = state["ema"]


class R1(Regularizer):
    """gamma/2 * E||grad_x D(x)||^2 on reals (Mescheder et al. 2018): penalizes D's slope
    where the data is, so D cannot carve a cliff around memorized reals. Lazy: every k D
    updates, scaled by k."""
    name = "r1"
    phase = "Dreg"

    def __init__(self, gamma: float, every: int):
        self.gamma, self.every = gamma, every

    def penalty(self, real: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
        """The unscaled term at one D update (`real` requires grad and produced `real_logits`)."""
        return self.gamma / 2 * _grad(real_logits, real).pow(2).sum(1).mean()


def build_regularizers(cfg: LossConfig) -> list[Regularizer]:
    regs: list[Regularizer] = []
    if cfg.kind == "wgan-gp":
        regs.append(GradientPenalty(cfg.gp_weight))
    if cfg.lecam_weight > 0:
        regs.append(LeCam(cfg.lecam_weight, cfg.lecam_decay))
    if cfg.r1_gamma > 0:
        regs.append(R1(cfg.r1_gamma, cfg.r1_every))
    return regs
