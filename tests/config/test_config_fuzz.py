"""Property: any command-line overrides give either a valid config or a user-facing error, never a crash.

The pipeline is the CLI's: Hydra composition -> typed dataclasses -> ``validate`` -> building the
method's networks and stage plan (what ``uda train`` does before it touches data).
"""
import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from helpers import make_cfg
from uda.data.pairs import PairInfo
from uda.engine.runtime import plan_stages
from uda.methods import get_method
from uda.schema import UserError, validate

USER_FACING = (HydraException, OmegaConfBaseException, UserError)


KEYS = [
    "seed",
    "resume",
    "device",
    "deterministic",
    "trainer.max_steps",
    "trainer.batch_size",
    "trainer.eval_every",
    "trainer.checkpoint_every",
    "trainer.log_every",
    "trainer.precision",
    "trainer.channels_last",
    "trainer.threads",
    "trainer.progress",
    "trainer.keep_every",
    "trainer.nonfinite",
    "trainer.nonfinite_patience",
    "optimizer.lr",
    "optimizer.momentum",
    "optimizer.betas",
    "optimizer.schedule",
    "optimizer.name",
    "data.image_size",
    "data.channels",
    "data.source.path",
    "data.target.name",
    "data.mean",
    "data.std",
    "data.num_classes",
    "data.train_subset",
    "backbone.conv_channels",
    "backbone.cls_hidden",
    "method.adv_weight",
    "method.grl_gamma",
    "method.alpha",
    "method.beta",
    "method.gamma",
    "method.similarity",
    "method.adapt_start",
    "method.code_size",
    "method.pretrain_steps",
    "method.disc_input",
    "method.disc_hidden",
    "method.recon",
    "method.domain_reduction",
    "method.warmup_steps",
    "method.grid",
    "method.ngf",
    "method.ndf",
    "method.gen_skips",
    "method.multi_level",
    "method.source_steps",
    "method.translate_steps",
    "method.gan_optimizer.lr",
    "backbone.channels",
    "data.augment",
    "data.source_size",
    "data.load_size",
    "trainer.max_stpes",
    "method.nonsense",
    "nonsense",
]


GROUPS = {"method": ["dann", "source_only", "dsn", "adda", "cyclegan", "cycada", "adaptsegnet", "road", "lsd",
                     "Dann", ""],
          "optimizer": ["dann_sgd", "dsn_sgd", "adam", "seg_sgd", "rmsprop"],
          "backbone": ["dann_mnist", "lenet", "resnet50", "seg_small"],
          "data": ["mnist_mnistm", "mnist_usps", "svhn_mnist", "custom", "digits_seg", "office31"]}


values = st.one_of(
    st.integers(-3, 40000).map(str), st.floats(-2, 2).map(str), st.sampled_from(["nan", "inf", "-inf", ".nan"]),
    st.sampled_from(["true", "false", "null", "auto", "fp16", "bf16", "fp32", "mmd", "dann", "logits",
                     "features", "sgd", "adam", "step", "poly", "skip", "stop", "cuda", "cpu", "[]", "[1]",
                     "[100,100]", "[0.5,0.5,0.5]", "[0.5,0.999]", "'x'", "abc", "{a:1}", "1e-3", ""]),
    st.text("abc012[]{},.:=-_' ", max_size=8),
)


override = st.one_of(
    st.tuples(st.sampled_from(KEYS), values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(sorted(GROUPS)).flatmap(lambda g: st.sampled_from(GROUPS[g]).map(lambda v: f"{g}={v}")),
    st.text("abc.=+~[]", max_size=10),
)


@settings(
    max_examples=int(__import__("os").environ.get("UDA_FUZZ_EXAMPLES", 30)),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(override, max_size=4))
def test_any_overrides_give_a_config_or_a_user_facing_error(overrides):
    try:
        build(overrides)
    except USER_FACING as e:
        assert str(e).strip(), f"empty error message for {overrides}"


@pytest.mark.parametrize("overrides", [
    ["method=dsn", "method.code_size=64"],
    ["data.image_size=8"],
    ["method=adda", "method.pretrain_steps=20000"],
    ["resume=maybe"],
])
def test_known_bad_combinations_are_user_errors(overrides):
    with pytest.raises(UserError):
        build(overrides)


def build(overrides):
    cfg = make_cfg(*overrides)
    validate(cfg)
    d = cfg.data
    # 0 = "from the source images" (custom pairs): stand in typical values for building the nets
    c = d.channels or 3
    info = PairInfo(d.name, d.source.name, d.target.name, c, d.image_size or 28, d.num_classes or 10,
                    mean=(0.5,) * c, std=(0.5,) * c, task=d.task)
    method = get_method(cfg.method.name).from_config(cfg, info)
    plan_stages(method, cfg.trainer.max_steps)
    return cfg
