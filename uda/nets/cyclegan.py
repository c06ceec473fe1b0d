"""CycleGAN's networks (Zhu et al. 2017), sized by config for the pair's images.

Generator: c7s1-ngf, n_down stride-2 convolutions, n_blocks ResNet blocks, n_down transposed
convolutions, c7s1-C, tanh; reflection padding and instance norm as in the paper's code.
Discriminator: a PatchGAN of ``n_layers`` stride-2 4x4 convolutions, one stride-1, then a 1-channel map
(one real/fake score per patch). Both work on images in [-1, 1].
"""
from __future__ import annotations

from torch import nn


class ResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.block(x)


def generator(channels: int, ngf: int = 32, n_down: int = 2, n_blocks: int = 6) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(channels, ngf, 7),
        nn.InstanceNorm2d(ngf),
        nn.ReLU(True),
    ]
    width = ngf
    for _ in range(n_down):
        layers += [nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(width * 2), nn.ReLU(True)]
        width *= 2
    layers += [ResnetBlock(width) for _ in range(n_blocks)]
    for _ in range(n_down):
        layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(width // 2), nn.ReLU(True)]
        width //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patch_discriminator(channels: int, ndf: int = 64, n_layers: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    width = ndf
    for i in range(1, n_layers + 1):
        out = ndf * min(2 ** i, 8)
        stride = 2 if i < n_layers else 1
        layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1), nn.InstanceNorm2d(out), nn.LeakyReLU(0.2, True)]
        width = out
    layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
    return nn.Sequential(*layers)
