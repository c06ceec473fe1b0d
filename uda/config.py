"""Typed config schemas, registered in Hydra's ConfigStore.

Every YAML file under ``configs/`` names its schema in ``defaults``, so a typo or a wrong type on the
command line fails at composition with Hydra's message naming the key. This module imports neither
torch nor torchvision: `uda --help` and config validation stay fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING


class UserError(Exception):
    """A mistake in the user's input: printed as one line, never as a traceback."""


class ConfigError(UserError):
    pass


class NonFinite(str, Enum):
    skip = "skip"  # drop the update (fp16: the scaler backs off), log it; stop after `nonfinite_patience` in a row
    stop = "stop"  # stop at the first non-finite loss


class Select(str, Enum):
    source_val = "source_val"
    entropy = "entropy"
    dev = "dev"
    snd = "snd"


class Precision(str, Enum):
    auto = "auto"  # fp32 on CPU, fp16 with gradient scaling on CUDA
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Progress(str, Enum):
    auto = "auto"  # a live bar on a terminal, plain log lines otherwise (CI, files)
    bar = "bar"
    log = "log"
    none = "none"


class OptimName(str, Enum):
    sgd = "sgd"
    adam = "adam"


class SimilarityLayer(str, Enum):
    # the official DSN code's ``layers_to_regularize``: fc3 (the shared code h_c) or pool2 (its conv features)
    code = "code"
    conv = "conv"


class Similarity(str, Enum):
    dann = "dann"  # gradient reversal + domain classifier on the shared code
    mmd = "mmd"  # multi-kernel RBF maximum mean discrepancy


class Recon(str, Enum):
    simse = "simse"  # scale-invariant MSE (the paper)
    mse = "mse"  # plain MSE (the paper's ablation)


class DiscInput(str, Enum):
    features = "features"  # the encoder output (ADDA paper text)
    logits = "logits"  # the classifier's logits (ADDA official code)


class DomainReduction(str, Enum):
    mean = "mean"  # mean over all 2n domain predictions (source and target together)
    sum = "sum"  # mean over source + mean over target (twice the above for equal batches)


class Schedule(str, Enum):
    constant = "constant"
    dann = "dann"  # lr_p = lr / (1 + alpha p)^beta  (Ganin et al. 2016)
    step = "step"  # lr * gamma^(step // step_size)
    poly = "poly"  # lr * (1 - p)^power
    linear = "linear"  # constant until p = sched_decay_start, then linearly to 0 at p = 1 (CycleGAN)


# ---------------------------------------------------------------------------------------- methods
@dataclass
class MethodConfig:
    name: str = MISSING


@dataclass
class SourceOnlyConfig(MethodConfig):
    name: str = "source_only"


@dataclass
class DANNConfig(MethodConfig):
    name: str = "dann"
    # lambda_p = adv_weight * (2 / (1 + exp(-grl_gamma * p)) - 1), p = step / max_steps
    adv_weight: float = 1.0
    grl_gamma: float = 10.0
    # how the domain loss reduces over the batch of n source + n target predictions
    domain_reduction: DomainReduction = DomainReduction.mean
    # hidden widths of the domain classifier on the backbone features (paper, MNIST: one FC100)
    disc_hidden: list[int] = field(default_factory=lambda: [100])


@dataclass
class DSNConfig(MethodConfig):
    """Bousmalis et al. 2016: L_task + alpha L_recon + beta L_difference + gamma L_similarity."""

    name: str = "dsn"
    alpha: float = 0.01
    beta: float = 0.075
    gamma: float = 0.25
    similarity: Similarity = Similarity.dann
    # where the similarity loss acts: code = h_c (fc3, the paper) | conv = the shared encoder's conv
    # features below it (pool2; the official code's layers_to_regularize flag)
    similarity_layer: SimilarityLayer = SimilarityLayer.code
    recon: Recon = Recon.simse
    # task loss only for the first adapt_start steps, then all losses
    adapt_start: int = 10000
    code_size: int = 100  # shared and private codes
    private_channels: list[int] = field(default_factory=lambda: [32, 64])
    # mean-centre and L2-normalise the codes before the difference loss (official code)
    difference_normalise: bool = True
    # RBF bandwidths of the MMD similarity (official DSN code)
    mmd_sigmas: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0,
                                                             15.0, 20.0, 25.0, 30.0, 35.0, 100.0, 1e3, 1e4, 1e5, 1e6])
    disc_hidden: list[int] = field(default_factory=lambda: [100])
    # DSN-DANN's gradient reversal weight: Ganin et al.'s ramp lambda = 2 / (1 + exp(-grl_gamma q)) - 1
    # over the adaptation phase (q = 0 at adapt_start, 1 at the end); grl_gamma = 0 keeps lambda = 1
    grl_gamma: float = 10.0


