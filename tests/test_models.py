import pytest
import torch

from distgan.config import ModelConfig
from distgan.models import build_models


@pytest.mark.parametrize("res, ch", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("conditional", [False, True])
def test_dcgan_shapes(res, ch, conditional):
    G, D = build_models(ModelConfig(resolution=res, channels=ch, z_dim=16, g_width=8, d_width=8,
                                    conditional=conditional, num_classes=10))
    y = torch.arange(4) % 10 if conditional else None
    x = G(torch.randn(4, 16), y)
    assert x.shape == (4, ch, res, res)
    assert x.abs().max() <= 1
    assert D(x, y).shape == (4,)


def test_projection_discriminator_uses_the_label():
    G, D = build_models(ModelConfig(conditional=True, g_width=8, d_width=8))
    x = torch.randn(3, 1, 28, 28)
    assert not torch.allclose(D(x, torch.tensor([0, 0, 0])), D(x, torch.tensor([1, 1, 1])))


def test_spectral_norm_is_switchable_per_network():
    def has_sn(m):
        return any(hasattr(layer, "parametrizations") for layer in m.modules())

    G, D = build_models(ModelConfig(sn_d=True, sn_g=False))
    assert has_sn(D) and not has_sn(G)
    G, D = build_models(ModelConfig(sn_d=False, sn_g=True))
    assert has_sn(G) and not has_sn(D)


def test_spectral_norm_bounds_the_largest_singular_value():
    _, D = build_models(ModelConfig(arch="mlp", resolution=2, sn_d=True, d_width=32))
    D.train()
    for _ in range(30):  # power iterations converge over forward passes
        D(torch.randn(8, 2))
    D.eval()
    w = D.net[0].weight
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_mlp_shapes():
    G, D = build_models(ModelConfig(arch="mlp", resolution=2, z_dim=8, g_width=16, d_width=16))
    x = G(torch.randn(5, 8))
    assert x.shape == (5, 2) and D(x).shape == (5,)
