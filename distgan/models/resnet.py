"""ResNet generator and discriminator in the SNGAN / BigGAN style, for 28, 32 and 64 px.

G: z -> a small map -> residual up-blocks (BatchNorm, ReLU, nearest x2, 3x3 convs), class
labels by conditional BatchNorm. D: residual down-blocks (average pooling), ReLU, global
sum pooling, then logit = psi(h) + <embed(y), h> (projection, Miyato & Koyama 2018).
Optional self-attention at half the output side in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distgan.models.layers import CondBatchNorm2d, QHead, SelfAttention, plan


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.bn1, self.bn2 = CondBatchNorm2d(c_in, num_classes), CondBatchNorm2d(c_out, num_classes)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class ResNetGenerator(nn.Module):
    def __init__(self, resolution: int, channels: int, z_dim: int, width: int, num_classes: int = 0,
                 attention: bool = False):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.start, ups = plan(resolution)
        ch = width * 2 ** (ups - 1)
        self.project = nn.Linear(z_dim, ch * self.start * self.start)
        self.blocks = nn.ModuleList()
        self.attn_at, self.attention = ups - 1, None  # before the last block: at half the side
        for i in range(ups):
            if attention and i == self.attn_at:
                self.attention = SelfAttention(ch)
            out = max(ch // 2, width) if i < ups - 1 else width
            self.blocks.append(GBlock(ch, out, num_classes))
            ch = out
        self.bn = nn.BatchNorm2d(ch)
        self.out = nn.Conv2d(ch, channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(z).view(len(z), -1, self.start, self.start)
        for i, block in enumerate(self.blocks):
            if self.attention is not None and i == self.attn_at:
                h = self.attention(h)
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool, first: bool):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if (c_in != c_out or down) else None
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)  # the first block sees pixels, not a ReLU of them
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.skip is None:
            return h + x
        if self.first:  # SNGAN: pool then project the pixels; project then pool after
            return h + self.skip(F.avg_pool2d(x, 2))
        s = self.skip(x)
        return h + (F.avg_pool2d(s, 2) if self.down else s)


class ResNetDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, width: int, num_classes: int = 0, input_gain: float = 1.0,
                 attention: bool = False, q_width: int = 0):
        super().__init__()
        self.input_gain = input_gain
        _, downs = plan(resolution)
        blocks, ch_in, ch = [], channels, width
        for i in range(downs):
            blocks.append(DBlock(ch_in, ch, down=True, first=i == 0))
            if attention and i == 0:
                blocks.append(SelfAttention(ch))  # at half the input side, mirroring G
            ch_in, ch = ch, min(ch * 2, width * 8)
        blocks.append(DBlock(ch_in, ch_in, down=False, first=False))
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(ch_in, 1)
        self.embed = nn.Embedding(num_classes, ch_in) if num_classes else None
        self.q = QHead(ch_in, q_width) if q_width else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, codes: bool = False):
        """The logits; with `codes`, (logits, the Q head's guess of the latent codes)."""
        h = F.relu(self.blocks(x * self.input_gain)).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return (out, self.q(h)) if codes else out
