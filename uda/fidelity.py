"""The ledger's data: the settings each paper (or, where it is silent, its official code) gives, as the
config keys ``uda train method=X`` composes. ``docs/fidelity.md`` explains each row (the paper's table
or section, every departure and the evidence behind it); ``tests/test_fidelity.py`` composes every
default and every ``*_paper`` recipe and compares it with these values, so a default cannot drift from
its paper unnoticed. Keys the papers leave open (step budgets, loss weights nobody published) are not here.
"""
from __future__ import annotations

# Ganin et al. 2016, Sec. 5.2.2 and Fig. 4 (MNIST net), Eq. 18 (the domain loss: mean over
# source + mean over target); batch 128 = 64 source + 64 target
_DANN = {
    "backbone.name": "dann_mnist", "backbone.conv_channels": [32, 48], "backbone.cls_hidden": [100, 100],
    "method.disc_hidden": [100], "method.adv_weight": 1.0, "method.grl_gamma": 10.0,
    "method.domain_reduction": "sum",
    "optimizer.name": "sgd", "optimizer.lr": 0.01, "optimizer.momentum": 0.9, "optimizer.schedule": "dann",
    "optimizer.sched_alpha": 10.0, "optimizer.sched_beta": 0.75, "trainer.batch_size": 64,
}

# Zhu et al. 2017 (CycleGAN), Sec. 4 and appendix 7
_CYCLEGAN = {
    "method.ngf": 64, "method.n_down": 2, "method.n_blocks": 6, "method.ndf": 64, "method.cycle_weight": 10.0,
    "method.identity_weight": 0.5, "method.pool_size": 50, "method.gan_optimizer.name": "adam",
    "method.gan_optimizer.lr": 2e-4, "method.gan_optimizer.betas": [0.5, 0.999],
    "method.gan_optimizer.schedule": "linear", "method.gan_optimizer.sched_decay_start": 0.5,
}

# Tsai et al. 2018, Sec. 4.1 and the official AdaptSegNet code (optimizers, NUM_STEPS)
_ADAPTSEGNET = {
    "method.multi_level": True, "method.gan": "bce", "method.seg_aux_weight": 0.1, "method.adv_weight": 0.001,
    "method.adv_aux_weight": 0.0002, "method.ndf": 64,
    "optimizer.name": "sgd", "optimizer.lr": 2.5e-4, "optimizer.momentum": 0.9, "optimizer.weight_decay": 5e-4,
    "optimizer.schedule": "poly", "optimizer.sched_power": 0.9,
    "method.disc_optimizer.name": "adam", "method.disc_optimizer.lr": 1e-4,
    "method.disc_optimizer.betas": [0.9, 0.99], "method.disc_optimizer.schedule": "poly",
}

# Vu et al. 2019 and the official valeoai/ADVENT configs: multi-level, lambda_seg 0.1,
# lambda_adv and lambda_ent 0.001 / 0.0002, the segmenter SGD 2.5e-4 poly 0.9, D Adam 1e-4
# betas (0.9, 0.99) poly
_ADVENT = {
    "method.mode": "advent", "method.multi_level": True, "method.seg_aux_weight": 0.1, "method.adv_weight": 0.001,
    "method.adv_aux_weight": 0.0002, "method.ent_weight": 0.001, "method.ent_aux_weight": 0.0002, "method.ndf": 64,
    "optimizer.name": "sgd", "optimizer.lr": 2.5e-4, "optimizer.momentum": 0.9, "optimizer.weight_decay": 5e-4,
    "optimizer.schedule": "poly", "optimizer.sched_power": 0.9,
    "method.disc_optimizer.name": "adam", "method.disc_optimizer.lr": 1e-4,
    "method.disc_optimizer.betas": [0.9, 0.99], "method.disc_optimizer.schedule": "poly",
}

