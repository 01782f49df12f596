"""Build G and D from a ModelConfig; spectral norm is applied here, not inside the models."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distgan.config import ModelConfig
from distgan.models.dcgan import CBNGenerator, Discriminator, Generator
from distgan.models.mlp import MLPDiscriminator, MLPGenerator

_SN_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral-normalize every weight layer (Miyato et al. 2018): D's Lipschitz bound keeps
    its gradients informative where a saturated D would make G's vanish."""
    for child in list(module.modules()):
        if isinstance(child, _SN_LAYERS):
            spectral_norm(child)
    return module


def build_models(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    k = cfg.num_classes if cfg.conditional else 0
    if cfg.arch == "mlp":
        G = MLPGenerator(cfg.resolution, cfg.z_dim, cfg.g_width)
        D = MLPDiscriminator(cfg.resolution, cfg.d_width, cfg.d_input_gain)
    else:
        G = (CBNGenerator(cfg.resolution, cfg.channels, cfg.z_dim, cfg.g_width, k) if k and cfg.cond == "cbn"
             else Generator(cfg.resolution, cfg.channels, cfg.z_dim, cfg.g_width, k))
        D = Discriminator(cfg.resolution, cfg.channels, cfg.d_width, k, cfg.d_input_gain)
    if cfg.sn_g:
        apply_spectral_norm(G)
    if cfg.sn_d:
        apply_spectral_norm(D)
    return G, D
