"""Domain Separation Networks' private encoder and shared decoder (Bousmalis et al. 2016, MNIST)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class PrivateEncoder(nn.Module):
    """conv5x5-c1 (same), ReLU, pool2, conv5x5-c2 (same), ReLU, pool2, FC code, ReLU."""

    def __init__(self, *, in_channels: int, image_size: int, channels: list[int], code_size: int):
        super().__init__()
        c1, c2 = channels
        side = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * side * side, code_size), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """Shared decoder D(h_c + h_p) -> image (the official code's small decoder).

    FC 300, ReLU, reshape 3x10x10, conv3x3-16 x2, nearest upsample to the image size, conv3x3-16,
    conv3x3-C (linear output, in the normalised input space).
    """

    def __init__(self, *, code_size: int, out_channels: int, image_size: int):
        super().__init__()
        self.image_size = image_size
        self.fc = nn.Sequential(nn.Linear(code_size, 300), nn.ReLU(inplace=True))
        self.pre = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.post = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(16, out_channels, 3, padding=1))

    def forward(self, code):
        x = self.pre(self.fc(code).view(-1, 3, 10, 10))
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="nearest")
        return self.post(x)