# Tranheden et al. 2021 and the official vikolss/DACS code: EMA min(1 - 1/(t+1), 0.99),
# confidence 0.968, the mixed loss at weight 1, jitter 0.25 (p 0.8), blur p 0.5 sigma
# 0.15-1.15, SGD 2.5e-4 poly 0.9
_DACS = {
    "method.ema_max": 0.99, "method.confidence": 0.968, "method.unsup_weight": 1.0, "method.jitter": 0.25,
    "method.jitter_p": 0.8, "method.blur_p": 0.5, "method.blur_sigma": [0.15, 1.15],
    "optimizer.name": "sgd", "optimizer.lr": 2.5e-4, "optimizer.momentum": 0.9, "optimizer.weight_decay": 5e-4,
    "optimizer.schedule": "poly", "optimizer.sched_power": 0.9,
}

# Hoyer et al. 2022 and the official lhoyer/DAFormer configs (configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_
# a999_daformer_mitb5_s0.py on _base_/uda/dacs.py, schedules/adamw.py, poly10warm.py): EMA 0.999, confidence
# 0.968, jitter 0.2 applied when U > 0.2, blur, RCS T 0.01 over images with > 3000 px of the class, FD 0.005 on
# the thing classes at ratio 0.75, AdamW 6e-5 (0.9, 0.999) wd 0.01, poly 1, linear warm-up 1500 of 40k from
# 1e-6 x the rate
_DAFORMER = {
    "method.ema_max": 0.999, "method.confidence": 0.968, "method.unsup_weight": 1.0, "method.jitter": 0.2,
    "method.jitter_p": 0.8, "method.blur_p": 0.5, "method.blur_sigma": [0.15, 1.15], "method.rcs": True,
    "method.rcs_temperature": 0.01, "method.rcs_min_share": 3000 / (1914 * 1052), "method.fd_weight": 0.005,
    "method.fd_classes": [6, 7, 11, 12, 13, 14, 15, 16, 17, 18], "method.fd_min_ratio": 0.75,
    "optimizer.name": "adamw", "optimizer.lr": 6e-5, "optimizer.betas": [0.9, 0.999], "optimizer.weight_decay": 0.01,
    "optimizer.schedule": "poly", "optimizer.sched_power": 1.0, "optimizer.warmup": 1500 / 40000,
    "optimizer.warmup_ratio": 1e-6,
}

