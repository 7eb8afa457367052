"""Every preset's update count against docs/paper.md (within 1 %), its stages, and how
``--config`` finds a shipped config (by name, or as configs/FILE.py) from any directory."""

import os

import pytest

from noise_scale import config_lib
from noise_scale.schedule import schedule_from_config

PAPER_UPDATES = {
    ("cifar10_wrn16_4", "decay_lr"): 78_100,
    ("cifar10_wrn16_4", "hybrid"): 34_400,
    ("cifar10_wrn16_4", "increase_batch"): 28_900,
    ("cifar10_wrn16_4", "increased_lr"): 6_400,
    ("cifar10_wrn16_4", "increased_momentum"): 2_300,
    ("imagenet_resnet50", "goyal"): 14_000,
    ("imagenet_resnet50", "momentum_090"): 5_900,
    ("imagenet_resnet50", "momentum_095"): 3_500,
    ("imagenet_resnet50", "momentum_0975"): 2_350,
}


def load(name, variant):
    return config_lib.load_config(f"configs/{name}.py:{variant}")


@pytest.mark.parametrize("key", sorted(PAPER_UPDATES))
def test_paper_update_counts(key):
    s = schedule_from_config(load(*key))
    assert s.total_updates == pytest.approx(PAPER_UPDATES[key], rel=0.01)


def test_imagenet_increase_batch_under_6000_updates():
    s = schedule_from_config(load("imagenet_resnet50", "increase_batch"))
    assert [st.batch_size for st in s.stages] == [8192, 81920, 81920, 81920]
    assert 5500 < s.total_updates < 6000


@pytest.mark.parametrize(
    "variant,b0,m",
    [("momentum_090", 8192, 0.9), ("momentum_095", 16384, 0.95), ("momentum_0975", 32768, 0.975)],
)
def test_imagenet_momentum_family(variant, b0, m):
    s = schedule_from_config(load("imagenet_resnet50", variant))
    assert s.stages[0].batch_size == b0 and s.stages[0].momentum == m
    assert [st.batch_size for st in s.stages[1:]] == [65536] * 3
    assert s.warmup_epochs == 5 and s.warmup_start_lr == 0.1


def test_goyal_recipe():
    c = load("imagenet_resnet50", "goyal")
    s = schedule_from_config(c)
    assert [round(st.learning_rate, 6) for st in s.stages] == [3.2, 0.32, 0.032, 0.0032]
    assert c.optimizer == "nesterov" and c.weight_decay == 1e-4


@pytest.mark.parametrize(
    "variant", ["decay_lr", "hybrid", "increase_batch", "increased_lr", "increased_momentum",
                "constant_lr", "mismatched"]
)
def test_mnist1d_counts_follow_the_arithmetic(variant):
    c = load("mnist1d", variant)
    s = schedule_from_config(c)
    assert c.dataset_size == 40_000 and s.total_epochs == 40
    expected = sum(st.epochs * 40_000 / st.batch_size for st in s.stages)
    assert s.total_updates == pytest.approx(expected, rel=0.01)
    assert max(st.batch_size for st in s.stages) <= 4000  # cap N/10


def test_mnist1d_controls():
    constant = schedule_from_config(load("mnist1d", "constant_lr"))
    assert [(st.batch_size, st.learning_rate) for st in constant.stages] == [(32, 0.05)]
    mismatched = schedule_from_config(load("mnist1d", "mismatched"))
    assert [(st.batch_size, st.learning_rate) for st in mismatched.stages] == [
        (32, 0.05), (64, 0.05), (128, 0.05), (256, 0.05)]
    g, ref = mismatched.noise_scales(), schedule_from_config(load("mnist1d", "decay_lr"))
    assert g[-1] / ref.noise_scales()[-1] == pytest.approx(125 / 8, rel=0.01)


def test_mnist1d_variants_reduce_updates():
    counts = {
        v: schedule_from_config(load("mnist1d", v)).total_updates
        for v in ["decay_lr", "hybrid", "increase_batch", "increased_lr"]
    }
    assert counts["decay_lr"] / counts["hybrid"] >= 2.2
    assert counts["decay_lr"] / counts["increase_batch"] >= 2.2
    assert counts["decay_lr"] / counts["increased_lr"] >= 10


