"""The essay's GAN theory, checked numerically.

For a fixed G, the D that maximizes V(D, G) = E_r log D(x) + E_g log(1 - D(x)) is
D* = p_r / (p_r + p_g); when p_g = p_r, D* = 1/2 and V(D*, G) = -log 4 (JS divergence 0).
"""

import math

import pytest
import torch
from torch import nn

import benches

from distgan import presets
from distgan.losses import NonSaturating, value_function


def _train_d(real: torch.Tensor, fake: torch.Tensor, steps: int = 600) -> nn.Module:
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    loss = NonSaturating()
    for _ in range(steps):
        opt.zero_grad()
        loss.d_loss(D(real).squeeze(1), D(fake).squeeze(1)).backward()
        opt.step()
    return D


def _normal(mean: float, n: int = 1000, offset: float = 0.5) -> torch.Tensor:
    """N(mean, 1) by its quantiles at (i + offset) / n: a sample without sampling noise, so
    what is left of D's error is its training's, and a thousand points suffice."""
    return mean + torch.special.ndtri((torch.arange(n) + offset) / n)[:, None]


def test_optimal_discriminator_is_pr_over_pr_plus_pg():
    # p_r = N(0, 1), p_g = N(1, 1): D*(x) = p_r / (p_r + p_g) = sigmoid(1/2 - x)
    D = _train_d(_normal(0.0), _normal(1.0))
    x = torch.linspace(-1.5, 2.5, 81)[:, None]
    with torch.no_grad():
        d = torch.sigmoid(D(x)).squeeze(1)
    p_r = torch.exp(-x.squeeze(1) ** 2 / 2)
    p_g = torch.exp(-(x.squeeze(1) - 1) ** 2 / 2)
    d_star = p_r / (p_r + p_g)
    assert (d - d_star).abs().max().item() < 0.01


def test_equal_distributions_give_one_half_and_minus_log_4():
    real, fake = _normal(0.0), _normal(0.0, offset=0.25)  # the same law, other points
    D = _train_d(real, fake)
    with torch.no_grad():
        d = torch.sigmoid(D(torch.linspace(-2, 2, 41)[:, None]))
        v = value_function(D(real).squeeze(1), D(fake).squeeze(1)).item()
    assert (d - 0.5).abs().max().item() < 0.01
    assert v == pytest.approx(-math.log(4), abs=0.002)


@pytest.mark.slow
def test_ring8_preset_covers_the_modes():
    """The preset (non-saturating loss, SN on D, Adam's beta1 0) finds the eight modes and
    puts most samples near them, at seed 2, where beta1 0.5 collapsed to one blob between
    the modes with healthy-looking losses (bench/ring8_seeds.py: 4 of 10 seeds did); what
    minimax without SN does is the SN study's (bench/sn_study.py) to show."""
    bench = benches.load("ring8_seeds")
    modes, hq, total = bench.modes_after("ring8", {"train.seed": 2}, presets.ring8().train.steps)
    assert bench.found(modes, hq, total), f"ring8 preset covered {modes} of 8 modes, {hq:.2f} of samples near one"
