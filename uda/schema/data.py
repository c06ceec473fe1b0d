"""``data``: a domain pair (``configs/data/``); its domains are entries of ``uda.data.catalog.DOMAINS``.

The catalog is read inside the functions: it imports this package's tasks, and imports no torch either."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import MISSING

from uda.errors import ConfigError
from uda.schema.base import SEGMENTATION


@dataclass
class DomainConfig:
    # a built-in domain (uda data list), or "custom": your own data at `path`
    name: str = MISSING
    # custom: an ImageFolder tree (train/<class>/..., test/<class>/...) or an .npz file with
    # x_train, y_train, x_test, y_test (uint8 N x H x W [x C]; a target's y_train may be
    # absent), or a list file (.txt, one "relative/path.jpg label" per line, paths relative to
    # its folder), read from files
    path: str = ""
    # a custom list file's test split ("" = the same list: both are the whole domain)
    test_path: str = ""


@dataclass
class DataConfig:
    name: str = MISSING  # the pair, "<source>_<target>"
    source: DomainConfig = field(default_factory=DomainConfig)
    target: DomainConfig = field(default_factory=DomainConfig)
    # where datasets live and builds are cached; "" = $UDA_DATA or ~/.cache/uda
    root: str = ""
    # the network's input size; 0 = take it from the source domain
    image_size: int = 0
    # the size images are stored at (square; 0 = image_size); larger: crops are taken (random
    # with `augment`, else central), as the usual Resize(256) + Crop(224)
    load_size: int = 0
    # train-time augmentation on the fly: random crop to image_size + horizontal flip, derived
    # from (seed, step) so a resumed run sees the same crops; evaluation uses the central crop
    augment: bool = False
    channels: int = 0  # 1 or 3; 0 = the source's
    num_classes: int = 0  # 0 = from the source's labels
    # both domains: x = (x/255 - mean) / std per channel ([] = 0.5 each)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    train_subset: int = 0  # use only the first N training images of each domain (0 = all); for smoke runs
    test_subset: int = 0  # use only the first N test images of each domain (0 = all)
    # the last N images of each domain's train split (at most a fifth) are held out for
    # label-free model selection: source validation accuracy, and target scores that never
    # read target labels
    val_size: int = 1000
    # check files against their published checksums (false: use a modified copy)
    verify: bool = True
    # put the in-memory datasets on the training device (no host->device copy per step)
    on_device: bool = True
    # file-backed segmentation domains (gta5, synthia, cityscapes): [height, width] the images
    # are resized to for training and evaluation (labels: nearest; Cityscapes val labels stay
    # full size)
    source_size: list[int] = field(default_factory=list)
    target_size: list[int] = field(default_factory=list)
    # segmentation pairs: [height, width] of a random training crop per image, the same window for the image and
    # its label map ([] = whole images; mmseg's RandomCrop); evaluation always sees whole images
    seg_crop: list[int] = field(default_factory=list)
    # with seg_crop: a source window is drawn again (at most 10 checked) while one class covers at least this
    # share of its labelled pixels (mmseg's cat_max_ratio; 1 = off); target windows never read labels
    seg_crop_max_share: float = 1.0
    # segmentation pairs: a horizontal mirror of each training image and its labels at p 0.5 (mmseg's RandomFlip)
    seg_flip: bool = False
    # DataLoader worker processes for file-backed domains (0 = read in the training process)
    workers: int = 0
    # DomainNet: read <domain>_train<suffix>.txt and <domain>_test<suffix>.txt (e.g. the lists
    # of the 126-class subset you supply; data.num_classes 0 takes the count from the lists)
    list_suffix: str = ""

    @property
    def task(self) -> str:
        """The pair's task, its source domain's (CLASSIFICATION or SEGMENTATION)."""
        from uda.data.catalog import DOMAINS

        return DOMAINS[self.source.name].task

    def check(self) -> None:
        from uda.data.catalog import DOMAINS, spec

        for key in ("image_size", "num_classes"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} must be > 0, or 0 to take it from the source domain; got "
                                  f"{getattr(self, key)}")
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"data.channels must be 1 or 3 (0 = the source's), got {self.channels}")
        for role in ("source", "target"):
            dom = getattr(self, role)
            spec(dom.name, f"data.{role}.name")
            if dom.name == "custom" and not dom.path:
                raise ConfigError(f"data.{role}.path is required for a custom domain: an ImageFolder directory "
                                  f"(train/, test/), an .npz file or a .txt list file")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values and self.channels and len(values) != self.channels:
                raise ConfigError(f"data.{key} needs one value per channel ({self.channels}), got {values}")
        if not all(0 < s < math.inf for s in self.std):
            raise ConfigError(f"data.std must be > 0, got {self.std}")
        tasks = [DOMAINS[dom.name].task for dom in (self.source, self.target)]
        if tasks[0] != tasks[1]:
            seg = ", ".join(n for n, d in DOMAINS.items() if d.task == SEGMENTATION)
            raise ConfigError(f"data.source.name={self.source.name} and data.target.name={self.target.name}: one is "
                              f"a segmentation domain and one is not; segmentation domains: {seg}")
        for key in ("source_size", "target_size"):
            size = getattr(self, key)
            if size and (len(size) != 2 or any(v <= 0 for v in size)):
                raise ConfigError(f"data.{key} must be [height, width] with positive values, got {list(size)}")
            dom = getattr(self, key.split("_")[0])
            if DOMAINS[dom.name].files and DOMAINS[dom.name].task == SEGMENTATION and not size:
                raise ConfigError(f"data.{key} ([height, width]) is required for the file-backed domain {dom.name}")
        self._check_seg_crop()
        for key in ("workers", "val_size", "load_size"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} must be >= 0, got {getattr(self, key)}")
        if self.train_subset < 0 or self.test_subset < 0:
            raise ConfigError("data.train_subset and data.test_subset must be >= 0 (0 = all)")
        if self.load_size and self.image_size and self.load_size < self.image_size:
            raise ConfigError(f"data.load_size ({self.load_size}) must be >= data.image_size ({self.image_size}): "
                              f"crops are taken from the stored images")
        if self.augment and self.task == SEGMENTATION:
            raise ConfigError(
                "data.augment (random crop + flip of images only) is not available for segmentation pairs"
            )


    def _check_seg_crop(self) -> None:
        crop = list(self.seg_crop)
        if (crop or self.seg_flip) and self.task != SEGMENTATION:
            raise ConfigError(f"data.seg_crop / data.seg_flip are for segmentation pairs; {self.name} is a "
                              f"classification pair (its crops and flips: data.augment)")
        if crop and (len(crop) != 2 or any(v <= 0 for v in crop)):
            raise ConfigError(f"data.seg_crop must be [height, width] with positive values, or [] for whole "
                              f"images; got {crop}")
        if not 0 < self.seg_crop_max_share <= 1:
            raise ConfigError(f"data.seg_crop_max_share must be in (0, 1] (1 = off), got {self.seg_crop_max_share}")
        if self.seg_crop_max_share < 1 and not crop:
            raise ConfigError(f"data.seg_crop_max_share={self.seg_crop_max_share} chooses among crops: give "
                              f"data.seg_crop=[height,width] too, or leave it at 1")
        for key in ("source_size", "target_size"):  # file-backed domains: the size the images are stored at
            size = list(getattr(self, key))
            if crop and size and (crop[0] > size[0] or crop[1] > size[1]):
                raise ConfigError(f"data.seg_crop {crop} is larger than data.{key} {size}: crops are taken from the "
                                  f"stored images")


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def benchmark_pairs() -> dict[str, DataConfig]:
    """The pairs of the file-backed benchmarks, one per ordered pair of their domains (registered as
    ``data=<name>`` by ``uda.compose``): ``officehome_<s>_<t>`` (12) and ``domainnet_<s>_<t>`` (30). Images are
    stored at 256 x 256 and the network sees 224 crops (random + flip for training, central for evaluation),
    ImageNet normalisation, as Transfer-Learning-Library's runs. Office-Home trains and tests on whole domains
    (no held-out split); DomainNet has train / test lists, and its class count comes from them (345, or the 126
    of the subset's lists with ``data.list_suffix``). ``data=visda17`` is a YAML file (one pair)."""
    from uda.data.catalog import DOMAINS

    def pair(kind: str, s: str, t: str, **kw) -> tuple[str, DataConfig]:
        name = f"{kind}_{s}_{t}"
        return name, DataConfig(name=name, source=DomainConfig(f"{kind}_{s}"), target=DomainConfig(f"{kind}_{t}"),
                                image_size=224, load_size=256, augment=True, channels=3, mean=list(IMAGENET_MEAN),
                                std=list(IMAGENET_STD), **kw)

    office = [d.removeprefix("officehome_") for d in DOMAINS if d.startswith("officehome_")]
    net = [d.removeprefix("domainnet_") for d in DOMAINS if d.startswith("domainnet_")]
    return dict([pair("officehome", s, t, num_classes=65, val_size=0) for s in office for t in office if s != t]
                + [pair("domainnet", s, t) for s in net for t in net if s != t])
