import math

import torch

from distgan.config import LossConfig
from distgan.losses import build_loss, value_function

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def sp(x):  # softplus, by hand
    return math.log1p(math.exp(x))


def test_ns_by_hand():
    loss = build_loss(LossConfig(kind="ns"))
    d = (sp(-2.0) + sp(1.0)) / 2 + (sp(0.5) + sp(-3.0)) / 2
    g = (sp(-0.5) + sp(3.0)) / 2
    assert math.isclose(loss.d_loss(REAL, FAKE).item(), d, rel_tol=1e-6)
    assert math.isclose(loss.g_loss(FAKE).item(), g, rel_tol=1e-6)


def test_minimax_g_minimizes_log_one_minus_d():
    loss = build_loss(LossConfig(kind="minimax"))
    d_of_fake = torch.sigmoid(FAKE)
    expected = torch.log(1 - d_of_fake).mean().item()
    assert math.isclose(loss.g_loss(FAKE).item(), expected, rel_tol=1e-6)
    assert math.isclose(loss.d_loss(REAL, FAKE).item(), build_loss(LossConfig()).d_loss(REAL, FAKE).item())


def test_hinge_by_hand():
    loss = build_loss(LossConfig(kind="hinge"))
    d = (max(0, 1 - 2.0) + max(0, 1 + 1.0)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3.0)) / 2
    assert math.isclose(loss.d_loss(REAL, FAKE).item(), d)
    assert math.isclose(loss.g_loss(FAKE).item(), (-0.5 + 3.0) / 2)


def test_wgan_losses_by_hand():
    loss = build_loss(LossConfig(kind="wgan-gp", gp_weight=10.0))
    assert math.isclose(loss.d_loss(REAL, FAKE).item(), (0.5 - 3.0) / 2 - (2.0 - 1.0) / 2)
    assert math.isclose(loss.g_loss(FAKE).item(), -(0.5 - 3.0) / 2)


def test_lsgan_by_hand_and_its_midpoint():
    loss = build_loss(LossConfig(kind="lsgan"))
    d = 0.5 * ((2.0 - 1) ** 2 + (-1.0 - 1) ** 2) / 2 + 0.5 * (0.5 ** 2 + 3.0 ** 2) / 2
    assert math.isclose(loss.d_loss(REAL, FAKE).item(), d)
    assert math.isclose(loss.g_loss(FAKE).item(), 0.5 * ((0.5 - 1) ** 2 + (-3.0 - 1) ** 2) / 2)
    assert loss.midpoint == 0.5 and not loss.probabilistic  # halfway between its targets 0 and 1


def test_value_function_at_the_optimum_is_minus_log_4():
    zeros = torch.zeros(5)  # D outputs 1/2 everywhere
    assert math.isclose(value_function(zeros, zeros).item(), -math.log(4), rel_tol=1e-7)
