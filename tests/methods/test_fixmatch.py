"""FixMatch (TLlib's UDA port): the confidence-masked loss by hand, RandAugment's ops against timm's level
maps by hand, the views as a function of (seed, step), the update against a hand computation, and the
real config."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import ApplySpy, build, make_cfg, sgd_stepper
from uda.augment import RAND_OPS, apply_op, rand_augment, random_resized_crop
from uda.data.streams import step_generator
from uda.errors import ConfigError
from uda.methods import Batch
from uda.methods.fixmatch import VIEW_STREAM, FixMatch, FixMatchConfig, pseudo_label_loss
from uda.schema import OptimizerConfig, validate


def tiny_fixmatch(flip=False, **kw):
    torch.manual_seed(0)
    return FixMatch(cfg=FixMatchConfig(**kw), features=nn.Sequential(nn.Flatten(), nn.Linear(192, 3), nn.Tanh()),
                    classifier=nn.Linear(3, 2), head_optimizer=OptimizerConfig(), seed=3, flip=flip,
                    mean=(0.5,) * 3, std=(0.5,) * 3)


def image_batches(n=4):
    g = torch.Generator().manual_seed(2)
    return (Batch(torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 2, (n,), generator=g)),
            Batch(torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, None))


def test_pseudo_label_loss_by_hand_strict_threshold_and_the_whole_batch_mean():
    probs = torch.tensor([[0.95, 0.05], [0.9, 0.1], [0.2, 0.8]])
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]])
    loss, share = pseudo_label_loss(logits, probs, 0.9)
    # only row 0 counts (0.9 is not > 0.9): CE([0, 1], class 0) = log(1 + e), divided by all 3 rows
    assert loss.item() == pytest.approx(torch.log(1 + torch.exp(torch.tensor(1.0))).item() / 3)
    assert share.item() == pytest.approx(1 / 3)


def test_rand_augment_ops_at_timms_levels_by_hand():
    g = torch.Generator().manual_seed(0)
    img = torch.arange(3 * 4 * 4, dtype=torch.uint8).view(3, 4, 4) * 5
    assert len(RAND_OPS) == 15  # timm's _RAND_TRANSFORMS
    assert torch.equal(apply_op(img, "Invert", 10, g, [0, 0, 0]), 255 - img)
    # SolarizeAdd at level 5: + int(110 x 0.5) = 55 where the pixel is < 128
    assert torch.equal(apply_op(img, "SolarizeAdd", 5, g, [0, 0, 0]),
                       torch.where(img < 128, (img.int() + 55).clamp(max=255).to(torch.uint8), img))
    # Posterize at level 5 keeps int(4 x 0.5) = 2 bits; Solarize at level 10 (threshold 256) changes nothing
    assert torch.equal(apply_op(img, "Posterize", 5, g, [0, 0, 0]), img & 0b11000000)
    assert torch.equal(apply_op(img, "Solarize", 10, g, [0, 0, 0]), img)
    # TranslateXRel at level 10 on 20 pixels: 0.45 x 20 = 9 columns, either way, filled with the fill colour
    wide = torch.full((3, 4, 20), 200, dtype=torch.uint8)
    moved = apply_op(wide, "TranslateXRel", 10, torch.Generator().manual_seed(1), [7, 7, 7])
    filled = [(moved[:, :, :9] == 7).all().item(), (moved[:, :, -9:] == 7).all().item()]
    assert sorted(filled) == [False, True] and (moved == 200).sum() == 3 * 4 * 11
    # p = 0: no op applies; the draws are a function of the generator
    assert torch.equal(rand_augment(img, g, ops=2, magnitude=10, magnitude_std=2, prob=0.0, fill=[0, 0, 0]), img)
    kw = {"ops": 2, "magnitude": 10, "magnitude_std": 2, "prob": 1.0, "fill": [0] * 3}
    a = rand_augment(img, torch.Generator().manual_seed(5), **kw)
    b = rand_augment(img, torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a, b)


def test_random_resized_crop_keeps_the_size_and_scale_one_without_flip_is_the_image():
    img = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert random_resized_crop(img, g, (0.5, 1.0), flip=True).shape == (3, 8, 8)
    # scale (1, 1) and ratio 1: the whole image, untouched
    assert torch.equal(random_resized_crop(img, g, (1.0, 1.0), flip=False, ratio=(1.0, 1.0)), img)


def test_views_are_a_function_of_seed_and_step_and_the_strong_one_differs():
    m = tiny_fixmatch()
    _, tgt = image_batches()
    a = m.views(tgt.x, step_generator(3, 5, stream=VIEW_STREAM))
    b = m.views(tgt.x, step_generator(3, 5, stream=VIEW_STREAM))
    c = m.views(tgt.x, step_generator(3, 6, stream=VIEW_STREAM))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[1], c[1])
    assert a[0].shape == a[1].shape == tgt.x.shape and not torch.equal(a[0], a[1])
    assert a[1].min() >= -1 - 1e-6 and a[1].max() <= 1 + 1e-6  # pixels in [0, 1], normalised by 0.5 / 0.5


def test_fixmatch_update_equals_hand_computed_step():
    m = tiny_fixmatch(threshold=0.5, trade_off=0.7)
    ref = copy.deepcopy(m)
    src, tgt = image_batches()
    step, lr = 4, 0.1
    x_w, x_str = ref.views(tgt.x, step_generator(3, step, stream=VIEW_STREAM))
    net = nn.Sequential(ref.features, ref.classifier)
    p_w = torch.softmax(net(x_w), 1).detach()
    conf, y_hat = p_w.max(1)
    mask = (conf > 0.5).float()
    loss_u = (mask * F.cross_entropy(net(x_str), y_hat, reduction="none")).mean()
    loss = F.cross_entropy(net(src.x), src.y) + 0.7 * loss_u
    grads = torch.autograd.grad(loss, list(net.parameters()))
    out = m.update(src, tgt, step, sgd_stepper(m, lr=lr, momentum=0.0))
    for p_new, p_old, g in zip(nn.Sequential(m.features, m.classifier).parameters(), net.parameters(), grads):
        assert torch.allclose(p_new, (p_old - lr * g).detach(), atol=1e-6)
    assert out["acc/confident_target"].item() == pytest.approx(mask.mean().item())


def test_fixmatch_steps_f_and_c_and_builds_from_the_real_config():
    m = tiny_fixmatch()
    spy = ApplySpy(m)
    m.update(*image_batches(), 0, spy)
    assert spy.calls == [({"feat", "cls"}, {"feat", "cls"})]
    cfg = make_cfg("method=fixmatch")
    assert cfg.method.threshold == 0.9 and cfg.method.trade_off == 1.0 and cfg.method.crop_scale == [0.5, 1.0]
    assert (cfg.method.ops, cfg.method.magnitude, cfg.method.magnitude_std) == (2, 10.0, 2.0)
    assert cfg.optimizer.nesterov and cfg.optimizer.weight_decay == 1e-3
    built = build("method=fixmatch")
    assert not built.flip  # digits: no mirror (data.augment is off)
    assert built.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"method\.magnitude must be in \[0, 10\]"):
        validate(make_cfg("method=fixmatch", "method.magnitude=12"))
