"""DCGAN generator and discriminator for 28x28, 32x32 and 64x64 images.

Conditional variants: G concatenates a label embedding to z (`Generator`), or modulates
every BatchNorm with per-class scale and shift (`CBNGenerator`, conditional BatchNorm as in
Miyato & Koyama 2018 and BigGAN); D is a projection discriminator: logit = psi(h) + <embed(y), h>.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.layers import CondBatchNorm2d, QHead, plan


class Generator(nn.Module):
    def __init__(self, resolution: int, channels: int, z_dim: int, width: int, num_classes: int = 0):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        start, ups = plan(resolution)
        ch = width * 2 ** (ups - 1)
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        if self.embed is not None:
            # A label code as loud as z lets G ignore z: one sample per class (seen on MNIST).
            nn.init.normal_(self.embed.weight, std=0.1)
        in_dim = z_dim * (2 if num_classes else 1)
        self.project = nn.Sequential(nn.Linear(in_dim, ch * start * start, bias=False),
                                     nn.Unflatten(1, (ch, start, start)), nn.BatchNorm2d(ch), nn.ReLU(True))
        blocks = []
        for i in range(ups - 1):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        blocks += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)
        return self.blocks(self.project(z))


class CBNGenerator(nn.Module):
    """The DCGAN generator with the class in every normalization layer instead of in z: the
    label shapes each scale of the image, and z keeps the style."""

    def __init__(self, resolution: int, channels: int, z_dim: int, width: int, num_classes: int):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        start, ups = plan(resolution)
        ch = width * 2 ** (ups - 1)
        self.project = nn.Sequential(nn.Linear(z_dim, ch * start * start, bias=False),
                                     nn.Unflatten(1, (ch, start, start)))
        self.norms = nn.ModuleList([CondBatchNorm2d(ch, num_classes)])
        self.ups = nn.ModuleList()
        for _ in range(ups - 1):
            self.ups.append(nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False))
            self.norms.append(CondBatchNorm2d(ch // 2, num_classes))
            ch //= 2
        self.out = nn.ConvTranspose2d(ch, channels, 4, 2, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.norms[0](self.project(z), y))
        for up, norm in zip(self.ups, self.norms[1:]):
            h = torch.relu(norm(up(h), y))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, width: int, num_classes: int = 0, input_gain: float = 1.0,
                 q_width: int = 0):
        super().__init__()
        self.input_gain = input_gain
        start, downs = plan(resolution)
        layers, ch_in, ch = [], channels, width
        for _ in range(downs):
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            ch_in, ch = ch, ch * 2
        self.features = nn.Sequential(*layers)
        # The unconditional term sees the flattened map (where strokes are, not only which);
        # the projection term uses globally pooled features, as in Miyato & Koyama.
        self.linear = nn.Linear(ch_in * start * start, 1)
        self.embed = nn.Embedding(num_classes, ch_in) if num_classes else None
        self.q = QHead(ch_in * start * start, q_width) if q_width else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, codes: bool = False):
        """The logits; with `codes`, (logits, the Q head's guess of the latent codes)."""
        h = self.features(x * self.input_gain)
        out = self.linear(h.flatten(1)).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h.sum(dim=(2, 3))).sum(1)
        return (out, self.q(h.flatten(1))) if codes else out
