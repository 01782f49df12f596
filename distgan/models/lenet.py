"""LeNet-like MNIST classifier: the fast domain detector; its penultimate layer gives FID features."""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    feature_dim = 64

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, self.feature_dim),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [-1, 1], (N, 1, 28, 28) -> (features, logits). Features are taken before the
        ReLU: dead units would make the feature covariance singular."""
        h = self.body(x)
        return h, self.head(self.dropout(torch.relu(h)))