PAPER: dict[str, dict[str, object]] = {
    "source_only": {},  # no paper: the same net and optimizer as the run's, on labelled source alone
    "dann": _DANN,
    # Long et al. 2018 and the official thuml/CDAN digits scripts (pytorch/network.py
    # AdversarialNetwork, train_uspsmnist.py): D 500-500 with dropout 0.5 on T(f, g), random
    # d = 500, reversal 0 -> 1 (alpha 10) over 10k iterations, trade-off 1, SGD lr 0.01 with
    # weight decay 5e-4 on the net and D, D's lr constant, batch 64
    "cdan": {
        "method.adv_weight": 1.0, "method.grl_gamma": 10.0, "method.grl_horizon": 10000,
        "method.disc_hidden": [500, 500], "method.disc_dropout": 0.5, "method.disc_constant_lr": True,
        "method.random_dim": 500, "optimizer.name": "sgd", "optimizer.lr": 0.01, "optimizer.weight_decay": 5e-4,
        "trainer.batch_size": 64,
    },
    # Rangwani et al. 2022 and the official val-iisc/SDAT examples/cdan_sdat.py argparse: rho
    # 0.05, MCC's T 2 (cdan_mcc_sdat.py), trade-off 1; SGD lr 0.01, Nesterov momentum 0.9,
    # weight decay 1e-3, D's rate decayed with the net's; the CDAN part at CDAN's digits values
    "sdat": {
        "method.rho": 0.05, "method.temperature": 2.0, "method.cdan.adv_weight": 1.0,
        "method.cdan.grl_gamma": 10.0, "method.cdan.grl_horizon": 10000, "method.cdan.disc_constant_lr": False,
        "method.cdan.entropy_weighting": False, "optimizer.name": "sgd", "optimizer.lr": 0.01,
        "optimizer.momentum": 0.9, "optimizer.nesterov": True, "optimizer.weight_decay": 1e-3,
    },
    # Hoyer et al. 2023 and the official lhoyer/MIC cls/experiments.py (the runs of its tables): EMA
    # 0.9, q = the teacher's probability (ViT runs), block 64 on 224, ratio 0.7, DAFormer's colour
    # aug (s = p = 0.2, blur); host CDAN+MCC w/ SDAT (cdan_mcc_sdat_masking.py)
    "mic": {
        "method.ema": 0.9, "method.pseudo_weight": "prob", "method.mask_block": 64, "method.mask_ratio": 0.7,
        "method.jitter": 0.2, "method.jitter_switch": 0.2, "method.blur": True, "method.mask_weight": 1.0,
        "method.host.name": "sdat", "method.host.mcc_weight": 1.0, "method.host.temperature": 2.0,
        "optimizer.nesterov": True, "optimizer.weight_decay": 1e-3,
    },
    # Sohn et al. 2020 as Transfer-Learning-Library's UDA port (examples/domain_adaptation/
    # image_classification/fixmatch.py argparse): threshold 0.9, trade-off 1, crops of scale
    # (0.5, 1), RandAugment rand-m10-n2-mstd2, SGD Nesterov momentum 0.9, weight decay 1e-3
    "fixmatch": {
        "method.threshold": 0.9, "method.trade_off": 1.0, "method.crop_scale": [0.5, 1.0], "method.ops": 2,
        "method.magnitude": 10.0, "method.magnitude_std": 2.0, "method.op_prob": 0.5,
        "optimizer.momentum": 0.9, "optimizer.nesterov": True, "optimizer.weight_decay": 1e-3,
    },
    # Liang et al. 2020 and the official tim-learn/SHOT digits code (digit/uda_digit.py, digit.sh):
    # label smoothing 0.1, beta 0.1 (digit.sh), IM weight 1, bottleneck 256 (BN, dropout 0.5),
    # one refinement, SGD lr 0.01 Nesterov momentum 0.9 weight decay 1e-3, (1 + 10 p)^-0.75
    "shot": {
        "method.smoothing": 0.1, "method.beta": 0.1, "method.im_weight": 1.0, "method.bottleneck": 256,
        "method.dropout": 0.5, "method.refinements": 1, "optimizer.lr": 0.01, "optimizer.momentum": 0.9,
        "optimizer.nesterov": True, "optimizer.weight_decay": 1e-3, "optimizer.schedule": "dann",
        "optimizer.sched_alpha": 10.0, "optimizer.sched_beta": 0.75, "trainer.batch_size": 64,
    },
    # Jin et al. 2020, thuml/Versatile-Domain-Adaptation: T = 2.5, trade-off 1; SGD Nesterov momentum
    # 0.9, weight decay 5e-4 x each group's decay_mult 2 (train_image_office.py:243, network.py:166,
    # lr_schedule.py inv_lr_scheduler)
    "mcc": {"method.temperature": 2.5, "method.mcc_weight": 1.0, "optimizer.momentum": 0.9,
            "optimizer.nesterov": True, "optimizer.weight_decay": 1e-3},
    # Zhang et al. 2019 and the official thuml/MDD code: gamma 4 (its Office-31 value), the
    # reversal 0 -> 0.1 as 0.2 / (1 + exp(-i / 1000)) - 0.1
    "mdd": {"method.margin": 4.0, "method.trade_off": 0.1, "method.grl_alpha": 1.0, "method.grl_horizon": 1000},
    # Saito et al. 2018 and the official mil-tokyo/MCD_DA digits code: n = 4, Adam 2e-4,
    # weight decay 5e-4, batch 128
    "mcd": {"method.num_k": 4, "optimizer.name": "adam", "optimizer.lr": 2e-4, "optimizer.weight_decay": 5e-4,
            "trainer.batch_size": 128},
    # French et al. 2018 and the official Britefury/self-ensemble-visual-domain-adapt code:
    # its confidence thresholding runs (threshold 0.96837722, no ramp-up), standardised
    # images, affine 0.1, translation 2 px, noise 0.1, unsupervised weight 3, EMA 0.99, Adam
    # 1e-3, batch 256
    "mean_teacher": {
        "method.confidence_thresh": 0.96837722, "method.teacher_alpha": 0.99, "method.unsup_weight": 3.0,
        "method.standardise": True, "method.affine_std": 0.1, "method.translate": 2.0, "method.noise_std": 0.1,
        "method.predict": "teacher", "optimizer.name": "adam", "optimizer.lr": 1e-3, "trainer.batch_size": 256,
    },
    # Bousmalis et al. 2016, Sec. 4 / supplementary (optimizer, batch, similarity on h_c); the
    # official code (tensorflow/models domain_separation): weight decay 1e-6, its MNIST ->
    # MNIST-M gamma_weight 0.251175
    "dsn": {
        "backbone.name": "dann_mnist", "method.similarity": "dann", "method.similarity_layer": "code",
        "method.recon": "simse", "method.gamma": 0.25, "method.difference_normalise": True,
        "optimizer.name": "sgd", "optimizer.lr": 0.01, "optimizer.momentum": 0.9, "optimizer.schedule": "step",
        "optimizer.sched_gamma": 0.95, "optimizer.sched_step_size": 20000, "optimizer.weight_decay": 1e-6,
        "trainer.batch_size": 32,
    },
    # Tzeng et al. 2017, Sec. 4.1; the official erictzeng/adda LeNet (no dropout, L2 2.5e-5)
    "adda": {
        "backbone.name": "lenet", "backbone.conv_channels": [20, 50], "backbone.feat_dim": 500,
        "backbone.dropout": 0.0, "method.disc_hidden": [500, 500], "method.disc_input": "features",
        "optimizer.name": "adam", "optimizer.lr": 1e-3, "optimizer.weight_decay": 2.5e-5,
        "method.adapt_optimizer.name": "adam", "method.adapt_optimizer.lr": 2e-4,
        "method.adapt_optimizer.betas": [0.5, 0.999], "trainer.batch_size": 128,
    },
    "cyclegan": _CYCLEGAN,
    # Hoffman et al. 2018, Eq. 4-8: pixel + feature adaptation, the terms summed unweighted
    "cycada": _CYCLEGAN | {
        "method.semantic_weight": 1.0, "method.semantic_source": "predictions", "method.feature_adapt": True,
    },
    "adaptsegnet": _ADAPTSEGNET,
    "advent": _ADVENT,
    "dacs": _DACS,
    "daformer": _DAFORMER,
    # Chen et al. 2018: no official code; the paper's L2 distillation on target and a grid of
    # region classifiers behind gradient reversal (its weights are not given: ours)
    "road": {"method.teacher_norm": "student"},
    # Sankaranarayanan et al. 2018, Sec. 4: F/C Adam 1e-5, G/D Adam 2e-4, beta1 0.7, adv 0.1
    "lsd": {
        "method.adv_weight": 0.1, "optimizer.name": "adam", "optimizer.lr": 1e-5, "optimizer.betas": [0.7, 0.999],
        "method.gan_optimizer.name": "adam", "method.gan_optimizer.lr": 2e-4,
        "method.gan_optimizer.betas": [0.7, 0.999], "method.disc_lr_scale": 1.0,
    },
}