# --------------------------------------------------------------------------------------- data
# the built-in domains (uda/data/pairs.py DOMAINS) and "custom"; kept here so validation needs no torch
DOMAIN_NAMES = ("mnist", "mnistm", "usps", "svhn", "syndigits", "amazon", "dslr", "webcam", "custom",
                "mnist_seg", "mnistm_seg", "gta5", "synthia", "cityscapes")
# segmentation domains: per-pixel labels (ignore index 255), evaluated by mIoU
SEG_DOMAINS = ("mnist_seg", "mnistm_seg", "gta5", "synthia", "cityscapes")
# segmentation domains read lazily from their files (too large to hold in memory)
FILE_DOMAINS = ("gta5", "synthia", "cityscapes")


@dataclass
class DomainConfig:
    # a built-in domain (mnist, mnistm, usps, svhn, syndigits, amazon, dslr, webcam), or "custom": your own data at `path`
    name: str = MISSING
    # custom: an ImageFolder tree (train/<class>/..., test/<class>/...) or an .npz file with
    # x_train, y_train, x_test, y_test (uint8 N x H x W [x C]; a target's y_train may be absent)
    path: str = ""


@dataclass
class DataConfig:
    name: str = MISSING  # the pair, "<source>_<target>"
    source: DomainConfig = field(default_factory=DomainConfig)
    target: DomainConfig = field(default_factory=DomainConfig)
    # where datasets live (and the offline MNIST-M build is cached); "" = $UDA_DATA or ~/.cache/uda
    root: str = ""
    # the network's input size; 0 = take it from the source domain (custom pairs)
    image_size: int = 28
    # the size images are stored at in memory (square); larger than image_size: crops are taken
    # (random with `augment`, else central), as in the usual Resize(256) + Crop(224); 0 = image_size
    load_size: int = 0
    # train-time augmentation on the fly: random crop to image_size + horizontal flip, derived from
    # (seed, step) so a resumed run sees the same crops; evaluation uses the central crop
    augment: bool = False
    channels: int = 3
    num_classes: int = 10
    # the same normalisation for both domains: x = (x/255 - mean) / std, per channel ([] = 0.5 each)
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    # use only the first N training / test images of each domain (0 = all); for smoke runs
    train_subset: int = 0
    test_subset: int = 0
    # the last N images of each domain's train split (at most a fifth) are held out for label-free
    # model selection: source validation accuracy, and target scores that never read target labels
    val_size: int = 1000
    # check files that have a published version against its checksum (false: use a modified copy)
    verify: bool = True
    # put the in-memory datasets on the training device (no host->device copy per step)
    on_device: bool = True
    # file-backed segmentation domains (gta5, synthia, cityscapes): [height, width] the images are
    # resized to for training and evaluation (labels: nearest; Cityscapes val labels stay full size)
    source_size: list[int] = field(default_factory=list)
    target_size: list[int] = field(default_factory=list)
    # DataLoader worker processes for file-backed domains (0 = read in the training process)
    workers: int = 0


# ---------------------------------------------------------------------------------------- nets
@dataclass
class BackboneConfig:
    name: str = MISSING


@dataclass
class DANNDigitsConfig(BackboneConfig):
    """DANN's MNIST net: conv5-32, pool2, conv5-48, pool2 | FC100, FC100, FC10."""

    name: str = "dann_mnist"
    conv_channels: list[int] = field(default_factory=lambda: [32, 48])
    cls_hidden: list[int] = field(default_factory=lambda: [100, 100])


@dataclass
class LeNetConfig(BackboneConfig):
    """ADDA's LeNet: conv5-20, pool2, conv5-50, pool2, FC500 | FC10."""

    name: str = "lenet"
    conv_channels: list[int] = field(default_factory=lambda: [20, 50])
    feat_dim: int = 500
    dropout: float = 0.5


