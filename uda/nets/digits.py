"""Digit networks from the papers (28x28 / 32x32 inputs)."""
from __future__ import annotations

from torch import nn

from uda.errors import ConfigError

MAX_DIGITS_SIZE = 128  # these nets flatten their last feature map: beyond this the FC layer explodes


class DANNDigitsFeatures(nn.Module):
    """Ganin et al. 2016, MNIST net: conv5x5-c1, ReLU, maxpool2, conv5x5-c2, ReLU, maxpool2, flatten.

    28x28 input -> c2 x 4 x 4 = 768 features with the paper's (32, 48).
    """

    def __init__(self, *, in_channels: int, image_size: int, channels: list[int]):
        super().__init__()
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"data.image_size={image_size} is too small for the DANN digits net (needs >= 16)")
        if image_size > MAX_DIGITS_SIZE:
            raise ConfigError(
                f"data.image_size={image_size} is too large for the DANN digits net (at most {MAX_DIGITS_SIZE})"
            )
        self.out_dim = c2 * side * side

    def forward(self, x):
        return self.net(x)


def mlp(in_dim: int, hidden: list[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Fully connected layers with ReLU (and Dropout(``dropout``) when > 0) after each hidden one:
    in -> hidden... -> out (no final activation)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def xavier_(module: nn.Module) -> nn.Module:
    """Every Linear of ``module``: xavier-normal weights, zero biases (thuml's ``init_weights``: CDAN, MDD)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


class LeNetFeatures(nn.Module):
    """ADDA's LeNet encoder (Tzeng et al. 2017; the official erictzeng/adda lenet): conv5x5-c1, ReLU, pool2,
    conv5x5-c2, ReLU, pool2, flatten, FC feat_dim, ReLU. ``dropout`` > 0 (not the paper's) adds Dropout2d
    after the second conv; the official net has none, so both encoders' features are deterministic."""

    def __init__(self, *, in_channels: int, image_size: int, channels: list[int], feat_dim: int, dropout: float):
        super().__init__()
        c1, c2 = channels
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"data.image_size={image_size} is too small for LeNet (needs >= 16)")
        if image_size > MAX_DIGITS_SIZE:
            raise ConfigError(f"data.image_size={image_size} is too large for LeNet (at most {MAX_DIGITS_SIZE})")
        drop = [nn.Dropout2d(dropout)] if dropout > 0 else []
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), *drop, nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * side * side, feat_dim), nn.ReLU(inplace=True),
        )
        self.out_dim = feat_dim

    def forward(self, x):
        return self.net(x)
