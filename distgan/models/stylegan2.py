"""A compact StyleGAN2-style generator (Karras et al. 2020) for 28, 32 and 64 px.

A mapping network takes z (and the label) to W; a learned constant is refined by
modulated, demodulated 3x3 convolutions (each scaled by its own affine map of w), each
with a per-pixel noise input of learned strength, and every resolution adds its RGB
output into an upsampled skip image. Weights use the equalized learning rate (scaled at
run time by 1/sqrt(fan_in)), the mapping network 100x slower.

Randomness beyond z comes in as `noise` (the engine's stream, so DDP ranks agree): the
second z of style mixing, two numbers that decide whether and where to cross over, and the
noise maps. Without it (evaluation, sampling) the noise maps are the fixed buffers drawn at
construction and there is no mixing, so a z always gives the same image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distgan.models.layers import plan


#: Decay of the running mean of W that truncation moves toward.
W_AVG_DECAY = 0.995


class EqualLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((d_out,), bias_init / lr_mul))
        self.scale, self.lr_mul = lr_mul / math.sqrt(d_in), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class ModulatedConv(nn.Module):
    """A conv whose input channels are scaled per sample by an affine map of w, then (demod)
    renormalized so each output has unit expected variance: styles without BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.scale, self.demodulate, self.up = 1 / math.sqrt(c_in * kernel * kernel), demodulate, up

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, c_in = x.shape[:2]
        weight = self.scale * self.weight[None] * self.affine(w)[:, None, :, None, None]
        if self.demodulate:
            weight = weight * (weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, wd = x.shape[2:]
        out = F.conv2d(x.reshape(1, b * c_in, h, wd), weight.reshape(-1, c_in, *weight.shape[3:]),
                       padding=weight.shape[-1] // 2, groups=b)
        return out.view(b, -1, h, wd)


class StyleLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, w_dim: int, side: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv(c_in, c_out, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("noise_const", torch.randn(1, 1, side, side))
        self.side = side

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x, w)
        x = x + self.noise_strength * (self.noise_const if noise is None else noise)
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    def __init__(self, c_in: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv(c_in, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class StyleGAN2Generator(nn.Module):
    def __init__(self, resolution: int, channels: int, z_dim: int, width: int, num_classes: int = 0,
                 mapping_layers: int = 4, style_mixing: float = 0.9):
        super().__init__()
        self.z_dim, self.num_classes, self.style_mixing = z_dim, num_classes, style_mixing
        w_dim = z_dim
        start, ups = plan(resolution)
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        layers: list[nn.Module] = []
        d_in = z_dim * (2 if num_classes else 1)
        for _ in range(mapping_layers):
            layers += [EqualLinear(d_in, w_dim, lr_mul=0.01), nn.LeakyReLU(0.2)]
            d_in = w_dim
        self.mapping = nn.Sequential(*layers)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        ch = width * 2 ** ups
        self.const = nn.Parameter(torch.randn(ch, start, start))
        self.layers = nn.ModuleList([StyleLayer(ch, ch, w_dim, start)])
        self.rgbs = nn.ModuleList([ToRGB(ch, channels, w_dim)])
        side = start
        for _ in range(ups):
            side *= 2
            self.layers.extend([StyleLayer(ch, ch // 2, w_dim, side, up=True), StyleLayer(ch // 2, ch // 2, w_dim, side)])
            ch //= 2
            self.rgbs.append(ToRGB(ch, channels, w_dim))
        self.num_ws = len(self.layers) + 1
        #: Normal numbers per sample `forward` takes as `noise` in training.
        self.noise_dim = z_dim + 2 + sum(layer.side ** 2 for layer in self.layers)

    def map(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(y))], 1)
        return self.mapping(x)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                psi: float | torch.Tensor = 1.0) -> torch.Tensor:
        """`psi` < 1 (a number, or a (batch, 1, 1) tensor): the truncation trick."""
        w = self.map(z, y)
        if self.training:
            self.w_avg.copy_(torch.lerp(w.detach().to(self.w_avg.dtype).mean(0), self.w_avg, W_AVG_DECAY))  # its own dtype under autocast
        ws = w[:, None].expand(-1, self.num_ws, -1)
        maps: list[torch.Tensor | None] = [None] * len(self.layers)
        if noise is not None:
            z2, u, rest = noise[:, :self.z_dim], torch.special.ndtr(noise[:, self.z_dim:self.z_dim + 2]), \
                noise[:, self.z_dim + 2:]
            if self.training and self.style_mixing > 0:
                # Style mixing: from a random layer on, the styles of a second z, so that
                # neighbouring styles are not assumed to go together.
                cut = torch.where(u[:, 0] < self.style_mixing, 1 + (u[:, 1] * (self.num_ws - 1)).floor(),
                                  torch.full_like(u[:, 0], self.num_ws))
                later = torch.arange(self.num_ws, device=z.device)[None, :] >= cut[:, None]
                ws = torch.where(later[:, :, None], self.map(z2, y)[:, None], ws)
            sizes = [layer.side ** 2 for layer in self.layers]
            maps = [m.view(len(z), 1, layer.side, layer.side)
                    for m, layer in zip(rest.split(sizes, dim=1), self.layers)]
        if not (isinstance(psi, float) and psi == 1.0):
            ws = torch.lerp(self.w_avg.to(ws.dtype).expand_as(ws), ws, psi)  # toward the mean style
        x = self.const[None].expand(len(z), -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], maps[0])
        img = self.rgbs[0](x, ws[:, 1])
        for i, rgb in enumerate(self.rgbs[1:]):
            a, b = 1 + 2 * i, 2 + 2 * i
            x = self.layers[a](x, ws[:, a], maps[a])
            x = self.layers[b](x, ws[:, b], maps[b])
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + rgb(x, ws[:, b + 1])
        return torch.tanh(img)