@dataclass
class SegSmallConfig(BackboneConfig):
    """A small fully convolutional segmenter for digits_seg (a miniature DeepLab): conv blocks (two 3x3
    convs + BN + ReLU), 2x2 max-pool before each block but the first and the last, the last block dilated;
    1x1 classifiers on the last block and (``aux``) on the block before it."""

    name: str = "seg_small"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    head_lr_mult: float = 1.0  # learning rate of the classifier heads relative to the body


@dataclass
class DeepLabV2Config(BackboneConfig):
    """DeepLab-v2 (Chen et al. 2017): dilated ResNet (output stride 8, frozen BatchNorm) + ASPP with
    four 3x3 branches (dilations ``aspp_rates``) whose class scores are summed. Multi-level methods add
    the same ASPP classifier on layer3."""

    name: str = "deeplabv2"
    depth: int = 101  # 50 | 101
    # a local file with ImageNet weights (torchvision's resnet state_dict); "" = random initialisation
    weights: str = ""
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    head_lr_mult: float = 10.0  # the ASPP heads train with 10x the body's learning rate (DeepLab, AdaptSegNet)


@dataclass
class FCN8sConfig(BackboneConfig):
    """FCN-8s (Long et al. 2015) on VGG16: conv fc6/fc7, score layers at pool3 / pool4 / fc7, fused."""

    name: str = "fcn8s"
    # a local file with ImageNet weights (torchvision's vgg16 state_dict); "" = random initialisation
    weights: str = ""
    head_lr_mult: float = 1.0


# ------------------------------------------------------------------------------------ optimizer
@dataclass
class ResNetConfig(BackboneConfig):
    """torchvision ResNet (He et al. 2016) to global pooling | bottleneck FC + ReLU + dropout | FC.

    The domain discriminators of DANN-style methods sit on the bottleneck (Ganin et al.'s Office setup).
    """

    name: str = "resnet50"
    depth: int = 50  # 18 | 34 | 50 | 101
    # a local file with ImageNet weights (a torchvision state_dict, e.g. resnet50-11ad3fa6.pth);
    # "" = random initialisation. Nothing is ever downloaded.
    weights: str = ""
    bottleneck: int = 256  # 0 = the classifier reads the pooled features directly
    dropout: float = 0.5


@dataclass
class OptimizerConfig:
    name: OptimName = OptimName.sgd
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Schedule = Schedule.dann
    # dann schedule: lr_p = lr / (1 + sched_alpha p)^sched_beta
    sched_alpha: float = 10.0
    sched_beta: float = 0.75
    # step schedule: lr * sched_gamma^(step // sched_step_size); poly: lr * (1 - p)^sched_power
    sched_gamma: float = 0.95
    sched_step_size: int = 20000
    sched_power: float = 0.9
    # linear schedule: the fraction of the span after which the lr decays linearly to 0
    sched_decay_start: float = 0.5


@dataclass
class ADDAConfig(MethodConfig):
    """Tzeng et al. 2017: stage 1 source pretraining (``optimizer``), stage 2 adversarial adaptation."""

    name: str = "adda"
    pretrain_steps: int = 10000  # stage 1 length; stage 2 = trainer.max_steps - pretrain_steps
    disc_input: DiscInput = DiscInput.features
    disc_hidden: list[int] = field(default_factory=lambda: [500, 500])
    # stage 2 optimizer for the target encoder and the discriminator: Adam 2e-4, beta1 0.5
    adapt_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(
        name=OptimName.adam, lr=2e-4, betas=[0.5, 0.999], schedule=Schedule.constant))


class SemanticSource(str, Enum):
    labels = "labels"  # CE(f_S(G_st(x_s)), y_s): the issue's / many reimplementations' choice
    predictions = "predictions"  # CE(f_S(G_st(x_s)), argmax f_S(x_s)): the CyCADA paper's equation


def _gan_optimizer() -> OptimizerConfig:
    # CycleGAN: Adam 2e-4, beta1 0.5, constant for the first half of the translation stage, then linear to 0
    return OptimizerConfig(name=OptimName.adam, lr=2e-4, betas=[0.5, 0.999], schedule=Schedule.linear,
                           sched_decay_start=0.5)


