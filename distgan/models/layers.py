"""Layers the model families share."""

from __future__ import annotations

import torch
from torch import nn


def plan(resolution: int) -> tuple[int, int]:
    """(start side, number of x2 up/down-samplings) for a supported resolution."""
    return {28: (7, 2), 32: (4, 3), 64: (4, 4)}[resolution]


class CondBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are the class's own (starting at 1 and 0); without
    classes, a plain affine BatchNorm."""

    def __init__(self, channels: int, num_classes: int = 0):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=not num_classes)
        self.gain = nn.Embedding(num_classes, channels) if num_classes else None
        self.bias = nn.Embedding(num_classes, channels) if num_classes else None
        if num_classes:
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.gain is None:
            return self.bn(x)
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN's self-attention (Zhang et al. 2019): every position sees every other, so a
    distant part of the image can agree with this one; gamma starts at 0 (the block starts
    as the identity)."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (b, hw, hw)
        return x + self.gamma * (v @ attn.transpose(1, 2)).view(b, c, h, w)


class QHead(nn.Module):
    """InfoGAN's Q: from D's trunk features, its guess of the latent codes (distgan.latent).
    Not spectrally normalized: it is not part of D's critic, and its guesses need range."""

    def __init__(self, features: int, out: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.LeakyReLU(0.2, True), nn.Linear(hidden, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)