_DAFORMER_CS = _DAFORMER | {"backbone.name": "daformer", "backbone.encoder": "pvt_v2_b5", "backbone.head_lr_mult": 10.0,
                            "backbone.drop_path": 0.1, "trainer.max_steps": 40000, "trainer.batch_size": 2,
                            "method.pl_ignore_top": 15 / 512, "method.pl_ignore_bottom": 120 / 512,
                            # uda_gta_to_cityscapes_512x512.py: RandomCrop(512, cat_max_ratio=0.75), RandomFlip(0.5)
                            "data.seg_crop": [512, 512], "data.seg_crop_max_share": 0.75, "data.seg_flip": True,
                            # uda_dataset.py: rcs_min_pixels 3000 x rcs_min_crop_ratio 0.5 of the crop
                            "method.rcs_min_crop_share": 1500 / 512**2}
_MIC_DAFORMER_CS = {k.replace("method.", "method.host."): v for k, v in _DAFORMER_CS.items()} | {
    "method.mask_block": 32, "method.mask_side": 512, "method.mask_ratio": 0.7, "method.mask_weight": 1.0,
    "method.jitter": 0.2, "method.jitter_switch": 0.2, "method.blur": True}

# ``+experiment=<name>`` recipes of a paper's full setting: what they hold on top
PAPER_RECIPES: dict[str, dict[str, object]] = {
    "dann_mnist_mnistm_paper": _DANN | {"trainer.max_steps": 10000},
    "dsn_mnist_mnistm_paper": {"method.adapt_start": 10000, "trainer.batch_size": 32, "optimizer.schedule": "step"},
    "adda_mnist_mnistm_paper": {"method.pretrain_steps": 10000, "trainer.max_steps": 20000,
                                "trainer.batch_size": 128, "backbone.dropout": 0.0},
    "dann_office31": {"backbone.name": "resnet50", "method.disc_hidden": [1024, 1024],
                      "backbone.head_lr_mult": 10.0, "optimizer.schedule": "dann"},
    # the official code: poly over NUM_STEPS 250k, stopped at NUM_STEPS_STOP 150k
    "adaptsegnet_gta5_cityscapes": _ADAPTSEGNET | {"backbone.name": "deeplabv2", "optimizer.horizon": 250000,
                                                   "method.disc_optimizer.horizon": 250000,
                                                   "trainer.max_steps": 150000, "trainer.batch_size": 1},
    "adaptsegnet_synthia_cityscapes": _ADAPTSEGNET | {"backbone.name": "deeplabv2", "optimizer.horizon": 250000,
                                                      "method.disc_optimizer.horizon": 250000,
                                                      "trainer.max_steps": 150000, "data.num_classes": 13},
    # the official MAX_ITERS 250k (the poly horizon), EARLY_STOP 120k, batch 1 + 1
    "advent_gta5_cityscapes": _ADVENT | {"backbone.name": "deeplabv2", "optimizer.horizon": 250000,
                                         "method.disc_optimizer.horizon": 250000, "trainer.max_steps": 120000,
                                         "trainer.batch_size": 1},
    "advent_synthia_cityscapes": _ADVENT | {"backbone.name": "deeplabv2", "optimizer.horizon": 250000,
                                            "method.disc_optimizer.horizon": 250000, "trainer.max_steps": 120000,
                                            "trainer.batch_size": 1},
    # the official 250k iterations (also the poly horizon), batch 2 + 2, 512 x 512 random crops (configUDA.json
    # input_size, data/augmentations.py RandomCrop_gta / RandomCrop_city), no mirror
    "dacs_gta5_cityscapes": _DACS | {"backbone.name": "deeplabv2", "trainer.max_steps": 250000,
                                     "trainer.batch_size": 2, "data.seg_crop": [512, 512]},
    "dacs_synthia_cityscapes": _DACS | {"backbone.name": "deeplabv2", "trainer.max_steps": 250000,
                                        "trainer.batch_size": 2, "data.seg_crop": [512, 512]},
    # the official 40k iterations, batch 2 + 2, the PL crop's 15 / 120 rows of 512, MiT-B5 + the fusion decoder
    # mmseg's Resize(img_scale=(1280, 720)) keeps the aspect ratio: a 1914 x 1052 GTA5 image becomes 1280 x 704
    "daformer_gta5_cityscapes": _DAFORMER_CS | {"data.source_size": [704, 1280]},
    "daformer_synthia_cityscapes": _DAFORMER_CS | {"method.fd_classes": [6, 7, 10, 11, 12, 13, 14, 15],
                                                   "method.rcs_min_share": 3000 / (1280 * 760)},
    # MIC(DAFormer): blocks of 32 on 512 crops, 70% masked, weight 1, on the same host
    "mic_daformer_gta5_cityscapes": _MIC_DAFORMER_CS | {"data.source_size": [704, 1280]},
    "mic_daformer_synthia_cityscapes": _MIC_DAFORMER_CS | {"method.host.fd_classes": [6, 7, 10, 11, 12, 13, 14, 15],
                                                           "method.host.rcs_min_share": 3000 / (1280 * 760)},
    "lsd_gta5_cityscapes": {"backbone.name": "fcn8s", "optimizer.lr": 1e-5, "method.gan_optimizer.lr": 2e-4},
    "lsd_synthia_cityscapes": {"backbone.name": "fcn8s", "optimizer.lr": 1e-5, "method.gan_optimizer.lr": 2e-4},
}