@dataclass
class CycleGANConfig(MethodConfig):
    """Zhu et al. 2017, sized for small images: ResNet-block generators, PatchGAN discriminators, LSGAN."""

    name: str = "cyclegan"
    ngf: int = 32  # generator width (first layer)
    n_down: int = 2  # stride-2 down/up-samplings in each generator
    n_blocks: int = 6  # ResNet blocks at the bottleneck
    ndf: int = 64  # discriminator width
    disc_layers: int = 2  # stride-2 layers of the PatchGAN (2 for 28-32 px images, 3 for 256 px)
    cycle_weight: float = 10.0
    identity_weight: float = 0.5  # x cycle_weight (CycleGAN's lambda_identity)
    pool_size: int = 50  # past fakes per discriminator (0 = none)
    gan_optimizer: OptimizerConfig = field(default_factory=_gan_optimizer)


@dataclass
class CyCADAConfig(CycleGANConfig):
    """Hoffman et al. 2018: f_S on source, then CycleGAN + semantic consistency, then the task net."""

    name: str = "cycada"
    source_steps: int = 2000  # stage 1: f_S on labelled source (``optimizer``)
    translate_steps: int = 6000  # stage 2: the translator; stage 3 (task net) = the remaining steps
    semantic_weight: float = 1.0
    semantic_source: SemanticSource = SemanticSource.labels
    feature_adapt: bool = False  # stage 3: + feature-level adversarial alignment to the real target
    feature_weight: float = 0.1
    disc_hidden: list[int] = field(default_factory=lambda: [500, 500])
    feature_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(
        name=OptimName.adam, lr=2e-4, betas=[0.5, 0.999], schedule=Schedule.constant))


class GanLoss(str, Enum):
    bce = "bce"  # binary cross-entropy with logits (the paper's default)
    ls = "ls"  # least squares (the official code's LS-GAN option)


@dataclass
class AdaptSegNetConfig(MethodConfig):
    """Tsai et al., CVPR 2018: output-space discriminators on the segmenter's softmax outputs."""

    name: str = "adaptsegnet"
    multi_level: bool = True  # + the auxiliary (layer3) output and its own discriminator
    gan: GanLoss = GanLoss.bce
    seg_aux_weight: float = 0.1  # lambda_seg on the auxiliary source segmentation loss
    adv_weight: float = 0.001  # lambda_adv on the main output
    adv_aux_weight: float = 0.0002  # lambda_adv on the auxiliary output
    ndf: int = 64  # discriminator widths ndf, 2ndf, 4ndf, 8ndf, 1 (5 convs 4x4 stride 2)
    disc_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(
        name=OptimName.adam, lr=1e-4, betas=[0.9, 0.99], schedule=Schedule.poly, sched_power=0.9))


class DiscNorm(str, Enum):
    batch = "batch"  # BatchNorm over each sub-batch D scores (one domain and kind per batch)
    instance = "instance"  # InstanceNorm, per image (the authors' released LSD-seg discriminator)


class TeacherNorm(str, Enum):
    running = "running"  # batch-norm running statistics as at the copy (after a source warm-up: source's)
    target = "target"  # each target batch's own statistics (running statistics never used nor updated)


class RegionOutput(str, Enum):
    position = "position"
    region = "region"


@dataclass
class ROADConfig(MethodConfig):
    """Chen et al., CVPR 2018: target guided distillation + spatial-aware adaptation (region classifiers)."""

    name: str = "road"
    # stage 1: the segmenter on labelled source only; the distillation teacher is copied from the segmenter
    # once, at the first step after it (0: copied before any update, i.e. the pretrained net itself)
    warmup_steps: int = 1000
    dist_weight: float = 0.1  # target guided distillation
    spatial_weight: float = 0.1  # reversal coefficient: the segmenter ascends spatial_weight x the region losses
    grid: list[int] = field(default_factory=lambda: [2, 2])  # regions: rows, columns of the feature map
    region_weights: list[float] = field(default_factory=list)  # one per region, row-major; [] = 1 each
    disc_hidden: int = 64  # width of each region's domain classifier
    # kernel of the classifier's first conv: 1 scores each position from its own feature vector; 3 (odd k)
    # also sees its k x k neighbourhood, zero-padded at the region's border (it never sees other regions)
    disc_kernel: int = 1
    # what each region classifier decides: "position" (BCE on every position's score, i.e. the feature
    # distributions of the region are aligned) or "region" (BCE on the mean of the region's scores: one
    # source/target decision per region per image, which can see what the region contains as a whole)
    region_output: RegionOutput = RegionOutput.position
    # gradient reversal weight: Ganin et al.'s ramp 2 / (1 + exp(-grl_gamma q)) - 1 over the adapt stage
    grl_gamma: float = 10.0
    # the teacher's batch-norm normalisation on the target images it sees: its running statistics frozen at
    # the copy, or the statistics of each target batch (its weights stay frozen either way)
    teacher_norm: TeacherNorm = TeacherNorm.running


