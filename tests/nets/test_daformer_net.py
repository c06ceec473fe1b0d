"""backbone=daformer: the MiT encoder (timm's pvt_v2 twin with MiT's MLP ratio), the fusion decoder's shapes and
groups, SegFormer's mit_*.pth key layout loading into it, and a few training steps through the CLI's config."""
import re

import pytest
import torch

from helpers import SEG_SMALL, make_cfg
from uda.errors import ConfigError
from uda.nets.segmentation import build_segmenter
from uda.schema import DAFormerNetConfig, validate

TINY = dict(encoder="pvt_v2_b0", embed_dim=16, dilations=[1, 2])


def _net(**kw):
    torch.manual_seed(0)
    return build_segmenter(DAFormerNetConfig(**{**TINY, **kw}), in_channels=3, num_classes=5)


def test_shapes_groups_and_mits_mlp_ratio():
    net = _net().eval()
    out = net(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 5, 16, 16)  # the decoder's 1/4 grid
    assert out.features.shape == (2, 256, 2, 2) and out.aux is None  # the last stage (stride 32): what FD reads
    enc, head = set(map(id, net.pretrained_parameters())), set(map(id, net.new_parameters()))
    assert not enc & head and enc | head == set(map(id, net.parameters()))
    assert net.encoder.stages[0].blocks[0].mlp.fc1.out_features == 4 * 32  # MiT's ratio 4 (PVTv2-B0: 8)
    # the fusion: 4 stages x 16 embedded, ASPP 1x1 + one separable branch (depthwise over 64, then 1x1), 3x3 to 16
    assert [b[0].kernel_size for b in net.head.aspp] == [(1, 1), (3, 3)] and net.head.aspp[1][0].groups == 64
    assert net.head.bottleneck[0].in_channels == 32 and net.head.classifier.out_channels == 5


def _mit_layout(state: dict) -> dict:
    """timm's pvt_v2 keys -> SegFormer's mix_transformer keys (what DAFormer's pretrained/mit_b*.pth holds)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^stages\.(\d+)\.downsample", lambda m: f"patch_embed{int(m.group(1)) + 1}", k)
        k = k.replace("patch_embed.", "patch_embed1.").replace(".dwconv.", ".dwconv.dwconv.")
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)", lambda m: f"block{int(m.group(1)) + 1}.{m.group(2)}", k)
        k = re.sub(r"^stages\.(\d+)\.norm", lambda m: f"norm{int(m.group(1)) + 1}", k)
        out[k] = v
    return out


def test_segformers_mit_file_loads_into_the_encoder(tmp_path):
    source = _net()
    state = _mit_layout(source.encoder.state_dict())
    assert {"block1.0.mlp.dwconv.dwconv.weight", "norm4.weight", "patch_embed2.proj.weight"} <= set(state)
    state["head.weight"] = torch.zeros(1000, 256)  # the ImageNet classifier is dropped
    torch.save(state, tmp_path / "mit_b0.pth")
    torch.manual_seed(1)
    loaded = build_segmenter(DAFormerNetConfig(**TINY, weights=str(tmp_path / "mit_b0.pth")), in_channels=3,
                             num_classes=5)
    for (name, a), b in zip(source.encoder.state_dict().items(), loaded.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    torch.save({"block1.0.attn.q.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="does not fit SegFormer's MiT or timm's pvt_v2_b0"):
        build_segmenter(DAFormerNetConfig(**TINY, weights=str(tmp_path / "bad.pth")), in_channels=3, num_classes=5)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="backbone.encoder='resnet50' is not a Mix Transformer; valid: pvt_v2_b0"):
        DAFormerNetConfig(encoder="resnet50").check()
    with pytest.raises(ConfigError, match="no auxiliary"):
        build_segmenter(DAFormerNetConfig(**TINY), in_channels=3, num_classes=5, aux=True)
    validate(make_cfg("data=synthetic_seg", "backbone=daformer", "method=daformer"))


def test_daformer_on_its_network_trains_a_few_steps(tmp_path):
    from uda.engine.loop import train

    small = [o for o in SEG_SMALL if not o.startswith("backbone.")]  # seg_small's widths
    summary = train(make_cfg("method=daformer", *small, "backbone=daformer", "backbone.encoder=pvt_v2_b0",
                             "backbone.embed_dim=16", "trainer.max_steps=3"), tmp_path)
    assert summary["steps"] == 3 and 0 <= summary["target_miou"] <= 100
