"""Build G and D from a ModelConfig; spectral norm is applied here, not inside the models."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distgan.config import ModelConfig
from distgan.latent import Latent
from distgan.models.dcgan import CBNGenerator, Discriminator, Generator
from distgan.models.layers import CondBatchNorm2d, QHead
from distgan.models.mlp import MLPDiscriminator, MLPGenerator
from distgan.models.resnet import ResNetDiscriminator, ResNetGenerator
from distgan.models.stylegan2 import StyleGAN2Generator

_SN_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral-normalize every weight layer (Miyato et al. 2018): D's Lipschitz bound keeps
    its gradients informative where a saturated D would make G's vanish. Not conditional
    BatchNorm's class gains and shifts: they are scales, not maps (and the shifts start at 0,
    whose spectral norm is 0); nor InfoGAN's Q head, which is no part of D's critic."""
    skip = {id(m) for bn in module.modules() if isinstance(bn, CondBatchNorm2d) for m in (bn.gain, bn.bias)}
    skip |= {id(m) for q in module.modules() if isinstance(q, QHead) for m in q.modules()}
    for child in list(module.modules()):
        if isinstance(child, _SN_LAYERS) and id(child) not in skip:
            spectral_norm(child)
    return module


def build_models(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """G takes the whole latent (z and any InfoGAN codes); D has a Q head when there are codes."""
    k = cfg.num_classes if cfg.conditional else 0
    latent = Latent.of(cfg)
    z_dim, q = latent.width, latent.q_width
    if cfg.arch == "mlp":
        G = MLPGenerator(cfg.resolution, z_dim, cfg.g_width)
        D = MLPDiscriminator(cfg.resolution, cfg.d_width, cfg.d_input_gain, q)
    elif cfg.arch == "dcgan":
        G = (CBNGenerator(cfg.resolution, cfg.channels, z_dim, cfg.g_width, k) if k and cfg.cond == "cbn"
             else Generator(cfg.resolution, cfg.channels, z_dim, cfg.g_width, k))
        D = Discriminator(cfg.resolution, cfg.channels, cfg.d_width, k, cfg.d_input_gain, q)
    else:
        G = (ResNetGenerator(cfg.resolution, cfg.channels, z_dim, cfg.g_width, k, cfg.attention)
             if cfg.arch == "resnet" else
             StyleGAN2Generator(cfg.resolution, cfg.channels, z_dim, cfg.g_width, k, cfg.mapping_layers,
                                cfg.style_mixing))
        D = ResNetDiscriminator(cfg.resolution, cfg.channels, cfg.d_width, k, cfg.d_input_gain, cfg.attention, q)
    if cfg.sn_g:
        apply_spectral_norm(G)
    if cfg.sn_d:
        apply_spectral_norm(D)
    return G, D