@dataclass
class LSDConfig(MethodConfig):
    """Sankaranarayanan et al., CVPR 2018: F, C, a generator G(F(x)) and a 4-way + auxiliary-segmentation D."""

    name: str = "lsd"
    adv_weight: float = 0.1  # F's cross-domain adversarial (and auxiliary) terms
    aux_weight: float = 1.0  # D's auxiliary segmentation loss (ACGAN style)
    recon_weight: float = 1.0  # G's L1 reconstruction of x_s and x_t
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    dropout: float = 0.5  # in the generator, in place of a noise input
    gen_adv_weight: float = 1.0  # G's within-domain adversarial terms (the authors' released code: 0.1)
    disc_norm: DiscNorm = DiscNorm.batch  # D's normalisation layers
    warmup_steps: int = 0  # F+C without the adversarial terms first (D and G train); 0 = the paper
    gen_skips: bool = False  # G also reads the segmenter's skip_modules() (the authors' code: pool3, pool4)
    disc_lr_scale: float = 1.0  # D's learning rate = gan_optimizer.lr x this (1 = the paper: G and D alike)
    gan_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(
        name=OptimName.adam, lr=1e-4, betas=[0.7, 0.999], schedule=Schedule.constant))


# -------------------------------------------------------------------------------------- trainer
@dataclass
class TrainerConfig:
    max_steps: int = 10000
    batch_size: int = 64  # per domain: DANN's 128 = 64 source + 64 target
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    eval_batch_size: int = 1000
    precision: Precision = Precision.auto
    channels_last: bool = False
    # torch intra-op threads (0 = torch's default, which honours OMP_NUM_THREADS)
    threads: int = 0
    progress: Progress = Progress.auto
    # also keep checkpoints/step_XXXXXXX.pt every N steps (0 = only last.pt)
    keep_every: int = 0
    # a non-finite loss: skip the update (and stop after `nonfinite_patience` consecutive ones) | stop
    nonfinite: NonFinite = NonFinite.skip
    nonfinite_patience: int = 20
    # which evaluation checkpoints/best.pt keeps, chosen without target labels:
    # source_val (accuracy on held-out source) | entropy | dev | snd (see uda/selection.py)
    select: Select = Select.source_val
    # under torchrun: every N steps check that all ranks hold identical parameters (0 = never;
    # a debugging aid that all-gathers the parameters)
    check_ranks_every: int = 0


@dataclass
class TrainConfig:
    method: Any = MISSING
    data: DataConfig = MISSING
    backbone: Any = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = 0
    # false: a new run (refuses a directory holding a checkpoint) | true: continue the checkpoint in
    # hydra.run.dir (error if there is none) | auto: continue if there is one, else start fresh
    resume: Any = False
    device: Device = Device.auto
    # deterministic kernels where torch has them (bit-identical resume on CPU holds either way)
    deterministic: bool = False


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore (YAML files extend them by name)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="schema/method", name="source_only", node=SourceOnlyConfig)
    cs.store(group="schema/method", name="dann", node=DANNConfig)
    cs.store(group="schema/method", name="dsn", node=DSNConfig)
    cs.store(group="schema/method", name="adda", node=ADDAConfig)
    cs.store(group="schema/method", name="cyclegan", node=CycleGANConfig)
    cs.store(group="schema/method", name="cycada", node=CyCADAConfig)
    cs.store(group="schema/method", name="adaptsegnet", node=AdaptSegNetConfig)
    cs.store(group="schema/method", name="road", node=ROADConfig)
    cs.store(group="schema/method", name="lsd", node=LSDConfig)
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/backbone", name="dann_mnist", node=DANNDigitsConfig)
    cs.store(group="schema/backbone", name="lenet", node=LeNetConfig)
    cs.store(group="schema/backbone", name="resnet50", node=ResNetConfig)
    cs.store(group="schema/backbone", name="seg_small", node=SegSmallConfig)
    cs.store(group="schema/backbone", name="deeplabv2", node=DeepLabV2Config)
    cs.store(group="schema/backbone", name="fcn8s", node=FCN8sConfig)
    cs.store(group="schema/optimizer", name="optimizer", node=OptimizerConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)