# Transfer-Learning-Library's published runs on the file-backed benchmarks (its
# examples/domain_adaptation/ image_classification/<method>.sh with the defaults of
# <method>.py): SGD with Nesterov momentum, the body at 0.1 x the new layers' learning
# rate, lr (1 + gamma i)^-0.75 (our dann schedule, sched_alpha = gamma x steps), epochs x
# iterations per epoch as steps. The differences that remain are in
# docs/fidelity.md#tllib-recipes.
_TLLIB = {"optimizer.nesterov": True, "backbone.head_lr_mult": 10.0, "optimizer.schedule": "dann",
          "backbone.dropout": 0.0}


def _tllib(method: str, *, lr: float, gamma: float, wd: float, batch: int, steps: int, bottleneck: int,
           depth: int, **extra: object) -> dict[str, object]:
    return (
        _TLLIB
        | {
            "method.name": method,
            "optimizer.lr": round(lr / 10, 12),
            "optimizer.weight_decay": wd,
            "optimizer.sched_alpha": round(gamma * steps, 6),
            "trainer.max_steps": steps,
            "trainer.batch_size": batch,
            "backbone.bottleneck": bottleneck,
            "backbone.depth": depth,
        }
        | extra
    )


for _bench, _depth, _ipe, _so_ipe in (("officehome", 50, 1000, 500), ("visda17", 101, 1000, 1000),
                                      ("domainnet", 101, 2500, 2500)):
    _wide = 1024 if _bench == "domainnet" else 256  # TLlib's --bottleneck-dim for DANN / CDAN on DomainNet
    _dann_steps = 30 * _ipe
    PAPER_RECIPES[f"source_only_{_bench}"] = _tllib(
        "source_only", lr=0.01 if _bench == "domainnet" else 0.001, gamma=0.0003, wd=5e-4, batch=32,
        steps=(5 if _bench == "officehome" else 20) * _so_ipe, bottleneck=0, depth=_depth)
    PAPER_RECIPES[f"dann_{_bench}"] = _tllib(
        "dann", lr=0.01, gamma=0.001, wd=1e-3, batch=32, steps=_dann_steps, bottleneck=_wide, depth=_depth,
        **{"method.grl_gamma": _dann_steps / 1000, "method.disc_hidden": [1024, 1024],
           "method.domain_reduction": "mean"})
    PAPER_RECIPES[f"cdan_{_bench}"] = _tllib(
        "cdan", lr=0.01, gamma=0.001, wd=1e-3, batch=32, steps=_dann_steps, bottleneck=_wide, depth=_depth,
        **{"method.disc_hidden": [1024, 1024], "method.disc_dropout": 0.0, "method.disc_constant_lr": False,
           "method.entropy_weighting": False,
           "method.randomized": _bench == "domainnet"})