def test_every_variant_has_a_docstring_with_its_update_count():
    import importlib.util

    for name in ["mnist1d", "mnist1d_imagenet", "cifar10_wrn16_4", "imagenet_resnet50"]:
        spec = importlib.util.spec_from_file_location(name, config_lib.config_file(name))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for variant, fn in mod.VARIANTS.items():
            assert fn.__doc__ and "updates" in fn.__doc__, (name, variant)
            count = schedule_from_config(mod.get_config(variant)).total_updates
            digits = "".join(ch for ch in fn.__doc__ if ch.isdigit() or ch == " ")
            assert any(
                abs(int(tok) - count) <= max(30, count // 100) for tok in digits.split() if tok
            ), (name, variant, count, fn.__doc__)


def test_configs_are_locked():
    c = load("mnist1d", "decay_lr")
    with pytest.raises(AttributeError):
        c.not_a_field = 1


def test_config_file_finds_the_shipped_configs_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = config_lib.config_file("mnist1d.py")
    assert path == config_lib.config_file("mnist1d") == os.path.join(config_lib.CONFIG_DIR,
                                                                      "mnist1d.py")
    assert config_lib.load_config(f"{path}:hybrid").variant == "hybrid"
    with pytest.raises(config_lib.ConfigError, match="they are: cifar10_wrn16_4.py, "
                       "cifar10_wrn16_4_cosine.py, imagenet_resnet50.py"):
        config_lib.config_file("mnist2d.py")
    assert config_lib.variants(config_lib.config_file("imagenet_resnet50.py")) == [
        "goyal", "increase_batch", "momentum_090", "momentum_095", "momentum_0975"]


@pytest.mark.parametrize("path", ["mnist1d", "mnist1d.py", "configs/mnist1d.py",
                                  "./configs/mnist1d.py"])
def test_a_shipped_config_by_name_or_by_its_repository_path_from_anywhere(
        tmp_path, monkeypatch, path):
    """What a wheel or git+ install, with no configs/ beside it, is run with."""
    monkeypatch.chdir(tmp_path)
    c = config_lib.load_config(f"{path}:hybrid")
    assert c.variant == "hybrid" and c.schedule.max_batch_size == 160
    assert config_lib.variants(path)[:2] == ["decay_lr", "hybrid"]


def test_a_shipped_config_that_builds_on_another_loads_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mnist1d_cosine.py reads mnist1d.py beside it
    c = config_lib.load_config("mnist1d_cosine:cosine_increase_batch")
    assert c.schedule.shape == "cosine" and c.dataset == "mnist1d"


def test_a_file_that_exists_wins_over_the_shipped_config_of_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mnist1d.py").write_text(
        "from noise_scale import config_lib\n\n\ndef get_config():\n"
        "    c = config_lib.load_config('mnist1d:hybrid')\n    c.seed = 7\n    return c\n")
    assert config_lib.load_config("configs/mnist1d.py").seed == 7
    assert config_lib.load_config("mnist1d:hybrid").seed != 7


@pytest.mark.parametrize("path", ["mnist2d", "configs/mnist2d.py", "elsewhere/mnist1d.py"])
def test_a_path_that_is_no_file_and_no_shipped_config_names_the_shipped_ones(
        tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load_config(f"{path}:hybrid")
    message = str(info.value)
    assert message.startswith(f"config file {path!r} does not exist (looked relative to "
                              f"{tmp_path}) and names no shipped config (cifar10_wrn16_4, ")
    assert message.endswith("Fix: give a shipped config by name, e.g. --config=mnist1d:"
                            "increase_batch, or the path of your own config file.")
    assert "\n" not in message


IMAGENET_SHAPE = ["goyal", "increase_batch", "momentum_090", "momentum_095", "momentum_0975",
                  "constant_lr", "mismatched"]


def test_mnist1d_imagenet_has_the_imagenet_proportions():
    """Batch sizes at the same fraction of N, epochs in the same proportions, B0 ∝ 1/(1−m)."""
    scale = 40_000 / 1_281_167
    paper = {v: schedule_from_config(load("imagenet_resnet50", v)) for v in IMAGENET_SHAPE[:5]}
    small = {v: schedule_from_config(load("mnist1d_imagenet", v)) for v in IMAGENET_SHAPE}
    for v, s in paper.items():
        t = small[v]
        assert [st.batch_size for st in t.stages] == pytest.approx(
            [st.batch_size * scale for st in s.stages], abs=16)  # whole ghost batches of 16
        assert [st.start_epoch / t.total_epochs for st in t.stages] == pytest.approx(
            [st.start_epoch / s.total_epochs for st in s.stages])
        assert t.warmup_epochs / t.total_epochs == pytest.approx(5 / 90)
        assert [st.momentum for st in t.stages] == [st.momentum for st in s.stages]
        lr = [st.learning_rate / t.stages[0].learning_rate for st in t.stages]
        assert lr == pytest.approx([st.learning_rate / s.stages[0].learning_rate
                                    for st in s.stages], rel=0.01)
        # half the epochs: about half the updates
        assert t.total_updates == pytest.approx(s.total_updates / 2, rel=0.01)
    assert [small[v].stages[0].batch_size for v in IMAGENET_SHAPE[2:5]] == [256, 512, 1024]
    assert small["momentum_090"].stages[1].batch_size / 40_000 == pytest.approx(65_536 / 1_281_167,
                                                                               rel=0.001)
    c = load("mnist1d_imagenet", "goyal")
    assert c.optimizer == "nesterov" and c.schedule.warmup_start_lr == c.schedule.learning_rate / 32


def test_mnist1d_imagenet_controls():
    constant = schedule_from_config(load("mnist1d_imagenet", "constant_lr"))
    assert [st.batch_size for st in constant.stages] == [256] and constant.warmup_epochs == 2.5
    mismatched = schedule_from_config(load("mnist1d_imagenet", "mismatched"))
    assert [(st.batch_size, st.learning_rate) for st in mismatched.stages] == [
        (256, 0.2), (512, 0.2), (1024, 0.2), (2048, 0.2)]