def _positive(value: Any, what: str) -> None:
    if not (0 < value < math.inf):  # also refuses nan and inf
        raise ConfigError(f"{what} must be > 0, got {value}")


def _nonneg(value: Any, what: str) -> None:
    if not (0 <= value < math.inf):
        raise ConfigError(f"{what} must be >= 0, got {value}")


def _widths(values: list[int], what: str, n: int | None = None) -> None:
    if n is not None and len(values) != n:
        raise ConfigError(f"{what} needs exactly {n} values, got {list(values)}")
    if any(v <= 0 for v in values):
        raise ConfigError(f"{what} widths must be > 0, got {list(values)}")


def validate(cfg: TrainConfig) -> None:
    """Checks a schema cannot express (ranges, cross-field consistency). Raises ConfigError."""
    if cfg.resume not in (True, False, "auto"):
        raise ConfigError(f"resume must be true, false or auto, got {cfg.resume!r}")
    t = cfg.trainer
    for key in ("max_steps", "batch_size", "eval_every", "checkpoint_every", "log_every", "eval_batch_size"):
        _positive(getattr(t, key), f"trainer.{key}")
    _positive(t.nonfinite_patience, "trainer.nonfinite_patience")
    for key in ("keep_every", "threads", "check_ranks_every"):
        if getattr(t, key) < 0:
            raise ConfigError(f"trainer.{key} must be >= 0, got {getattr(t, key)}")
    d = cfg.data
    for key in ("image_size", "num_classes"):
        if getattr(d, key) < 0:
            raise ConfigError(f"data.{key} must be > 0, or 0 to take it from the source domain; got {getattr(d, key)}")
    if d.channels not in (0, 1, 3):
        raise ConfigError(f"data.channels must be 1 or 3 (0 = the source's), got {d.channels}")
    for role in ("source", "target"):
        dom = getattr(d, role)
        if dom.name not in DOMAIN_NAMES:
            raise ConfigError(f"unknown domain data.{role}.name={dom.name!r}; valid domains: {', '.join(DOMAIN_NAMES)}")
        if dom.name == "custom" and not dom.path:
            raise ConfigError(f"data.{role}.path is required for a custom domain: an ImageFolder directory "
                              f"(train/, test/) or an .npz file")
    for key in ("mean", "std"):
        values = getattr(d, key)
        if values and d.channels and len(values) != d.channels:
            raise ConfigError(f"data.{key} needs one value per channel ({d.channels}), got {values}")
    if not all(0 < s < math.inf for s in d.std):
        raise ConfigError(f"data.std must be > 0, got {d.std}")
    seg = [dom.name in SEG_DOMAINS for dom in (d.source, d.target)]
    if seg[0] != seg[1]:
        raise ConfigError(f"data.source.name={d.source.name} and data.target.name={d.target.name}: one is a segmentation "
                          f"domain and one is not; segmentation domains: {', '.join(SEG_DOMAINS)}")
    for key in ("source_size", "target_size"):
        size = getattr(d, key)
        if size and (len(size) != 2 or any(v <= 0 for v in size)):
            raise ConfigError(f"data.{key} must be [height, width] with positive values, got {list(size)}")
        role = getattr(d, key.split("_")[0])
        if role.name in FILE_DOMAINS and not size:
            raise ConfigError(f"data.{key} ([height, width]) is required for the file-backed domain {role.name}")
    if d.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {d.workers}")
    if d.val_size < 0:
        raise ConfigError(f"data.val_size must be >= 0, got {d.val_size}")
    if d.train_subset < 0 or d.test_subset < 0:
        raise ConfigError("data.train_subset and data.test_subset must be >= 0 (0 = all)")
    o = cfg.optimizer
    _positive(o.lr, "optimizer.lr")
    if not 0 <= o.momentum < 1:
        raise ConfigError(f"optimizer.momentum must be in [0, 1), got {o.momentum}")
    _nonneg(o.weight_decay, "optimizer.weight_decay")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {o.betas}")
    _positive(o.sched_step_size, "optimizer.sched_step_size")
    if not 0 <= o.sched_decay_start < 1:
        raise ConfigError(f"optimizer.sched_decay_start must be in [0, 1), got {o.sched_decay_start}")
    b = cfg.backbone
    if isinstance(b, ResNetConfig):
        if b.depth not in (18, 34, 50, 101):
            raise ConfigError(f"backbone.depth must be 18, 34, 50 or 101, got {b.depth}")
        _nonneg(b.bottleneck, "backbone.bottleneck")
        if not 0 <= b.dropout < 1:
            raise ConfigError(f"backbone.dropout must be in [0, 1), got {b.dropout}")
        if b.weights and not Path(b.weights).expanduser().is_file():
            raise ConfigError(f"backbone.weights: no file {b.weights} (a local ImageNet state_dict; nothing is downloaded)")
    if d.load_size < 0:
        raise ConfigError(f"data.load_size must be >= 0 (0 = data.image_size), got {d.load_size}")
    if d.load_size and d.image_size and d.load_size < d.image_size:
        raise ConfigError(f"data.load_size ({d.load_size}) must be >= data.image_size ({d.image_size}): crops are "
                          f"taken from the stored images")
    if isinstance(b, (DANNDigitsConfig, LeNetConfig)):
        _widths(b.conv_channels, "backbone.conv_channels", 2)
    if isinstance(b, DANNDigitsConfig):
        _widths(b.cls_hidden, "backbone.cls_hidden")
    if isinstance(b, LeNetConfig):
        _positive(b.feat_dim, "backbone.feat_dim")
        if not 0 <= b.dropout < 1:
            raise ConfigError(f"backbone.dropout must be in [0, 1), got {b.dropout}")
    m = cfg.method
    if isinstance(m, DSNConfig):
        for key in ("alpha", "beta", "gamma"):
            _nonneg(getattr(m, key), f"method.{key}")
        if not 0 <= m.adapt_start < t.max_steps:
            raise ConfigError(f"method.adapt_start must be in [0, trainer.max_steps={t.max_steps}), got {m.adapt_start}")
        _positive(m.code_size, "method.code_size")
        _nonneg(m.grl_gamma, "method.grl_gamma")
        _widths(m.private_channels, "method.private_channels", 2)
        _widths(m.disc_hidden, "method.disc_hidden")
        if not m.mmd_sigmas or any(s <= 0 for s in m.mmd_sigmas):
            raise ConfigError(f"method.mmd_sigmas must be non-empty and > 0, got {m.mmd_sigmas}")
    if isinstance(m, ADDAConfig):
        _positive(m.pretrain_steps, "method.pretrain_steps")
        if m.pretrain_steps >= t.max_steps:
            raise ConfigError(f"method.pretrain_steps ({m.pretrain_steps}) must be < trainer.max_steps ({t.max_steps}): "
                              "stage 2 needs at least one step")
        _positive(m.adapt_optimizer.lr, "method.adapt_optimizer.lr")
        _widths(m.disc_hidden, "method.disc_hidden")
    if isinstance(m, CycleGANConfig):
        for key in ("ngf", "n_down", "ndf", "disc_layers"):
            _positive(getattr(m, key), f"method.{key}")
        for key in ("n_blocks", "cycle_weight", "identity_weight", "pool_size"):
            _nonneg(getattr(m, key), f"method.{key}")
        _positive(m.gan_optimizer.lr, "method.gan_optimizer.lr")
    if isinstance(m, CyCADAConfig):
        _positive(m.source_steps, "method.source_steps")
        _positive(m.translate_steps, "method.translate_steps")
        if m.source_steps + m.translate_steps >= t.max_steps:
            raise ConfigError(f"method.source_steps ({m.source_steps}) + method.translate_steps ({m.translate_steps}) "
                              f"must be < trainer.max_steps ({t.max_steps}): the task stage needs at least one step")
        _nonneg(m.semantic_weight, "method.semantic_weight")
        _nonneg(m.feature_weight, "method.feature_weight")
        _widths(m.disc_hidden, "method.disc_hidden")
    if isinstance(m, AdaptSegNetConfig):
        for key in ("seg_aux_weight", "adv_weight", "adv_aux_weight"):
            _nonneg(getattr(m, key), f"method.{key}")
        _positive(m.ndf, "method.ndf")
        _positive(m.disc_optimizer.lr, "method.disc_optimizer.lr")
    if isinstance(b, (SegSmallConfig, DeepLabV2Config, FCN8sConfig)):
        _positive(b.head_lr_mult, "backbone.head_lr_mult")
        if isinstance(m, (DANNConfig, DSNConfig, ADDAConfig, CycleGANConfig)):
            raise ConfigError(f"method={m.name} is a classification method; with backbone={b.name} use "
                              f"method=source_only, adaptsegnet, road or lsd")
    if isinstance(b, DeepLabV2Config) and b.depth not in (50, 101):
        raise ConfigError(f"backbone.depth must be 50 or 101 for deeplabv2, got {b.depth}")
    if isinstance(b, SegSmallConfig) and (len(b.channels) < 2 or any(c <= 0 for c in b.channels)):
        raise ConfigError(f"backbone.channels needs at least two positive widths, got {list(b.channels)}")
    seg_pair = d.source.name in SEG_DOMAINS
    seg_net = isinstance(b, (SegSmallConfig, DeepLabV2Config, FCN8sConfig))
    if seg_pair != seg_net:
        raise ConfigError(f"data={d.name} is a {'segmentation' if seg_pair else 'classification'} pair but "
                          f"backbone={b.name} is a {'segmentation' if seg_net else 'classification'} network; valid "
                          f"backbones: {'seg_small, deeplabv2, fcn8s' if seg_pair else 'dann_mnist, lenet, resnet50'}")
    if isinstance(m, (AdaptSegNetConfig, ROADConfig, LSDConfig)) and not seg_pair:
        raise ConfigError(f"method={m.name} needs a segmentation pair (data=digits_seg, gta5_cityscapes, "
                          f"synthia_cityscapes), got data={d.name}")
    if isinstance(m, (ROADConfig, LSDConfig)) and not 0 <= m.warmup_steps < t.max_steps:
        raise ConfigError(f"method.warmup_steps must be in [0, trainer.max_steps={t.max_steps}), got {m.warmup_steps}")
    if isinstance(m, ROADConfig):
        for key in ("dist_weight", "spatial_weight", "grl_gamma"):
            _nonneg(getattr(m, key), f"method.{key}")
        _widths(m.grid, "method.grid", 2)
        _positive(m.disc_hidden, "method.disc_hidden")
        if m.disc_kernel < 1 or m.disc_kernel % 2 == 0:
            raise ConfigError(f"method.disc_kernel must be an odd size >= 1 (1, 3, 5, ...), got {m.disc_kernel}")
        n = m.grid[0] * m.grid[1]
        if m.region_weights and (len(m.region_weights) != n or any(not 0 <= w < math.inf for w in m.region_weights)):
            raise ConfigError(f"method.region_weights needs {n} values >= 0 (one per region of the "
                              f"{m.grid[0]}x{m.grid[1]} grid), got {list(m.region_weights)}")
    if isinstance(m, LSDConfig):
        for key in ("adv_weight", "aux_weight", "recon_weight", "gen_adv_weight"):
            _nonneg(getattr(m, key), f"method.{key}")
        for key in ("ngf", "ndf"):
            _positive(getattr(m, key), f"method.{key}")
        if not 0 <= m.dropout < 1:
            raise ConfigError(f"method.dropout must be in [0, 1), got {m.dropout}")
        _positive(m.gan_optimizer.lr, "method.gan_optimizer.lr")
        _positive(m.disc_lr_scale, "method.disc_lr_scale")
    if isinstance(m, DANNConfig):
        _nonneg(m.adv_weight, "method.adv_weight")
        _nonneg(m.grl_gamma, "method.grl_gamma")
        _widths(m.disc_hidden, "method.disc_hidden")