PAPER_RECIPES["mcc_officehome"] = _tllib("mcc", lr=0.005, gamma=0.001, wd=1e-3, batch=36, steps=30000,
                                         bottleneck=2048, depth=50, **{"method.temperature": 2.5})
PAPER_RECIPES["mcc_visda17"] = _tllib("mcc", lr=0.002, gamma=0.001, wd=1e-3, batch=36, steps=30000, bottleneck=256,
                                      depth=101, **{"method.temperature": 3.0})
PAPER_RECIPES["mcc_domainnet"] = _tllib("mcc", lr=0.005, gamma=0.001, wd=1e-3, batch=32, steps=75000,
                                        bottleneck=2048, depth=101,
                                        **{"method.temperature": 2.0, "method.mcc_weight": 10.0})

# The official runs of the newer baselines (issue 42), with ViT-B/16 through timm where their
# tables use it: SDAT's examples/run_office_home.sh and run_visda.sh, MIC's cls/experiments.py,
# TLlib's fixmatch.sh. The new layers' rate is optimizer.lr x 10 (the body at 0.1 x).
_VIT = {"backbone.name": "timm", "backbone.model": "vit_base_patch16_224", "backbone.bottleneck": 256,
        "backbone.dropout": 0.0, "backbone.head_lr_mult": 10.0, "optimizer.nesterov": True,
        "optimizer.weight_decay": 1e-3, "optimizer.schedule": "dann", "method.cdan.disc_hidden": [1024, 1024],
        "method.cdan.disc_dropout": 0.0}
