"""Small MLP generator and discriminator for the 2-D mixtures (ring8, grid25)."""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.layers import QHead


class MLPGenerator(nn.Module):
    def __init__(self, dim: int, z_dim: int, width: int):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, 0
        self.net = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(True), nn.Linear(width, width), nn.ReLU(True),
                                 nn.Linear(width, width), nn.ReLU(True), nn.Linear(width, dim))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    def __init__(self, dim: int, width: int, input_gain: float = 1.0, q_width: int = 0):
        super().__init__()
        self.input_gain = input_gain
        self.net = nn.Sequential(nn.Linear(dim, width), nn.LeakyReLU(0.2, True), nn.Linear(width, width),
                                 nn.LeakyReLU(0.2, True), nn.Linear(width, width), nn.LeakyReLU(0.2, True),
                                 nn.Linear(width, 1))
        self.q = QHead(width, q_width) if q_width else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, codes: bool = False):
        """The logits; with `codes`, (logits, the Q head's guess of the latent codes)."""
        h = self.net[:-1](x * self.input_gain)
        out = self.net[-1](h).squeeze(1)
        return (out, self.q(h)) if codes else out
