"""Build G and D from a ModelConfig; spectral norm is applied here, not inside the models."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distgan.config import ModelConfig
from distgan.models.dcgan import CBNGenerator, Discriminator, Generator
from distgan.models.layers import CondBatchNorm2d
from distgan.models.mlp import MLPDiscriminator, MLPGenerator
from distgan.models.resnet import ResNetDiscriminator, ResNetGenerator
from distgan.models.stylegan2 import StyleGAN2Generator

_SN_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral-normalize every weight layer (Miyato et al. 2018): D's Lipschitz bound keeps
    its gradients informative where a saturated D would make G's vanish. Not conditional
    BatchNorm's class gains and shifts: they are scales, not maps (and the shifts start at 0,
    whose spectral norm is 0)."""
    scales = {id(m) for bn in module.modules() if isinstance(bn, CondBatchNorm2d) for m in (bn.gain, bn.bias)}
    for child in list(module.modules()):
        if isinstance(child, _SN_LAYERS) and id(child) not in scales:
            spectral_norm(child)
    return module


def build_models(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    k = cfg.num_classes if cfg.conditional else 0
    if cfg.arch == "mlp":
        G = MLPGenerator(cfg.resolution, cfg.z_dim, cfg.g_width)
        D = MLPDiscriminator(cfg.resolution, cfg.d_width, cfg.d_input_gain)
    elif cfg.arch == "dcgan":
        G = (CBNGenerator(cfg.resolution, cfg.channels, cfg.z_dim, cfg.g_width, k) if k and cfg.cond == "cbn"
             else Generator(cfg.resolution, cfg.channels, cfg.z_dim, cfg.g_width, k))
        D = Discriminator(cfg.resolution, cfg.channels, cfg.d_width, k, cfg.d_input_gain)
    else:
        G = (ResNetGenerator(cfg.resolution, cfg.channels, cfg.z_dim, cfg.g_width, k, cfg.attention)
             if cfg.arch == "resnet" else
             StyleGAN2Generator(cfg.resolution, cfg.channels, cfg.z_dim, cfg.g_width, k, cfg.mapping_layers,
                                cfg.style_mixing))
        D = ResNetDiscriminator(cfg.resolution, cfg.channels, cfg.d_width, k, cfg.d_input_gain,
                                cfg.attention and cfg.arch == "resnet")
    if cfg.sn_g:
        apply_spectral_norm(G)
    if cfg.sn_d:
        apply_spectral_norm(D)
    return G, D