_HOSTED = {k.replace("method.cdan.", "method.host.cdan."): v for k, v in _VIT.items()}
PAPER_RECIPES["sdat_officehome"] = _VIT | {
    "method.name": "sdat", "method.rho": 0.02, "method.mcc_weight": 0.0, "optimizer.lr": 0.001,
    "optimizer.sched_alpha": 30, "trainer.max_steps": 30000, "trainer.batch_size": 24}
PAPER_RECIPES["sdat_visda17"] = _VIT | {
    "method.name": "sdat", "method.rho": 0.02, "method.mcc_weight": 1.0, "method.temperature": 2.0,
    "optimizer.lr": 0.0002, "optimizer.sched_alpha": 15, "trainer.max_steps": 15000, "trainer.batch_size": 32}
for _bench, _steps, _batch in (("officehome", 30000, 24), ("visda17", 15000, 32)):
    PAPER_RECIPES[f"mic_{_bench}"] = _HOSTED | {
        "method.name": "mic", "method.ema": 0.9, "method.pseudo_weight": "prob", "method.mask_block": 64,
        "method.mask_ratio": 0.7, "method.jitter": 0.2, "method.blur": True, "method.host.name": "sdat",
        "method.host.rho": 0.02, "method.host.mcc_weight": 1.0, "optimizer.lr": 0.0002,
        "optimizer.sched_alpha": _steps / 1000, "trainer.max_steps": _steps, "trainer.batch_size": _batch}
PAPER_RECIPES["fixmatch_officehome"] = _tllib("fixmatch", lr=0.003, gamma=0.0004, wd=1e-3, batch=32, steps=20000,
                                              bottleneck=1024, depth=50, **{"method.threshold": 0.9})
PAPER_RECIPES["fixmatch_visda17"] = _tllib("fixmatch", lr=0.003, gamma=0.0004, wd=1e-3, batch=32, steps=20000,
                                           bottleneck=2048, depth=101,
                                           **{"method.threshold": 0.8, "method.crop_scale": [1.0, 1.0]})
