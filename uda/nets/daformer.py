"""``backbone=daformer``: DAFormer's network (Hoyer et al., CVPR 2022; lhoyer/DAFormer
configs/_base_/models/daformer_sepaspp_mitb5.py, mmseg/models/decode_heads/daformer_head.py).

Encoder: a Mix Transformer (SegFormer's MiT-B5: overlapping patch embeddings, efficient self-attention with
spatial reduction 8/4/2/1, Mix-FFN with a 3x3 depthwise conv, 64/128/320/512 channels, 3/6/40/3 blocks, drop
path 0.1). timm's ``pvt_v2_b5`` is the same network (MiT was written from PVTv2's code; the same layers, norms
and names), so the encoder is timm's, built with MiT's MLP ratio 4, and SegFormer's ``mit_b5.pth`` loads into
it through timm's own key map. Decoder (the context-aware fusion): each of the four stages embedded by a linear
layer to 256 channels and resized (bilinear) to the first stage's 1/4 grid, concatenated (1024), then an ASPP
without image pooling whose dilated branches are depthwise-separable (1x1; 3x3 at dilations 6, 12, 18; BN +
ReLU after each conv), concatenated, a 3x3 conv + BN + ReLU to 256, dropout 0.1, a 1x1 classifier.
``SegOut.features`` is the last encoder stage (stride 32), what DAFormer's feature distance compares.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uda.nets.seg_base import SegNet, SegOut
from uda.schema import DAFormerNetConfig

MIT_MLP_RATIOS = (4, 4, 4, 4)  # MiT's (PVTv2-B0 .. B3 use 8, 8, 4, 4)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, *, dilation: int = 1, groups: int = 1) -> list[nn.Module]:
    """mmcv's ConvModule: conv (no bias before BN) + BN + ReLU; padding keeps the size."""
    pad = dilation * (kernel // 2)
    return [nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DAFormerHead(nn.Module):
    """The context-aware fusion decoder: stage features [N, C_i, h_i, w_i] -> class scores at the 1/4 grid."""

    def __init__(self, in_channels: list[int], *, embed_dim: int, num_classes: int, dilations: list[int],
                 dropout: float):
        super().__init__()
        self.embed = nn.ModuleList(nn.Linear(c, embed_dim) for c in in_channels)  # SegFormer's "MLP" embedding
        fused = embed_dim * len(in_channels)
        self.aspp = nn.ModuleList(  # 1x1 at dilation 1; else depthwise 3x3 (dilated), then pointwise 1x1
            nn.Sequential(*_conv_bn_relu(fused, embed_dim, 1)) if d == 1 else
            nn.Sequential(*_conv_bn_relu(fused, fused, 3, dilation=d, groups=fused),
                          *_conv_bn_relu(fused, embed_dim, 1))
            for d in dilations)
        self.bottleneck = nn.Sequential(*_conv_bn_relu(embed_dim * len(dilations), embed_dim, 3))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)
        for m in self.modules():  # mmcv's ConvModule init; mmseg's conv_seg: normal(0, 0.01)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        embedded = []
        for f, linear in zip(feats, self.embed):
            n, _, h, w = f.shape
            e = linear(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)
            embedded.append(e if (h, w) == tuple(size) else
                            F.interpolate(e, size=size, mode="bilinear", align_corners=False))
        x = torch.cat(embedded, dim=1)
        x = self.bottleneck(torch.cat([branch(x) for branch in self.aspp], dim=1))
        return self.classifier(self.dropout(x))


class DAFormerNet(SegNet):
    def __init__(self, encoder: nn.Module, head: DAFormerHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> SegOut:
        feats = self.encoder.forward_intermediates(x, intermediates_only=True)
        return SegOut(feats[-1], self.head(feats), None)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def new_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def skip_modules(self) -> list[nn.Module]:
        return list(self.encoder.stages[1:3])  # strides 8 and 16, as FCN-8s's pool3 and pool4


def daformer_net(cfg: DAFormerNetConfig, *, in_channels: int, num_classes: int) -> DAFormerNet:
    import timm
    from timm.models.pvt_v2 import checkpoint_filter_fn

    from uda.nets.resnet import load_local_weights

    encoder = timm.create_model(cfg.encoder, pretrained=False, num_classes=0, in_chans=in_channels,
                                mlp_ratios=MIT_MLP_RATIOS, drop_path_rate=cfg.drop_path)
    if cfg.weights:
        load_local_weights(encoder, cfg.weights, ignore=("head.",), hint=f"SegFormer's MiT or timm's {cfg.encoder}",
                           convert=lambda state: checkpoint_filter_fn(state, encoder))
    head = DAFormerHead([f["num_chs"] for f in encoder.feature_info], embed_dim=cfg.embed_dim, num_classes=num_classes,
                        dilations=list(cfg.dilations), dropout=cfg.dropout)
    return DAFormerNet(encoder, head)
