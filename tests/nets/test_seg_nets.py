"""The segmenters: DeepLab-v2 (output stride 8, frozen batch norm, ASPP, local ResNet weights), FCN-8s
(shapes, gradients, local VGG16 weights), the parameter split, and ``forward_pair``'s one joint pass."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from helpers import build_seg, joint, seg_batches
from uda.nets.deeplab import ASPP, DeepLabV2, deeplab_v2
from uda.nets.fcn import fcn8s
from uda.nets.segmentation import SegOut, build_segmenter, forward_pair
from uda.schema import ConfigError, DeepLabV2Config, FCN8sConfig

K = 5  # classes


def _deeplab(aux: bool = False, **cfg) -> nn.Module:
    torch.manual_seed(0)
    return deeplab_v2(DeepLabV2Config(depth=50, **cfg), in_channels=3, num_classes=K, aux=aux)


@pytest.fixture(scope="module")
def deeplab_aux():
    return _deeplab(aux=True)


@pytest.fixture(scope="module")
def fcn():
    torch.manual_seed(0)
    return fcn8s(FCN8sConfig(), in_channels=3, num_classes=K)


def _grads_reach(net: nn.Module, x: torch.Tensor) -> SegOut:
    net.zero_grad()
    out = net(x)
    y = torch.randint(0, K, (x.shape[0], *out.logits.shape[-2:]))
    loss = F.cross_entropy(out.logits, y) + (F.cross_entropy(out.aux, y) if out.aux is not None else 0)
    loss.backward()
    return out


@pytest.mark.parametrize("aux", [False, True])
def test_deeplab_shapes_output_stride_8(aux, deeplab_aux):
    net = deeplab_aux if aux else _deeplab(aux=False)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 65, 65))
    s = math.ceil(65 / 8)
    assert out.features.shape == (1, 2048, s, s)
    assert out.logits.shape == (1, K, s, s)
    if aux:
        assert out.aux.shape == (1, K, s, s)
    else:
        assert out.aux is None and net.aux_classifier is None


def test_deeplab101_builds_a_dilated_body_without_the_imagenet_head():
    net = deeplab_v2(DeepLabV2Config(depth=101), in_channels=3, num_classes=K, aux=False)
    assert len(net.body.layer3) == 23 and net.body.layer4[1].conv2.dilation == (4, 4)
    assert not hasattr(net.body, "fc") and not hasattr(net.body, "avgpool")


def test_deeplab_bad_depth_and_rates_are_clear_errors():
    with pytest.raises(ConfigError, match="34"):
        deeplab_v2(DeepLabV2Config(depth=34), in_channels=3, num_classes=K, aux=False)
    with pytest.raises(ConfigError, match="aspp_rates"):
        deeplab_v2(DeepLabV2Config(depth=50, aspp_rates=[]), in_channels=3, num_classes=K, aux=False)


def test_build_segmenter_dispatch():
    net = build_segmenter(DeepLabV2Config(depth=50), in_channels=3, num_classes=K, aux=True)
    assert isinstance(net, DeepLabV2) and net.aux_classifier is not None


def test_aspp_sums_its_branches():
    torch.manual_seed(0)
    aspp = ASPP(8, K, [6, 12, 18, 24])
    for conv in aspp.branches:  # non-zero biases, so a dropped bias would show
        nn.init.normal_(conv.bias)
    x = torch.randn(2, 8, 30, 30)
    manual = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(aspp.branches, [6, 12, 18, 24]))
    assert [c.dilation[0] for c in aspp.branches] == [6, 12, 18, 24]
    assert all(c.kernel_size == (3, 3) and c.padding == c.dilation for c in aspp.branches)
    torch.testing.assert_close(aspp(x), manual)
    assert aspp(x).shape == (2, K, 30, 30)


def test_deeplab_batchnorm_is_frozen(deeplab_aux):
    net = deeplab_aux
    frozen = [m for m in net.modules() if isinstance(m, torchvision.ops.misc.FrozenBatchNorm2d)]
    assert frozen and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    bn_names = {n for n, m in net.named_modules() if isinstance(m, torchvision.ops.misc.FrozenBatchNorm2d)}
    assert not any(n.rsplit(".", 1)[0] in bn_names for n, _ in net.named_parameters())  # BN has no parameters
    for m in frozen:  # pretend ImageNet statistics
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in net.state_dict().items() if k.rsplit(".", 1)[0] in bn_names}
    net.train()
    _grads_reach(net, torch.randn(2, 3, 33, 33))
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_deeplab_gradients_reach_every_parameter(deeplab_aux):
    _grads_reach(deeplab_aux, torch.randn(1, 3, 33, 33))
    for p in deeplab_aux.new_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is not None for p in deeplab_aux.pretrained_parameters())


def test_deeplab_loads_local_resnet_weights(tmp_path):
    torch.manual_seed(123)
    state = torchvision.models.resnet50(weights=None).state_dict()
    for k, v in state.items():  # make BN non-trivial, so loading shows
        if v.is_floating_point() and ("running_" in k or "bn" in k):
            v.uniform_(0.5, 1.5)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    net = _deeplab(aux=True, weights=str(path))
    own = net.body.state_dict()
    keys = ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer3.5.bn2.weight", "layer4.2.conv3.weight")
    for k in keys:
        assert torch.equal(own[k], state[k]), k
    assert all(torch.equal(v, state[k]) for k, v in own.items())  # every body tensor comes from the file
    # a one-channel input: a new conv1, everything else still from the file
    gray = deeplab_v2(DeepLabV2Config(depth=50, weights=str(path)), in_channels=1, num_classes=K, aux=False)
    assert gray.body.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.equal(gray.body.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert gray(torch.randn(1, 1, 33, 33)).logits.shape == (1, K, 5, 5)
    # a wrong key, a wrong depth, a missing file: errors that name them
    state["layer1.0.conv9.weight"] = state.pop("layer1.0.conv1.weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="conv9"):
        _deeplab(weights=str(tmp_path / "bad.pth"))
    with pytest.raises(ConfigError, match="resnet101"):
        deeplab_v2(DeepLabV2Config(depth=101, weights=str(path)), in_channels=3, num_classes=K, aux=False)
    with pytest.raises(ConfigError, match="cannot load"):
        _deeplab(weights=str(tmp_path / "nope.pth"))


@pytest.mark.slow  # VGG16 on a CPU
def test_fcn8s_shapes_and_gradients(fcn):
    fcn.train()
    out = _grads_reach(fcn, torch.randn(1, 3, 64, 64))
    assert out.logits.shape == (1, K, 8, 8)  # 1/8: pool3's size
    assert out.features.shape == (1, 4096, 2, 2) and out.aux is None
    for p in fcn.new_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    fcn.eval()
    with torch.no_grad():
        assert fcn(torch.randn(1, 3, 65, 97)).logits.shape == (1, K, 8, 12)  # odd sizes: floor(H/8)


@pytest.mark.slow  # VGG16 on a CPU
def test_fcn8s_loads_local_vgg16_weights(tmp_path, fcn):
    # a vgg16 state_dict made from the fixture's tensors + 1 (cheaper than building another VGG16),
    # with exactly torchvision's keys and shapes (checked against a vgg16 built on the meta device)
    state = {f"features.{k}": v + 1 for k, v in fcn.features.state_dict().items()}
    for i, conv in (("0", fcn.fc6), ("3", fcn.fc7)):
        state[f"classifier.{i}.weight"] = conv.weight.detach().flatten(1) + 1
        state[f"classifier.{i}.bias"] = conv.bias.detach() + 1
    state["classifier.6.weight"], state["classifier.6.bias"] = torch.randn(1000, 4096), torch.randn(1000)
    with torch.device("meta"):
        reference = torchvision.models.vgg16(weights=None).state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    net = fcn8s(FCN8sConfig(weights=str(path)), in_channels=3, num_classes=K)
    for k, v in net.features.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"]), k
    assert torch.equal(net.fc6.weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    assert torch.equal(net.fc6.bias, state["classifier.0.bias"])
    assert torch.equal(net.fc7.weight.flatten(1), state["classifier.3.weight"])
    assert torch.equal(net.fc7.bias, state["classifier.3.bias"])
    # the loaded fc6 conv computes the Linear layer on a 7x7 pool5 map
    with torch.no_grad():
        x = torch.randn(1, 512, 7, 7)
        ref = F.linear(x.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
        torch.testing.assert_close(net.fc6(x)[:, :, 3, 3], ref, rtol=1e-4, atol=1e-4)
    torch.save({"features.0.weights": state["features.0.weight"]}, tmp_path / "bad.pth")  # a misnamed key
    with pytest.raises(ConfigError, match=r"unexpected \['features.0.weights'\]"):
        fcn8s(FCN8sConfig(weights=str(tmp_path / "bad.pth")), in_channels=3, num_classes=K)


@pytest.mark.parametrize("which", ["deeplab", "fcn"])
def test_parameter_split_is_disjoint_and_complete(which, deeplab_aux, fcn):
    net = deeplab_aux if which == "deeplab" else fcn
    old, new = {id(p) for p in net.pretrained_parameters()}, {id(p) for p in net.new_parameters()}
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert old and new and not old & new
    assert old | new == trainable
    assert len(net.pretrained_parameters()) == len(old) and len(net.new_parameters()) == len(new)


def test_fcn8s_gray_input():
    torch.manual_seed(0)
    net = fcn8s(FCN8sConfig(), in_channels=1, num_classes=K)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32)).logits.shape == (1, K, 4, 4)
    assert net.features[0].weight.shape == (64, 1, 3, 3)


def test_forward_pair_is_one_pass_so_batch_norm_statistics_cover_both_domains():
    torch.manual_seed(0)
    net = build_seg("method=source_only").segmenter.train()
    src, tgt = seg_batches()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    mean0 = bn.running_mean.clone()
    out_s, out_t = forward_pair(net, src.x, tgt.x)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():  # the first BN's input: batch mean over source AND target
        mu = first_conv(torch.cat([src.x, tgt.x])).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, 0.9 * mean0 + 0.1 * mu, rtol=1e-4, atol=1e-6)
    ref_s, ref_t = joint(copy.deepcopy(net), src.x, tgt.x)
    torch.testing.assert_close(out_s.logits, ref_s.logits)
    torch.testing.assert_close(out_t.features, ref_t.features)
    sep_s = net(src.x)  # a separate pass normalises by the source batch alone: different outputs
    assert not torch.allclose(sep_s.logits, out_s.logits, atol=1e-4)
    small = tgt.x[:, :, :16, :16]  # different image sizes: two passes
    a, b = forward_pair(net.eval(), src.x, small)
    assert a.logits.shape[-1] != b.logits.shape[-1]
    torch.testing.assert_close(b.logits, net(small).logits)
